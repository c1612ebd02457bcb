"""Training throughput of a preset: molecules (or expressions, images) per second.

Builds the model exactly as ``train.py`` would (same flags, same preset), prepares the data,
and times ``--steps`` optimiser steps after ``--warmup`` untimed ones. Prints samples/s and,
with ``--compare FLAGS``, the ratio against the same flags followed by FLAGS.

    python benchmarks/train_speed.py --domain molecules --preset quick --threads 1
    python benchmarks/train_speed.py --threads 2 --compare "--threads 1"
    python benchmarks/train_speed.py --grammar smiles_compact --compare "--grammar smiles"

Run it on a quiet machine: another busy process on a 2-core CPU halves the figures.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from discrete_rae.commands.train import parse_args, run_config_from_args  # noqa: E402
from discrete_rae.pipeline import build_model  # noqa: E402
from discrete_rae.registry import DOMAINS  # noqa: E402
from discrete_rae.runtime import choose_device, set_threads  # noqa: E402


def samples_per_second(argv: list[str], steps: int, warmup: int) -> tuple[float, str]:
    """Time ``steps`` training steps of the configuration given by train.py flags ``argv``."""
    args = parse_args(argv)
    set_threads(args.threads)
    run = run_config_from_args(args)
    device = choose_device(args.device)
    prepared = DOMAINS.get(run.domain).prepare(run, progress=False)
    torch.manual_seed(0)
    model = build_model(run, prepared.codec).to(device).train()
    opt = model.configure_optimizer(run.train.lr)
    data, batch = prepared.train, run.train.batch_size
    order = torch.randperm(len(data))
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        idx = order[(i * batch) % (len(data) - batch):][:batch]
        loss = model.loss(data[idx].to(device), step=i)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    what = f"{run.model_name} on {run.domain} ({run.preset}), batch {batch}, threads {torch.get_num_threads()}"
    return steps * batch / seconds, what


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60, help="timed steps (default 60)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--compare", default=None, help="train.py flags of the reference configuration, quoted")
    args, train_argv = p.parse_known_args()
    rate, what = samples_per_second(train_argv, args.steps, args.warmup)
    print(f"{what}: {rate:.0f} samples/s")
    if args.compare is not None:  # the same flags, then the reference's (later flags win)
        ref, ref_what = samples_per_second(train_argv + shlex.split(args.compare), args.steps, args.warmup)
        print(f"reference {ref_what}: {ref:.0f} samples/s")
        print(f"ratio: {rate / ref:.2f}x")


if __name__ == "__main__":
    main()
