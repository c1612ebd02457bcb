"""The MOSES "training-set floor": score N random MOSES *training* molecules as if generated.

A perfect generator cannot beat the training data itself, so these figures are the floor/ceiling
of every metric: valid 1, unique ~1, Novelty 0, Filters ~1, FCD/Test ~0.05 at N = 30,000
(docs/REFERENCE.md §3; FCD has a strong finite-sample bias: ~1.25 at N = 1,000).  The sample is a seeded
random subset of the whole training file (the file is sorted, so its head is not representative).

Usage::

    python benchmarks/moses_floor.py --n 30000 --n-jobs 2            # full run (< 10 min on 2 cores)
    python benchmarks/moses_floor.py --n 2000 --fcd-sizes 500,1000    # quick look

Prints the metric table, the FCD-vs-sample-size figures and wall/CPU times, and ends with ONE line
of JSON.  Needs the molsets data files and (for FCD) fcd_torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from discrete_rae.metrics import moses_data  # noqa: E402
from discrete_rae.metrics.chemnet import chemnet_activations, fcd_available  # noqa: E402
from discrete_rae.metrics.frechet import frechet_distance, gaussian_stats  # noqa: E402
from discrete_rae.metrics.molecules import format_table, moses_metrics  # noqa: E402
from discrete_rae.metrics.mol_descriptors import canonicalize_parallel  # noqa: E402


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _fcd_test(smiles: list[str], stats: dict) -> float:
    mu, sigma = gaussian_stats(chemnet_activations(smiles))
    return frechet_distance(mu, sigma, stats["FCD"]["mu"], stats["FCD"]["sigma"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=30000, help="number of random training molecules (default 30000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-jobs", type=int, default=2, help="worker processes for RDKit work (default 2)")
    ap.add_argument("--fcd-sizes", default="1000", help="extra sample sizes for FCD/Test, comma separated ('' = none)")
    ap.add_argument("--fcd-repeats", type=int, default=3, help="random subsets per extra FCD size (default 3)")
    ap.add_argument("--no-fcd", action="store_true", help="skip FCD")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("moses_floor")

    if moses_data.moses_data_dir() is None:
        print("MOSES data files not found: " + moses_data.MOSES_INSTALL_HINT, file=sys.stderr)
        return 2
    use_fcd = not args.no_fcd
    if use_fcd and not fcd_available():
        log.warning("fcd_torch missing: FCD skipped (pip install --no-deps fcd_torch==1.0.7)")
        use_fcd = False
    progress = not args.no_progress

    train = moses_data.load_moses_smiles("train")
    rng = np.random.default_rng(args.seed)
    idx = rng.choice(len(train), size=args.n, replace=False)
    sample = [train[i] for i in idx]
    log.info("sampled %d of %d training SMILES (seed %d)", len(sample), len(train), args.seed)

    t0 = time.perf_counter()
    moses_data.moses_train_canonical(n_jobs=args.n_jobs, progress=progress)  # one-off, disk-cached
    train_cache_s = time.perf_counter() - t0
    del train

    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    metrics = moses_metrics(sample, train=None, n_jobs=args.n_jobs, progress=progress, fcd=use_fcd)
    wall_s, cpu_s = time.perf_counter() - t0, _cpu_seconds() - cpu0

    fcd_by_n: dict[str, dict[str, float]] = {}
    if use_fcd and "FCD/Test" in metrics:
        fcd_by_n[str(args.n)] = {"mean": metrics["FCD/Test"], "sd": 0.0, "repeats": 1}
        sizes = [int(s) for s in args.fcd_sizes.split(",") if s.strip()]
        stats = moses_data.moses_reference_stats("test")
        canon = [c for c in canonicalize_parallel(sample, args.n_jobs) if c is not None]
        for k in sizes:
            if k >= len(canon) or k < 2:
                continue
            vals = [_fcd_test([canon[i] for i in rng.choice(len(canon), k, replace=False)], stats)
                    for _ in range(args.fcd_repeats)]  # fmt: skip
            fcd_by_n[str(k)] = {"mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1)) if len(vals) > 1
                                else 0.0, "repeats": len(vals)}  # fmt: skip

    print()
    print(f"MOSES training-set floor: {args.n} random training molecules (seed {args.seed}), n_jobs={args.n_jobs}")
    print(format_table(metrics))
    if fcd_by_n:
        print("\nFCD/Test vs sample size (random training molecules):")
        for k, v in sorted(fcd_by_n.items(), key=lambda kv: int(kv[0])):
            print(f"  n={int(k):>6}: {v['mean']:.4f} +- {v['sd']:.4f} ({v['repeats']} subset(s))")
    load = os.getloadavg()
    print(f"\nwall time {wall_s:.1f}s, CPU time {cpu_s:.1f}s (this process + workers), "
          f"one-off canonical-train cache {train_cache_s:.1f}s, load average {load[0]:.1f}")  # fmt: skip
    floor_ok = bool(
        metrics.get("valid") == 1.0
        and metrics.get("Novelty", 1.0) == 0.0
        and (not use_fcd or metrics.get("FCD/Test", math.inf) < 0.1 or args.n < 20000)
    )
    record = {
        "benchmark": "moses_floor",
        "n": args.n,
        "seed": args.seed,
        "n_jobs": args.n_jobs,
        "metrics": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()},
        "fcd_by_n": fcd_by_n,
        "wall_s": round(wall_s, 1),
        "cpu_s": round(cpu_s, 1),
        "train_cache_s": round(train_cache_s, 1),
        "load_avg_1m": round(load[0], 2),
        "cpu_count": os.cpu_count(),
        "floor_ok": floor_ok,
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
