"""Latent types: the one place where a VAE and an RAE differ.

A latent type maps encoder features ``h`` [B, H] to a posterior q(z|x) (distributions.py) and
the code ``z`` [B, D] the decoder reads:

- ``gaussian`` (VAE): q(z|x) = N(mu, diag(sigma^2)); z = mu + sigma * eps in training, mu at
  evaluation. Its latent term in the objective is KL(q || prior).
- ``deterministic`` (RAE, Ghosh et al. 2020): z = W h, a point mass; its latent term is the
  prior's energy, 1/2 ||z||^2 for N(0, I). The noise of the VAE is replaced by a decoder
  regulariser (regularizers.py).

The weight beta of the latent term and its annealing belong to the objective (objectives.py).

Discrete latent types (Gumbel-softmax, deterministic categorical) live in latents_discrete.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from .distributions import DiagonalGaussian, PointMass, Posterior
from .registry import LATENTS


@dataclass
class LatentOutput:
    """What a latent type hands on.

    z:     [B, D] the decoder input (sampled in training for stochastic latents).
    code:  [B, D] the deterministic code (posterior mean / argmax one-hot) used for ex-post
           density fitting, reconstruction and probing.
    stats: named tensors of the posterior (mu, logvar, logits, ...).
    posterior: the posterior object q(z|x) (distributions.py).
    """

    z: Tensor
    code: Tensor
    stats: dict[str, Tensor] = field(default_factory=dict)
    posterior: Posterior | None = None


class Latent(nn.Module):
    """Base class. Subclasses set ``discrete`` / ``stochastic`` and implement ``forward``."""

    discrete: bool = False
    stochastic: bool = False

    @property
    def code_dim(self) -> int:
        raise NotImplementedError

    def on_step(self, step: int) -> dict[str, float]:
        """Hook for schedules (e.g. Gumbel temperature); returns values to log."""
        return {}

    @classmethod
    def from_config(cls, cfg: Any, in_dim: int) -> "Latent":
        raise NotImplementedError


@LATENTS.register("gaussian")
class GaussianLatent(Latent):
    """Diagonal Gaussian posterior with the reparameterisation trick (VAE)."""

    stochastic = True

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.head = nn.Linear(in_dim, 2 * dim)

    @classmethod
    def from_config(cls, cfg: Any, in_dim: int) -> "GaussianLatent":
        return cls(in_dim, cfg.latent_dim)

    @property
    def code_dim(self) -> int:
        return self.dim

    def forward(self, h: Tensor) -> LatentOutput:
        mu, logvar = self.head(h).chunk(2, dim=-1)
        # keeps exp() finite under bf16 and early training; straight-through, so that a logvar
        # pushed past a bound still gets the gradient of the clamped value and can come back
        # (a hard clamp froze one dimension of an IWAE at logvar 8 for good)
        logvar = logvar + (logvar.clamp(-12.0, 8.0) - logvar).detach()
        q = DiagonalGaussian(mu, logvar)
        z = q.rsample() if self.training else mu
        return LatentOutput(z=z, code=mu, stats={"mu": mu, "logvar": logvar}, posterior=q)


@LATENTS.register("deterministic")
class DeterministicLatent(Latent):
    """A plain linear code (RAE/AE), a point mass; with N(0, I) its latent term is 1/2 ||z||^2."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.head = nn.Linear(in_dim, dim)

    @classmethod
    def from_config(cls, cfg: Any, in_dim: int) -> "DeterministicLatent":
        return cls(in_dim, cfg.latent_dim)

    @property
    def code_dim(self) -> int:
        return self.dim

    def forward(self, h: Tensor) -> LatentOutput:
        z = self.head(h)
        return LatentOutput(z=z, code=z, posterior=PointMass(z))


def build_latent(cfg: Any, in_dim: int) -> Latent:
    """Build the latent type named by ``cfg.latent`` from the config's fields."""
    return LATENTS.get(cfg.latent).from_config(cfg, in_dim)
