"""Posteriors and priors: the probabilistic objects every model shares.

A latent type (latents.py, latents_discrete.py) turns encoder features into a **posterior**
q(z|x) for the batch; a **prior** p(z) is a registered module of the model; an objective
(objectives.py) combines them with the likelihood and the decoder regulariser.

Posterior interface (B examples, codes of size D):

- ``code``       [B, D] the deterministic code (mean / one-hot mode) that ex-post samplers fit;
- ``rsample()``  [B, D] the decoder input in training (reparameterised or relaxed sample;
                 the code itself for deterministic encoders);
- ``mode()``     [B, D] the decoder input at evaluation;
- ``sample(k)``  exact draws z [k, B, D] and log q(z|x) [k, B] (importance sampling, bounds);
- ``log_prob(z)`` log q(z|x) for z [..., B, D] -> [..., B];
- ``kl(prior)``  KL(q || p) per example [B]: closed form where the pair has one, else a
                 one-draw Monte Carlo estimate log q(z) - log p(z), z ~ q (reparameterised);
- ``divergence(prior)`` [B] the latent term of the penalised objective: ``kl`` for proper
                 posteriors; for deterministic codes (the RAE reading, Ghosh et al. 2020) the
                 prior's energy -log p(z) up to its constant, which for N(0, I) is 1/2 ||z||^2.

Deterministic codes (point masses) have no density: ``sample``/``log_prob``/``kl`` raise
:class:`NoDensityError`, and ``has_density`` is False so callers can check first.

Priors (registry ``PRIORS``): ``standard_normal`` N(0, I) and ``uniform_categorical``
(N independent uniform categoricals over K classes); ``vamp`` (prior_vamp.py) mixes the
model's own posteriors at learned pseudo-inputs. ``sample(n)``, ``log_prob(z)``,
``energy(z)``; ``export()`` returns the plain tensors the ``prior`` sampler needs to draw
without the model (checkpoints stay plain data).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import PRIORS

LOG_2PI = math.log(2.0 * math.pi)


class NoDensityError(ValueError):
    """A deterministic code (point mass) was asked for a density, a draw or a KL."""


# --- priors ------------------------------------------------------------------------------------
class Prior(nn.Module):
    """p(z) over codes [*, D]. Subclasses set ``kind`` ("continuous" | "discrete")."""

    kind = "continuous"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = int(dim)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws [n, D], float32 on the CPU."""
        return self.sample_exported(self.export(), n, generator)

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) [...] for z [..., D]."""
        raise NotImplementedError

    def energy(self, z: Tensor) -> Tensor:
        """-log p(z) up to an additive constant [...] (the RAE's code penalty)."""
        return -self.log_prob(z)

    def export(self) -> dict[str, Any]:
        """Plain data from which :meth:`sample_exported` draws (stored by the ``prior`` sampler)."""
        return {"dim": self.dim}

    @staticmethod
    def sample_exported(state: dict[str, Any], n: int, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def log_prob_exported(state: dict[str, Any], z: Tensor) -> Tensor:
        """log p(z) [N] for codes z [N, D] from the exported data."""
        raise NotImplementedError


@PRIORS.register("standard_normal")
class StandardNormal(Prior):
    """N(0, I_D): log p(z) = -1/2 ||z||^2 - D/2 log 2 pi; energy 1/2 ||z||^2."""

    def log_prob(self, z: Tensor) -> Tensor:
        return -self.energy(z) - 0.5 * z.shape[-1] * LOG_2PI

    def energy(self, z: Tensor) -> Tensor:
        return 0.5 * z.float().pow(2).sum(-1)

    @staticmethod
    def sample_exported(state: dict[str, Any], n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, int(state["dim"]), generator=generator)

    @staticmethod
    def log_prob_exported(state: dict[str, Any], z: Tensor) -> Tensor:
        return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * LOG_2PI)

    @staticmethod
    def kl_from_gaussian(mu: Tensor, logvar: Tensor) -> Tensor:
        """KL(N(mu, diag e^logvar) || N(0, I)) = 1/2 sum(mu^2 + s^2 - log s^2 - 1), [B]."""
        mu, logvar = mu.float(), logvar.float()
        return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(-1)


@PRIORS.register("uniform_categorical")
class UniformCategorical(Prior):
    """N independent uniform categoricals over K classes; codes are flattened one-hots [*, N*K].

    log p(y) = -N log K for every one-hot y.
    """

    kind = "discrete"

    def __init__(self, dim: int, n_vars: int = 1, n_classes: int = 2) -> None:
        super().__init__(dim)
        if n_vars * n_classes != dim:
            raise ValueError(f"uniform_categorical: n_vars * n_classes = {n_vars * n_classes} != code size {dim}")
        self.n_vars, self.n_classes = int(n_vars), int(n_classes)

    def class_log_probs(self) -> Tensor:
        """log p(y_n = k) [N, K]."""
        return torch.full((self.n_vars, self.n_classes), -math.log(self.n_classes))

    def log_prob(self, z: Tensor) -> Tensor:
        return z.new_full(z.shape[:-1], -self.n_vars * math.log(self.n_classes), dtype=torch.float32)

    def export(self) -> dict[str, Any]:
        return {"dim": self.dim, "n_vars": self.n_vars, "n_classes": self.n_classes}

    @staticmethod
    def sample_exported(state: dict[str, Any], n: int, generator: torch.Generator | None = None) -> Tensor:
        n_vars, k = int(state["n_vars"]), int(state["n_classes"])
        idx = torch.randint(k, (n, n_vars), generator=generator)
        return F.one_hot(idx, k).float().reshape(n, n_vars * k)

    @staticmethod
    def log_prob_exported(state: dict[str, Any], z: Tensor) -> Tensor:
        return torch.full(z.shape[:-1], -int(state["n_vars"]) * math.log(int(state["n_classes"])))


#: The prior a latent of each kind takes when none is named.
STANDARD_PRIORS = {"continuous": "standard_normal", "discrete": "uniform_categorical"}


def build_prior(name: str, latent: Any, cfg: Any = None, codec: Any = None) -> Prior:
    """The prior ``name`` sized for ``latent`` (its ``code_dim``; categorical shape if any).

    A prior class with a ``from_config(cfg, latent, codec)`` classmethod (e.g. the VampPrior,
    which needs the input shape and its own config field) is built by that instead.
    """
    cls = PRIORS.get(name)
    if getattr(latent, "discrete", False) != (cls.kind == "discrete"):
        kind = "discrete" if getattr(latent, "discrete", False) else "continuous"
        fitting = [n for n, c in PRIORS.items() if c.kind == kind]
        raise ValueError(f"prior {name!r} is {cls.kind} but the latent type is {kind}; "
                         f"choose one of: {', '.join(fitting)}")
    if hasattr(cls, "from_config"):
        return cls.from_config(cfg, latent, codec)
    if cls.kind == "discrete":
        return cls(latent.code_dim, latent.n_vars, latent.n_classes)
    return cls(latent.code_dim)


# --- posteriors ----------------------------------------------------------------------------------
class Posterior:
    """q(z|x) for a batch; see the module docstring for the interface."""

    has_density = True
    #: True when ``sample(k)`` is differentiable in the posterior's parameters (reparameterised),
    #: so that importance-weighted objectives can train through it.
    reparameterized = False

    def __init__(self, code: Tensor) -> None:
        self.code = code

    def rsample(self) -> Tensor:
        raise NotImplementedError

    def mode(self) -> Tensor:
        return self.code

    def sample(self, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def log_prob(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def kl(self, prior: Prior) -> Tensor:
        """One-draw Monte Carlo KL, [B]; subclasses override where a closed form exists."""
        z = self.rsample()
        return self.log_prob(z) - prior.log_prob(z)

    def divergence(self, prior: Prior) -> Tensor:
        return self.kl(prior)


class DiagonalGaussian(Posterior):
    """N(mu, diag(exp(logvar))); mu, logvar [B, D].

    ``sample(k)`` is reparameterised: z = mu + exp(logvar / 2) * eps with eps ~ N(0, I) drawn
    independently of the parameters, so gradients flow to mu and logvar through z and log q.
    """

    reparameterized = True

    def __init__(self, mu: Tensor, logvar: Tensor) -> None:
        super().__init__(mu)
        self.mu, self.logvar = mu, logvar

    def rsample(self) -> Tensor:
        return self.mu + torch.randn_like(self.mu) * (0.5 * self.logvar).exp()

    def sample(self, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        mu, logvar = self.mu.float(), self.logvar.float()
        eps = torch.randn((k, *mu.shape), generator=generator).to(mu.device)
        z = mu + (0.5 * logvar).exp() * eps
        log_q = (-0.5 * eps.pow(2) - 0.5 * logvar - 0.5 * LOG_2PI).sum(-1)
        return z, log_q

    def log_prob(self, z: Tensor) -> Tensor:
        mu, logvar = self.mu.float(), self.logvar.float()
        return (-0.5 * (z.float() - mu).pow(2) * torch.exp(-logvar) - 0.5 * logvar - 0.5 * LOG_2PI).sum(-1)

    def kl(self, prior: Prior) -> Tensor:
        closed = getattr(prior, "kl_from_gaussian", None)
        if closed is not None:
            return closed(self.mu, self.logvar)
        return super().kl(prior)


class _NoDensity(Posterior):
    """A deterministic code: ``sample``, ``log_prob`` and ``kl`` raise :class:`NoDensityError`."""

    has_density = False
    what = "a deterministic code"

    def sample(self, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        raise NoDensityError(f"{self.what} has no posterior density to sample with log q")

    def log_prob(self, z: Tensor) -> Tensor:
        raise NoDensityError(f"{self.what} has no posterior density")

    def kl(self, prior: Prior) -> Tensor:
        raise NoDensityError(f"KL(q || p) is not finite for {self.what}; use divergence()")


class PointMass(_NoDensity):
    """A deterministic code z [B, D] (RAE / AE): no density; divergence = the prior's energy."""

    def rsample(self) -> Tensor:
        return self.code

    def divergence(self, prior: Prior) -> Tensor:
        return prior.energy(self.code)


def _flat(y: Tensor) -> Tensor:
    """[B, N, K] -> [B, N*K]."""
    return y.reshape(y.shape[0], -1)


def one_hot_mode(log_q: Tensor) -> Tensor:
    """one_hot(argmax) over the last dim, same shape and dtype as ``log_q`` [..., K]."""
    return F.one_hot(log_q.argmax(-1), log_q.shape[-1]).to(log_q.dtype)


class FactorizedCategorical(Posterior):
    """N independent categoricals, log q [B, N, K] (normalised); codes are flattened one-hots.

    ``relax(log_q) -> [B, N, K]`` gives the training sample (Gumbel-softmax, latents_discrete.py).
    """

    def __init__(self, log_q: Tensor, relax: Any = None) -> None:
        super().__init__(_flat(one_hot_mode(log_q)))
        self.log_q, self._relax = log_q, relax

    def rsample(self) -> Tensor:
        return _flat(self._relax(self.log_q))

    def sample(self, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """k exact one-hot draws z [k, B, N*K] and log q(z|x) [k, B]."""
        b, n, classes = self.log_q.shape
        idx = torch.multinomial(self.log_q.exp().reshape(-1, classes), k, replacement=True, generator=generator)
        idx = idx.T.reshape(k, b, n)
        lq = self.log_q.unsqueeze(0).expand(k, -1, -1, -1).gather(-1, idx.unsqueeze(-1)).squeeze(-1).sum(-1)
        return F.one_hot(idx, classes).float().reshape(k, b, n * classes), lq

    def log_prob(self, z: Tensor) -> Tensor:
        b, n, classes = self.log_q.shape
        return (z.float().reshape(*z.shape[:-1], n, classes) * self.log_q).sum((-2, -1))

    def kl(self, prior: Prior) -> Tensor:
        """sum_n sum_k q_nk (log q_nk - log p_nk), [B]; q = 0 entries contribute exactly 0."""
        log_p = prior.class_log_probs().to(self.log_q.device)
        q = self.log_q.exp()
        return (q * (self.log_q - log_p)).sum((-2, -1))


class CategoricalCode(_NoDensity):
    """A deterministic one-hot code (discrete RAE / AE) from logits log q [B, N, K].

    Training input: ``relax(log_q)`` (straight-through one-hot or tempered softmax). No density.
    Divergence (our code penalty, latents_discrete.py): 1/2 sum_{n,k} (l_nk - mean_k l_nk)^2.
    """

    what = "a deterministic categorical code"

    def __init__(self, log_q: Tensor, relax: Any = None) -> None:
        super().__init__(_flat(one_hot_mode(log_q)))
        self.log_q, self._relax = log_q, relax

    def rsample(self) -> Tensor:
        return _flat(self._relax(self.log_q))

    def divergence(self, prior: Prior) -> Tensor:
        centred = self.log_q - self.log_q.mean(-1, keepdim=True)
        return 0.5 * centred.pow(2).sum((-2, -1))
