"""Command line: ``python train.py ...`` and ``python -m discrete_rae {train,sample,evaluate,...}``.

The CLI is the only place that configures logging and chooses the device and precision.
User mistakes (bad flags, data, checkpoints) end with a one-line ``error:`` and exit code 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .config import (ConfigError, DataConfig, EvalConfig, RunConfig, TrainConfig, add_dataclass_flags,
                     collect_flags, field_rules, load_toml, replace, resolve_sections)
from .presets import get_preset
from .registry import DOMAINS, MODELS, UnknownNameError, load_all
from .validate import check_value, validate_run

log = logging.getLogger("discrete_rae")

EXIT_USAGE = 2
EXIT_NONFINITE = 3

# Subcommands contributed by other modules: name -> (help, add_arguments, run). Kept as a
# table so that `compare`, `optimize`, ... register without editing the parser code.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}
# Modules whose import adds their subcommand to COMMANDS (their heavy imports, e.g. botorch, are lazy).
COMMAND_MODULES = ("discrete_rae.optimize", "discrete_rae.interpolate")


from .errors import UsageError  # noqa: E402  (re-exported: commands raise cli.UsageError)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's mistake (one line, exit 2, no traceback)."""
    from .checkpoint import CheckpointError
    from .grammar import GrammarError

    errors: list[type[BaseException]] = [UsageError, ConfigError, UnknownNameError, CheckpointError, GrammarError]
    try:
        from .data.errors import DataError

        errors.append(DataError)
    except ImportError:
        pass
    return tuple(errors)


