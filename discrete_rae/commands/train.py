"""``train`` (also ``python train.py``): resolve the config, claim the run directory, train.

The flags depend on the model (each model config adds its own), so this command parses its own
arguments (:func:`parse_args`) after a first look at --model / --domain.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import typing
from pathlib import Path
from typing import Any, Sequence

import torch

from ..catalog import load_all
from ..config import DataConfig, EvalConfig, RunConfig, TrainConfig, add_dataclass_flags, collect_flags
from ..errors import USER_ERRORS, UsageError
from ..registry import DOMAINS, MODELS
from ..runconfig import SECTIONS, default_model, resolve_run_config
from ..runtime import choose_device, choose_precision, set_threads
from .common import EXIT_USAGE, add_common, close_log_files, format_metrics, setup_logging

NAME = "train"
HELP = "train a model (same flags as train.py; see `train --help`)"

log = logging.getLogger("discrete_rae")


def _peek(argv: Sequence[str]) -> argparse.Namespace:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--domain", default="molecules")
    pre.add_argument("--model", default=None)
    pre.add_argument("--preset", default="quick")
    pre.add_argument("--config", default=None)
    return pre.parse_known_args(list(argv))[0]


def add_arguments(p: argparse.ArgumentParser, model_name: str | None = None, domain: str = "molecules") -> None:
    """Run flags plus one flag per field of the model's config and of the train/data/eval configs."""
    load_all()
    p.add_argument("--domain", default="molecules", help="molecules | expressions | images (default: molecules)")
    p.add_argument("--model", default=None, help="zoo row or alias (default: grammar_rae, images: rae_l2; `python -m discrete_rae zoo` lists them)")
    p.add_argument("--preset", default="quick", help="smoke (seconds) | quick (default, <=10 min CPU) | paper (GPU) | "
                   "gpu (molecules: the quick recipe scaled up; one H200 reconstructed 0.915 after 150 s)")
    p.add_argument("--config", default=None, help="TOML file with [model]/[train]/[data]/[eval] sections")
    p.add_argument("--run-name", default=None, help="run directory name under --runs-dir (default: MODEL-DOMAIN[-N])")
    p.add_argument("--runs-dir", default="runs", help="where run directories go (default: runs)")
    p.add_argument("--resume", action="store_true", help="continue the run --run-name from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 (CUDA only)")
    add_common(p)
    spec = MODELS.get(model_name) if model_name in MODELS else MODELS.get(default_model(domain))
    model_cfg_cls = type(spec.config_for(domain if domain in spec.domains else spec.domains[0]))
    add_dataclass_flags(p, model_cfg_cls, "model")
    add_dataclass_flags(p, TrainConfig, "train")
    add_dataclass_flags(p, DataConfig, "data")
    add_dataclass_flags(p, EvalConfig, "eval")


