"""Pure statistics of the comparison: bounds, code usage, mutual information, linear probes.

Functions of tensors and models only (no run, no domain); see :mod:`discrete_rae.compare` for
what each figure means.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor


def _batches(x: Tensor, size: int) -> list[Tensor]:
    return list(x.split(max(1, size)))


@torch.no_grad()
def reconstruction_nll(model: Any, x: Tensor, device: torch.device, batch: int = 256) -> Tensor:
    """-log p(x | code) per example [M] with the deterministic code (eval mode)."""
    model.eval()
    out = []
    for xb in _batches(x, batch):
        xb = xb.to(device)
        lat = model.latent(model.encoder(xb))
        out.append(model.likelihood.nll(model.decoder(lat.code, xb), xb).float().cpu())
    return torch.cat(out)


def has_posterior_density(model: Any) -> bool:
    """True when the model's latent is stochastic (its posterior has a density to weight with)."""
    return bool(getattr(model.latent, "stochastic", False))


@torch.no_grad()
def log_weights(model: Any, x: Tensor, k: int, generator: torch.Generator, chunk_rows: int = 4096) -> Tensor:
    """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x), z_i ~ q(z|x): [k, B].

    q is the latent's posterior object and p the model's prior (distributions.py); the draws are
    made in chunks of about ``chunk_rows`` decoded rows (objectives_iwae.weight_terms).
    """
    from ..objectives_iwae import weight_terms

    q = model.latent(model.encoder(x)).posterior
    rows = []
    step = max(1, chunk_rows // max(1, x.shape[0]))
    for k0 in range(0, k, step):
        nll, log_ratio = weight_terms(model, q, x, min(step, k - k0), generator)
        rows.append(-nll - log_ratio)
    return torch.cat(rows)


def code_indices(codes: Tensor, n_vars: int, n_classes: int) -> Tensor:
    """One-hot codes [M, N*K] -> indices [M, N]."""
    return codes.view(len(codes), n_vars, n_classes).argmax(-1)


def entropy_nats(p: Tensor, dim: int = -1) -> Tensor:
    """Shannon entropy sum -p log p (0 log 0 = 0) along ``dim``."""
    return (-(p * p.clamp_min(1e-30).log()).sum(dim)).clamp_min(0.0) + 0.0  # + 0.0 turns -0.0 into 0.0


def discrete_code_stats(idx: Tensor, n_classes: int) -> dict[str, Any]:
    """Usage statistics of index codes [M, N] (see the module docstring)."""
    m, n = idx.shape
    freq = torch.nn.functional.one_hot(idx, n_classes).double().mean(0)  # [N, K]
    h = entropy_nats(freq)
    return {"entropy_mean": float(h.mean()), "entropy_min": float(h.min()), "entropy_max": float(h.max()),
            "perplexity_mean": float(h.exp().mean()), "max_entropy": math.log(n_classes),
            "unused_classes": float((freq == 0).double().mean()),
            "active_vars": int((freq.max(-1).values < 0.99).sum()), "n_vars": n,
            "distinct_codes": len(torch.unique(idx, dim=0)) / m, "per_var_entropy": h.tolist()}


def continuous_code_stats(codes: Tensor) -> dict[str, Any]:
    """Active units (Var over x of the code > 0.01) and the spread of the code."""
    var = codes.double().var(0)
    return {"active_units": int((var > 0.01).sum()), "dims": codes.shape[1], "code_std_mean": float(var.sqrt().mean())}


def _mc_mi_categorical(log_q: Tensor, samples: int, seed: int) -> float:
    """Monte Carlo I(X; C) for factorised categorical encoders log_q [M, N, K]."""
    m, n, k = log_q.shape
    g = torch.Generator().manual_seed(seed + 17)
    idx = torch.multinomial(log_q.exp().reshape(m * n, k), samples, replacement=True, generator=g)
    idx = idx.view(m, n, samples).permute(0, 2, 1).reshape(m * samples, n)  # row = (i, s)
    onehot = torch.nn.functional.one_hot(idx, k).float().reshape(m * samples, n * k)
    flat = log_q.reshape(m, n * k)
    total = 0.0
    for rows in torch.arange(m * samples).split(2048):
        cross = onehot[rows] @ flat.T  # [r, M]: log q(c | x_j)
        own = cross[torch.arange(len(rows)), rows // samples]
        total += float((own - (torch.logsumexp(cross, 1) - math.log(m))).sum())
    return total / (m * samples)


def _mc_mi_gaussian(mu: Tensor, logvar: Tensor, samples: int, seed: int) -> float:
    """Monte Carlo I(X; Z) for a diagonal Gaussian encoder q(z | x_i) = N(mu_i, exp(logvar_i)),
    mu and logvar [M, D] (same estimator as the categorical one, Gaussian densities)."""
    m = len(mu)
    g = torch.Generator().manual_seed(seed + 17)
    z = (mu.unsqueeze(1) + (0.5 * logvar).exp().unsqueeze(1) * torch.randn(m, samples, mu.shape[1], generator=g))
    z = z.reshape(m * samples, -1)
    inv_var = (-logvar).exp()
    total = 0.0
    for rows in torch.arange(m * samples).split(256):
        d = z[rows].unsqueeze(1) - mu.unsqueeze(0)  # [r, M, D]
        cross = -0.5 * (d.pow(2) * inv_var + logvar).sum(-1)  # log q(z | x_j) + const
        own = cross[torch.arange(len(rows)), rows // samples]
        total += float((own - (torch.logsumexp(cross, 1) - math.log(m))).sum())
    return total / (m * samples)


def linear_probe(train_codes: Tensor, test_codes: Tensor, labels: tuple[str, str, np.ndarray, np.ndarray] | None,
                 seed: int) -> dict[str, Any]:
    """Accuracy (logistic regression) or r^2 (ridge) of labels from codes, on the test codes."""
    if labels is None:
        return {"probe": "n/a (no labels in this domain)"}
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    name, kind, ytr, yte = labels
    ok_tr, ok_te = np.isfinite(ytr.astype(float)), np.isfinite(yte.astype(float))
    xtr, xte = train_codes.numpy()[ok_tr], test_codes.numpy()[ok_te]
    scaler = StandardScaler().fit(xtr)
    xtr, xte = scaler.transform(xtr), scaler.transform(xte)
    if kind == "class":
        clf = LogisticRegression(max_iter=2000, C=0.1, random_state=seed).fit(xtr, ytr[ok_tr])
        score = float((clf.predict(xte) == yte[ok_te]).mean())
        baseline = float(np.mean(yte[ok_te] == np.bincount(ytr[ok_tr].astype(int)).argmax()))
        return {"probe": name, "probe_metric": "accuracy", "probe_score": score, "probe_baseline": baseline}
    reg = Ridge(alpha=1.0).fit(xtr, ytr[ok_tr])
    pred, y = reg.predict(xte), yte[ok_te]
    r2 = float(1 - ((pred - y) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-12))
    return {"probe": name, "probe_metric": "r2", "probe_score": r2, "probe_baseline": 0.0}


def best_sampler(quality: dict[str, dict[str, Any]], key: str, better: str) -> str:
    pick = min if better == "min" else max
    scored = {k: v[key] for k, v in quality.items() if isinstance(v.get(key), (int, float)) and math.isfinite(v[key])}
    return pick(scored, key=scored.get) if scored else next(iter(quality))
