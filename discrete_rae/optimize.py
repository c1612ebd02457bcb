"""``python -m discrete_rae optimize``: Bayesian optimisation in a trained run's latent space.

    python -m discrete_rae optimize --run runs/grammar_vae-molecules --objective penalized_logp
    python -m discrete_rae optimize --run runs/grammar_vae-expressions --objective expression --seeds 3

The protocol follows the Grammar VAE paper (Kusner et al. 2017). For each seed:

1. ``n_train`` training strings are drawn at random, encoded (posterior mean for a VAE) and
   scored; 90% train the GP, the held-out 10% give its test RMSE and its mean predictive
   log-likelihood log N(y | mu(x), var(x) + noise) per point.
2. The GP is BoTorch's ``SingleTaskGP`` (RBF kernel with one length scale per dimension,
   Gaussian noise, hyperparameters by maximum marginal likelihood) on the codes mapped to the
   unit cube of the box spanned by the GP's training codes (per-dimension min/max), with
   standardised outcomes. The optimiser maximises a utility: the score, or minus the score
   when lower is better.
3. Each of ``rounds`` rounds proposes ``batch`` codes in the box by maximising the batch
   log expected improvement (qLogEI) over the best utility seen so far, decodes each code
   ``decodes`` times with sampling (temperature 1) and keeps the most frequent valid string.
   A code with no valid decode gets the worst training value. The proposals join the GP's data
   and the GP is refitted.
4. Baseline, in the same run and with the same seed: random search, the same number of codes
   drawn uniformly in the same box, decoded and scored the same way.

Objectives (:data:`OBJECTIVES`; scores in the objective's own units):

- ``penalized_logp`` (molecules, higher is better): logP - SA - cycle penalty, each term
  standardised with the ZINC250k statistics (:func:`discrete_rae.chem.penalized_logp`).
- ``expression`` (expressions, lower is better): log(1 + mean_x min((f(x) - f*(x))^2, 1000)) over
  1000 points of linspace(-10, 10) with f*(x) = 1/3 + x + sin(x * x); a non-finite value at a
  point counts as the cap 1000, an expression that cannot be evaluated scores log(1001).

Every random choice of a seed (subsample, split, GP restarts, acquisition, random search,
decoding) comes from generators seeded from that seed; the global torch RNG is forked around the
BoTorch calls that use it, so a run never changes, nor depends on, the caller's random state.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from .io import write_json
from .registry import Registry

if TYPE_CHECKING:
    from .domains.base import TextDomain

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'discrete_rae[optimize]'"
# Exact GPs beyond gpytorch's default Cholesky limit (800 points) switch to conjugate gradients,
# which were no faster here at 1,800 points and less accurate; the default --n-train 2000 fits.
MAX_CHOLESKY = 10_000
METHODS = ("bo", "random")


# --- objectives ---------------------------------------------------------------------------------
def f_star(x: np.ndarray) -> np.ndarray:
    """The Grammar VAE's target expression 1/3 + x + sin(x * x)."""
    return 1 / 3 + x + np.sin(x * x)


def expression_score(text: str, cap: float = 1000.0) -> float:
    """log(1 + mean(min((f(x) - f*(x))^2, cap))) on expr_eval.GRID; log(1 + cap) if f fails."""
    from .expr_eval import GRID, ExpressionError, evaluate

    try:
        y = evaluate(text, GRID)
    except ExpressionError:
        return math.log(1 + cap)
    with np.errstate(all="ignore"):
        err = (y - f_star(GRID)) ** 2
    return float(np.log1p(np.mean(np.where(np.isfinite(err), np.minimum(err, cap), cap))))


def _penalized_logp(text: str) -> float:
    from .chem import penalized_logp

    value = penalized_logp(text, normalized=True)
    return math.nan if value is None else float(value)


def _draw_molecules(texts: Sequence[str], labels: Sequence[str], path: Path) -> None:
    from .chem import draw_grid

    draw_grid(list(texts), path, n_per_row=3, legends=list(labels))


