"""Ex-post samplers: densities fitted to the training codes after training (docs/REFERENCE.md §1).

An RAE has no prior; it generates by fitting a density q(z) to the codes of the training set
and decoding draws from it. Every sampler works with any model. Samplers hold their fitted
state as plain tensors/floats so a checkpoint stays loadable with ``weights_only=True``, and
they draw with torch, so every call gives fresh draws unless a generator is passed.

Continuous samplers over codes [N, D]:
- ``prior``: the model's prior p(z) (N(0, I) unless the model has another; for an RAE it
  shows what the lack of a prior its codes follow costs). It stores the prior's exported plain
  data (distributions.Prior.export), bound by :meth:`Sampler.bind`.
- ``gaussian``: one full-covariance Gaussian fitted by maximum likelihood.
- ``gmm``: a k-component full-covariance Gaussian mixture (sklearn GaussianMixture, paper
  defaults k=10, max_iter 2000, tol 1e-3) fitted on at most ``max_fit`` (10,000) random codes;
  draws are i.i.d., not grouped by component.
Discrete samplers (per-variable categoricals, mixtures, autoregressive) are in
samplers_discrete.py.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from .registry import PRIORS, SAMPLERS

log = logging.getLogger(__name__)


class Sampler:
    """Base class: ``fit(codes)``, ``sample(n)``, ``state_dict()`` / ``load_state_dict()``."""

    name = "base"
    discrete = False  # True for samplers over one-hot categorical codes
    progress = False  # set True by a caller that wants a bar over a long fit (the trained samplers)

    def __init__(self, **kwargs: Any) -> None:
        self.options = kwargs
        self.dim: int | None = None

    def bind(self, model: Any) -> "Sampler":
        """Read what the sampler needs from the model before :meth:`fit` (the ``prior`` sampler:
        the model's prior); other samplers need only the codes. Returns self."""
        return self

    def fit(self, codes: Tensor, seed: int = 0) -> "Sampler":
        """Fit to codes [N, D] (float). Returns self."""
        self.dim = int(codes.shape[1])
        return self

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw n codes, [n, D] float32 on the CPU."""
        raise NotImplementedError

    def log_prob(self, codes: Tensor) -> Tensor:
        """Log density (or mass) of codes [N, D] -> [N], where defined."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options), "dim": self.dim}

    def load_state_dict(self, state: dict[str, Any]) -> "Sampler":
        self.dim = state["dim"]
        return self


def sampler_from_state(state: dict[str, Any]) -> Sampler:
    """Rebuild a fitted sampler from :meth:`Sampler.state_dict` output."""
    return SAMPLERS.get(state["name"])(**state.get("options", {})).load_state_dict(state)


def build_sampler(name: str, **options: Any) -> Sampler:
    return SAMPLERS.get(name)(**options)


def fit_codes_sampler(name: str, codes: Tensor, seed: int = 0, model: Any = None, **options: Any) -> Sampler:
    """Build sampler ``name``, bind it to ``model`` (when given) and fit it to codes [N, D]."""
    sampler = build_sampler(name, **options)
    if model is not None:
        sampler.bind(model)
    return sampler.fit(codes, seed=seed)


@SAMPLERS.register("prior")
class PriorSampler(Sampler):
    """Draws from the model's prior (N(0, I) when it was not bound to a model)."""

    name = "prior"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prior_name, self.prior_state = "standard_normal", None  # unbound: N(0, I) of the codes' size

    def _state(self) -> dict[str, Any]:
        return self.prior_state if self.prior_state is not None else {"dim": self.dim}

    def bind(self, model: Any) -> "PriorSampler":
        prior = getattr(model, "prior", None)
        if prior is not None:
            self.prior_name = next(n for n, cls in PRIORS.items() if cls is type(prior))
            self.prior_state = prior.export()
        return self

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return PRIORS.get(self.prior_name).sample_exported(self._state(), n, generator)

    def log_prob(self, codes: Tensor) -> Tensor:
        return PRIORS.get(self.prior_name).log_prob_exported(self._state(), codes)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "prior_name": self.prior_name, "prior_state": self.prior_state}

    def load_state_dict(self, state: dict[str, Any]) -> "PriorSampler":
        super().load_state_dict(state)
        self.prior_name = state.get("prior_name", "standard_normal")
        self.prior_state = state.get("prior_state")
        return self


def _cholesky(cov: Tensor, ridge: float) -> Tensor:
    """Cholesky factor of ``cov + ridge I`` [D, D]; the ridge grows tenfold (up to 1e-2 of the mean
    variance) where round-off leaves a (nearly) degenerate covariance not positive definite."""
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype)
    scale = max(float(cov.diagonal(dim1=-2, dim2=-1).mean()), 1.0)
    jitter = ridge
    while True:
        chol, info = torch.linalg.cholesky_ex(cov + jitter * eye)
        if int(info.max()) == 0:
            if jitter > ridge:
                log.warning("covariance not positive definite; fitted with ridge %.1e instead of %.1e", jitter, ridge)
            return chol
        if jitter > 1e-2 * scale or not torch.isfinite(cov).all():
            raise ValueError("the codes' covariance is not positive definite even with a ridge of "
                             f"{jitter:.1e} (non-finite codes?)")
        jitter = max(jitter * 10, 1e-9 * scale)