def setup_logging(verbosity: int, log_file: Path | None = None) -> None:
    """Console at WARNING (-q), INFO or DEBUG (-v); ``log_file`` gets INFO or more in any case.

    Replaces the root handlers of an earlier call (closing its log file), so it can be called again.
    """
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if isinstance(handler, logging.FileHandler):
            handler.close()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level)
    console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root.addHandler(console)
    root.setLevel(level)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setLevel(min(level, logging.INFO))
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)
        root.setLevel(min(level, logging.INFO))
    for noisy in ("matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def set_threads(n: int) -> None:
    """Fix torch's intra-op threads and the BLAS/OpenMP pools of numpy and sklearn.

    ``0`` (the default) means all cores shared among the local torchrun processes
    (``os.cpu_count() // LOCAL_WORLD_SIZE``, at least 1). Why a fixed count: on a 2-core
    machine the quick molecules preset trains 1.44x faster with 2 threads than with 1 when
    it has the machine to itself (benchmarks/train_speed.py), but two processes with two
    threads each fight for the cores; and the BLAS pools too: the ex-post GMM (sklearn EM)
    took 65 s with OpenBLAS's default threads beside another process, and 6.5 s on one thread.
    """
    if n < 0:
        raise UsageError("--threads must be >= 0")
    if n == 0:
        n = max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # sklearn's dependency; absent only in unusual installs
        return
    threadpool_limits(n)


def choose_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU. Chosen once here; models never name a device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UsageError(f"--device {name!r}: choose auto, cpu or cuda[:N]")
    return torch.device(name)


def choose_precision(name: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA by default; fp32 on the CPU (CPU bf16 is slower for these nets, and the
    trainer autocasts on CUDA only, so an explicit bf16 on the CPU is an error, not a silent fp32)."""
    if name == "fp32" or (name == "auto" and device.type != "cuda"):
        return None
    if name == "bf16" and device.type != "cuda":  # the trainer autocasts on CUDA only
        raise UsageError(f"--precision bf16 needs a CUDA device, not {device.type}: use --precision auto or fp32")
    if name in ("auto", "bf16"):
        return torch.bfloat16
    raise UsageError(f"--precision {name!r}: choose auto, fp32 or bf16")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: auto)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bars")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch and BLAS (default 0: all cores, divided among local torchrun "
                        "processes; use 1 when other jobs share the machine)")


# --- train ------------------------------------------------------------------------------------
def _peek(argv: Sequence[str]) -> argparse.Namespace:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--domain", default="molecules")
    pre.add_argument("--model", default=None)
    pre.add_argument("--preset", default="quick")
    pre.add_argument("--config", default=None)
    return pre.parse_known_args(list(argv))[0]


class _OneLineParser(argparse.ArgumentParser):
    """argparse's complaints (unknown flag, missing value) as one ``error:`` line, exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help for the options of this model)")


def train_parser(model_name: str | None, domain: str) -> argparse.ArgumentParser:
    load_all()
    models = "\n".join(f"  {n:<18} {s.description} [{', '.join(s.domains)}]" for n, s in MODELS.items())
    files = {n: " or a file path" if hasattr(d, "load_texts") else "" for n, d in DOMAINS.items()}  # images: names
    domains = "\n".join(f"  {n:<12} datasets: {', '.join(d.datasets)}{files[n]}" for n, d in DOMAINS.items())
    p = _OneLineParser(
        prog="train.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a generative autoencoder, fit its ex-post sampler, sample and evaluate.\n\n"
                    f"domains:\n{domains}\n\nmodels:\n{models}",
        epilog="Every model/train/data/eval option is also a key of --config FILE.toml ([model], [train], "
               "[data], [eval]). Order: model defaults < preset < config file < flags.\n"
               "Example: python train.py --domain molecules --model grammar_rae --preset quick")
    p.add_argument("--domain", default="molecules", help="molecules | expressions | images (default: molecules)")
    p.add_argument("--model", default=None, help="registered model name (default: grammar_rae, images: rae_l2)")
    p.add_argument("--preset", default="quick", help="smoke (seconds) | quick (default, <=10 min CPU) | paper (GPU)")
    p.add_argument("--config", default=None, help="TOML file with [model]/[train]/[data]/[eval] sections")
    p.add_argument("--run-name", default=None, help="run directory name under --runs-dir (default: MODEL-DOMAIN[-N])")
    p.add_argument("--runs-dir", default="runs", help="where run directories go (default: runs)")
    p.add_argument("--resume", action="store_true", help="continue the run --run-name from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 (CUDA only)")
    _add_common(p)
    spec = MODELS.get(model_name) if model_name in MODELS else MODELS.get(default_model(domain))
    model_cfg_cls = type(spec.config_for(domain if domain in spec.domains else spec.domains[0]))
    add_dataclass_flags(p, model_cfg_cls, "model")
    add_dataclass_flags(p, TrainConfig, "train")
    add_dataclass_flags(p, DataConfig, "data")
    add_dataclass_flags(p, EvalConfig, "eval")
    return p


def default_model(domain: str) -> str:
    return "rae_l2" if domain == "images" else "grammar_rae"


def resolve_run_config(args: argparse.Namespace) -> RunConfig:
    """model defaults < preset < --config file < flags, with validation."""
    domain_name = args.domain
    DOMAINS.get(domain_name)
    model_name = args.model or default_model(domain_name)
    spec = MODELS.get(model_name)
    if domain_name not in spec.domains:
        raise UsageError(f"model {model_name!r} does not run on domain {domain_name!r} "
                         f"(it supports: {', '.join(spec.domains)})")
    try:
        preset = get_preset(domain_name, args.preset)
    except KeyError as err:
        raise UsageError(str(err.args[0])) from None
    file_cfg = load_toml(args.config) if args.config else {}
    defaults: dict[str, Any] = {"model": spec.config_for(domain_name), "train": TrainConfig(), "data": DataConfig(),
                                "eval": EvalConfig()}
    flags = {name: collect_flags(args, name) for name in defaults}
    sections, explicit = resolve_sections(defaults, preset, file_cfg, flags, file_name=str(args.config or ""))
    run = RunConfig(domain=domain_name, model_name=model_name, preset=args.preset, explicit=explicit, **sections)
    validate(run)
    return run


def validate(run: RunConfig) -> None:
    """Every value, its applicability and the cross-field checks (discrete_rae.validate)."""
    validate_run(run)


def check_train_flags(args: argparse.Namespace) -> None:
    """Contradictory train flags and unsafe run names, caught before anything is read or written."""
    from .rundir import check_run_name, run_path

    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other; pick one")
    if args.resume and not args.run_name:
        raise UsageError("--resume needs --run-name NAME (the run to continue)")
    if args.run_name is not None:
        check_run_name(args.run_name)
    if args.resume and not (run_path(args.runs_dir, args.run_name) / "checkpoint.pt").is_file():
        raise UsageError(f"--resume: {Path(args.runs_dir) / args.run_name}/checkpoint.pt does not exist; "
                         "nothing to resume")


def run_dir_for(args: argparse.Namespace, run: RunConfig | None) -> Any:
    """Claim the run directory (a ``rundir.RunClaim``): the existing one for --resume, else a new
    one; an existing one is replaced only with --overwrite, and only once the new run has a
    checkpoint (see discrete_rae.rundir). The claim's lock keeps a second process out."""
    from .rundir import claim, claim_new

    check_train_flags(args)
    if args.run_name:
        return claim(args.runs_dir, args.run_name, resume=args.resume, overwrite=args.overwrite)
    assert run is not None, "a new run without --run-name is named after its config"
    return claim_new(args.runs_dir, f"{run.model_name}-{run.domain}")


def format_metrics(metrics: dict[str, Any]) -> str:
    """A two-column table of the scalar metrics."""
    rows = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in metrics.items()
            if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    width = max((len(k) for k, _ in rows), default=10)
    line = "-" * (width + 24)
    return "\n".join([line] + [f"{k:<{width}}  {v}" for k, v in rows] + [line])


def cmd_train(argv: Sequence[str]) -> int:
    """``train``: resolve the config, set up the (distributed) run and train.

    Under torchrun only rank 0 resolves the run directory (and creates it); it broadcasts the
    result, or the fact that it failed, so the other ranks neither race for the directory nor
    hang. See discrete_rae.distributed for what each rank does.
    """
    peek = _peek(argv)
    args = train_parser(peek.model or default_model(peek.domain), peek.domain).parse_args(list(argv))
    check_train_flags(args)
    set_threads(args.threads)
    device = choose_device(args.device)
    amp = choose_precision(args.precision, device)
    from .distributed import setup_distributed

    dist = setup_distributed(device)
    try:
        if dist.world_size > 1 and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
        holder: list[Any] = []  # rank 0's RunClaim (lock + pending replacement)
        try:
            resolved = _resolve_on_main(args, dist, holder)
            if resolved is None:  # rank 0 failed and reported it
                return EXIT_USAGE
            run, run_dir = resolved
            return _train_in(run, run_dir, args, dist, device, amp)
        finally:
            for run_claim in holder:
                run_claim.settle()
                run_claim.release()
    finally:
        dist.close()


def _resolve_on_main(args: argparse.Namespace, dist: Any, holder: list[Any]) -> tuple[RunConfig, Path] | None:
    """Rank 0 resolves (config, run directory) and keeps the directory's claim in ``holder``;
    every rank gets the answer, None if it failed."""
    result: tuple[RunConfig, Path] | None = None
    failed: BaseException | None = None
    if dist.is_main:
        try:
            if args.resume:  # claim (lock) the run before reading its checkpoint
                holder.append(run_dir_for(args, None))
                run = _resume_config(holder[0].path, args)
            else:
                run = resolve_run_config(args)
                holder.append(run_dir_for(args, run))
            result = (run, holder[0].path)
        except Exception as err:  # noqa: BLE001 - re-raised below once the other ranks know
            failed = err
    result = dist.broadcast_object(result)
    if failed is not None:
        raise failed
    return result


def _train_in(run: RunConfig, run_dir: Path, args: argparse.Namespace, dist: Any, device: torch.device,
              amp: torch.dtype | None) -> int:
    """Train in ``run_dir``; a fresh run directory is removed again if a user error stops the run
    before its first checkpoint (so that the same --run-name can be used after the fix)."""
    from .pipeline import train_run

    if dist.is_main:
        setup_logging(-1 if args.quiet else args.verbose, run_dir / "train.log")
    else:
        setup_logging(-1)
    log.info("run %s: %s on %s (%s preset), device %s%s%s", run_dir, run.model_name, run.domain, run.preset,
             device, " bf16" if amp else "", f", {dist.world_size} processes" if dist.world_size > 1 else "")
    try:
        metrics = train_run(run, run_dir, device, amp, resume=args.resume, dist=dist.info, progress=not args.quiet)
    except user_errors():
        if dist.is_main and not args.resume and not (run_dir / "checkpoint.pt").exists():
            _close_log_files()
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if dist.is_main:
        print(format_metrics(metrics))
        print(f"run directory: {run_dir}  (metrics.json, samples.png, checkpoint.pt, ...)")
    return 0


def _close_log_files() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()


def _resume_config(run_dir: Path, args: argparse.Namespace) -> RunConfig:
    from .resume import resume_config  # which flags a resumed run honours, refuses, records

    return resume_config(run_dir, args)


# --- sample / evaluate -------------------------------------------------------------------------
def _run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory (e.g. runs/grammar_rae-molecules)")
    p.add_argument("--sampler", default=None, help="ex-post sampler (default: the model's; see the run's checkpoint)")
    _add_common(p)


def cmd_sample(args: argparse.Namespace) -> int:
    from .checkpoint import write_text
    from .pipeline import load_run, pick_sampler

    set_threads(args.threads)
    device = choose_device(args.device)
    loaded = load_run(Path(args.run), device)
    sampler = pick_sampler(loaded, args.sampler)
    domain = DOMAINS.get(loaded.run.domain)
    if args.n <= 0:
        raise UsageError("--n must be positive")
    samples = domain.sample_texts(loaded.model, sampler, args.n, device, args.temperature)
    out = Path(args.out) if args.out else loaded.run_dir / f"samples-{sampler.name}.txt"
    write_text(out, "\n".join("<unfinished>" if s is None else s for s in samples) + "\n")
    stats = domain.sample_metrics(samples, [])
    stats.pop("novel", None)  # novelty needs the training set: see `evaluate`
    print(format_metrics({"sampler": sampler.name, **stats}))
    print(f"samples written to {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .pipeline import DECODING_OPTIONS, apply_decoding_options, evaluate_loaded, load_run

    if args.recon_protocol:  # checked before the run is loaded
        check_value("--recon-protocol", args.recon_protocol, field_rules(EvalConfig, "recon_protocol"))
    if args.n is not None and args.n <= 0:
        raise UsageError(f"--n {args.n}: the number of samples must be positive")
    set_threads(args.threads)
    device = choose_device(args.device)
    loaded = load_run(Path(args.run), device)
    if args.recon_protocol:
        loaded.run.eval = replace(loaded.run.eval, {"recon_protocol": args.recon_protocol})
    if args.beam_width is not None:
        loaded.run.eval = replace(loaded.run.eval, {"beam_width": args.beam_width})
    # decoding options: re-score the same run with or without them
    overrides = {key: getattr(args, key) == "true" for key in DECODING_OPTIONS if getattr(args, key) is not None}
    if overrides:
        loaded.run.eval = replace(loaded.run.eval, overrides)
        apply_decoding_options(loaded.model.codec, loaded.run.eval)
    domain = DOMAINS.get(loaded.run.domain)
    if args.benchmark and loaded.run.domain != "molecules":
        raise UsageError(f"--benchmark {args.benchmark} needs a molecules run, not {loaded.run.domain}")
    prepared = domain.prepare(loaded.run, codec_state=loaded.checkpoint["codec"], progress=not args.quiet)
    if args.benchmark:
        return _run_benchmark(args, loaded, domain, prepared, device)
    metrics = evaluate_loaded(loaded, prepared, device, args.sampler, progress=not args.quiet, n_samples=args.n)
    out = loaded.run_dir / "metrics.json"
    previous = json.loads(out.read_text()) if out.is_file() else {}
    previous.update(metrics)
    out.write_text(json.dumps(previous, indent=2, default=float) + "\n")
    print(format_metrics(metrics))
    return 0


def _run_benchmark(args: argparse.Namespace, loaded: Any, domain: Any, prepared: Any, device: torch.device) -> int:
    """MOSES (novelty vs the MOSES train set for moses runs) or GuacaMol (vs the run's train set)."""
    from .metrics.molecules import format_table, guacamol_metrics, moses_metrics
    from .pipeline import pick_sampler

    n = args.n or (30_000 if args.benchmark == "moses" else 10_000)
    sampler = pick_sampler(loaded, args.sampler)
    log.info("decoding %d samples from the %s sampler", n, sampler.name)
    samples = domain.sample_texts(loaded.model, sampler, n, device)
    if args.benchmark == "moses":
        train = None if loaded.run.data.dataset in ("", "moses") else prepared.train_texts
        metrics = moses_metrics(samples, train, n_jobs=2, progress=not args.quiet)
    else:
        metrics = guacamol_metrics(samples, prepared.train_texts, n_jobs=2, progress=not args.quiet)
    metrics = {"benchmark": args.benchmark, "sampler": sampler.name, "n_samples": n, **metrics}
    out = loaded.run_dir / f"benchmark-{args.benchmark}.json"
    out.write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    print(format_table(metrics))
    print(f"written to {out}")
    return 0


def build_main_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m discrete_rae",
                                description="discrete_rae: regularized autoencoders for discrete and structured data.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("train", help="train a model (same flags as train.py; see `train --help`)", add_help=False)
    s = sub.add_parser("sample", help="draw samples from a trained run's ex-post sampler")
    _run_arg(s)
    s.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
    s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy decoding (default)")
    s.add_argument("--out", default=None, help="output file (default: RUN/samples-SAMPLER.txt)")
    e = sub.add_parser("evaluate", help="evaluate a trained run (validity, uniqueness, novelty, reconstruction)")
    _run_arg(e)
    e.add_argument("--n", type=int, default=None, help="number of samples (default: the run's eval.n_samples)")
    e.add_argument("--recon-protocol", default=None, help="greedy (default) | stochastic (10 encodings x 100 decodes)")
    e.add_argument("--beam-width", type=int, default=None, help="molecules: also beam-search reconstruction (0 = off)")
    e.add_argument("--length-mask", default=None, choices=["true", "false"],
                   help="grammar decoding: finish within max_length (true, default) or the paper's cut-off (false)")
    e.add_argument("--ring-mask", default=None, choices=["true", "false"],
                   help="SMILES grammar decoding: ring-closure bookkeeping (true, default) or the grammar mask only")
    e.add_argument("--benchmark", choices=("moses", "guacamol"), default=None,
                   help="distribution-learning suite on --n samples (default 30,000 MOSES / 10,000 GuacaMol)")
    for name, (help_text, add_args, _) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text))
    return p


_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {"sample": cmd_sample, "evaluate": cmd_evaluate}


def load_commands() -> None:
    """Import the modules of COMMAND_MODULES so that their subcommands are registered."""
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name)


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] == "train":
        return cmd_train(argv[1:])
    load_all()
    load_commands()
    args = build_main_parser().parse_args(argv)
    if args.command is None:
        build_main_parser().print_help()
        return EXIT_USAGE
    setup_logging(-1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0))
    handler = _HANDLERS.get(args.command) or COMMANDS[args.command][2]
    return handler(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m discrete_rae``; returns the exit code."""
    from .trainer import NonFiniteLossError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_NONFINITE
    except OSError as err:  # full disk, a file where a folder should be, a name too long, ...
        print(f"error: {f'{err.filename}: ' if err.filename else ''}{err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; continue with --resume --run-name NAME", file=sys.stderr)
        return 130


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``train.py``: the ``train`` subcommand."""
    return main(["train", *(sys.argv[1:] if argv is None else argv)])