def _draw_expressions(texts: Sequence[str], labels: Sequence[str], path: Path) -> None:
    from .expr_eval import GRID
    from .interpolate import plot_expressions

    plot_expressions(texts, labels, path, "best expressions found",
                     reference=("f* = 1/3 + x + sin(x*x)", f_star(GRID)))


@dataclass(frozen=True)
class Objective:
    """A score of strings of one domain. ``fn`` scores one valid string (NaN: cannot be scored);
    ``draw(texts, labels, path)`` pictures the best strings (molecule grid, curves vs the target)."""

    name: str
    domain: str
    maximize: bool
    description: str
    fn: Callable[[str], float]
    draw: Callable[[Sequence[str], Sequence[str], Path], None]

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """Scores [N] in the objective's units (NaN where a string cannot be scored)."""
        return np.array([self.fn(t) for t in texts], dtype=np.float64)

    def utility(self, scores: np.ndarray | float) -> np.ndarray | float:
        """What the optimiser maximises: the score, or minus it when lower is better."""
        return scores if self.maximize else -scores

    def worst(self, scores: np.ndarray) -> float:
        """The worst finite score in ``scores`` (what an invalid proposal is given)."""
        finite = scores[np.isfinite(scores)]
        return float(finite.min() if self.maximize else finite.max())

    def best(self, scores: Sequence[float]) -> float | None:
        """The best of ``scores`` (None when empty)."""
        if len(scores) == 0:
            return None
        return float(max(scores) if self.maximize else min(scores))


OBJECTIVES: Registry[Objective] = Registry("objective")
OBJECTIVES.register("penalized_logp", Objective(
    "penalized_logp", "molecules", True, "normalised penalized logP (higher is better)", _penalized_logp,
    _draw_molecules))
OBJECTIVES.register("expression", Objective(
    "expression", "expressions", False, "log(1 + MSE) to 1/3 + x + sin(x*x) (lower is better)", expression_score,
    _draw_expressions))


# --- settings, results --------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """The protocol's sizes. ``pool_*``, ``local_std``: the candidates ranked by log-EI to start
    the batch optimisation (``pool_random`` uniform points, ``pool_local`` perturbations with std
    ``local_std`` in unit-cube units of the ``pool_top`` best codes; see :func:`propose_batch`);
    ``mc_samples``: quasi-MC samples of qLogEI; ``acq_iters``: L-BFGS iterations of the batch
    optimisation; ``refit_iters``: of the warm-started GP refits after the first round."""

    rounds: int = 5
    batch: int = 50
    n_train: int = 2000
    decodes: int = 10
    test_fraction: float = 0.1
    pool_random: int = 2048
    pool_local: int = 512
    pool_top: int = 64
    local_std: float = 0.05
    mc_samples: int = 64
    acq_iters: int = 100
    refit_iters: int = 30


@dataclass
class Proposal:
    """A proposed code's outcome: its round (1-based), the most frequent valid decode in the
    domain's canonical spelling (None: no valid decode) and its score (None when invalid)."""

    round: int
    text: str | None
    score: float | None


