"""Adversarial objectives: a discriminator on the codes replaces the KL term.

Both objectives own a discriminator D: R^D -> R (an MLP giving one logit; :class:`Discriminator`)
that tells prior draws p ~ p(z) = N(0, I) (label 1) from codes q = E(x) (label 0), trained with
the logistic (GAN) loss; the encoder is its generator and is trained with the non-saturating
loss (Goodfellow et al. 2014):

    discriminator:  L_D = E_p[softplus(-D(p))] + E_q[softplus(D(q))]      (= BCE, codes detached)
    generator:      L_G = E_q[softplus(-D(q))]                           (= -log sigmoid D(q))

``aae`` (Makhzani et al. 2016, "Adversarial autoencoders", ICLR workshop): three phases per
batch, each with its own optimizer:

1. ``main``: reconstruction, E[-log p(x | z)] (+ beta * latent term + decoder penalty as in the
   ``penalized`` objective; the row's beta is 0) -> encoder, latent head and decoder;
2. ``discriminator``: L_D -> the discriminator's own Adam;
3. ``generator``: adv_weight * L_G -> an Adam over the encoder and the latent head only.

``wae_gan`` (Tolstikhin et al. 2018, "Wasserstein auto-encoders", ICLR; Algorithm 2): two
phases. The adversarial term is part of the encoder-decoder loss, as in the paper:

1. ``main``: E[-log p(x | z)] + lambda * L_G -> encoder, latent head, decoder;
2. ``discriminator``: L_D -> the discriminator's Adam (the paper scales it by lambda too; with
   Adam that changes nothing but the gradient-clipping threshold, so it is left out).

and the discriminator's logit gets log N(z; 0, sigma^2 I) added (the trick of the WAE code,
credited there to Nowozin): the optimal logit is log p(z) - log q(z), so the network only has to
learn -log q(z). The weight lambda is the paper's MNIST value 1 rescaled to this toolkit's image
reconstruction: the WAE code uses c(x, y) = 0.05 ||x - y||^2, the fixed-Gaussian pixel
likelihood here sum (x - mu)^2 / (2 * 0.1^2) = 50 ||x - mu||^2, 1000 times larger; so lambda = 1000
on images (with ``--pixel-sigma`` 0.1). On sequences the reconstruction is a summed token NLL
with no counterpart in the paper: lambda 1 there, unmeasured.

Learning rates and betas: the WAE paper's MNIST settings, Adam with beta1 = 0.5 for every
optimizer and the adversary at half the autoencoder's rate (1e-3 / 5e-4): ``adv_beta1`` and
``adv_lr_ratio``; the generator phase of the AAE runs at the autoencoder's rate. (The AAE paper
trained both of its phases with SGD and momentum; Adam here keeps one optimizer family.) The
image ``aae`` row departs from the half rate: its discriminator runs at 0.2 x the rate, because at
0.5 it still told held-out codes from prior draws 74% of the time after 1,500 steps on mnist5k
(0.66 at 0.2; README); ``--adv-lr-ratio 0.5`` restores the WAE paper's setting. The
"main" optimizer keeps the model's AdamW parameter groups (decoder weight decay) with these betas.

Validation, early stopping and the NaN guard on the validation loss use ``terms`` (the model's
loss): the reconstruction-based penalized loss, never an adversarial term, whose value says
nothing about progress in a balanced game.

Monitoring: :func:`adversarial_metrics` gives the discriminator's accuracy on held-out codes vs
as many prior draws (0.5: the game is balanced, the codes look like prior draws to it).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import CONTINUOUS_LATENTS
from .errors import ConfigError
from .objectives import Penalized, Phase
from .registry import OBJECTIVES


class Discriminator(nn.Module):
    """MLP on codes [B, D] -> logits [B]: ``layers`` hidden ReLU layers of ``hidden`` units.

    The WAE paper's MNIST adversary has 4 layers of 512 (the defaults); the AAE paper's 2 of 1000.
    """

    def __init__(self, dim: int, hidden: int = 512, layers: int = 4) -> None:
        super().__init__()
        parts: list[nn.Module] = []
        width = dim
        for _ in range(layers):
            parts += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        parts.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*parts)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.float()).squeeze(-1)


def discriminator_loss(logit_prior: Tensor, logit_code: Tensor) -> Tensor:
    """L_D = mean softplus(-D(p)) + mean softplus(D(q)): BCE with prior draws labelled 1."""
    return F.softplus(-logit_prior).mean() + F.softplus(logit_code).mean()


def generator_loss(logit_code: Tensor) -> Tensor:
    """Non-saturating L_G = mean softplus(-D(q)) = -mean log sigmoid(D(q))."""
    return F.softplus(-logit_code).mean()


def accuracy(logit_prior: Tensor, logit_code: Tensor) -> Tensor:
    """Balanced accuracy of the threshold logit > 0 (prior) on the two sets."""
    return 0.5 * ((logit_prior > 0).float().mean() + (logit_code <= 0).float().mean())


@OBJECTIVES.register("aae")
class AdversarialAutoencoder(Penalized):
    """AAE: reconstruction, discriminator and generator phases (module docstring)."""

    #: the encoder is trained against the discriminator in its own phase (AAE), or the
    #: adversarial term is added to the main loss (WAE-GAN)
    separate_generator = True

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        if cfg.latent not in CONTINUOUS_LATENTS:
            raise ConfigError(f"the {cfg.objective} objective needs a continuous latent "
                              f"({' | '.join(CONTINUOUS_LATENTS)}), not {cfg.latent!r}")
        self.adv_weight = float(cfg.adv_weight)
        self.lr_ratio = float(cfg.adv_lr_ratio)
        self.beta1 = float(cfg.adv_beta1)
        self.discriminator = Discriminator(int(cfg.latent_dim), int(cfg.disc_hidden), int(cfg.disc_layers))

    # --- the game -----------------------------------------------------------------------------
    def logit(self, z: Tensor) -> Tensor:
        """The discriminator's logit for codes z [B, D] -> [B]."""
        return self.discriminator(z)

    @staticmethod
    def codes(model: Any, x: Tensor) -> Tensor:
        """The codes the decoder would read, z [B, D] (a posterior sample for Gaussian latents)."""
        return model.latent(model.encoder(x)).z

    def prior_draws(self, model: Any, like: Tensor) -> Tensor:
        """len(like) draws from the model's prior, on like's device [B, D]."""
        return model.prior.sample(len(like)).to(device=like.device, dtype=torch.float32)

    def discriminator_terms(self, model: Any, x: Tensor, step: int) -> dict[str, Tensor]:
        """Phase "discriminator": L_D on prior draws vs the batch's codes (no gradient to the encoder)."""
        with torch.no_grad():
            q = self.codes(model, x).float()
        p = self.prior_draws(model, q)
        lp, lq = self.logit(p), self.logit(q)
        return {"loss": discriminator_loss(lp, lq), "acc": accuracy(lp, lq).detach()}

    def generator_terms(self, model: Any, x: Tensor, step: int) -> dict[str, Tensor]:
        """Phase "generator" (AAE): adv_weight * L_G, stepped on encoder + latent head only."""
        adv = generator_loss(self.logit(self.codes(model, x)))
        return {"loss": self.adv_weight * adv, "adv": adv.detach()}

    # --- optimizers and phases ------------------------------------------------------------------
    def _betas(self) -> tuple[float, float]:
        return (self.beta1, 0.999)

    def main_betas(self) -> tuple[float, float]:
        """The reconstruction phase's optimizer uses the adversarial betas too."""
        return self._betas()

    def extra_optimizers(self, model: Any, lr: float) -> dict[str, torch.optim.Optimizer]:
        """The discriminator's Adam (lr * adv_lr_ratio) and, for the AAE, the generator's Adam."""
        out = {"discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=lr * self.lr_ratio,
                                                 betas=self._betas())}
        if self.separate_generator:
            params = list(model.encoder.parameters()) + list(model.latent.parameters())
            out["generator"] = torch.optim.Adam(params, lr=lr, betas=self._betas())
        return out

    def phases(self, model: Any) -> list[Phase]:
        return [Phase("main", "main", model.loss),
                Phase("discriminator", "discriminator", lambda x, step: self.discriminator_terms(model, x, step)),
                Phase("generator", "generator", lambda x, step: self.generator_terms(model, x, step))]


