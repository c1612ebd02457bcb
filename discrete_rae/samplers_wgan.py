"""The ``wgan`` ex-post sampler: a WGAN-GP generator fitted to frozen codes (the FlexAE idea, ex post).

Built on :class:`discrete_rae.samplers_learned.LearnedSampler` (standardised codes, seeded
hold-out split, selection on the held-out codes, plain-tensor state). Also here: the two
held-out criteria it can select by, :func:`energy_distance` and :func:`code_frechet`.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .metrics.frechet import frechet_distance, gaussian_stats
from .nn.critic import unit_gradient_penalty
from .registry import SAMPLERS
from .samplers_learned import LearnedSampler, _positive_int, mlp


def energy_distance(a: Tensor, b: Tensor) -> float:
    """Energy distance 2 E||a - b|| - E||a - a'|| - E||b - b'|| of samples a [N, D], b [M, D] (>= 0;
    0 iff the distributions agree); the V-statistic, cheap for a few thousand points."""
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def code_frechet(a: Tensor, b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two sets of codes a [N, D] and b [M, D] (N, M >= 2).

    ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2}) with unbiased covariances, computed in
    float64 by metrics/frechet.py (the formula of the image metric, here on the codes themselves,
    not on classifier features). 0 for equal means and covariances; it sees only the first two
    moments, so it is a selection criterion, not a test of equal distributions.
    """
    stats = [gaussian_stats(np.asarray(x.detach().cpu(), dtype=np.float64)) for x in (a, b)]
    return float(frechet_distance(*stats[0], *stats[1]))


SELECT = ("frechet", "energy")
# what an option means, for the option errors and ``fit-sampler --help`` (set with --set KEY=VALUE)
OPTION_HELP = {
    "steps": "training steps (each: n_critic critic steps + 1 generator step); default 6000",
    "lr": "Adam learning rate of generator and critic; default 3e-4",
    "lr_decay": "True: the learning rate decays linearly to 0 over the steps; False: constant; default True",
    "betas": "Adam betas (b1, b2), each in [0, 1); default (0.5, 0.9)",
    "ema": "decay of the EMA (Polyak) copy of the generator that samples, in [0, 1); 0 = sample from the "
           "trained generator itself; default 0.999",
    "select": "held-out criterion that picks the kept step: frechet (Fréchet distance of generated vs "
              "held-out codes) or energy (energy distance); default frechet",
    "hidden, layers": "MLP width and depth of generator and critic; default 256, 3",
    "n_critic, gp_weight": "critic steps per generator step, gradient-penalty weight; default 5, 10",
    "noise_dim": "generator noise size, 0 = the code size; default 0",
    "eval_every, patience, n_eval": "held-out check every N steps, stop after P checks without "
                                    "improvement, generated codes per check; default 50, 40, 1000",
}
# the behaviour of states saved before ema / select / lr_decay existed (they load as they sampled)
LEGACY = {"ema": 0.0, "select": "energy", "lr_decay": False}


def option_help() -> str:
    """The wgan options, one per line (for ``fit-sampler --help``)."""
    return "\n".join(f"  {key}: {text}" for key, text in OPTION_HELP.items())


