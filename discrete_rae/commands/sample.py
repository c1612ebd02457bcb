"""``sample``: draw from a trained run's ex-post sampler and decode."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError
from ..io import write_text
from ..registry import DOMAINS
from ..runtime import choose_device, set_threads
from .common import add_run_arg, format_metrics

NAME = "sample"
HELP = "draw samples from a trained run's ex-post sampler"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arg(p)
    p.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy decoding (default)")
    p.add_argument("--out", default=None, help="output file (default: RUN/samples-SAMPLER.txt)")


def run(args: argparse.Namespace) -> int:
    from ..pipeline import load_run, pick_sampler

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
