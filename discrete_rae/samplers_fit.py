"""Fit one ex-post sampler on a finished run, and compare samplers by held-out likelihood.

- :func:`fit_sampler` fits a sampler (e.g. the opt-in ``two_stage`` / ``flow`` / ``wgan`` of
  samplers_learned.py / samplers_wgan.py) to a finished run's training codes and adds it to the run's checkpoint,
  written atomically (the old checkpoint or the new one, never a mix).
- :func:`heldout_log_likelihood` scores fitted samplers on the same held-out codes: mean
  log q(z) / D in nats per code dimension (higher is better); samplers without a density
  (``wgan``) are left out.
- :func:`compare_samplers` splits codes into a fitting part and a held-out part (seeded) and
  does both; the held-out part is never seen by any fit, including the learned samplers'
  own validation split, which is carved out of the fitting part.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .checkpoint import save_atomic
from .registry import DOMAINS, SAMPLERS
from .samplers import Sampler, build_sampler

log = logging.getLogger(__name__)


def sampler_options(name: str, run: Any, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The constructor options the pipeline gives sampler ``name`` for ``run``, updated by ``options``."""
    cls = SAMPLERS.get(name)
    out: dict[str, Any] = {"k": run.eval.gmm_k} if name == "gmm" else {}
    if getattr(cls, "discrete", False):
        out = {"n_vars": run.model.n_vars, "n_classes": run.model.n_classes, **out}
    return {**out, **(options or {})}


def fit_sampler(run_dir: Path, name: str, device: torch.device | None = None, seed: int | None = None,
                options: dict[str, Any] | None = None, progress: bool = False) -> Sampler:
    """Fit sampler ``name`` to the training codes of the run in ``run_dir`` and store it there.

    The training split is rebuilt by the run's domain from the run's config (same data, same
    seed), encoded by the trained model, and the fitted state is written into
    ``run_dir/checkpoint.pt`` under ``samplers[name]`` (replacing one of that name).
    ``seed`` defaults to the run's training seed. Returns the fitted sampler.
    """
    from .errors import ConfigError
    from .pipeline import load_run

    device = device or torch.device("cpu")
    loaded = load_run(Path(run_dir), device)
    cls = SAMPLERS.get(name)
    discrete = bool(getattr(loaded.model.latent, "discrete", False))
    if bool(getattr(cls, "discrete", False)) != discrete:
        kind = "categorical" if discrete else "continuous"
        raise ConfigError(f"sampler {name!r} does not fit the {kind} codes of run {run_dir}")
    domain = DOMAINS.get(loaded.run.domain)
    prepared = domain.prepare(loaded.run, codec_state=loaded.checkpoint["codec"], progress=progress)
    codes = domain.encode(loaded.model, prepared.train, device)
    t0 = time.monotonic()
    sampler = build_sampler(name, **sampler_options(name, loaded.run, options)).bind(loaded.model)
    sampler.progress = progress  # a bar over the training steps of the samplers that train
    sampler.fit(codes, seed=loaded.run.train.seed if seed is None else seed)
    log.info("fitted sampler %s on %d codes of %s in %.1fs", name, len(codes), run_dir, time.monotonic() - t0)
    payload = dict(loaded.checkpoint)
    payload["samplers"] = {**(payload.get("samplers") or {}), name: sampler.state_dict()}
    save_atomic(payload, Path(run_dir) / "checkpoint.pt")
    return sampler


def has_density(sampler: Sampler) -> bool:
    """Whether ``sampler`` defines ``log_prob`` (the base class's raises NotImplementedError)."""
    try:
        sampler.log_prob(torch.zeros(1, sampler.dim))
    except NotImplementedError:
        return False
    return True


@torch.no_grad()
def heldout_log_likelihood(samplers: dict[str, Sampler], codes: Tensor) -> dict[str, float]:
    """Mean log-density per code dimension (nats) of held-out codes [N, D] under each sampler.

    (1 / (N D)) sum_i log q(z_i); samplers without a density are skipped. For ``two_stage`` it
    is the importance-sampled (IWAE) estimate, a stochastic lower bound; the others are exact.
    """
    out = {}
    for name, sampler in samplers.items():
        if not has_density(sampler):
            log.info("sampler %s has no density; no held-out log-likelihood", name)
            continue
        out[name] = float(sampler.log_prob(codes).double().mean()) / codes.shape[1]
    return out


def compare_samplers(codes: Tensor, names: tuple[str, ...] = ("gmm", "two_stage", "flow"), seed: int = 0,
                     heldout_fraction: float = 0.2, options: dict[str, dict[str, Any]] | None = None
                     ) -> dict[str, Any]:
    """Fit each sampler to a seeded (1 - heldout_fraction) part of codes [N, D]; score the rest.

    Returns ``{"loglik_per_dim": {name: nats}, "fit_seconds": {name: s}, "n_fit": .., "n_heldout": ..}``.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction={heldout_fraction!r}: expected a fraction in (0, 1)")
    perm = torch.randperm(len(codes), generator=torch.Generator().manual_seed(seed))
    n_held = max(1, int(round(heldout_fraction * len(codes))))
    held, fit = codes[perm[:n_held]], codes[perm[n_held:]]
    fitted, seconds = {}, {}
    for name in names:
        t0 = time.monotonic()
        fitted[name] = build_sampler(name, **(options or {}).get(name, {})).fit(fit, seed=seed)
        seconds[name] = round(time.monotonic() - t0, 1)
    return {"loglik_per_dim": heldout_log_likelihood(fitted, held), "fit_seconds": seconds,
            "n_fit": len(fit), "n_heldout": len(held), "samplers": fitted}