@SAMPLERS.register("wgan")
class WGANSampler(LearnedSampler):
    """A generator g(e) -> code trained adversarially on the frozen codes (the FlexAE idea, ex post).

    WGAN-GP (Gulrajani et al. 2017, Algorithm 1) on standardised codes x: a critic C and a
    generator g of noise e ~ N(0, I_noise_dim). Each step takes ``n_critic`` (5) critic steps on

        L_C = E[C(g(e))] - E[C(x)] + lambda E[(||grad C(x_hat)||_2 - 1)^2],   lambda = 10,
        x_hat = t x + (1 - t) g(e),   t ~ U(0, 1),

    then one generator step on L_g = -E[C(g(e))]; both with Adam(lr 3e-4, betas (0.5, 0.9)),
    the learning rate decaying linearly to 0 over the 6,000 steps (``lr_decay``). After every
    generator step an EMA copy g_ema <- ema g_ema + (1 - ema) g (``ema`` 0.999; Polyak
    averaging, which damps the generator's oscillation around the critic's moving target) is
    updated; it is the generator that samples and that the selection scores (``ema`` 0: g itself).

    Selection: the critic's loss does not tell how good the generator is across steps, so every
    ``eval_every`` steps ``n_eval`` codes generated from fixed noise are compared with the
    held-out codes, by ``select``: ``frechet`` (:func:`code_frechet`, in code space; default) or
    ``energy`` (:func:`energy_distance`, standardised space). The best step's weights are kept;
    ``patience`` checks without improvement stop the fit. Never any test data.

    Why these defaults: on the codes of an 800-step RAE-L2 on mnist5k (16-D), 4,000 steps at lr
    2e-4, betas (0, 0.9), no EMA, selected by energy distance gave sample Fréchet 56.4 (GMM 49.3);
    see the README's FlexAE section for the figures of the current ones.

    Sampling: e ~ N(0, I), code = g_ema(e). There is no ``log_prob``: a generator defines no
    density (the codes lie on the image of g). States saved before ``ema`` / ``select`` /
    ``lr_decay`` existed load with those off (:data:`LEGACY`), so they sample as before.
    """

    name = "wgan"

    def __init__(self, hidden: int = 256, layers: int = 3, noise_dim: int = 0, n_critic: int = 5,
                 gp_weight: float = 10.0, steps: int = 6000, batch_size: int = 256, lr: float = 3e-4,
                 betas: tuple[float, float] = (0.5, 0.9), val_fraction: float = 0.1, eval_every: int = 50,
                 patience: int = 40, n_eval: int = 1000, ema: float = 0.999, select: str = "frechet",
                 lr_decay: bool = True) -> None:
        betas = self._check_betas(betas)
        if isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0.0 <= ema < 1.0:
            raise ValueError(f"wgan sampler option ema={ema!r}: expected an EMA decay in [0, 1) "
                             f"(0 = off); {OPTION_HELP['ema']}")
        if select not in SELECT:
            raise ValueError(f"wgan sampler option select={select!r}: choose one of {', '.join(SELECT)} "
                             f"({OPTION_HELP['select']})")
        if not isinstance(lr_decay, bool):
            raise ValueError(f"wgan sampler option lr_decay={lr_decay!r}: expected True or False "
                             f"({OPTION_HELP['lr_decay']})")
        super().__init__(steps=steps, batch_size=batch_size, lr=lr, val_fraction=val_fraction,
                         eval_every=eval_every, patience=patience, hidden=hidden, layers=layers,
                         noise_dim=noise_dim, n_critic=n_critic, gp_weight=gp_weight, betas=betas,
                         n_eval=n_eval, ema=float(ema), select=select, lr_decay=lr_decay)
        for key in ("hidden", "layers", "n_critic", "n_eval"):
            _positive_int(key, self.options[key])
        if isinstance(noise_dim, bool) or not isinstance(noise_dim, int) or noise_dim < 0:
            raise ValueError(f"wgan sampler option noise_dim={noise_dim!r}: expected an integer >= 0 (0 = code dim)")
        if not gp_weight >= 0:
            raise ValueError(f"wgan sampler option gp_weight={gp_weight!r}: expected a weight >= 0")
        self.batches_per_step = n_critic

    @staticmethod
    def _check_betas(betas: Any) -> list[float]:
        ok = isinstance(betas, (tuple, list)) and len(betas) == 2 and all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in betas)
        if not ok:
            raise ValueError(f"wgan sampler option betas={betas!r}: expected two numbers in [0, 1), "
                             f"e.g. betas=(0.5,0.9)")
        return [float(b) for b in betas]

    @property
    def noise_dim(self) -> int:
        return self.options["noise_dim"] or self.dim

    def _build(self) -> nn.ModuleDict:
        h, k = self.options["hidden"], self.options["layers"]
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        nets = nn.ModuleDict({"generator": mlp([self.noise_dim] + [h] * k + [self.dim], act),
                              "critic": mlp([self.dim] + [h] * k + [1], act)})
        if self.options["ema"] > 0:
            nets["ema"] = copy.deepcopy(nets["generator"]).requires_grad_(False)
        return nets

    def _setup(self, gen: torch.Generator) -> None:
        o = self.options
        lr, betas = o["lr"], tuple(o["betas"])
        self.opt_g = torch.optim.Adam(self.nets["generator"].parameters(), lr=lr, betas=betas)
        self.opt_c = torch.optim.Adam(self.nets["critic"].parameters(), lr=lr, betas=betas)
        steps = o["steps"]
        factor = (lambda s: max(0.0, 1.0 - s / steps)) if o["lr_decay"] else (lambda s: 1.0)
        self.schedules = [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in (self.opt_g, self.opt_c)]

    @property
    def sampling_generator(self) -> nn.Module:
        """The network that draws: the EMA copy when ``ema`` > 0, else the trained generator."""
        return self.nets["ema"] if "ema" in self.nets else self.nets["generator"]

    def _critic_loss(self, real: Tensor, gen: torch.Generator) -> Tensor:
        critic = self.nets["critic"]
        with torch.no_grad():
            fake = self.nets["generator"](torch.randn(len(real), self.noise_dim, generator=gen))
        t = torch.rand(len(real), 1, generator=gen)
        mix = (t * real + (1 - t) * fake).requires_grad_(True)
        penalty = unit_gradient_penalty(critic, mix)
        return critic(fake).mean() - critic(real).mean() + self.options["gp_weight"] * penalty

    def _train_step(self, batch: Tensor, gen: torch.Generator) -> float:
        for real in batch.chunk(self.options["n_critic"]):
            loss_c = self._critic_loss(real, gen)
            self.opt_c.zero_grad(set_to_none=True)
            loss_c.backward()
            self.opt_c.step()
        e = torch.randn(len(batch) // self.options["n_critic"], self.noise_dim, generator=gen)
        loss_g = -self.nets["critic"](self.nets["generator"](e)).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()  # the critic's gradients are cleared before its next step
        self.opt_g.step()
        for schedule in self.schedules:
            schedule.step()
        if "ema" in self.nets:
            self._update_ema()
        return loss_c.item()

    @torch.no_grad()
    def _update_ema(self) -> None:
        weight = 1.0 - self.options["ema"]
        for avg, cur in zip(self.nets["ema"].parameters(), self.nets["generator"].parameters()):
            avg.lerp_(cur, weight)

    @torch.no_grad()
    def _val_loss(self, x: Tensor) -> float:
        e = torch.randn(self.options["n_eval"], self.noise_dim, generator=torch.Generator().manual_seed(1))
        fake = self.sampling_generator(e)
        if self.options["select"] == "energy":
            return energy_distance(fake, x)
        return code_frechet(self._to_codes(fake), self._to_codes(x))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        self._check_fitted()
        return self._to_codes(self.sampling_generator(torch.randn(n, self.noise_dim, generator=generator)))

    def load_state_dict(self, state: dict[str, Any]) -> "WGANSampler":
        if "ema" not in (state.get("options") or {}):  # saved before ema / select / lr_decay existed
            self.options.update(LEGACY)
        return super().load_state_dict(state)

    def log_prob(self, codes: Tensor) -> Tensor:
        raise NotImplementedError("the wgan sampler has no density (a generator's codes lie on the image of g); "
                                  "compare it by sample distances instead")
