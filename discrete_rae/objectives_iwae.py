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

**Gradient estimator** (``iw_estimator``). ``iwae``: autograd through the bound, the estimator of
Burda et al. Its encoder gradient contains the score term d log q / d phi, whose noise grows
relative to the signal as k grows (Rainforth et al. 2018). ``dreg`` (the default): the doubly
reparameterised estimator of Tucker et al. 2019 (:func:`dreg_surrogate`), the same objective and
the same decoder gradient, an unbiased encoder gradient without the score term (about a tenth of
the spread in tests/test_iwae.py's toy).

**Measured defaults** (mnist5k, channels 32,64, latent 16, fixed-sigma Gaussian pixels, seed 0,
the same network, steps and evaluation for the ``vae`` row; -log bounds in nats on the 360 test
images, k = 5 / 50; README, IWAE paragraph). 600 steps: vae 587.8 / 573.7, iwae with the plain
estimator 593.2 / 569.8, with DReG 577.9 / 555.5: DReG is why the default is ``dreg``. 1,500
steps: vae 509.4 / 494.3, plain 516.3 / 492.2, DReG 517.9 / 494.1. On 360 *training* images the
k = 5 bound is better for the IWAE at both budgets (1,500 steps: vae 363.9, plain 357.1, DReG
353.6): the IWAE optimises its objective better, and the loss on test at 1,500 steps is
overfitting of the 3,800 training images (a train-test gap of 146 nats for the VAE, 164 for DReG),
not an optimisation fault; with the Bernoulli likelihood (train-test gap a few nats) the IWAE
also wins at 1,500 steps (105.8 vs 106.7). Not causes (measured): BatchNorm over the k x B
decoded rows (without BatchNorm, 600 steps: vae 598.8, DReG 590.4), the learning rate (the plateau
schedule never lowered it within 1,500 steps), the logvar clamp (no logvar of either model
reached it), the evaluation (``posterior_report`` scores both models with the same draws and
estimator). One training seed per figure.
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
    return decode_terms(model, z, log_q, x)


def decode_terms(model: Any, z: Tensor, log_q: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """(-log p(x|z) [k, B], log_q - log p(z) [k, B]) for codes z [k, B, D] of x [B, ...]."""
    k, b = z.shape[0], x.shape[0]
    xs = repeat_batch(x, k)
    out = model.decoder(z.reshape(k * b, -1).to(x.device), xs)
    nll = model.likelihood.nll(out, xs).float().view(k, b)
    return nll, log_q.float() - model.prior.log_prob(z).float()


def iwae_bound(log_w: Tensor) -> Tensor:
    """L_k per example [B] from log weights [k, B]: logsumexp over k minus log k."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def dreg_surrogate(model: Any, posterior: Any, x: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The doubly reparameterised estimator (DReG; Tucker et al. 2019): (surrogate [B], nll, log_ratio).

    With z_i = mu + sigma * eps_i, log w_i = log p(x, z_i) - log q(z_i; stop_grad(mu, sigma)) and the
    normalised weights w~_i = softmax_i(log w_i) (constants), the gradients are

        decoder theta:  sum_i w~_i   d log w_i / d theta            (exactly the IWAE bound's gradient)
        encoder phi:    sum_i w~_i^2 (d log w_i / d z_i) (d z_i / d phi)

    The encoder's is unbiased for the same d L_k / d phi, without the score term
    d log q / d phi whose variance grows relative to the signal as k grows (Rainforth et al. 2018).
    Built as surrogate = -sum_i w~_i log w_i with a hook that multiplies the gradient reaching z_i by
    w~_i. The surrogate's value is not the bound; :class:`Iwae` reports the bound.
    """
    mu, logvar = posterior.mu, posterior.logvar
    z, _ = posterior.sample(k)
    frozen = type(posterior)(mu.detach(), logvar.detach())
    nll, log_ratio = decode_terms(model, z, frozen.log_prob(z), x)
    log_w = -nll - log_ratio
    w = torch.softmax(log_w.detach(), dim=0)  # [k, B]
    if z.requires_grad:
        z.register_hook(lambda grad: grad * w.unsqueeze(-1).to(grad.dtype))
    return -(w * log_w).sum(0), nll, log_ratio


#: Gradient estimators of the IWAE objective (``iw_estimator``).
IW_ESTIMATORS = ("dreg", "iwae")


@OBJECTIVES.register("iwae")
class Iwae(Objective):
    """Negative IWAE bound with k = ``iw_k`` importance samples (module docstring)."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        if getattr(cfg, "latent", "gaussian") != "gaussian":
            raise ConfigError(f"objective 'iwae' needs reparameterised posterior draws: use the gaussian latent, "
                              f"not {cfg.latent!r}")
        self.k = int(cfg.iw_k)
        self.estimator = str(getattr(cfg, "iw_estimator", "dreg"))
        if self.estimator not in IW_ESTIMATORS:
            raise ConfigError(f"iw_estimator {self.estimator!r} is unknown; choose one of: {', '.join(IW_ESTIMATORS)}")

    def terms(self, model: Any, x: Tensor, step: int) -> dict[str, Tensor]:
        lat = model.latent(model.encoder(x))
        if not getattr(lat.posterior, "reparameterized", False):
            raise ConfigError(f"objective 'iwae': the {type(lat.posterior).__name__} posterior has no "
                              "reparameterised k-sample")
        if self.estimator == "dreg" and torch.is_grad_enabled():
            surrogate, nll, log_ratio = dreg_surrogate(model, lat.posterior, x, self.k)
            bound = iwae_bound(-nll - log_ratio).detach()
            # the value is the negative bound, the gradient the DReG estimator's
            loss = -bound.mean() + (surrogate - surrogate.detach()).mean()
        else:
            nll, log_ratio = weight_terms(model, lat.posterior, x, self.k)
            loss = -iwae_bound(-nll - log_ratio).mean()
        log_w = -nll - log_ratio
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
