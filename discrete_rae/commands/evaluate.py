"""``evaluate``: score a trained run (validity, uniqueness, novelty, reconstruction) or run a benchmark."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..config import EvalConfig, field_rules, replace
from ..errors import UsageError
from ..io import write_json
from ..registry import DOMAINS
from ..runtime import choose_device, set_threads
from ..validate import check_value
from .common import add_run_arg, format_metrics

if TYPE_CHECKING:
    from ..domains.base import Domain, Prepared

NAME = "evaluate"
HELP = "evaluate a trained run (validity, uniqueness, novelty, reconstruction)"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arg(p)
    p.add_argument("--n", type=int, default=None, help="number of samples (default: the run's eval.n_samples)")
    p.add_argument("--recon-protocol", default=None, help="greedy (default) | stochastic (10 encodings x 100 decodes)")
    p.add_argument("--beam-width", type=int, default=None, help="molecules: also beam-search reconstruction (0 = off)")
    p.add_argument("--length-mask", default=None, choices=["true", "false"],
                   help="grammar decoding: finish within max_length (true, default) or the paper's cut-off (false)")
    p.add_argument("--ring-mask", default=None, choices=["true", "false"],
                   help="SMILES grammar decoding: ring-closure bookkeeping (true, default) or the grammar mask only")
    p.add_argument("--chem-mask", default=None, choices=["true", "false"],
                   help="SMILES grammar decoding: valence and bond checks (true, default) or the ring mask only")
    p.add_argument("--benchmark", choices=("moses", "guacamol"), default=None,
                   help="distribution-learning suite on --n samples (default 30,000 MOSES / 10,000 GuacaMol)")


def run(args: argparse.Namespace) -> int:
    from ..pipeline import DECODING_OPTIONS, apply_decoding_options, evaluate_loaded, load_run

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
    write_json(out, previous, default=float)
    print(format_metrics(metrics))
    return 0


def _run_benchmark(args: argparse.Namespace, loaded: Any, domain: Domain, prepared: Prepared,
                   device: torch.device) -> int:
    """MOSES (novelty vs the MOSES train set for moses runs) or GuacaMol (vs the run's train set)."""
    from ..metrics.molecules import format_table, guacamol_metrics, moses_metrics
    from ..pipeline import pick_sampler

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
    write_json(out, metrics, default=float)
    print(format_table(metrics))
    print(f"written to {out}")
    return 0
