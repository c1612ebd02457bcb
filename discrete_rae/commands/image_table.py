"""``image-table``: train the image models on one data set and tabulate them (see :mod:`discrete_rae.image_table`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import UsageError
from ..image_table import (DEFAULT_MODELS, TableSpec, extra_sampler_scores, format_table, inception_scores,
                           train_or_reuse)
from ..io import write_text
from ..registry import MODELS, SAMPLERS
from ..rundir import check_run_name
from ..runtime import choose_device, choose_precision, set_threads
from .common import add_common

NAME = "image-table"
HELP = "train image models (any zoo rows; default the RAE paper's six) on one data set and tabulate them"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", help="digits (default) | mnist5k | mnist | fashion_mnist | cifar10 | celeba")
    p.add_argument("--preset", default="quick", help="smoke | quick (default) | paper")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated zoo rows that run on images, any number (default: the RAE paper's six)")
    p.add_argument("--seed", type=int, default=0, help="training seed shared by every model (default 0)")
    p.add_argument("--max-steps", type=int, default=0,
                   help="training steps of every model (default 0: the preset's budget, 800 for quick)")
    p.add_argument("--samplers", default="",
                   help="extra ex-post samplers scored per row, comma-separated (e.g. two_stage,flow: trained on "
                        "each run's codes once, stored in its checkpoint); default none")
    p.add_argument("--runs-dir", default="runs", help="parent of image-table-DATASET (default: runs)")
    p.add_argument("--data-dir", default="", help="data directory (default: the toolkit's)")
    p.add_argument("--retrain", action="store_true", help="train again even where a finished run exists")
    p.add_argument("--inception", action="store_true",
                   help="also report Inception FID where pytorch_fid and its weights are available (else skipped)")
    p.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16")
    add_common(p)


def run(args: argparse.Namespace) -> int:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for name in models:
        if "images" not in MODELS.get(name).domains:
            raise UsageError(f"model {name!r} does not run on images")
    extra = tuple(n.strip() for n in args.samplers.split(",") if n.strip())
    for name in extra:
        if getattr(SAMPLERS.get(name), "discrete", False):
            raise UsageError(f"--samplers {name!r} samples categorical codes; the table's extra samplers are "
                             "continuous (e.g. two_stage, flow)")
    set_threads(args.threads)
    device = choose_device(args.device)
    amp = choose_precision(args.precision, device)
    if args.max_steps < 0:
        raise UsageError(f"--max-steps {args.max_steps}: expected 0 (the preset's budget) or a positive number")
    spec = TableSpec(dataset=args.dataset, preset=args.preset, seed=args.seed, data_dir=args.data_dir,
                     max_steps=args.max_steps)
    table_dir = Path(args.runs_dir) / check_run_name(f"image-table-{args.dataset}", "--dataset")
    t0 = time.monotonic()
    rows = [{**train_or_reuse(name, spec, table_dir, device, amp, args.retrain, progress=not args.quiet),
             "model": name} for name in models]
    inception = inception_scores(models, table_dir, device, rows[0].get("n_samples", 1000)) if args.inception else None
    n = rows[0].get("n_samples", 1000)
    scores = extra_sampler_scores(models, table_dir, device, extra, n) if extra else None
    text = format_table(rows, spec, time.monotonic() - t0, inception, scores, extra)
    table_dir.mkdir(parents=True, exist_ok=True)
    write_text(table_dir / "table.md", text)
    print(text)
    print(f"table written to {table_dir / 'table.md'}")
    return 0
