"""Latent-space Bayesian optimisation vs random search on a trained run (the `optimize` command).

Runs exactly what ``python -m discrete_rae optimize`` runs (same flags, same defaults: 5 rounds
of 50 proposals, 10 seeds, 2,000 training strings per seed, 10 decodes per proposal), then
prints the comparison: the median over seeds of each method's best score, the share of valid
proposals, BO's median best against random search's (the ratio when both are positive, as for
penalized logP; the difference always, which is the figure to read for log-scores such as the
expression objective), the GP's held-out fit and where the time went.

Usage:
    python benchmarks/optimize_bo.py --run runs/grammar_vae-molecules [--objective penalized_logp]
        [--rounds 5 --batch 50 --seeds 10 --n-train 2000 --decodes 10] [--out DIR] [--threads 1]

The objective defaults to the one of the run's domain. Prints ONE JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from discrete_rae.checkpoint import load_checkpoint  # noqa: E402
from discrete_rae.cli import main  # noqa: E402
from discrete_rae.optimize import OBJECTIVES  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--objective", default=None, help="default: the objective of the run's domain")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--decodes", type=int, default=10)
    p.add_argument("--out", default=None, help="default: RUN/optimize-OBJECTIVE")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    return p.parse_args()


def default_objective(run: Path) -> str:
    domain = load_checkpoint(run / "checkpoint.pt")["domain"]
    names = [n for n, o in OBJECTIVES.items() if o.domain == domain]
    if not names:
        raise SystemExit(f"no objective for a {domain} run")
    return names[0]


def comparison(summary: dict) -> dict:
    """BO vs random: median bests, valid fractions, ratio (both > 0 only) and difference."""
    bo, rnd = summary["bo"]["median_best"], summary["random"]["median_best"]
    both = bo is not None and rnd is not None
    return {"bo_median_best": bo, "random_median_best": rnd,
            "bo_valid": summary["bo"]["valid_fraction"], "random_valid": summary["random"]["valid_fraction"],
            "ratio": bo / rnd if both and bo > 0 and rnd > 0 else None,
            "difference": bo - rnd if both else None, "maximize": summary["maximize"],
            "gp_test_rmse": summary["gp"]["test_rmse_mean"], "gp_test_loglik": summary["gp"]["test_loglik_mean"],
            "test_rmse_of_mean": summary["gp"]["test_rmse_of_mean_mean"]}


def main_benchmark() -> int:
    args = parse_args()
    run = Path(args.run)
    objective = args.objective or default_objective(run)
    out = Path(args.out) if args.out else run / f"optimize-{objective}"
    argv = ["optimize", "--run", str(run), "--objective", objective, "--rounds", str(args.rounds), "--batch",
            str(args.batch), "--seeds", str(args.seeds), "--n-train", str(args.n_train), "--decodes",
            str(args.decodes), "--out", str(out), "--threads", str(args.threads), "--device", args.device, "-q"]
    t0 = time.monotonic()
    code = main(argv)
    wall = time.monotonic() - t0
    if code:
        return code
    summary = json.loads((out / "summary.json").read_text())
    cmp = comparison(summary)
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    better = "higher" if cmp["maximize"] else "lower"
    print(f"\n{objective} ({better} is better), {args.seeds} seeds x {args.rounds} rounds x {args.batch} proposals")
    print(f"median best      BO {fmt(cmp['bo_median_best'])}   random {fmt(cmp['random_median_best'])}")
    print(f"valid fraction   BO {cmp['bo_valid']:.3f}   random {cmp['random_valid']:.3f}")
    print(f"BO vs random     ratio {fmt(cmp['ratio'])}   difference {fmt(cmp['difference'])}")
    print(f"GP test RMSE     {cmp['gp_test_rmse']:.3f} (predicting the mean: {cmp['test_rmse_of_mean']:.3f}), "
          f"log-likelihood {cmp['gp_test_loglik']:.3f} per point")
    phases = {k: float(np.mean([s["timing"].get(k, 0.0) for s in summary["per_seed"]]))
              for k in ("gp_fit", "acquisition", "decode_score")}
    print("mean seconds per seed: " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
          + f"; wall {wall:.0f} s (load average {os.getloadavg()[0]:.1f})")
    print(json.dumps({"benchmark": "optimize_bo", "run": str(run), "objective": objective, **cmp,
                      "seeds": args.seeds, "rounds": args.rounds, "batch": args.batch, "n_train": args.n_train,
                      "decodes": args.decodes, "seconds_per_seed": phases, "wall_s": round(wall, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main_benchmark())