class _OneLineParser(argparse.ArgumentParser):
    """argparse's complaints (unknown flag, missing value) as one ``error:`` line, exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help for the options of this model)")


def train_parser(model_name: str | None, domain: str) -> argparse.ArgumentParser:
    """The full parser of ``train.py`` for ``model_name`` on ``domain``."""
    from ..domains.base import TextDomain

    load_all()
    models = "\n".join(f"  {n:<18} {s.description} [{', '.join(s.domains)}]" for n, s in MODELS.items())
    files = {n: " or a file path" if isinstance(d, TextDomain) else "" for n, d in DOMAINS.items()}  # images: names
    domains = "\n".join(f"  {n:<12} datasets: {', '.join(d.datasets)}{files[n]}" for n, d in DOMAINS.items())
    p = _OneLineParser(
        prog="train.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a generative autoencoder, fit its ex-post sampler, sample and evaluate.\n\n"
                    f"domains:\n{domains}\n\nmodels:\n{models}",
        epilog="Every model/train/data/eval option is also a key of --config FILE.toml ([model], [train], "
               "[data], [eval]). Order: model defaults < preset < config file < flags.\n"
               "Example: python train.py --domain molecules --model grammar_rae --preset quick")
    add_arguments(p, model_name, domain)
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``train`` arguments with the flags of the model they name."""
    peek = _peek(argv)
    return train_parser(peek.model or default_model(peek.domain), peek.domain).parse_args(list(argv))


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of parsed ``train`` flags (see :func:`runconfig.resolve_run_config`)."""
    return resolve_run_config(args.domain, args.model, args.preset, args.config,
                              {s: collect_flags(args, s) for s in SECTIONS})


def check_train_flags(args: argparse.Namespace) -> None:
    """Contradictory train flags and unsafe run names, caught before anything is read or written."""
    from ..rundir import check_run_name, run_path

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
    from ..rundir import claim, claim_new

    check_train_flags(args)
    if args.run_name:
        return claim(args.runs_dir, args.run_name, resume=args.resume, overwrite=args.overwrite)
    assert run is not None, "a new run without --run-name is named after its config"
    return claim_new(args.runs_dir, f"{run.model_name}-{run.domain}")


def run(args: argparse.Namespace) -> int:
    """Set up the (distributed) run and train.

    Under torchrun only rank 0 resolves the run directory (and creates it); it broadcasts the
    result, or the fact that it failed, so the other ranks neither race for the directory nor
    hang. See discrete_rae.distributed for what each rank does.
    """
    check_train_flags(args)
    set_threads(args.threads)
    device = choose_device(args.device)
    amp = choose_precision(args.precision, device)
    from ..distributed import setup_distributed

    dist = setup_distributed(device)
    try:
        if dist.world_size > 1 and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
        holder: list[Any] = []  # rank 0's RunClaim (lock + pending replacement)
        try:
            resolved = _resolve_on_main(args, dist, holder)
            if resolved is None:  # rank 0 failed and reported it
                return EXIT_USAGE
            run_cfg, run_dir = resolved
            return _train_in(run_cfg, run_dir, args, dist, device, amp)
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
                run_cfg = _resume_config(holder[0].path, args)
            else:
                run_cfg = run_config_from_args(args)
                holder.append(run_dir_for(args, run_cfg))
            result = (run_cfg, holder[0].path)
        except Exception as err:  # noqa: BLE001 - re-raised below once the other ranks know
            failed = err
    result = dist.broadcast_object(result)
    if failed is not None:
        raise failed
    return result


def _train_in(run_cfg: RunConfig, run_dir: Path, args: argparse.Namespace, dist: Any, device: torch.device,
              amp: torch.dtype | None) -> int:
    """Train in ``run_dir``; a fresh run directory is removed again if a user error stops the run
    before its first checkpoint (so that the same --run-name can be used after the fix)."""
    from ..pipeline import train_run

    if dist.is_main:
        setup_logging(-1 if args.quiet else args.verbose, run_dir / "train.log")
    else:
        setup_logging(-1)
    log.info("run %s: %s on %s (%s preset), device %s%s%s", run_dir, run_cfg.model_name, run_cfg.domain,
             run_cfg.preset, device, " bf16" if amp else "",
             f", {dist.world_size} processes" if dist.world_size > 1 else "")
    if device.type == "cuda" and run_cfg.preset == "quick" and run_cfg.domain == "molecules":
        # the quick preset is sized for a 2-core CPU; on a GPU the scaled-up recipe reconstructs far more
        log.info("a GPU is in use: --preset gpu trains the larger recipe (README, GPU: 0.915 "
                 "reconstruction after 150 s on one H200)")
    try:
        metrics = train_run(run_cfg, run_dir, device, amp, resume=args.resume, dist=dist.info,
                            progress=not args.quiet)
    except USER_ERRORS:
        if dist.is_main and not args.resume and not (run_dir / "checkpoint.pt").exists():
            close_log_files()
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if dist.is_main:
        print(format_metrics(metrics))
        print(f"run directory: {run_dir}  (metrics.json, samples.png, checkpoint.pt, ...)")
    return 0


def _resume_config(run_dir: Path, args: argparse.Namespace) -> RunConfig:
    from ..resume import resume_config  # which flags a resumed run honours, refuses, records

    return resume_config(run_dir, args)
