"""Discrete latent types: the Gumbel-softmax VAE and the deterministic categorical code (RAE).

Both map encoder features ``h`` [B, H] to logits [B, N, K] of N categorical variables with K
classes each (default 30 x 10) and hand the decoder a flattened code z [B, N*K]. ``code`` is
always the one-hot argmax [B, N*K] (what ex-post samplers fit and what evaluation decodes).

``gumbel`` (Jang, Gu & Poole 2017, docs/REFERENCE.md §4)
    q(y_n | x) = Cat(softmax(l_n)). In training z_n = softmax((l_n + g_n) / tau) with
    g_n ~ Gumbel(0, 1) i.i.d. (our own float32 sampler, below); with ``straight_through`` the
    forward value is one_hot(argmax z_n) and the gradient is the relaxed sample's. At evaluation
    z_n = one_hot(argmax l_n). Latent term (objectives.py): sum_n KL(q(y_n|x) || p(y_n)); for the
    uniform prior KL(q || U) = sum_k q_k log q_k + log K (distributions.py).

``categorical`` (the discrete RAE; docs/REFERENCE.md §4 gives the reading)
    No noise and no KL. ``categorical_mode="argmax"``: z_n = one_hot(argmax l_n) forward,
    gradient of s_n = softmax(l_n / tau) backward (straight-through). ``"softmax"``: z_n = s_n
    in training (a tempered, deterministic relaxation) and the one-hot at evaluation, so that
    reconstruction is measured on the same kind of code the ex-post samplers produce. Measured
    on digits (40 epochs), ``softmax`` reconstructs far worse from one-hot codes than ``argmax``
    (119.6 against 29.7 nats per image): its decoder never sees a one-hot code in training.
    ``argmax`` is the default.
    The decoder is regularised by the shared regularisers (L2 / GP w.r.t. the relaxed code z /
    SN). Latent term (our definition, the analogue of the RAE's 1/2 ||z||^2, whose value
    is the constant N for one-hot codes; distributions.CategoricalCode): 1/2 * sum_{n,k}
    (l_nk - mean_k l_nk)^2. It bounds the logits (softmax is shift-invariant, hence the centring), which
    keeps the straight-through gradient of the softmax from vanishing as logits grow.

Temperature (both types): tau_t = max(tau_min, tau * exp(-tau_rate * t0)) where t0 is the step
rounded down to a multiple of ``tau_every`` (Jang et al.'s schedule); set by :meth:`on_step`.
It is a pure function of the step, so resuming a run restores it exactly.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .distributions import CategoricalCode, FactorizedCategorical, UniformCategorical, one_hot_mode
from .latents import Latent, LatentOutput
from .registry import LATENTS

log = logging.getLogger(__name__)

CATEGORICAL_MODES = ("argmax", "softmax")


# --- sampling primitives -------------------------------------------------------------------------
def sample_gumbel(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None = None,
                  device: torch.device | None = None) -> Tensor:
    """Standard Gumbel noise g = -log(-log u), float32, finite for every u.

    u ~ U[0, 1) is clamped to [tiny, 1 - eps/2] (float32), so -log u lies in [3e-8, 87.3] and
    g in [-4.5, 17.3]: no 0 or inf reaches a logarithm (torch's legacy sampler could).
    """
    finfo = torch.finfo(torch.float32)
    u = torch.rand(shape, generator=generator, dtype=torch.float32, device=device)
    u = u.clamp_(finfo.tiny, 1.0 - finfo.eps / 2)
    return -torch.log(-torch.log(u))


def hard_one_hot(scores: Tensor) -> Tensor:
    """one_hot(argmax) over the last dim, same shape and dtype as ``scores`` [..., K]."""
    return one_hot_mode(scores)


def straight_through(soft: Tensor) -> Tensor:
    """Forward: one_hot(argmax soft); backward: identity to ``soft`` [..., K]."""
    return hard_one_hot(soft) - soft.detach() + soft


def gumbel_softmax_sample(logits: Tensor, tau: float, hard: bool = False,
                          generator: torch.Generator | None = None) -> Tensor:
    """Relaxed sample softmax((logits + g) / tau) over the last dim, in float32.

    logits [..., K] -> [..., K]. ``hard``: straight-through one-hot. Raises for tau <= 0.
    """
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(f"Gumbel-softmax temperature must be a finite number > 0, got {tau}")
    x = logits.float()
    g = sample_gumbel(x.shape, generator=generator, device=x.device)
    soft = torch.softmax((x + g) / tau, dim=-1)
    return straight_through(soft) if hard else soft


def categorical_kl_uniform(log_q: Tensor) -> Tensor:
    """sum_n KL(q_n || Uniform(K)) per example: log_q [B, N, K] (normalised) -> [B].

    KL = sum_k q_k (log q_k + log K); q_k = 0 entries contribute exactly 0.
    """
    _, n, k = log_q.shape
    return FactorizedCategorical(log_q).kl(UniformCategorical(n * k, n, k))


def temperature_at(step: int, tau: float, tau_min: float, tau_rate: float, tau_every: int) -> float:
    """tau_t = max(tau_min, tau * exp(-tau_rate * t0)), t0 = step rounded down to tau_every."""
    t0 = (step // tau_every) * tau_every if tau_every > 0 else step
    return max(tau_min, tau * math.exp(-tau_rate * t0))


# --- shared base ---------------------------------------------------------------------------------
class _CategoricalBase(Latent):
    """Linear head to N x K logits, a temperature schedule and one-hot codes."""

    discrete = True

    def __init__(self, in_dim: int, n_vars: int, n_classes: int, tau: float = 1.0, tau_min: float = 0.5,
                 tau_rate: float = 1e-4, tau_every: int = 500) -> None:
        super().__init__()
        if n_vars < 1 or n_classes < 2:
            raise ValueError(f"need n_vars >= 1 and n_classes >= 2, got {n_vars} x {n_classes}")
        if not (tau > 0 and tau_min > 0):
            raise ValueError(f"temperatures must be > 0, got tau={tau}, tau_min={tau_min}")
        self.n_vars, self.n_classes = n_vars, n_classes
        self.tau0, self.tau_min, self.tau_rate, self.tau_every = tau, tau_min, tau_rate, tau_every
        self.tau = tau
        self.head = nn.Linear(in_dim, n_vars * n_classes)

    @property
    def code_dim(self) -> int:
        return self.n_vars * self.n_classes

    def on_step(self, step: int) -> dict[str, float]:
        self.tau = temperature_at(step, self.tau0, self.tau_min, self.tau_rate, self.tau_every)
        return {"tau": self.tau}

    def logits(self, h: Tensor) -> Tensor:
        """Log-probabilities of q(y|x), [B, N, K], float32 (log_softmax of the head)."""
        raw = self.head(h).float().view(h.shape[0], self.n_vars, self.n_classes)
        return F.log_softmax(raw, dim=-1)

    def flat(self, y: Tensor) -> Tensor:
        """[B, N, K] -> [B, N*K]."""
        return y.reshape(y.shape[0], self.code_dim)


@LATENTS.register("gumbel")
class GumbelLatent(_CategoricalBase):
    """Categorical posterior relaxed with Gumbel-softmax; its latent term is KL(q || prior)."""

    stochastic = True

    def __init__(self, in_dim: int, n_vars: int = 30, n_classes: int = 10, straight_through: bool = False,
                 **tau_kwargs: Any) -> None:
        super().__init__(in_dim, n_vars, n_classes, **tau_kwargs)
        self.hard = straight_through

    @classmethod
    def from_config(cls, cfg: Any, in_dim: int) -> "GumbelLatent":
        return cls(in_dim, cfg.n_vars, cfg.n_classes, cfg.straight_through,
                   tau=cfg.tau, tau_min=cfg.tau_min, tau_rate=cfg.tau_rate, tau_every=cfg.tau_every)

    def _relax(self, log_q: Tensor) -> Tensor:
        return gumbel_softmax_sample(log_q, self.tau, self.hard)

    def forward(self, h: Tensor) -> LatentOutput:
        q = FactorizedCategorical(self.logits(h), self._relax)
        z = q.rsample() if self.training else q.code
        return LatentOutput(z=z, code=q.code, stats={"log_q": q.log_q}, posterior=q)


@LATENTS.register("categorical")
class CategoricalLatent(_CategoricalBase):
    """Deterministic categorical code (discrete RAE / AE): argmax + straight-through, or softmax."""

    def __init__(self, in_dim: int, n_vars: int = 30, n_classes: int = 10, mode: str = "argmax",
                 **tau_kwargs: Any) -> None:
        super().__init__(in_dim, n_vars, n_classes, **tau_kwargs)
        if mode not in CATEGORICAL_MODES:
            raise ValueError(f"categorical_mode {mode!r}: choose one of {', '.join(CATEGORICAL_MODES)}")
        self.mode = mode

    @classmethod
    def from_config(cls, cfg: Any, in_dim: int) -> "CategoricalLatent":
        return cls(in_dim, cfg.n_vars, cfg.n_classes, cfg.categorical_mode,
                   tau=cfg.tau, tau_min=cfg.tau_min, tau_rate=cfg.tau_rate, tau_every=cfg.tau_every)

    def _relax(self, log_q: Tensor) -> Tensor:
        soft = torch.softmax(log_q / self.tau, dim=-1)
        return straight_through(soft) if self.mode == "argmax" else soft

    def forward(self, h: Tensor) -> LatentOutput:
        q = CategoricalCode(self.logits(h), self._relax)
        z = q.rsample() if self.training else q.code
        return LatentOutput(z=z, code=q.code, stats={"log_q": q.log_q}, posterior=q)
