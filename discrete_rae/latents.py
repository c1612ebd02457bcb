"""Latent types: the one place where a VAE and an RAE differ.

A latent type maps encoder features ``h`` [B, H] to the code ``z`` [B, D] the decoder reads,
plus the latent regulariser of the objective:

- ``gaussian`` (VAE): q(z|x) = N(mu, diag(sigma^2)); z = mu + sigma * eps in training, mu at
  evaluation; penalty beta_t * KL(q || N(0, I)) summed over dims, mean over the batch, with
  beta_t linearly annealed from 0 to beta over ``kl_anneal_steps``.
- ``deterministic`` (RAE, Ghosh et al. 2020): z = W h; penalty beta * 1/2 ||z||^2, mean over
  the batch. The noise of the VAE is replaced by a decoder regulariser (regularizers.py).

Discrete latent types (Gumbel-softmax, deterministic categorical) live in latents_discrete.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .registry import LATENTS


@dataclass
class LatentOutput:
    """What a latent type hands on.

    z:     [B, D] the decoder input (sampled in training for stochastic latents).
    code:  [B, D] the deterministic code (posterior mean / argmax one-hot) used for ex-post
           density fitting, reconstruction and probing.
    stats: named tensors of the posterior (mu, logvar, logits, ...).
    """

    z: Tensor
    code: Tensor
    stats: dict[str, Tensor] = field(default_factory=dict)


class Latent(nn.Module):
    """Base class. Subclasses set ``discrete`` and implement forward/penalty."""

    discrete: bool = False
    stochastic: bool = False

    @property
    def code_dim(self) -> int:
        raise NotImplementedError

    def penalty(self, out: LatentOutput, step: int) -> Tensor:
        """The weighted latent term of the loss (a scalar)."""
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

    def __init__(self, in_dim: int, dim: int, beta: float = 1.0, kl_anneal_steps: int = 0) -> None:
        super().__init__()
        self.dim, self.beta, self.kl_anneal_steps = dim, beta, kl_anneal_steps
        self.head = nn.Linear(in_dim, 2 * dim)

    @classmethod
    def from_config(cls, cfg: Any, in_dim: int) -> "GaussianLatent":
        return cls(in_dim, cfg.latent_dim, cfg.beta, cfg.kl_anneal_steps)

    @property
    def code_dim(self) -> int:
        return self.dim

    def forward(self, h: Tensor) -> LatentOutput:
        mu, logvar = self.head(h).chunk(2, dim=-1)
        logvar = logvar.clamp(-12.0, 8.0)  # keeps exp() finite under bf16 and early training
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return LatentOutput(z=z, code=mu, stats={"mu": mu, "logvar": logvar})

    def beta_at(self, step: int) -> float:
        if self.kl_anneal_steps <= 0:
            return self.beta
        return self.beta * min(1.0, step / self.kl_anneal_steps)

    def kl(self, out: LatentOutput) -> Tensor:
        """KL(N(mu, sigma^2) || N(0, I)) per example, [B]: 1/2 sum(mu^2 + s^2 - log s^2 - 1)."""
        mu, logvar = out.stats["mu"].float(), out.stats["logvar"].float()
        return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(-1)

    def penalty(self, out: LatentOutput, step: int) -> Tensor:
        return self.beta_at(step) * self.kl(out).mean()


@LATENTS.register("deterministic")
class DeterministicLatent(Latent):
    """A plain linear code (RAE/AE); penalty beta * 1/2 ||z||^2 keeps the codes bounded."""

    def __init__(self, in_dim: int, dim: int, beta: float = 0.0) -> None:
        super().__init__()
        self.dim, self.beta = dim, beta
        self.head = nn.Linear(in_dim, dim)

    @classmethod
    def from_config(cls, cfg: Any, in_dim: int) -> "DeterministicLatent":
        return cls(in_dim, cfg.latent_dim, cfg.beta)

    @property
    def code_dim(self) -> int:
        return self.dim

    def forward(self, h: Tensor) -> LatentOutput:
        z = self.head(h)
        return LatentOutput(z=z, code=z)

    def penalty(self, out: LatentOutput, step: int) -> Tensor:
        if self.beta == 0:
            return out.z.new_zeros(())
        return self.beta * 0.5 * out.z.float().pow(2).sum(-1).mean()


def build_latent(cfg: Any, in_dim: int) -> Latent:
    """Build the latent type named by ``cfg.latent`` from the config's fields."""
    return LATENTS.get(cfg.latent).from_config(cfg, in_dim)
