"""Every figure of the comparison for one side: reconstruction, codes, samples, paths."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from .side import EvalSettings, Side, bounds, hamming_paths, mutual_information, probe_labels
from .stats import (best_sampler, code_indices, continuous_code_stats, discrete_code_stats, linear_probe,
                    reconstruction_nll)
from .views import VIEWS


def sample_quality(side: Side, view: Any, n: int) -> dict[str, dict[str, Any]]:
    """Quality of ``n`` decoded draws of every fitted sampler of the run."""
    out: dict[str, dict[str, Any]] = {}
    train_keys = None
    if side.discrete:
        n_vars, n_classes = side.shape
        train_keys = {tuple(r) for r in code_indices(side.shown["train_codes"], n_vars, n_classes).tolist()}
    for i, (name, sampler) in enumerate(sorted(side.loaded.samplers.items())):
        g = torch.Generator().manual_seed(side.run.train.seed * 1000 + 101 + i)
        t0 = time.monotonic()
        z = sampler.sample(n, generator=g)
        outputs = view.decode(side, z)
        metrics = {k: v for k, v in view.quality(side, outputs).items()
                   if isinstance(v, (int, float)) and k != "n_samples"}
        if train_keys is not None:
            drawn = code_indices(z, *side.shape).tolist()
            metrics["code_copies"] = sum(tuple(r) in train_keys for r in drawn) / n
        metrics["seconds"] = round(time.monotonic() - t0, 1)
        out[name] = metrics
        side.shown.setdefault("samples", {})[name] = outputs[:64]
    return out


def perturbation_quality(side: Side, view: Any, codes: Tensor, flips: tuple[int, ...] = (0, 1, 3, 10)
                         ) -> dict[str, dict[str, float]]:
    """Quality of decodes of test codes with r variables resampled uniformly (discrete codes).

    How smooth the decoder is off the code manifold in Hamming space: what an imperfect ex-post
    density costs. r = 0 is the plain reconstruction. Empty for continuous codes.
    """
    if not side.discrete:
        return {}
    n_vars, n_classes = side.shape
    g = torch.Generator().manual_seed(side.run.train.seed + 43)
    idx = code_indices(codes, n_vars, n_classes)
    out = {}
    for r in flips:
        noisy = idx.clone()
        if r > 0:
            pick = torch.rand(len(idx), n_vars, generator=g).argsort(1)[:, : min(r, n_vars)]
            noisy.scatter_(1, pick, torch.randint(n_classes, pick.shape, generator=g))
        z = torch.nn.functional.one_hot(noisy, n_classes).float().view(len(idx), -1)
        q = view.quality(side, view.decode(side, z))
        out[str(r)] = {view.quality_key: q[view.quality_key]}
    return out


# --- one side end to end --------------------------------------------------------------------------
def evaluate_side(side: Side, settings: EvalSettings) -> None:
    """Fill ``side.results`` with every figure of the report (timed by part)."""
    view = VIEWS[side.run.domain]
    x = side.prepared.test[: settings.n_eval or len(side.prepared.test)]
    side.results.update(n_eval=len(x), n_samples=settings.n_samples or side.run.eval.n_samples)
    for part, fn in (("recon", _reconstruction_part), ("codes", _codes_part), ("samples", _samples_part)):
        t0 = time.monotonic()
        fn(side, view, x, settings)
        side.results[f"timing_{part}_s"] = round(time.monotonic() - t0, 1)


def _reconstruction_part(side: Side, view: Any, x: Tensor, settings: EvalSettings) -> None:
    nll = reconstruction_nll(side.model, x, side.device)
    side.results.update(recon_nats=float(nll.mean()), recon_bits=float(nll.mean()) / math.log(2))
    side.results.update(view.reconstruction(side, x))
    side.results.update(bounds(side, x, settings.iw_k))


def _codes_part(side: Side, view: Any, x: Tensor, settings: EvalSettings) -> None:
    r = side.results
    train_codes = side.domain.encode(side.model, side.prepared.train, side.device)
    test_codes = side.domain.encode(side.model, x, side.device)
    side.shown.update(train_codes=train_codes, test_codes=test_codes)
    r["codes"] = (discrete_code_stats(code_indices(train_codes, *side.shape), side.shape[1]) if side.discrete
                  else continuous_code_stats(train_codes))
    r["mi"] = mutual_information(side, x, settings.mi_samples)
    n_probe = min(settings.probe_train, len(train_codes))
    r["probe"] = linear_probe(train_codes[:n_probe], test_codes, probe_labels(side, n_probe, len(test_codes)),
                              side.run.train.seed)


def _samples_part(side: Side, view: Any, x: Tensor, settings: EvalSettings) -> None:
    r, test_codes = side.results, side.shown["test_codes"]
    r["samplers"] = sample_quality(side, view, r["n_samples"])
    r["default_sampler"] = _default_sampler(side)
    r["best_sampler"] = best_sampler(r["samplers"], view.quality_key, view.better)
    r["reference"] = view.reference(side)
    r["perturbed"] = perturbation_quality(side, view, test_codes)
    r["paths"] = view.path_outputs(side, hamming_paths(side, test_codes, settings.n_paths))
    r["path_lengths"] = side.shown.get("path_lengths", [])


def _default_sampler(side: Side) -> str:
    from ..pipeline import default_sampler

    name = default_sampler(side.run)
    return name if name in side.loaded.samplers else next(iter(sorted(side.loaded.samplers)), "")