@dataclass
class Timer:
    """Seconds spent per phase, summed over calls."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.monotonic() - t0


class MissingExtraError(ImportError):
    """BoTorch (the ``optimize`` extra) is not installed."""


def require_botorch() -> None:
    """Raise :class:`MissingExtraError` with the install command when BoTorch is missing."""
    try:
        import botorch  # noqa: F401
    except ImportError as err:
        raise MissingExtraError(f"optimize needs BoTorch ({err}); install it with: {INSTALL_HINT}") from None


# --- decoding -----------------------------------------------------------------------------------
def most_frequent_valid(decodes: Sequence[str | None], canonical: Callable[[str], str | None]) -> str | None:
    """The most frequent valid decode in canonical spelling (ties: the first seen); None if none."""
    counts = Counter(c for c in (canonical(d) for d in decodes if d is not None) if c is not None)
    return counts.most_common(1)[0][0] if counts else None


@dataclass
class Decoder:
    """Codes -> (strings, scores): ``decodes`` sampled decodes per code, the most frequent valid."""

    domain: TextDomain
    model: Any
    device: torch.device
    objective: Objective
    decodes: int

    def __call__(self, codes: Tensor, generator: torch.Generator) -> tuple[list[str | None], np.ndarray]:
        """codes [B, D] -> B strings (None: invalid) and scores [B] (NaN: invalid)."""
        repeated = codes.float().repeat_interleave(self.decodes, 0)
        texts = self.domain.decode(self.model, repeated, self.device, temperature=1.0, generator=generator)
        chosen = [most_frequent_valid(texts[i:i + self.decodes], self.domain.canonical)
                  for i in range(0, len(texts), self.decodes)]
        scores = np.full(len(chosen), np.nan)
        valid = [i for i, t in enumerate(chosen) if t is not None]
        scores[valid] = self.objective.score([chosen[i] for i in valid])
        return [t if np.isfinite(s) else None for t, s in zip(chosen, scores)], scores


def _proposals(round_: int, texts: Sequence[str | None], scores: np.ndarray) -> list[Proposal]:
    return [Proposal(round_, t, float(s) if t is not None else None) for t, s in zip(texts, scores)]


# --- the box of training codes --------------------------------------------------------------------
@dataclass
class Box:
    """Per-dimension bounds lo, hi [D] of a set of codes; maps codes to and from the unit cube."""

    lo: Tensor
    hi: Tensor

    @classmethod
    def of(cls, codes: Tensor) -> "Box":
        return cls(codes.min(0).values, codes.max(0).values)

    @property
    def span(self) -> Tensor:
        # a dimension without spread (a collapsed unit) maps to a fixed point, not to a division by 0
        return torch.where(self.hi > self.lo, self.hi - self.lo, torch.ones_like(self.hi))

    def to_unit(self, codes: Tensor) -> Tensor:
        return (codes - self.lo) / self.span

    def from_unit(self, u: Tensor) -> Tensor:
        return self.lo + u * self.span


# --- GP and acquisition ---------------------------------------------------------------------------
def fit_gp(x: Tensor, y: Tensor, warm: dict[str, Tensor] | None = None,
           refit_iters: int = 30) -> tuple[Any, dict[str, Tensor]]:
    """Fit a SingleTaskGP to x [N, D] (unit cube) and utilities y [N, 1]; returns the GP and its
    hyperparameters. With ``warm`` (hyperparameters of the previous round) the fit starts there
    and runs at most ``refit_iters`` L-BFGS iterations, since 50 new points move the optimum
    little: at N = 1,800, D = 56 on one CPU thread the full fit took 95 s (about 1 s per
    marginal-likelihood gradient) and the warm refit 5.7 s (benchmarks/bo_acquisition.py --fit-timing)."""
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    gp = SingleTaskGP(x, y, outcome_transform=Standardize(m=1))
    mll = ExactMarginalLogLikelihood(gp.likelihood, gp)
    if warm is None:
        fit_gpytorch_mll(mll)
    else:
        gp.load_state_dict(warm, strict=False)
        fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": refit_iters}})
    hyper = {k: v.detach().clone() for k, v in gp.state_dict().items() if not k.startswith("outcome_transform")}
    return gp.eval(), hyper


def gp_test_stats(gp: Any, x: Tensor, y: Tensor) -> dict[str, float]:
    """RMSE and mean predictive log-likelihood (noise included) of the GP on x [M, D], y [M, 1]."""
    with torch.no_grad():
        post = gp.posterior(x, observation_noise=True)
        mu, var = post.mean.squeeze(-1), post.variance.squeeze(-1).clamp_min(1e-12)
    resid = y.squeeze(-1) - mu
    loglik = -0.5 * (torch.log(2 * math.pi * var) + resid ** 2 / var)
    return {"rmse": float(resid.pow(2).mean().sqrt()), "loglik": float(loglik.mean())}


def propose_batch(gp: Any, x: Tensor, y: Tensor, settings: Settings, seed: int) -> Tensor:
    """A batch [q, D] in the unit cube maximising qLogEI over the best utility in y [N, 1].

    The joint L-BFGS run starts from the q best points of a pool (random points of the cube and
    perturbed best training codes) ranked by analytic log-EI, one batched posterior. Why
    (benchmarks/bo_acquisition.py: N = 1,800, D = 56, q = 50, one CPU thread, synthetic
    utility whose best data point is 2.46): BoTorch's joint optimisation from random batches
    took 11.5 s but left most points near their random starts (mean utility of the batch 0.66,
    qLogEI -0.388); ``sequential=True`` (greedy) reached qLogEI -0.346 and mean utility 2.40 in
    100 s per round; this start gives qLogEI -0.384 and mean utility 2.47 in 10.3 s.
    """
    from botorch.acquisition.analytic import LogExpectedImprovement
    from botorch.acquisition.logei import qLogExpectedImprovement
    from botorch.optim import optimize_acqf
    from botorch.sampling import SobolQMCNormalSampler

    gen = torch.Generator().manual_seed(seed)
    q, dim = settings.batch, x.shape[1]
    best_f = y.max()
    top = x[y.squeeze(-1).argsort(descending=True)[: settings.pool_top]]
    local = top[torch.randint(len(top), (settings.pool_local,), generator=gen)]
    local = (local + settings.local_std * torch.randn(local.shape, generator=gen, dtype=x.dtype)).clamp(0, 1)
    pool = torch.cat([torch.rand(settings.pool_random, dim, generator=gen, dtype=x.dtype), local])
    with torch.no_grad():
        ei = LogExpectedImprovement(gp, best_f=best_f)
        values = torch.cat([ei(chunk.unsqueeze(1)) for chunk in pool.split(1024)])
    start = pool[values.topk(min(q, len(pool))).indices]
    if len(start) < q:  # a tiny pool: fill up with random points
        start = torch.cat([start, torch.rand(q - len(start), dim, generator=gen, dtype=x.dtype)])
    acq = qLogExpectedImprovement(gp, best_f=best_f,
                                  sampler=SobolQMCNormalSampler(torch.Size([settings.mc_samples]), seed=seed))
    bounds = torch.stack([torch.zeros(dim, dtype=x.dtype), torch.ones(dim, dtype=x.dtype)])
    cand, _ = optimize_acqf(acq, bounds=bounds, q=q, num_restarts=1, batch_initial_conditions=start.unsqueeze(0),
                            options={"maxiter": settings.acq_iters}, retry_on_optimization_warning=False)
    return cand.detach()


@contextmanager
def _botorch_context(seed: int) -> Iterator[None]:
    """Seeded, private global CPU RNG (BoTorch's fit restarts draw from it), exact Cholesky, and
    BoTorch's numerical/optimisation warnings (line searches stopping early) sent to the debug log."""
    import gpytorch

    with torch.random.fork_rng(devices=[]), gpytorch.settings.max_cholesky_size(MAX_CHOLESKY), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.default_generator.manual_seed(seed)
        yield
    for w in caught:
        log.debug("botorch: %s", w.message)


# --- the two methods ------------------------------------------------------------------------------
def bayes_opt(x: Tensor, y: Tensor, test: tuple[Tensor, Tensor], box: Box, decoder: Decoder, worst: float,
              settings: Settings, seeds: np.ndarray, timer: Timer,
              tick: Callable[[], None]) -> tuple[list[Proposal], dict]:
    """BO rounds from GP data x [N, D] (unit cube), utilities y [N, 1]; returns the proposals and
    the first-round GP's test statistics on ``test`` = (x [M, D], y [M, 1])."""
    dec_gen = torch.Generator(device=decoder.device).manual_seed(int(seeds[0]))
    hyper, stats, out = None, {}, []
    for r in range(1, settings.rounds + 1):
        with timer("gp_fit"):
            gp, hyper = fit_gp(x, y, hyper, settings.refit_iters)
        if r == 1:
            stats = gp_test_stats(gp, *test)
        with timer("acquisition"):
            u = propose_batch(gp, x, y, settings, int(seeds[r]))
        with timer("decode_score"):
            texts, scores = decoder(box.from_unit(u), dec_gen)
        util = np.where(np.isfinite(scores), decoder.objective.utility(scores), decoder.objective.utility(worst))
        x, y = torch.cat([x, u]), torch.cat([y, torch.as_tensor(util, dtype=y.dtype)[:, None]])
        out += _proposals(r, texts, scores)
        tick()
    return out, stats


def random_search(box: Box, decoder: Decoder, settings: Settings, seeds: np.ndarray, timer: Timer,
                  tick: Callable[[], None]) -> list[Proposal]:
    """``rounds`` batches of codes uniform in the box, decoded and scored like BO's."""
    code_gen = torch.Generator().manual_seed(int(seeds[0]))
    dec_gen = torch.Generator(device=decoder.device).manual_seed(int(seeds[1]))
    out: list[Proposal] = []
    for r in range(1, settings.rounds + 1):
        u = torch.rand(settings.batch, box.lo.shape[0], generator=code_gen, dtype=box.lo.dtype)
        with timer("decode_score"):
            texts, scores = decoder(box.from_unit(u), dec_gen)
        out += _proposals(r, texts, scores)
        tick()
    return out


# --- per seed -------------------------------------------------------------------------------------
@dataclass
class TrainingPool:
    """Codes [M, D] (float64) and scores [M] of training strings, by index into the training set."""

    index: dict[int, int]
    codes: Tensor
    scores: np.ndarray

    def rows(self, idx: np.ndarray) -> tuple[Tensor, np.ndarray]:
        pos = [self.index[int(i)] for i in idx]
        return self.codes[pos], self.scores[pos]


def split_for_seed(seed: int, n_available: int, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """(GP-train, test) indices into the training set: a seeded subsample of n_train, split 90/10."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    idx = rng.choice(n_available, size=min(settings.n_train, n_available), replace=False)
    n_test = max(1, int(round(settings.test_fraction * len(idx))))
    return idx[n_test:], idx[:n_test]


def build_pool(model: Any, domain: TextDomain, train_ids: Tensor, train_texts: Sequence[str], objective: Objective,
               idx: np.ndarray, device: torch.device) -> TrainingPool:
    """Encode and score the training strings ``idx`` (the union of every seed's subsample) once."""
    idx = np.unique(idx)
    codes = domain.encode(model, train_ids[torch.from_numpy(idx)], device).double()
    scores = objective.score([train_texts[i] for i in idx])
    return TrainingPool({int(i): k for k, i in enumerate(idx)}, codes, scores)


def run_seed(seed: int, pool: TrainingPool, split: tuple[np.ndarray, np.ndarray], decoder: Decoder,
             settings: Settings, tick: Callable[[], None]) -> dict[str, Any]:
    """Both methods on one seed; returns the per-seed record (proposals, GP test figures, timing)."""
    objective, timer = decoder.objective, Timer()
    # independent streams: [0] BO's decoding, [1..rounds] acquisitions, [rounds+1] random codes,
    # [rounds+2] random search's decoding, [rounds+3] BoTorch's (forked) global RNG
    seeds = np.random.SeedSequence([seed, 1]).generate_state(settings.rounds + 4)
    (z_tr, s_tr), (z_te, s_te) = pool.rows(split[0]), pool.rows(split[1])
    keep_tr, keep_te = np.isfinite(s_tr), np.isfinite(s_te)  # drop strings the objective cannot score
    z_tr, s_tr = z_tr[torch.from_numpy(keep_tr)], s_tr[keep_tr]
    z_te, s_te = z_te[torch.from_numpy(keep_te)], s_te[keep_te]
    box = Box.of(z_tr)
    as_y = lambda s: torch.as_tensor(objective.utility(s), dtype=torch.float64)[:, None]  # noqa: E731
    worst = objective.worst(s_tr)
    with _botorch_context(int(seeds[-1])):
        bo, stats = bayes_opt(box.to_unit(z_tr), as_y(s_tr), (box.to_unit(z_te), as_y(s_te)), box, decoder, worst,
                              settings, seeds[: settings.rounds + 1], timer, tick)
    rand = random_search(box, decoder, settings, seeds[settings.rounds + 1: settings.rounds + 3], timer, tick)
    return {"seed": seed, "n_gp_train": len(s_tr), "n_gp_test": len(s_te), "train_best": objective.best(list(s_tr)),
            "worst_train": worst, "gp_test_rmse": stats["rmse"], "gp_test_loglik": stats["loglik"],
            "test_rmse_of_mean": float(np.sqrt(np.mean((s_te - s_tr.mean()) ** 2))),  # the GP's trivial rival
            "bo": method_record(bo, objective, settings.rounds),
            "random": method_record(rand, objective, settings.rounds),
            "timing": {k: round(v, 2) for k, v in timer.seconds.items()}}


def best_so_far(proposals: Sequence[Proposal], objective: Objective, rounds: int) -> list[float | None]:
    """Best valid score among the proposals of rounds 1..r, for r = 1..rounds (None: none yet)."""
    out, best = [], None
    for r in range(1, rounds + 1):
        found = [p.score for p in proposals if p.round == r and p.score is not None]
        best = objective.best(found + ([best] if best is not None else []))
        out.append(best)
    return out


def method_record(proposals: Sequence[Proposal], objective: Objective, rounds: int) -> dict[str, Any]:
    """One method on one seed: counts, mean valid score, best, best per round, the proposals."""
    scores = [p.score for p in proposals if p.score is not None]
    return {"n_proposals": len(proposals), "n_valid": len(scores),
            "valid_fraction": len(scores) / max(len(proposals), 1),
            "mean_valid_score": float(np.mean(scores)) if scores else None, "best": objective.best(scores),
            "best_per_round": best_so_far(proposals, objective, rounds),
            "proposals": [[p.round, p.text, p.score] for p in proposals]}


# --- aggregate --------------------------------------------------------------------------------------
def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.median(present)) if present else None


def top_unique(records: Sequence[dict[str, Any]], objective: Objective, k: int = 3) -> list[dict[str, Any]]:
    """The k best distinct valid strings over all seeds' proposals, with their scores."""
    best: dict[str, float] = {}
    for rec in records:
        for _, text, score in rec["proposals"]:
            if text is not None and (text not in best or objective.best([score, best[text]]) == score):
                best[text] = score
    ranked = sorted(best.items(), key=lambda kv: -objective.utility(kv[1]))
    return [{"text": t, "score": s} for t, s in ranked[:k]]


def aggregate(per_seed: Sequence[dict[str, Any]], objective: Objective, rounds: int) -> dict[str, Any]:
    """Per method over seeds: valid fraction, mean valid score, median best, best per round, top 3."""
    out: dict[str, Any] = {}
    for method in METHODS:
        recs = [s[method] for s in per_seed]
        scores = [p[2] for r in recs for p in r["proposals"] if p[2] is not None]
        n = sum(r["n_proposals"] for r in recs)
        out[method] = {
            "valid_fraction": len(scores) / max(n, 1), "n_proposals": n,
            "mean_valid_score": float(np.mean(scores)) if scores else None,
            "best_per_seed": [r["best"] for r in recs], "median_best": _median([r["best"] for r in recs]),
            "median_best_per_round": [_median([r["best_per_round"][i] for r in recs]) for i in range(rounds)],
            "top3": top_unique(recs, objective)}
    out["gp"] = {name: float(np.mean([s[key] for s in per_seed])) for name, key in (
        ("test_rmse_mean", "gp_test_rmse"), ("test_loglik_mean", "gp_test_loglik"),
        ("test_rmse_of_mean_mean", "test_rmse_of_mean"))}
    return out


# --- the whole experiment ---------------------------------------------------------------------------
def optimize(model: Any, domain: TextDomain, train_ids: Tensor, train_texts: Sequence[str], objective: Objective,
             settings: Settings, seeds: Sequence[int], device: torch.device, progress: bool = True) -> dict[str, Any]:
    """BO and random search on every seed; returns the summary (see :func:`aggregate`).

    train_ids [N, L]: the run's encoded training strings; train_texts: the N strings.
    """
    from tqdm.auto import tqdm

    require_botorch()
    t0 = time.monotonic()
    splits = {s: split_for_seed(s, len(train_texts), settings) for s in seeds}
    pool = build_pool(model, domain, train_ids, train_texts, objective,
                      np.concatenate([np.concatenate(v) for v in splits.values()]), device)
    decoder = Decoder(domain, model, device, objective, settings.decodes)
    per_seed = []
    with tqdm(total=2 * len(seeds) * settings.rounds, desc="optimize (seeds x rounds x methods)", disable=not progress,
              leave=False) as bar:
        for s in seeds:
            per_seed.append(run_seed(s, pool, splits[s], decoder, settings, lambda: bar.update(1)))
            last = per_seed[-1]
            log.info("seed %d: BO best %s, random best %s", s, last["bo"]["best"], last["random"]["best"])
    return {"objective": objective.name, "description": objective.description, "maximize": objective.maximize,
            "domain": objective.domain, "settings": dataclasses.asdict(settings), "seeds": list(seeds),
            **aggregate(per_seed, objective, settings.rounds), "per_seed": per_seed,
            "timing": {"total_s": round(time.monotonic() - t0, 1)}}


# --- pictures and table -----------------------------------------------------------------------------
def plot_best_per_round(summary: dict[str, Any], path: Path) -> None:
    """Best-so-far score vs round for BO and random search: per-seed faint lines, median bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = np.arange(1, summary["settings"]["rounds"] + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, colour in zip(METHODS, ("tab:blue", "tab:orange")):
        for rec in summary["per_seed"]:
            ys = [np.nan if v is None else v for v in rec[method]["best_per_round"]]
            ax.plot(rounds, ys, color=colour, alpha=0.25, lw=1)
        med = [np.nan if v is None else v for v in summary[method]["median_best_per_round"]]
        ax.plot(rounds, med, color=colour, lw=2.5, marker="o",
                label=f"{method} (median of {len(summary['seeds'])} seeds)")
    ax.set_xlabel("round")
    ax.set_ylabel(f"best {summary['objective']} so far ({'higher' if summary['maximize'] else 'lower'} is better)")
    ax.set_xticks(rounds)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_top3(summary: dict[str, Any], path: Path) -> None:
    """Each method's top 3 with their scores, drawn by the objective (molecule grid: one row per
    method; expressions: curves against f*)."""
    entries = [(m, e) for m in METHODS for e in summary[m]["top3"]]
    OBJECTIVES.get(summary["objective"]).draw([e["text"] for _, e in entries],
                                              [f"{m} {e['score']:.3f}" for m, e in entries], path)


def format_summary(summary: dict[str, Any]) -> str:
    """The BO vs random table, the top 3 of each and the GP's held-out fit."""
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    rows = [f"{'method':<8} {'valid':>6} {'mean score':>11} {'median best':>12}"]
    for m in METHODS:
        s = summary[m]
        rows.append(f"{m:<8} {s['valid_fraction']:6.2f} {fmt(s['mean_valid_score']):>11} {fmt(s['median_best']):>12}")
    for m in METHODS:
        rows.append(f"top 3 {m}: " + "; ".join(f"{e['text']} ({e['score']:.3f})" for e in summary[m]["top3"]))
    gp = summary["gp"]
    rows.append(f"GP on held-out training codes: RMSE {gp['test_rmse_mean']:.3f} (predicting the mean: "
                f"{gp['test_rmse_of_mean_mean']:.3f}), log-likelihood {gp['test_loglik_mean']:.3f} per point "
                f"(mean over {len(summary['seeds'])} seeds)")
    return "\n".join(rows)


def write_outputs(summary: dict[str, Any], out: Path) -> None:
    """summary.json, best_per_round.png and top3.png in ``out``; a failing picture is logged only."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "summary.json", summary)
    for name, draw in (("best_per_round.png", plot_best_per_round), ("top3.png", plot_top3)):
        try:
            draw(summary, out / name)
        except Exception as err:  # a picture must never cost the results
            log.warning("could not draw %s: %s", name, err)
