"""MaskAAE: an adversarial autoencoder with a learned mask over the code dimensions.

Mondal, Pal Chowdhury, Jayendran, Singla, Asnani, Prathosh (UAI 2020), "MaskAAE: Latent space
optimization for adversarial auto-encoders". The code z = E(x) [B, D] is multiplied by a mask

    alpha = 1 - exp(-a) in [0, 1)^D,    a >= 0,

before the decoder reads it, and the prior draws p ~ N(0, I) are multiplied by the same mask
before the critic compares them with the masked codes. Dimensions whose alpha goes to 0 are
switched off; the number of dimensions left on (``mask_active``: alpha > 0.5) is the model's
estimate of the data's latent dimensionality (the paper: 11-13 on MNIST from 32, 64 or 110).

**a >= 0** by reparametrisation: a = softplus(r) with a free parameter r [D], so that
alpha = 1 - exp(-softplus(r)) = sigmoid(r) exactly. The paper's code keeps a >= 0 by a
projection after each step; a projection would need a hook after the optimizer step, which the
model-agnostic trainer does not have, while the reparametrisation holds by construction, keeps
r a plain parameter (checkpointed and resumed with the model's state_dict and the mask's own
optimizer) and never leaves a stuck at exactly 0. r starts from a ~ U(0, 5) as in the paper's
code (r = log(exp(a) - 1), a floored at 1e-3).

**Where the mask acts.** The model's decoder is wrapped (:class:`MaskedDecoder`) so that it
always reads alpha * z: in training, in reconstruction, and for any sampler's draws. A prior
draw p is therefore decoded as alpha * p (the masked prior of the paper) without a special
sampler, and an ex-post GMM fitted to the raw codes is decoded through the same mask.

**Phases per batch** (each with its own optimizer; the trainer is model-agnostic):

1. ``main`` (the model's AdamW at --lr, encoder + latent head + decoder):
   rec(x | alpha z) + var_w * V,  with the variance penalty of the paper's code
   V = mean_{b,d} (z_bd - mean_b z_d)^2 * exp(-10 alpha_d^2)  (alpha a constant here):
   a dimension the mask switches off must not carry variance (information) the decoder cannot
   see; weight ``mask_var_weight`` (100).
2. ``critic`` (Adam, lr ``critic_lr`` 1e-4, betas (0.5, 0.9) as in WGAN-GP; ``critic_steps``
   = 5 repeats per batch, on the batch's codes computed once (the paper's code draws a new batch
   per critic step; here every phase sees the trainer's batch) and fresh prior draws each
   repeat): the WGAN-GP loss (Gulrajani et al. 2017) on masked codes q = alpha z
   and masked draws p = alpha p0 (no gradient to encoder or mask):
   L_C = mean C(q) - mean C(p) + lambda_gp mean_i (||grad C(xhat_i)|| - 1)^2,
   xhat = p + u (q - p), u ~ U(0, 1) per example, lambda_gp = ``critic_gp`` (10).
3. ``generator`` (Adam, ``critic_lr``, betas (0.5, 0.9); encoder + latent head, as in the
   paper's code: the mask is not a generator variable): L_G = -mean C(alpha z).
4. ``mask`` (Adam at ``mask_lr``, 2e-2, betas (0.5, 0.9); only r; the paper's code uses 5e-4
   with RMSProp over 500k steps, which moves the mask too little in a few hundred CPU steps: Adam
   moves r by about the learning rate per step, and a ~ U(0, 5) starts r as high as 5):
   L_M = rec_w * rec(x | alpha z) + (1 + W)^2 + c_t * sum_d alpha_d (1 - alpha_d)
   with W = mean C(alpha p) - mean C(alpha z) the critic's estimate of the Wasserstein distance
   between masked prior and masked codes (the paper's code writes (1 - (mean C(q) - mean C(p)))^2,
   the same term). The reconstruction keeps informative dimensions on, the W term switches off
   those whose codes do not follow the prior, and the polynomial term pushes every alpha to 0
   or 1 with a weight c_t: the paper's doubling (2 / D) 2^floor(t / T), cap 2048 (start 2 / D
   and cap: the paper's code), with the period T = ``mask_poly_every`` steps, or by default
   (``mask_poly_every`` 0) T = round(``mask_poly_every_per_dim`` D) = round(3.125 D): 50 steps at
   D = 16, 100 at 32, 200 at 64 (:func:`poly_period`; see "The period" below). Optionally
   (``mask_poly_hold`` below the cap) the doubling pauses at the hold h = ``mask_poly_hold``
   (per dimension: the same at every D) until a start step t0, and from t0 on is h 2^floor((t - t0) / T).
   t0: the step at which the descent stalls (the soft
   count sum_d alpha_d has not fallen by one dimension for ``mask_poly_patience`` (100) steps,
   :class:`DescentStall`), at the latest ``mask_poly_start`` (300).

**The optional pause (a departure, off by default).** The paper's code doubles from step 0 with
a period of 450 D steps over 500k steps, so the weight stays small until the mask has long
settled. In a budget of
hundreds of steps a doubling from step 0 freezes every alpha on its side of 0.5 while the W term
is still pulling them down, and the count is that of an unfinished descent (on mnist5k at 600
steps: 15 / 21 / 23 active at D = 16 / 32 / 64). Without a growing weight the opposite happens:
W(alpha q, alpha p) scales with a common factor of alpha and the decoder absorbs that factor, so
the W term shrinks every alpha together (on mnist5k at D = 64 with the weight kept at 2 / D,
all 64 alphas end between 0.02 and 0.47, none active; kept at 0.5 it took the same path). The pause at h slows that common shrinking,
and the fast doubling from t0 rounds the alphas to 0 or 1. Measured on mnist5k at 600 steps with
hold 2, doubling every 10 steps, mask lr 5e-2, t0 at the stall or step 300: 7 / 8 / 18 active at
D = 16 / 32 / 64, further apart than the paper's schedule (15 / 21 / 23), so the default is the
paper's schedule (hold 2048, the cap: no pause, t0 unused; mask lr 2e-2). The stall's state
(:class:`DescentStall`) exists only with the pause on; checkpoints with or without it load either
way (:meth:`MaskAAE._drop_stale_stall`).

**The period.** c_t reaches a given multiple of its start 2 / D after a number of doublings that
does not depend on D, so with a fixed period (50 steps, the schedule of earlier versions) every D
rounds its mask at the same step, while the W term's descent has D dimensions to switch off and
(our reading of the traces, not proven) takes longer at larger D: the count is frozen earlier in
the descent the larger D (on mnist5k at
600 steps: 15 / 21 / 23 active at D = 16 / 32 / 64). A period proportional to D, T = 3.125 D
(the paper's code: 450 D over 500k steps; the factor is set so that D = 16 keeps the old 50),
gives the descent time in proportion to the number of dimensions; --mask-poly-every 50 restores
the fixed schedule (and old run configs, which record 50, keep it).

**Code noise (optional, off by default).** ``mask_noise`` sigma > 0: in training the decoder reads
alpha (z + sigma eps), eps ~ N(0, I), so a dimension whose alpha is large passes noise the
reconstruction must tolerate (not in the paper; the README's measurements are without it).

**Code bound (optional, off by default).** alpha * z is unchanged when alpha shrinks by a factor
and z grows by the same factor, and the W term only sees alpha * z, so at large D the mask can
fall as a whole while the encoder enlarges its codes (measured on mnist5k at D = 64, 2,400 steps:
every alpha ends near 0.013, none active, reconstruction intact). ``mask_code_bound`` B > 0
squashes the code to B tanh(z / B) wherever the mask reads it (decoder, critic, generator, the
variance penalty; prior draws too), so a smaller alpha always means a weaker signal.

Scale: the paper's code weighs a per-pixel mean binary cross-entropy by 1000 in L_M; this
toolkit's reconstruction is a per-image sum over pixels, so ``mask_rec_weight`` defaults to 1
(not tuned; on mnist5k at 600 steps the number of active dimensions depends strongly on it).

Validation, early stopping and the NaN guard read ``model.loss``: the reconstruction through the
masked decoder (the ``penalized`` terms), never an adversarial or mask term.

Monitoring: the mask phase logs ``mask/active`` (alpha > 0.5), ``mask/soft_count`` (sum alpha),
``mask/poly_weight`` and every
``mask/alpha_<d>``, so metrics.jsonl holds the mask trace per epoch (epoch means);
:func:`mask_report` adds ``mask_active`` and ``mask_alpha`` to the evaluation and draws
``mask_trace.png`` from that history.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import CONTINUOUS_LATENTS
from .errors import ConfigError
from .nn.critic import unit_gradient_penalty
from .objectives import Penalized, Phase
from .objectives_adversarial import Discriminator
from .registry import OBJECTIVES

log = logging.getLogger(__name__)

#: alpha above this counts as an active dimension
ACTIVE_THRESHOLD = 0.5
#: the polynomial weight's start (times 1 / D) and cap, from the paper's code
POLY_START, POLY_CAP = 2.0, 2048.0
#: a drop of the soft count sum(alpha) by this much (one dimension) counts as the descent moving
STALL_TOL = 1.0
#: WGAN-GP's Adam betas for the critic, the generator and the mask
WGAN_BETAS = (0.5, 0.9)


class LatentMask(nn.Module):
    """alpha = 1 - exp(-softplus(r)) in (0, 1)^D, r [D] a free parameter (module docstring).

    ``bound`` B > 0: the mask reads the squashed code B tanh(z / B) (:meth:`squash`), so that
    |z| < B and the encoder cannot undo a common shrinking of alpha by enlarging z.
    """

    def __init__(self, dim: int, init_high: float = 5.0, bound: float = 0.0) -> None:
        super().__init__()
        a = torch.rand(dim).mul(init_high).clamp_min(1e-3)  # the paper's a ~ U(0, 5)
        self.raw = nn.Parameter(torch.log(torch.expm1(a)))  # softplus^-1(a)
        self.bound = float(bound)

    def squash(self, z: Tensor) -> Tensor:
        """B tanh(z / B) [..., D] for bound B > 0; z itself when the bound is off (0)."""
        return self.bound * torch.tanh(z / self.bound) if self.bound > 0 else z

    def a(self) -> Tensor:
        """a = softplus(r) >= 0 [D]."""
        return F.softplus(self.raw)

    def alpha(self) -> Tensor:
        """alpha = 1 - exp(-a) = -expm1(-a) [D] (expm1: exact for small a)."""
        return -torch.expm1(-self.a())

    def forward(self, z: Tensor) -> Tensor:
        """alpha * squash(z) for codes [..., D]."""
        return self.squash(z) * self.alpha().to(z.dtype)


class MaskedDecoder(nn.Module):
    """The model's decoder reading alpha * z: forward and, where the inner decoder has them,
    generate and the stepping API of beam search (``_h0``, ``step``) mask their code argument;
    other attributes are the inner decoder's.

    The mask is held as a plain reference (not a submodule): it is the objective's parameter,
    trained by the mask optimizer only, and stays out of the decoder's parameter groups.
    """

    def __init__(self, inner: nn.Module, mask: LatentMask, noise: float = 0.0) -> None:
        super().__init__()
        self.inner = inner
        self.noise = float(noise)
        self.__dict__["_mask"] = mask  # not registered: see the class docstring

    #: methods of sequence decoders whose first argument is the code (generation, beam search)
    CODE_METHODS = ("generate", "_h0", "step")

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__["_modules"]["inner"]
            attr = getattr(inner, name)  # AttributeError when the inner decoder lacks it too
            if name in self.CODE_METHODS:
                return lambda z, *args, **kwargs: attr(self._mask(z), *args, **kwargs)
            return attr

    def forward(self, z: Tensor, x: Tensor | None) -> Tensor:
        """inner(alpha * z, x); in training with ``noise`` sigma > 0: inner(alpha * (z + sigma eps), x)."""
        if self.training and self.noise > 0:
            z = z + self.noise * torch.randn_like(z)
        return self.inner(self._mask(z), x)


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, weight: float) -> Tensor:
    """weight * mean_i (||grad_x C(xhat_i)||_2 - 1)^2, xhat = real + u (fake - real), u ~ U(0, 1) [B, 1].

    ``real``/``fake`` [B, D]; the graph is kept (create_graph) so the penalty trains the critic.
    """
    u = torch.rand(real.shape[0], 1, device=real.device)
    xhat = (real + u * (fake - real)).detach().requires_grad_(True)
    return weight * unit_gradient_penalty(critic, xhat)


def variance_penalty(z: Tensor, alpha: Tensor) -> Tensor:
    """mean_{b,d} (z_bd - mean_b z_d)^2 exp(-10 alpha_d^2): batch variance of the dimensions the
    mask switches off (weight ~1 at alpha 0, 0.08 at 0.5, 5e-5 at 1). z [B, D], alpha [D]."""
    return ((z - z.mean(0, keepdim=True)).pow(2) * torch.exp(-10.0 * alpha.pow(2))).mean()


def poly_period(every: int, per_dim: float, dim: int) -> int:
    """The doubling period T in steps: ``every`` when > 0 (a fixed period), else
    max(1, round(per_dim * dim)), halves rounded up (the default: 3.125 D, i.e. 50 / 100 / 200 at
    D = 16 / 32 / 64, 13 at D = 4)."""
    if every > 0:
        return int(every)
    return max(1, int(math.floor(float(per_dim) * int(dim) + 0.5)))


def poly_weight(step: int, dim: int, every: int, start: int = 0, hold: float = math.inf) -> float:
    """The polynomial weight c_t (module docstring), capped at 2048, with h = max(hold, 2 / D):
    before step ``start`` (or while ``start`` < 0) min(h, (2 / D) 2^floor(step / every)), the
    paper's doubling paused at h; from ``start`` on h 2^floor((step - start) / every).
    ``hold`` >= 2048 (the cap; inf too): the paper's schedule (the doubling never pauses)."""
    every = max(every, 1)
    h = max(hold, POLY_START / dim)
    if 0 <= start <= step and h < POLY_CAP:
        c = h * 2.0 ** min((step - start) // every, 64)
    else:
        c = min(h, POLY_START / dim * 2.0 ** min(step // every, 64))
    return min(POLY_CAP, c)


class DescentStall(nn.Module):
    """When the mask's descent has stopped: the step from which the polynomial weight doubles.

    The soft count s_t = sum_d alpha_d is followed from a reference value s_ref (the first s_t, then
    each s_t that lies at least ``STALL_TOL`` (one dimension) below the reference); the descent has
    stalled once ``patience`` steps pass without such a drop, and the doubling starts at that step
    (``start``; -1 before), or at step ``latest`` if that comes first (0: no latest step).
    ``patience`` 0: the pause ends at step 0. Buffers, so that a resumed run continues the same
    schedule.
    """

    def __init__(self, patience: int, latest: int = 0) -> None:
        super().__init__()
        self.patience, self.latest = int(patience), int(latest)
        for name, value in self.fresh_state().items():
            self.register_buffer(name, value)

    def fresh_state(self) -> dict[str, Tensor]:
        """The buffers before any step: ref inf, since 0, start -1 (0 with patience 0)."""
        return {"ref": torch.tensor(math.inf), "since": torch.tensor(0, dtype=torch.long),
                "start": torch.tensor(0 if self.patience == 0 else -1, dtype=torch.long)}

    def update(self, step: int, soft: float) -> int:
        """Record s_t at ``step``; returns the doubling's start step (-1: not yet)."""
        if int(self.start) >= 0:
            return int(self.start)
        if soft <= float(self.ref) - STALL_TOL:
            self.ref.fill_(soft)
            self.since.fill_(step)
        elif step - int(self.since) >= self.patience:
            self.start.fill_(step)
            log.info("mask descent stalled at step %d (sum alpha %.2f): polynomial weight doubles from here",
                     step, soft)
        if int(self.start) < 0 and 0 < self.latest <= step:
            self.start.fill_(step)
            log.info("mask: step %d reached (sum alpha %.2f): polynomial weight doubles from here", step, soft)
        return int(self.start)


@OBJECTIVES.register("mask_aae")
class MaskAAE(Penalized):
    """MaskAAE: main, critic (x critic_steps), generator and mask phases (module docstring)."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        if cfg.latent not in CONTINUOUS_LATENTS:
            raise ConfigError(f"the {cfg.objective} objective needs a continuous latent "
                              f"({' | '.join(CONTINUOUS_LATENTS)}), not {cfg.latent!r}")
        self.dim = int(cfg.latent_dim)
        self.critic = Discriminator(self.dim, int(cfg.disc_hidden), int(cfg.disc_layers))
        self.mask = LatentMask(self.dim, bound=float(cfg.mask_code_bound))
        self.critic_steps, self.gp_weight = int(cfg.critic_steps), float(cfg.critic_gp)
        self.critic_lr, self.mask_lr = float(cfg.critic_lr), float(cfg.mask_lr)
        self.var_weight, self.rec_weight = float(cfg.mask_var_weight), float(cfg.mask_rec_weight)
        self.poly_every = poly_period(int(cfg.mask_poly_every), float(cfg.mask_poly_every_per_dim), self.dim)
        self.poly_hold = float(cfg.mask_poly_hold)
        self.noise = float(cfg.mask_noise)
        # the stall's state only when the pause is on (hold below the cap): without it nothing reads it
        self.stall = (DescentStall(int(cfg.mask_poly_patience), int(cfg.mask_poly_start))
                      if self.paused else None)
        self._register_load_state_dict_pre_hook(self._drop_stale_stall)
        log.info("mask_aae: polynomial weight doubles every %d steps (D = %d)%s", self.poly_every, self.dim,
                 "" if self.stall is None else f", paused at {self.poly_hold:g}")

    @property
    def paused(self) -> bool:
        """Whether the doubling pauses (``mask_poly_hold`` below the cap 2048)."""
        return self.poly_hold < POLY_CAP

    def _drop_stale_stall(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Load hook: drop the stall's keys (``stall.ref``, ``stall.since``, ``stall.start``) from a
        checkpoint when this objective has no stall (the pause off; checkpoints of earlier versions
        kept them always). The opposite case, a pause on and no keys, starts the stall afresh: the
        missing keys are filled with :meth:`DescentStall.fresh_state`."""
        keys = [k for k in state_dict if k.startswith(prefix + "stall.")]
        if self.stall is None:
            for key in keys:
                del state_dict[key]
        elif not keys:
            for name, value in self.stall.fresh_state().items():
                state_dict[prefix + "stall." + name] = value

    def attach(self, model: Any) -> None:
        """Make the model's decoder read alpha * z (called once by the model)."""
        if not isinstance(model.decoder, MaskedDecoder):
            model.decoder = MaskedDecoder(model.decoder, self.mask, self.noise)

    # --- pieces -----------------------------------------------------------------------------------
    def alpha(self) -> Tensor:
        return self.mask.alpha()

    def raw_codes(self, model: Any, x: Tensor) -> Tensor:
        """The unmasked codes squash(z) [B, D] (z a posterior sample for Gaussian latents)."""
        return self.mask.squash(model.latent(model.encoder(x)).z.float())

    def _batch_codes(self, model: Any, x: Tensor, step: int) -> Tensor:
        """The batch's codes for the critic's repeats: the encoder does not move during them, so
        they are computed once per (batch, step) and kept only until the next batch."""
        key = (x.data_ptr(), tuple(x.shape), step)
        cached = self.__dict__.get("_codes")
        if cached is None or cached[0] != key:
            cached = (key, self.raw_codes(model, x))
            self.__dict__["_codes"] = cached  # a plain attribute: never part of the state_dict
        return cached[1]

    def masked_prior(self, model: Any, n: int, alpha: Tensor) -> Tensor:
        """alpha * squash(p), p ~ the model's prior [n, D] (squash: the code bound, if any, as the
        decoder applies it to a prior draw)."""
        return self.mask.squash(model.prior.sample(n).to(device=alpha.device, dtype=torch.float32)) * alpha

    def wasserstein(self, q: Tensor, p: Tensor) -> Tensor:
        """The critic's estimate W = mean C(p) - mean C(q) (prior draws score high)."""
        return self.critic(p).mean() - self.critic(q).mean()

    # --- phases -----------------------------------------------------------------------------------
    def main_terms(self, model: Any, x: Tensor, step: int) -> dict[str, Tensor]:
        """Phase "main": the reconstruction terms + var_w * variance penalty (alpha constant)."""
        lat, out = model(x)
        rec = model.likelihood.nll(out, x).mean()
        latent_term = self.latent_term(model, lat, step)
        reg = model.decoder_penalty(lat, out, x)
        var = variance_penalty(self.mask.squash(lat.z.float()), self.alpha().detach())
        return {"loss": rec + latent_term + reg + self.var_weight * var, "rec": rec.detach(),
                "latent": latent_term.detach(), "reg": reg.detach(), "var": var.detach(), **model.likelihood_terms()}

    def critic_terms(self, model: Any, x: Tensor, step: int) -> dict[str, Tensor]:
        """Phase "critic": WGAN-GP on alpha * codes vs alpha * prior draws (encoder, mask fixed)."""
        with torch.no_grad():
            alpha = self.alpha()
            q = self._batch_codes(model, x, step) * alpha
        p = self.masked_prior(model, len(q), alpha)
        w = self.wasserstein(q, p)
        gp = gradient_penalty(self.critic, p, q, self.gp_weight)
        return {"loss": -w + gp, "w": w.detach(), "gp": gp.detach()}

    def generator_terms(self, model: Any, x: Tensor, step: int) -> dict[str, Tensor]:
        """Phase "generator": -mean C(alpha z), stepped on encoder + latent head."""
        q = self.raw_codes(model, x) * self.alpha().detach()
        adv = -self.critic(q).mean()
        return {"loss": adv, "adv": adv.detach()}

    def mask_terms(self, model: Any, x: Tensor, step: int) -> dict[str, Tensor]:
        """Phase "mask": rec_w * rec + (1 + W)^2 + c_t sum alpha (1 - alpha), stepped on r only."""
        alpha = self.alpha()
        with torch.no_grad():
            z = model.latent(model.encoder(x)).z
        rec = model.likelihood.nll(model.decoder(z, x), x).mean()  # the decoder applies alpha
        w = self.wasserstein(self.mask(z.float()), self.masked_prior(model, len(z), alpha))  # alpha * squash(z)
        a = alpha.detach()
        # the stall is followed in training steps only (an evaluation call must not move it) and
        # only when the pause is on (hold below the cap)
        if self.stall is None:
            start = -1
        elif self.training:
            start = self.stall.update(step, float(a.sum()))
        else:
            start = int(self.stall.start)
        c = poly_weight(step, self.dim, self.poly_every, start, self.poly_hold)
        poly = (alpha * (1 - alpha)).sum()
        loss = self.rec_weight * rec + (1.0 + w).pow(2) + c * poly
        trace = {f"alpha_{d:02d}": a[d] for d in range(self.dim)}
        return {"loss": loss, "rec": rec.detach(), "w": w.detach(), "poly": poly.detach(),
                "poly_weight": a.new_tensor(c), "soft_count": a.sum(),
                "active": (a > ACTIVE_THRESHOLD).sum().float(), **trace}

    # --- optimizers -------------------------------------------------------------------------------
    def extra_optimizers(self, model: Any, lr: float) -> dict[str, torch.optim.Optimizer]:
        """Critic and generator: Adam(critic_lr, (0.5, 0.9)); mask: Adam(mask_lr, (0.5, 0.9))."""
        gen = list(model.encoder.parameters()) + list(model.latent.parameters())
        return {"critic": torch.optim.Adam(self.critic.parameters(), lr=self.critic_lr, betas=WGAN_BETAS),
                "generator": torch.optim.Adam(gen, lr=self.critic_lr, betas=WGAN_BETAS),
                "mask": torch.optim.Adam(self.mask.parameters(), lr=self.mask_lr, betas=WGAN_BETAS)}

    def phases(self, model: Any) -> list[Phase]:
        return [Phase("main", "main", lambda x, step: self.main_terms(model, x, step)),
                Phase("critic", "critic", lambda x, step: self.critic_terms(model, x, step), self.critic_steps),
                Phase("generator", "generator", lambda x, step: self.generator_terms(model, x, step)),
                Phase("mask", "mask", lambda x, step: self.mask_terms(model, x, step))]


def is_masked(model: Any) -> bool:
    """True when ``model``'s objective is MaskAAE."""
    return isinstance(getattr(model, "objective", None), MaskAAE)


def mask_trace(history: list[dict]) -> tuple[list[int], list[list[float]]]:
    """(steps, alpha per epoch [E][D]) from the trainer's history (epoch means of the mask phase)."""
    steps, alphas = [], []
    for record in history:
        train = record.get("train", {})
        keys = sorted(k for k in train if k.startswith("mask/alpha_"))
        if keys:
            steps.append(int(record["step"]))
            alphas.append([float(train[k]) for k in keys])
    return steps, alphas


def save_mask_trace(steps: list[int], alphas: list[list[float]], final: list[float], path: Path) -> None:
    """Draw alpha_d per epoch (one line per dimension) and write a PNG (matplotlib object API).

    ``final``: the evaluated model's alpha [D] (the restored best-validation weights, which may
    be an earlier epoch than the trace's last)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    if alphas:
        for d in range(len(alphas[0])):
            ax.plot(steps, [row[d] for row in alphas], lw=0.9)
    ax.axhline(ACTIVE_THRESHOLD, color="k", ls=":", lw=0.8)
    active = sum(a > ACTIVE_THRESHOLD for a in final)
    ax.set_title(f"MaskAAE mask per epoch; {active} of {len(final)} dimensions active (alpha > 0.5) "
                 "in the evaluated weights", fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("alpha (epoch mean)")
    ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@torch.no_grad()
def mask_report(model: Any, history: list[dict] | None = None, run_dir: Path | None = None) -> dict[str, Any]:
    """``mask_active`` (alpha > 0.5) and ``mask_alpha`` [D] of a MaskAAE model ({} for others);
    with a run directory also ``mask_trace.png`` from the training history."""
    if not is_masked(model):
        return {}
    alpha = [round(float(a), 4) for a in model.objective.alpha().cpu()]
    out = {"mask_active": int(sum(a > ACTIVE_THRESHOLD for a in alpha)), "mask_alpha": alpha}
    if run_dir is not None:
        steps, alphas = mask_trace(history or [])
        save_mask_trace(steps, alphas, alpha, Path(run_dir) / "mask_trace.png")
    if not math.isfinite(sum(alpha)):
        log.warning("the mask holds non-finite values: %s", alpha)
    return out
