"""Bounds and code usage of a stochastic latent, for every domain's ``evaluate`` (metrics.json).

For a model whose posterior q(z|x) has a density (gaussian or gumbel latent), on the first
``n`` held-out examples (500 by default, to keep evaluation cheap):

- ``neg_elbo``: -E_x[ mean_i log w_i ], the Monte Carlo negative ELBO over the draws;
- ``neg_iwae``: -E_x[ logsumexp_i log w_i - log k ], the negative IWAE bound (Burda et al.
  2016) with k = ``iw_k`` = 5 draws, log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x);
- ``neg_iwae_50``: the same with k = ``iw_k_large`` = 50 draws, a tighter bound (closer to
  -log p(x)); all three in nats per example (lower is better; neg_iwae_50 <= neg_iwae <=
  neg_elbo up to Monte Carlo noise);
- ``kl``: E_x[ KL(q(z|x) || p(z)) ] (closed form for the Gaussian / categorical posteriors);
- ``active_units``: the coordinates of the posterior mean E_q[z|x] whose variance over x exceeds
  0.01 (Burda et al. 2016, sec. 5.2): mu for the Gaussian, the class probabilities (N*K
  coordinates) for the Gumbel latent; ``latent_dims`` is their number.

All come from the same K = 50 draws per example: the ELBO is their mean log weight, the k = 5
bound the mean of the bounds of the 10 disjoint groups of 5 (the same expectation as one group,
lower variance), so the figures are comparable between models evaluated with the same seed.
Cost: 50 decoder passes per example (k = 5 alone needed 5): on one CPU core about 10 s for 360
mnist5k images (channels 32,64) and 30 s for 400 molecules with the quick network.

Models with deterministic codes (RAE, AE, WAE, discrete RAE) have no posterior density: the
report is empty for them. The log weights are compare/stats.py's ``log_weights``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .compare.stats import continuous_code_stats, has_posterior_density, log_weights

#: Held-out examples and importance samples of the report.
N_EXAMPLES = 500
IW_K = 5
#: Draws of the tighter bound (Burda et al. 2016 report k = 1, 5, 50); a multiple of IW_K.
IW_K_LARGE = 50


def posterior_mean(posterior: Any) -> Tensor:
    """E_q[z | x] [B, D]: mu (Gaussian) or the class probabilities, flattened (categorical)."""
    if hasattr(posterior, "mu"):
        return posterior.mu.float()
    if hasattr(posterior, "log_q"):
        return posterior.log_q.float().exp().reshape(posterior.log_q.shape[0], -1)
    return posterior.code.float()


def grouped_bound(log_w: Tensor, k: int) -> Tensor:
    """Mean IWAE bound L_k over the disjoint groups of k rows of log weights [K, B] -> [B]."""
    groups = log_w[: log_w.shape[0] // k * k].reshape(-1, k, log_w.shape[1])
    return (torch.logsumexp(groups, 1) - math.log(k)).mean(0)


@torch.no_grad()
def posterior_report(model: Any, x: Tensor, device: torch.device, seed: int = 0, n: int = N_EXAMPLES,
                     k: int = IW_K, k_large: int = IW_K_LARGE, batch: int = 100) -> dict[str, Any]:
    """The figures of the module docstring on x[:n] (any tensor of examples [M, ...])."""
    if not has_posterior_density(model) or len(x) == 0:
        return {}
    if k < 1 or k_large < k:
        raise ValueError(f"posterior_report needs 1 <= k <= k_large, got k={k}, k_large={k_large}")
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed + 11)
    means, kls, elbo, iwae, iwae_large = [], [], [], [], []
    for xb in x[:n].split(batch):
        xb = xb.to(device)
        q = model.latent(model.encoder(xb)).posterior
        means.append(posterior_mean(q).cpu())
        kls.append(q.kl(model.prior).float().cpu())
        lw = log_weights(model, xb, k_large, g).float().cpu()
        elbo.append(lw.mean(0))
        iwae.append(grouped_bound(lw, k))
        iwae_large.append(grouped_bound(lw, k_large))  # one group: L_K itself
    model.train(was_training)
    usage = continuous_code_stats(torch.cat(means))
    return {"neg_elbo": -float(torch.cat(elbo).mean()), "neg_iwae": -float(torch.cat(iwae).mean()), "iw_k": k,
            f"neg_iwae_{k_large}": -float(torch.cat(iwae_large).mean()), "iw_k_large": k_large,
            "kl": float(torch.cat(kls).mean()), "active_units": usage["active_units"],
            "latent_dims": usage["dims"], "bound_examples": min(n, len(x))}
