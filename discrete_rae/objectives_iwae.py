"""The importance-weighted autoencoder objective (Burda et al. 2016).

For each example draw k reparameterised codes z_1..z_k ~ q(z|x) and weigh them by

    log w_i = log p(x | z_i) + log p(z_i) - log q(z_i | x);

the IWAE bound is L_k(x) = logsumexp_i(log w_i) - log k <= log p(x), tighter as k grows
(L_1 = the ELBO, a single-sample estimate). The objective minimises its negative:

    loss = -E_batch[ logsumexp_{i=1..k}(log w_i) - log k ]        (+ decoder penalty)

so the logged "loss" is the negative bound itself (nats per example). Gradients flow through
z_i = mu + sigma * eps_i (the Gaussian posterior's ``sample(k)`` is reparameterised); the
categorical posteriors have no reparameterised k-sample, so the objective needs a gaussian latent.
Also logged: "rec" = mean -log p(x | z_i), "latent" = mean log q(z_i|x) - log p(z_i) (a Monte
Carlo KL), "neg_elbo" = -mean log w_i (their sum: the k-sample estimate of the negative ELBO).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .errors import ConfigError
from .objectives import Objective
from .registry import OBJECTIVES


def repeat_batch(x: Tensor, k: int) -> Tensor:
    """x [B, ...] -> [k*B, ...]: k copies, copy-major (row i*B + b is copy i of example b)."""
    return x.unsqueeze(0).expand(k, *x.shape).reshape(k * x.shape[0], *x.shape[1:])


def weight_terms(model: Any, posterior: Any, x: Tensor, k: int,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(-log p(x|z_i) [k, B], log q(z_i|x) - log p(z_i) [k, B]) for k draws z_i ~ q(z|x).

    log w = -first - second. The decoder reads all k*B codes at once (teacher forcing for
    sequence decoders, the true x repeated k times). Differentiable where the posterior's
    ``sample`` is reparameterised (Gaussian); evaluation (compare/stats.py) calls it under no_grad.
    """
    z, log_q = posterior.sample(k, generator)
    b = x.shape[0]
    xs = repeat_batch(x, k)
    out = model.decoder(z.reshape(k * b, -1).to(x.device), xs)
    nll = model.likelihood.nll(out, xs).float().view(k, b)
    return nll, log_q.float() - model.prior.log_prob(z).float()


def iwae_bound(log_w: Tensor) -> Tensor:
    """L_k per example [B] from log weights [k, B]: logsumexp over k minus log k."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


@OBJECTIVES.register("iwae")
class Iwae(Objective):
    """Negative IWAE bound with k = ``iw_k`` importance samples (module docstring)."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        if getattr(cfg, "latent", "gaussian") != "gaussian":
            raise ConfigError(f"objective 'iwae' needs reparameterised posterior draws: use the gaussian latent, "
                              f"not {cfg.latent!r}")
        self.k = int(cfg.iw_k)

    def terms(self, model: Any, x: Tensor, step: int) -> dict[str, Tensor]:
        lat = model.latent(model.encoder(x))
        if not getattr(lat.posterior, "reparameterized", False):
            raise ConfigError(f"objective 'iwae': the {type(lat.posterior).__name__} posterior has no "
                              "reparameterised k-sample")
        nll, log_ratio = weight_terms(model, lat.posterior, x, self.k)
        log_w = -nll - log_ratio
        loss = -iwae_bound(log_w).mean()
        reg = self._penalty(model, lat, x)
        return {"loss": loss + reg, "rec": nll.mean().detach(), "latent": log_ratio.mean().detach(),
                "reg": reg.detach(), "neg_elbo": -log_w.mean().detach(), **model.likelihood_terms()}

    @staticmethod
    def _penalty(model: Any, lat: Any, x: Tensor) -> Tensor:
        """The decoder regulariser's penalty at the latent's own draw (only GP needs a decoder pass)."""
        if not (model.regularizer.needs_penalty and model.training):
            return lat.z.new_zeros((), dtype=torch.float32)
        with model._decoder_context(lat.z):
            out = model.decoder(lat.z, x)
        return model.decoder_penalty(lat, out, x)