def _mvn_sample(n: int, mean: Tensor, chol: Tensor, generator: torch.Generator | None) -> Tensor:
    eps = torch.randn(n, mean.shape[-1], generator=generator, dtype=mean.dtype)
    return mean + eps @ chol.T


@SAMPLERS.register("gaussian")
class GaussianSampler(Sampler):
    """One full-covariance Gaussian, ML fit with a small ridge for stability."""

    name = "gaussian"

    def __init__(self, ridge: float = 1e-6) -> None:
        super().__init__(ridge=ridge)
        self.ridge = ridge
        self.mean: Tensor | None = None
        self.chol: Tensor | None = None

    def fit(self, codes: Tensor, seed: int = 0) -> "GaussianSampler":
        super().fit(codes)
        if len(codes) == 0:
            raise ValueError("the Gaussian sampler needs at least one code to fit")
        x = codes.double()
        self.mean = x.mean(0)
        # one code has no unbiased covariance (0/0): use the ML estimate (zero) plus the ridge then
        cov = torch.cov(x.T, correction=1 if len(x) > 1 else 0).reshape(self.dim, self.dim)
        self.chol = _cholesky(cov, self.ridge)
        return self

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return _mvn_sample(n, self.mean, self.chol, generator).float()

    def log_prob(self, codes: Tensor) -> Tensor:
        dist = torch.distributions.MultivariateNormal(self.mean, scale_tril=self.chol)
        return dist.log_prob(codes.double()).float()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mean": self.mean, "chol": self.chol}

    def load_state_dict(self, state: dict[str, Any]) -> "GaussianSampler":
        super().load_state_dict(state)
        self.mean, self.chol = state["mean"], state["chol"]
        return self


@SAMPLERS.register("gmm")
class GMMSampler(Sampler):
    """k-component full-covariance Gaussian mixture fitted with sklearn's EM."""

    name = "gmm"

    def __init__(self, k: int = 10, max_iter: int = 2000, tol: float = 1e-3, reg_covar: float = 1e-6,
                 max_fit: int = 10_000) -> None:
        super().__init__(k=k, max_iter=max_iter, tol=tol, reg_covar=reg_covar, max_fit=max_fit)
        self.k, self.max_iter, self.tol, self.reg_covar = k, max_iter, tol, reg_covar
        self.max_fit = max_fit
        self.weights: Tensor | None = None
        self.means: Tensor | None = None
        self.chols: Tensor | None = None

    def fit(self, codes: Tensor, seed: int = 0) -> "GMMSampler":
        from sklearn.mixture import GaussianMixture

        super().fit(codes)
        if len(codes) > self.max_fit > 0:
            # EM cost is linear in N: 37k MOSES codes took 191 s on one core, 10k random codes
            # describe a 56-d, 10-component mixture just as well.
            pick = torch.randperm(len(codes), generator=torch.Generator().manual_seed(seed))[: self.max_fit]
            codes = codes[pick]
        # Each component needs a distinct code to sit on: with fewer distinct codes than k (a tiny
        # data set, duplicates, a collapsed encoder) EM would leave components empty, so fit fewer.
        distinct = len(torch.unique(codes, dim=0))
        k = max(1, min(self.k, distinct))
        if k < self.k:
            log.warning("GMM: %d distinct codes support only %d of the %d components; fitting %d", distinct, k,
                        self.k, k)
        gmm = GaussianMixture(k, covariance_type="full", max_iter=self.max_iter, tol=self.tol,
                              reg_covar=self.reg_covar, random_state=seed)
        gmm.fit(codes.double().numpy())
        if not gmm.converged_:
            log.warning("GMM did not converge in %d iterations", self.max_iter)
        self.weights = torch.from_numpy(gmm.weights_.copy())
        self.means = torch.from_numpy(gmm.means_.copy())
        covs = torch.from_numpy(gmm.covariances_.copy())
        self.chols = torch.stack([_cholesky(c, 0.0) for c in covs])  # sklearn added reg_covar already
        return self

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        # Draw the component of each sample independently: the result is i.i.d. and in
        # random order (sklearn's own sample() returns draws grouped by component).
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype)
        out = self.means[comp] + torch.einsum("nij,nj->ni", self.chols[comp], eps)
        return out.float()

    def log_prob(self, codes: Tensor) -> Tensor:
        mix = torch.distributions.Categorical(probs=self.weights)
        comps = torch.distributions.MultivariateNormal(self.means, scale_tril=self.chols)
        dist = torch.distributions.MixtureSameFamily(mix, comps)
        return dist.log_prob(codes.double()).float()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "weights": self.weights, "means": self.means, "chols": self.chols}

    def load_state_dict(self, state: dict[str, Any]) -> "GMMSampler":
        super().load_state_dict(state)
        self.weights, self.means, self.chols = state["weights"], state["means"], state["chols"]
        return self

