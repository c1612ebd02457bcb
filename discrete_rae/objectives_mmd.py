"""Objectives that match the aggregate posterior to the prior with a kernel MMD.

Both replace (WAE) or complement (InfoVAE) the per-example KL of the VAE with a divergence
between the *aggregate* code distribution q(z) = E_x q(z|x) and the prior p(z), estimated on a
batch: the codes of the batch against as many prior draws.

**MMD estimator** (Gretton et al. 2012; the WAE paper's choice of kernel): for codes
z_1..z_n [n, D] and prior draws y_1..y_m [m, D], the unbiased U-statistic of MMD^2 is

    MMD^2 = 1/(n(n-1)) sum_{i != j} k(z_i, z_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j)
            - 2/(nm) sum_{i, j} k(z_i, y_j)

with the inverse multiquadratic kernel summed over scales (Tolstikhin et al. 2018, sec. 4):

    k(x, y) = sum_s C_s / (C_s + ||x - y||^2),   C_s = 2 D sigma^2 s,
    s in (0.1, 0.2, 0.5, 1, 2, 5, 10),  sigma^2 = 1 (the variance of the N(0, I) prior).

Being unbiased, the estimate can be slightly negative when the two samples come from the same
distribution; its expectation is then exactly 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .errors import ConfigError
from .objectives import Penalized
from .registry import OBJECTIVES

#: Multipliers s of the base scale 2 D sigma^2 of the inverse multiquadratic kernel (WAE paper).
IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def imq_kernel(a: Tensor, b: Tensor, prior_var: float = 1.0) -> Tensor:
    """sum_s C_s / (C_s + ||a_i - b_j||^2) for a [n, D], b [m, D] -> [n, m] (C_s = 2 D var s)."""
    d2 = torch.cdist(a, b).pow(2)
    base = 2.0 * a.shape[-1] * prior_var
    return sum(base * s / (base * s + d2) for s in IMQ_SCALES)


def mmd_imq(z: Tensor, y: Tensor, prior_var: float = 1.0) -> Tensor:
    """Unbiased MMD^2 estimate (module docstring) between samples z [n, D] and y [m, D]; n, m >= 2."""
    n, m = z.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"the MMD U-statistic needs at least 2 draws per sample, got {n} and {m}")
    z, y = z.float(), y.float()
    kzz, kyy, kzy = imq_kernel(z, z, prior_var), imq_kernel(y, y, prior_var), imq_kernel(z, y, prior_var)
    # the diagonals k(z_i, z_i) are left out of the within-sample means (U-statistic)
    within_z = (kzz.sum() - kzz.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within_z + within_y - 2.0 * kzy.mean()


def prior_draws(model: Any, like: Tensor) -> Tensor:
    """As many draws of the model's prior as there are rows in ``like`` [B, D], on its device."""
    return model.prior.sample(like.shape[0]).to(device=like.device, dtype=torch.float32)


def batch_mmd(model: Any, z: Tensor) -> Tensor:
    """MMD^2 between the batch's codes z [B, D] and B prior draws; 0 for a batch of one."""
    if z.shape[0] < 2:
        return z.new_zeros((), dtype=torch.float32)
    return mmd_imq(z, prior_draws(model, z))


def _continuous_only(cfg: Any, name: str) -> None:
    if getattr(cfg, "latent", "gaussian") not in ("gaussian", "deterministic"):
        raise ConfigError(f"objective {name!r} matches codes to an N(0, I) prior with a kernel on R^D; "
                          f"it needs a gaussian or deterministic latent, not {cfg.latent!r}")


@OBJECTIVES.register("wae_mmd")
class WaeMmd(Penalized):
    """WAE-MMD (Tolstikhin et al. 2018, Algorithm 2): a deterministic encoder and

        loss = E_batch[-log p(x | z)] + lambda * MMD^2(codes of the batch, N(0, I) draws)
               + beta * E_batch[prior energy]  (beta = 0 in the ``wae_mmd`` row) + decoder penalty

    lambda is ``mmd_weight``. "latent" logs the weighted MMD term plus any beta term; "mmd"
    the unweighted estimate.
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        _continuous_only(cfg, "wae_mmd")
        self.mmd_weight = float(cfg.mmd_weight)

    def terms(self, model: Any, x: Tensor, step: int) -> dict[str, Tensor]:
        lat, out = model(x)
        rec = model.likelihood.nll(out, x).mean()
        mmd = batch_mmd(model, lat.z)
        latent_term = self.latent_term(model, lat, step) + self.mmd_weight * mmd
        reg = model.decoder_penalty(lat, out, x)
        return {"loss": rec + latent_term + reg, "rec": rec.detach(), "latent": latent_term.detach(),
                "reg": reg.detach(), "mmd": mmd.detach(), **model.likelihood_terms()}


@OBJECTIVES.register("info_vae")
class InfoVae(Penalized):
    """InfoVAE (Zhao et al. 2019, eq. 6 with the MMD divergence, "MMD-VAE" for alpha = 1):

        loss = E_batch[-log p(x | z)] + (1 - alpha) * beta_t * E_batch[KL(q(z|x) || p(z))]
               + (alpha + lambda - 1) * MMD^2(z of the batch, prior draws) + decoder penalty

    z is the reparameterised posterior draw of each example, so the MMD compares draws of the
    aggregate posterior q(z) with draws of p(z). alpha = ``info_alpha`` (<= 1), lambda =
    ``info_lambda``; the paper's MNIST setting alpha = 0, lambda = 1000 is the default: the
    ELBO plus 999 x MMD. beta_t (the latent column's beta with its annealing) multiplies the KL
    weight so that KL annealing works as in the VAE; beta = 1 in the ``info_vae`` row.
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        _continuous_only(cfg, "info_vae")
        if getattr(cfg, "latent", "gaussian") != "gaussian":
            raise ConfigError(f"objective 'info_vae' needs a gaussian latent (it has a KL term), not {cfg.latent!r}")
        self.alpha, self.lam = float(cfg.info_alpha), float(cfg.info_lambda)
        if self.mmd_weight < 0:  # the MMD would be maximised: no longer a divergence to minimise
            raise ConfigError(f"info_vae: alpha + lambda - 1 = {self.mmd_weight:g} must be >= 0 "
                              f"(--info-alpha {self.alpha:g}, --info-lambda {self.lam:g})")

    @property
    def kl_weight(self) -> float:
        """1 - alpha (times beta_t in the loss)."""
        return 1.0 - self.alpha

    @property
    def mmd_weight(self) -> float:
        """alpha + lambda - 1."""
        return self.alpha + self.lam - 1.0

    def terms(self, model: Any, x: Tensor, step: int) -> dict[str, Tensor]:
        lat, out = model(x)
        rec = model.likelihood.nll(out, x).mean()
        kl = lat.posterior.kl(model.prior).mean()
        mmd = batch_mmd(model, lat.z)
        latent_term = self.kl_weight * self.beta_at(step) * kl + self.mmd_weight * mmd
        reg = model.decoder_penalty(lat, out, x)
        return {"loss": rec + latent_term + reg, "rec": rec.detach(), "latent": latent_term.detach(),
                "reg": reg.detach(), "kl": kl.detach(), "mmd": mmd.detach(), **model.likelihood_terms()}
