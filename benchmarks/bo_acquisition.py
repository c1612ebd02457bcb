"""How `optimize` picks a batch of q codes: three ways to maximise qLogEI, on a synthetic GP.

A GP is fitted to N random points of the unit cube in D dimensions with the utility
f(x) = x1 + x2 + x3 - (x4^2 + x5^2 + x6^2) + noise (the sizes of a quick-preset molecules run:
D = 56, 1,800 GP points, q = 50). Then a batch is chosen by

- ``joint``: BoTorch's ``optimize_acqf`` on all q points at once from random starting batches
  (2 restarts, 128 raw samples, no retries);
- ``sequential``: ``optimize_acqf(sequential=True)``, greedy, one point at a time conditioned on
  the earlier ones (1 restart, 64 raw samples, 50 L-BFGS iterations per point);
- ``pool``: what `optimize` does (:func:`discrete_rae.optimize.propose_batch`): the q best of a
  pool of random and perturbed best points by analytic log-EI as the start of the joint run.

Reported per method: wall seconds, the batch's qLogEI (same MC sampler for all), the mean GP
prediction at the batch and the mean and max of the noise-free f there. With ``--fit-timing``
also the cost of `optimize`'s GP fits (:func:`discrete_rae.optimize.fit_gp`): the full first fit
and a warm-started refit after q more points (at most ``Settings.refit_iters`` iterations).

Usage:
    python benchmarks/bo_acquisition.py [--dim 56 --n 1800 --q 50 --fit-iters 15] [--methods joint,sequential,pool]
        [--fit-timing]

Prints ONE JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from discrete_rae.optimize import MAX_CHOLESKY, Settings, fit_gp, propose_batch  # noqa: E402


def utility(x: torch.Tensor) -> torch.Tensor:
    """Noise-free synthetic utility [N] of points x [N, D] (D >= 6)."""
    return x[:, :3].sum(-1) - x[:, 3:6].pow(2).sum(-1)


def fit(x: torch.Tensor, y: torch.Tensor, iters: int):
    """SingleTaskGP with standardised outcomes, at most ``iters`` L-BFGS iterations (time saver:
    the comparison is between batch optimisers on the same GP, not about the GP)."""
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    gp = SingleTaskGP(x, y, outcome_transform=Standardize(m=1))
    fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp), optimizer_kwargs={"options": {"maxiter": iters}})
    return gp.eval()


def choose(method: str, gp, x: torch.Tensor, y: torch.Tensor, q: int) -> torch.Tensor:
    from botorch.acquisition.logei import qLogExpectedImprovement
    from botorch.optim import optimize_acqf
    from botorch.sampling import SobolQMCNormalSampler

    if method == "pool":
        return propose_batch(gp, x, y, Settings(batch=q), seed=0)
    acq = qLogExpectedImprovement(gp, best_f=y.max(), sampler=SobolQMCNormalSampler(torch.Size([64]), seed=0))
    bounds = torch.stack([torch.zeros(x.shape[1]), torch.ones(x.shape[1])]).double()
    sequential = method == "sequential"
    cand, _ = optimize_acqf(acq, bounds=bounds, q=q, num_restarts=1 if sequential else 2,
                            raw_samples=64 if sequential else 128, sequential=sequential,
                            options={"seed": 0, "maxiter": 50 if sequential else 200},
                            retry_on_optimization_warning=False)
    return cand.detach()


def time_fits(x: torch.Tensor, y: torch.Tensor, q: int, gen: torch.Generator) -> dict[str, float]:
    """Seconds of optimize's full GP fit on (x, y) and of the warm refit after q more points."""
    t0 = time.monotonic()
    _, hyper = fit_gp(x, y)
    full = time.monotonic() - t0
    extra = torch.rand(q, x.shape[1], generator=gen, dtype=x.dtype)
    x2, y2 = torch.cat([x, extra]), torch.cat([y, utility(extra)[:, None]])
    t0 = time.monotonic()
    fit_gp(x2, y2, hyper, Settings().refit_iters)
    return {"full_fit_s": round(full, 1), "warm_refit_s": round(time.monotonic() - t0, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=56)
    p.add_argument("--n", type=int, default=1800)
    p.add_argument("--q", type=int, default=50)
    p.add_argument("--fit-iters", type=int, default=15)
    p.add_argument("--methods", default="joint,sequential,pool")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fit-timing", action="store_true", help="also time optimize's full GP fit and a warm refit")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import gpytorch
    from botorch.acquisition.logei import qLogExpectedImprovement
    from botorch.sampling import SobolQMCNormalSampler

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, args.dim, generator=gen, dtype=torch.float64)
    y = (utility(x) + 0.1 * torch.randn(args.n, generator=gen, dtype=torch.float64))[:, None]
    results = {}
    with gpytorch.settings.max_cholesky_size(MAX_CHOLESKY), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.monotonic()
        gp = fit(x, y, args.fit_iters)
        print(f"GP fit ({args.fit_iters} iterations at most): {time.monotonic() - t0:.1f} s")
        judge = qLogExpectedImprovement(gp, best_f=y.max(), sampler=SobolQMCNormalSampler(torch.Size([256]), seed=1))
        if args.fit_timing:
            results["fit"] = time_fits(x, y, args.q, gen)
            print("optimize's GP fits: " + "  ".join(f"{k} {v}" for k, v in results["fit"].items()), flush=True)
        for method in filter(None, args.methods.split(",")):
            t0 = time.monotonic()
            batch = choose(method, gp, x, y, args.q)
            seconds = time.monotonic() - t0
            with torch.no_grad():
                results[method] = {"seconds": round(seconds, 1), "qlogei": round(float(judge(batch[None])), 3),
                                   "mean_pred": round(float(gp.posterior(batch).mean.mean()), 3),
                                   "mean_f": round(float(utility(batch).mean()), 3),
                                   "max_f": round(float(utility(batch).max()), 3)}
            print(f"{method:<11} " + "  ".join(f"{k} {v}" for k, v in results[method].items()), flush=True)
    print(f"(best f in the GP data: {float(utility(x).max()):.3f}; load average {os.getloadavg()[0]:.1f})")
    print(json.dumps({"benchmark": "bo_acquisition", "dim": args.dim, "n": args.n, "q": args.q,
                      "threads": args.threads, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
