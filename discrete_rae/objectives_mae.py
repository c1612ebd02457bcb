"""MAE: mutual posterior-divergence regularisation (Ma, Zhou & Hovy, ICLR 2019).

Against posterior collapse ("KL vanishing") with strong decoders, MAE adds to the negative
ELBO two terms on the divergences *between the posteriors of different examples* of a batch:
a diversity term that rewards posteriors that differ from each other, and a smoothness term
that penalises the spread of those divergences (so that the latent space is not split into a
few far-apart clusters). We apply both per latent dimension d.

For diagonal Gaussian posteriors q_i = N(mu_i, diag(s_i^2)), i = 1..B (B >= 2), the KL of
dimension d between examples i != j is

    KL_d(i || j) = 1/2 [ log s_jd^2 - log s_id^2 + (s_id^2 + (mu_id - mu_jd)^2) / s_jd^2 - 1 ]

and with M_d and S_d its mean and (population) standard deviation over the B(B-1) ordered
pairs i != j,

    loss = E_batch[-log p(x | z)] + beta_t * E_batch[KL(q(z|x) || p(z))]    (the -beta-ELBO)
           - eta   * (1/D) sum_d log sigmoid(M_d)                           (diversity)
           + gamma * (1/D) sum_d S_d                                        (smoothness)
           + decoder penalty.

log sigmoid bounds the diversity reward: it is worth up to eta log 2 nats per example when the
posteriors coincide (collapse) and fades once they differ by a few nats per dimension.

**Weights.** The paper's own values could not be checked here, so the defaults of the ``mae``
row follow the scale of this loss: at collapse (M_d = 0, unit posterior variances) the KL to the
prior grows by 1/2 per unit of the variance of the means in dimension d while the diversity
reward grows by eta / (2 D), so the reward can undo collapse only when eta > D (D = the code
size; 25 on expressions, 16 on images). ``mae_eta`` = 50 clears that for both families; the
smoothness weight ``mae_gamma`` = 0.1 is small beside it (a large gamma pulls toward equal, i.e.
zero, divergences).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigError
from .objectives import Penalized
from .registry import OBJECTIVES


def pairwise_kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL_d(q_i || q_j) for diagonal Gaussians mu, logvar [B, D] -> [B, B, D] (module docstring)."""
    mu, logvar = mu.float(), logvar.float()
    mi, mj = mu.unsqueeze(1), mu.unsqueeze(0)          # [B, 1, D], [1, B, D]: row i, column j
    li, lj = logvar.unsqueeze(1), logvar.unsqueeze(0)
    return 0.5 * (lj - li + (li.exp() + (mi - mj).pow(2)) * torch.exp(-lj) - 1.0)


def divergence_stats(mu: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor]:
    """(M_d, S_d) [D]: mean and population std of KL_d(q_i || q_j) over the ordered pairs i != j."""
    b = mu.shape[0]
    if b < 2:
        raise ValueError("mutual posterior divergences need a batch of at least 2 examples")
    kl = pairwise_kl_per_dim(mu, logvar)
    off = ~torch.eye(b, dtype=torch.bool, device=mu.device)
    pairs = kl[off]                                    # [B(B-1), D]
    return pairs.mean(0), pairs.std(0, unbiased=False)


@OBJECTIVES.register("mae")
class Mae(Penalized):
    """The -beta-ELBO with MAE's diversity and smoothness terms (module docstring).

    Logged besides the usual terms: "kl" (mean KL to the prior), "diversity" (mean_d M_d) and
    "smoothness" (mean_d S_d), both unweighted.
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        if getattr(cfg, "latent", "gaussian") != "gaussian":
            raise ConfigError(f"objective 'mae' is defined for the gaussian latent, not {cfg.latent!r}")
        self.eta, self.gamma = float(cfg.mae_eta), float(cfg.mae_gamma)

    def mutual_terms(self, lat: Any) -> tuple[Tensor, Tensor, Tensor]:
        """(weighted penalty, mean_d M_d, mean_d S_d); zeros for a batch of one."""
        mu, logvar = lat.stats["mu"], lat.stats["logvar"]
        if mu.shape[0] < 2:
            zero = mu.new_zeros((), dtype=torch.float32)
            return zero, zero, zero
        mean_d, std_d = divergence_stats(mu, logvar)
        penalty = -self.eta * F.logsigmoid(mean_d).mean() + self.gamma * std_d.mean()
        return penalty, mean_d.mean(), std_d.mean()

    def terms(self, model: Any, x: Tensor, step: int) -> dict[str, Tensor]:
        lat, out = model(x)
        rec = model.likelihood.nll(out, x).mean()
        kl = lat.posterior.kl(model.prior).mean()
        mutual, diversity, smoothness = self.mutual_terms(lat)
        latent_term = self.beta_at(step) * kl + mutual
        reg = model.decoder_penalty(lat, out, x)
        return {"loss": rec + latent_term + reg, "rec": rec.detach(), "latent": latent_term.detach(),
                "reg": reg.detach(), "kl": kl.detach(), "diversity": diversity.detach(),
                "smoothness": smoothness.detach(), **model.likelihood_terms()}