@OBJECTIVES.register("wae_gan")
class WaeGan(AdversarialAutoencoder):
    """WAE-GAN: lambda * L_G in the main loss, log N(z; 0, sigma^2 I) added to the logit."""

    separate_generator = False

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.sigma = float(cfg.adv_sigma)

    def logit(self, z: Tensor) -> Tensor:
        """D(z) + log N(z; 0, sigma^2 I) = D(z) - ||z||^2 / (2 sigma^2) - D/2 log(2 pi sigma^2)."""
        z = z.float()
        log_p = -0.5 * z.pow(2).sum(-1) / self.sigma ** 2 - 0.5 * z.shape[-1] * math.log(2 * math.pi * self.sigma ** 2)
        return self.discriminator(z) + log_p

    def main_terms(self, model: Any, x: Tensor, step: int) -> dict[str, Tensor]:
        """Phase "main": reconstruction (+ latent term + penalty) + lambda * L_G on the same codes."""
        lat, out = model(x)
        rec = model.likelihood.nll(out, x).mean()
        latent_term = self.latent_term(model, lat, step)
        reg = model.decoder_penalty(lat, out, x)
        adv = generator_loss(self.logit(lat.z))
        return {"loss": rec + latent_term + reg + self.adv_weight * adv, "rec": rec.detach(),
                "latent": latent_term.detach(), "reg": reg.detach(), "adv": adv.detach(), **model.likelihood_terms()}

    def phases(self, model: Any) -> list[Phase]:
        return [Phase("main", "main", lambda x, step: self.main_terms(model, x, step)),
                Phase("discriminator", "discriminator", lambda x, step: self.discriminator_terms(model, x, step))]


def is_adversarial(model: Any) -> bool:
    """True when ``model``'s objective has a discriminator (aae, wae_gan)."""
    return isinstance(getattr(model, "objective", None), AdversarialAutoencoder)


@torch.no_grad()
def adversarial_metrics(model: Any, codes: Tensor, seed: int = 0) -> dict[str, float]:
    """Held-out figures of an adversarial model, {} for the others.

    ``codes`` [N, D]: deterministic codes of held-out examples (model.encode). ``disc_accuracy``:
    balanced accuracy of the trained discriminator on these codes vs N prior draws (seeded);
    0.5 means it cannot tell them apart. ``disc_prob_codes``: its mean probability that a code
    is a prior draw.
    """
    if not is_adversarial(model) or not len(codes):
        return {}
    objective = model.objective
    device = next(objective.discriminator.parameters()).device
    q = codes.to(device=device, dtype=torch.float32)
    p = model.prior.sample_exported(model.prior.export(), len(q), torch.Generator().manual_seed(seed)).to(device)
    lp, lq = objective.logit(p), objective.logit(q)
    return {"disc_accuracy": float(accuracy(lp, lq)), "disc_prob_codes": float(torch.sigmoid(lq).mean())}
