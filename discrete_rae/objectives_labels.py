"""The AAE's label variants (Makhzani et al. 2016, "Adversarial autoencoders", sections 4-6).

The code the decoder reads is c = [y, z] [B, K + D]: a label part y (K classes) and a style
part z (D), with the product prior p(c) = Cat(y; uniform over one-hots) x N(z; 0, I)
(:class:`LabelNormal`), so ex-post and prior sampling work as for any model (a prior draw is a
random class with a random style).

- ``aae_supervised`` (latent ``style_label``): the true label enters the decoder as a one-hot,
  y = onehot(label); the encoder gives only the style z, which a discriminator matches to
  N(0, I) as in the plain AAE, so the label information need not (and, under the
  discriminator, cannot cheaply) live in z. Decoding one z with every y draws the same style
  as every class. The latent also has a label head on the *detached* encoder features, trained
  by cross-entropy in the main phase; it changes nothing in the encoder and is read only where
  no label is given (``model.encode`` of unlabelled images fills y with its argmax).
- ``aae_semi`` (latent ``style_category``): the encoder's categorical head gives
  y = softmax(logits) and the style z; the decoder reads [y, z]. Two discriminators: z vs
  N(0, I) draws and y vs one-hot draws of a uniform categorical; and a supervised phase,
  cross-entropy of the head on a labelled batch (the labelled subset, labels.py).
- ``aae_cluster``: ``aae_semi`` without labels and with K clusters; the cluster of x is argmax y.

Departures from the paper (options; each 0 gives the paper's objective), measured on mnist5k
(README): the batch mutual information -w * I(x; y) (IMSAT; ``cluster_mi_weight``, 1000 on both
rows) and, on ``aae_semi``, a consistency term w * KL(y(x) || y(x')) with x' the image shifted by
up to 2 pixels plus N(0, 0.1^2) noise (``consistency_weight`` 1000; an option, off, on
``aae_cluster``; the clean y is the fixed target, as in VAT / the Pi-model), both in the main
phase on the unlabelled batch (the consistency term in training mode only). With the paper's
objective the head fitted the 100 labels and was no better than the same encoder trained as a
classifier on them. ``category_prior_tau`` > 0 replaces the category discriminator's one-hot prior
draws by Gumbel-softmax draws at that temperature (off by default).

Phases of a step (each with its own Adam, beta1 0.5 as for the AAE):

1. ``main``: E[-log p(x | [y, z])] (+ for ``style_label``: CE of the detached label head;
   + the optional terms above) -> encoder, latent heads, decoder;
2. ``discriminator``: L_D(style) (+ L_D(category)) -> both discriminators;
3. ``generator``: adv_weight * (L_G(style) (+ L_G(category))) -> encoder and latent heads;
4. ``supervised`` (``aae_semi`` only): CE(logits(x_l), y_l) on the labelled batch -> encoder
   and latent heads.

with L_D, L_G the logistic losses of objectives_adversarial.py. Batches (labels.py builds them,
the trainer only slices them): ``aae_supervised`` reads (x, label); ``aae_semi`` reads
(x, x_l, y_l), where every training row is paired with one labelled example (the subset
repeated in a seeded order), so each batch carries a labelled batch of the same size;
``aae_cluster`` reads x. Validation and early stopping use the main phase's reconstruction.

Style size (measured on mnist5k, 1,000 steps, README): nothing but a small z keeps the class out of
the style; with D = 16 the supervised decoder ignored the label (label swap 0.36), with D = 2 it
follows it (0.935). The image presets set D = 16: pass ``--latent-dim 2`` for ``aae_supervised``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .distributions import LOG_2PI, PointMass, Prior
from .errors import ConfigError
from .latents import Latent, LatentOutput
from .objectives import Phase
from .objectives_adversarial import (AdversarialAutoencoder, Discriminator, accuracy, discriminator_loss,
                                     generator_loss)
from .registry import LATENTS, OBJECTIVES, PRIORS

#: The latent types that carry a label part, and what each objective needs.
LABEL_LATENTS = ("style_label", "style_category")
LABEL_OBJECTIVES = {"aae_supervised": "style_label", "aae_semi": "style_category", "aae_cluster": "style_category"}


# --- latents ---------------------------------------------------------------------------------
class _LabelStyleLatent(Latent):
    """Encoder features h [B, H] -> label logits [B, K] and style z [B, D]; code [y, z] [B, K + D]."""

    detach_label_head = False

    def __init__(self, in_dim: int, n_labels: int, style_dim: int) -> None:
        super().__init__()
        self.n_labels, self.style_dim = int(n_labels), int(style_dim)
        self.style = nn.Linear(in_dim, style_dim)
        self.label_head = nn.Linear(in_dim, n_labels)

    @classmethod
    def from_config(cls, cfg: Any, in_dim: int) -> "_LabelStyleLatent":
        return cls(in_dim, cfg.label_classes, cfg.latent_dim)

    @property
    def code_dim(self) -> int:
        return self.n_labels + self.style_dim

    def split(self, code: Tensor) -> tuple[Tensor, Tensor]:
        """[y, z] [B, K + D] -> y [B, K], z [B, D]."""
        return code[:, : self.n_labels], code[:, self.n_labels:]

    def logits(self, h: Tensor) -> Tensor:
        """Label / category logits [B, K] (on detached features for ``style_label``)."""
        return self.label_head(h.detach() if self.detach_label_head else h)

    def label_part(self, logits: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, h: Tensor) -> LatentOutput:
        logits, z = self.logits(h), self.style(h)
        code = torch.cat([self.label_part(logits).to(z.dtype), z], dim=-1)
        return LatentOutput(z=code, code=code, stats={"logits": logits, "style": z}, posterior=PointMass(code))


@LATENTS.register("style_label")
class StyleLabelLatent(_LabelStyleLatent):
    """Supervised AAE: y = onehot(argmax of a label head on detached features) when no label is given."""

    detach_label_head = True

    def label_part(self, logits: Tensor) -> Tensor:
        return F.one_hot(logits.argmax(-1), self.n_labels).float()


@LATENTS.register("style_category")
class StyleCategoryLatent(_LabelStyleLatent):
    """Semi-supervised / clustering AAE: y = softmax(logits), trained through the encoder."""

    def label_part(self, logits: Tensor) -> Tensor:
        return torch.softmax(logits.float(), dim=-1)


# --- prior -----------------------------------------------------------------------------------
@PRIORS.register("label_normal")
class LabelNormal(Prior):
    """p([y, z]) = uniform over the K one-hots y x N(z; 0, I_D); codes [*, K + D].

    log p = -log K - 1/2 ||z||^2 - D/2 log 2 pi (for one-hot y). Energy: -log p + const.
    """

    def __init__(self, n_labels: int, style_dim: int) -> None:
        super().__init__(n_labels + style_dim)
        self.n_labels = int(n_labels)

    @classmethod
    def from_config(cls, cfg: Any, latent: Any, codec: Any = None) -> "LabelNormal":
        if not isinstance(latent, _LabelStyleLatent):
            raise ValueError(f"prior 'label_normal' needs a latent with a label part ({' | '.join(LABEL_LATENTS)})")
        return cls(latent.n_labels, latent.style_dim)

    def export(self) -> dict[str, Any]:
        return {"dim": self.dim, "n_labels": self.n_labels}

    def log_prob(self, z: Tensor) -> Tensor:
        return self.log_prob_exported(self.export(), z.float())

    @staticmethod
    def sample_exported(state: dict[str, Any], n: int, generator: torch.Generator | None = None) -> Tensor:
        k = int(state["n_labels"])
        y = F.one_hot(torch.randint(k, (n,), generator=generator), k).float()
        return torch.cat([y, torch.randn(n, int(state["dim"]) - k, generator=generator)], dim=-1)

    @staticmethod
    def log_prob_exported(state: dict[str, Any], z: Tensor) -> Tensor:
        k = int(state["n_labels"])
        style = z[..., k:]
        return -math.log(k) - 0.5 * (style.pow(2).sum(-1) + style.shape[-1] * LOG_2PI)


# --- batches ---------------------------------------------------------------------------------
def images_of(batch: Any) -> Tensor:
    """The images x of a batch: the batch itself, or the first tensor of a tuple."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def batch_mutual_information(y: Tensor) -> Tensor:
    """I(x; y) estimated on a batch of category probabilities y [B, K] (rows sum to 1):

        I = H(mean_i y_i) - mean_i H(y_i)        (nats; 0 <= I <= log K)

    The first term is largest when the batch uses every category equally, the second when each
    y_i is one-hot; maximising I is the clustering criterion of IMSAT (Hu et al. 2017). The AAE
    paper has no such term: it is an option here because, at a CPU budget, the categorical
    discriminator alone let the head settle on 6 of 16 clusters (README)."""
    p = y.float().clamp_min(1e-8)
    marginal = p.mean(0)
    return -(marginal * marginal.log()).sum() + (p * p.log()).sum(-1).mean()


def relaxed_one_hots(n: int, k: int, tau: float, like: Tensor) -> Tensor:
    """n Gumbel-softmax draws [n, k] of a uniform categorical at temperature tau (on like's device).

    y = softmax((g + log 1/k) / tau), g_i ~ Gumbel(0, 1) (Jang et al. 2017; Maddison et al. 2017):
    points of the simplex that tend to the one-hots as tau -> 0. As the category discriminator's
    prior side they stop it from winning on exact one-hotness alone, which a softmax never has.
    """
    logits = like.new_zeros(n, k, dtype=torch.float32)
    return torch.distributions.RelaxedOneHotCategorical(torch.tensor(float(tau), device=like.device),
                                                        logits=logits).sample()


def shifted(x: Tensor, max_shift: int, noise: float) -> Tensor:
    """x [B, C, H, W] moved by a random whole-pixel shift in [-max_shift, max_shift] per axis and
    example (zeros enter at the border), plus N(0, noise^2) pixel noise: the consistency term's x'."""
    b, _, h, w = x.shape
    if max_shift > 0:
        steps = torch.randint(-max_shift, max_shift + 1, (b, 2), device=x.device).float()
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, 0, 2], theta[:, 1, 2] = 2 * steps[:, 0] / w, 2 * steps[:, 1] / h  # normalised coordinates
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False).to(x.dtype)
    return x + noise * torch.randn_like(x) if noise > 0 else x


def consistency_kl(logits: Tensor, logits_perturbed: Tensor) -> Tensor:
    """mean_i KL(p_i || p'_i) with p = softmax(logits) held fixed, p' = softmax(logits_perturbed) [B, K].

    0 when the two agree; the gradient reaches only the perturbed branch (the clean prediction is
    the target, as in VAT, Miyato et al. 2018)."""
    log_p = F.log_softmax(logits.detach().float(), -1)
    return (log_p.exp() * (log_p - F.log_softmax(logits_perturbed.float(), -1))).sum(-1).mean()


# --- objectives ------------------------------------------------------------------------------
class _LabelAAE(AdversarialAutoencoder):
    """Shared parts: the style discriminator on z (the AAE's), code = [y, z] (module docstring)."""

    #: whether y has a discriminator against one-hot draws (semi-supervised, clustering)
    category_game = False
    #: what the batches carry: "labels" (x, label), "subset" (x, x_l, y_l), "" (x)
    label_use = ""

    def __init__(self, cfg: Any) -> None:
        want = LABEL_OBJECTIVES[cfg.objective]
        if cfg.latent != want:
            raise ConfigError(f"the {cfg.objective} objective needs --latent {want}, not {cfg.latent!r}")
        if cfg.prior != "label_normal":
            raise ConfigError(f"the {cfg.objective} objective needs --prior label_normal, not {cfg.prior!r}")
        super().__init__(cfg)
        self.n_labels = int(cfg.label_classes)
        self.category_tau = float(getattr(cfg, "category_prior_tau", 0.0))
        if self.category_game:
            self.category_discriminator = Discriminator(self.n_labels, int(cfg.disc_hidden), int(cfg.disc_layers))

    def style(self, code: Tensor) -> Tensor:
        return code[:, self.n_labels:]

    def category_draws(self, prior: Tensor) -> Tensor:
        """The category discriminator's prior side [B, K]: the one-hots of the prior draws [B, K + D],
        or relaxed draws at ``category_prior_tau`` when that is > 0."""
        if self.category_tau > 0:
            return relaxed_one_hots(len(prior), self.n_labels, self.category_tau, prior)
        return prior[:, : self.n_labels]

    def logit(self, z: Tensor) -> Tensor:
        """The style discriminator's logit for codes [B, K + D] (it reads the style part) -> [B]."""
        return self.discriminator(self.style(z))

    def codes(self, model: Any, x: Any) -> Tensor:
        return model.latent(model.encoder(images_of(x))).z

    def main_terms(self, model: Any, batch: Any, step: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def terms(self, model: Any, batch: Any, step: int) -> dict[str, Tensor]:
        return self.main_terms(model, batch, step)

    def discriminator_terms(self, model: Any, x: Any, step: int) -> dict[str, Tensor]:
        """L_D of the style game (+ of the category game: softmax outputs vs one-hot draws)."""
        with torch.no_grad():
            code = self.codes(model, x).float()
        prior = self.prior_draws(model, code)
        lp, lq = self.logit(prior), self.logit(code)
        out = {"loss": discriminator_loss(lp, lq), "acc": accuracy(lp, lq).detach()}
        if self.category_game:
            cp, cq = self.category_discriminator(self.category_draws(prior)), self.category_discriminator(
                code[:, : self.n_labels])
            out["loss"] = out["loss"] + discriminator_loss(cp, cq)
            out["acc_y"] = accuracy(cp, cq).detach()
        return out

    def generator_terms(self, model: Any, x: Any, step: int) -> dict[str, Tensor]:
        code = self.codes(model, x)
        adv = generator_loss(self.logit(code))
        out = {"adv": adv.detach()}
        if self.category_game:
            adv_y = generator_loss(self.category_discriminator(code[:, : self.n_labels].float()))
            out["adv_y"] = adv_y.detach()
            adv = adv + adv_y
        out["loss"] = self.adv_weight * adv
        return out

    def extra_optimizers(self, model: Any, lr: float) -> dict[str, torch.optim.Optimizer]:
        """"discriminator": Adam over every discriminator; "generator" (and "supervised"):
        Adam over the encoder and the latent heads."""
        discs = list(self.discriminator.parameters())
        if self.category_game:
            discs += list(self.category_discriminator.parameters())
        out = {"discriminator": torch.optim.Adam(discs, lr=lr * self.lr_ratio, betas=self._betas())}
        encoder_side = list(model.encoder.parameters()) + list(model.latent.parameters())
        out["generator"] = torch.optim.Adam(encoder_side, lr=lr, betas=self._betas())
        if self.label_use == "subset":
            out["supervised"] = torch.optim.Adam(encoder_side, lr=lr, betas=self._betas())
        return out

    def phases(self, model: Any) -> list[Phase]:
        out = [Phase("main", "main", lambda b, step: self.main_terms(model, b, step)),
               Phase("discriminator", "discriminator", lambda b, step: self.discriminator_terms(model, b, step)),
               Phase("generator", "generator", lambda b, step: self.generator_terms(model, b, step))]
        if self.label_use == "subset":
            out.append(Phase("supervised", "supervised", lambda b, step: self.supervised_terms(model, b, step)))
        return out

    def reconstruction(self, model: Any, x: Tensor, code: Tensor) -> Tensor:
        """Mean -log p(x | code) over the batch (nats per example)."""
        return model.likelihood.nll(model.decoder(code, x), x).mean()

    @staticmethod
    def main_loss(rec: Tensor, **extra: Tensor) -> dict[str, Tensor]:
        """The main phase's terms: rec (+ extra) is minimised; no latent term or decoder penalty (0)."""
        zero = rec.new_zeros(())
        loss = rec + sum(extra.values(), zero)
        return {"loss": loss, "rec": rec.detach(), "latent": zero, "reg": zero,
                **{k: v.detach() for k, v in extra.items()}}


@OBJECTIVES.register("aae_supervised")
class SupervisedAAE(_LabelAAE):
    """The label is the decoder's y; the style z is matched to N(0, I)."""

    label_use = "labels"

    def main_terms(self, model: Any, batch: Any, step: int) -> dict[str, Tensor]:
        """rec with y = onehot(label) + CE of the detached label head (labels absent: y from the head)."""
        x = images_of(batch)
        h = model.encoder(x)
        lat = model.latent(h)
        if not isinstance(batch, (tuple, list)):  # no labels given: the head's guess (as encode does)
            return self.main_loss(self.reconstruction(model, x, lat.z))
        label = batch[1].long()
        code = torch.cat([F.one_hot(label, self.n_labels).to(lat.z.dtype), self.style(lat.z)], dim=-1)
        rec = self.reconstruction(model, x, code)
        return self.main_loss(rec, label_ce=F.cross_entropy(lat.stats["logits"].float(), label))


@OBJECTIVES.register("aae_cluster")
class ClusterAAE(_LabelAAE):
    """Unsupervised clustering: K categories with their own adversarial game, no labels."""

    category_game = True

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.mi_weight = float(getattr(cfg, "cluster_mi_weight", 0.0))
        self.consistency_weight = float(getattr(cfg, "consistency_weight", 0.0))
        self.consistency_shift = int(getattr(cfg, "consistency_shift", 2))
        self.consistency_noise = float(getattr(cfg, "consistency_noise", 0.1))

    def main_terms(self, model: Any, batch: Any, step: int) -> dict[str, Tensor]:
        """rec (+ mi_weight * -I(x; y)) (+ consistency_weight * KL(y(x) || y(x')), in training mode only)
        for the options that are on."""
        x = images_of(batch)
        lat = model.latent(model.encoder(x))
        rec = self.reconstruction(model, x, lat.z)
        extra: dict[str, Tensor] = {}
        if self.mi_weight > 0:
            extra["neg_mi"] = -self.mi_weight * batch_mutual_information(lat.z[:, : self.n_labels])
        if self.consistency_weight > 0 and model.training:  # not in validation: its loss stays deterministic
            perturbed = shifted(x, self.consistency_shift, self.consistency_noise)
            kl = consistency_kl(lat.stats["logits"], model.latent.logits(model.encoder(perturbed)))
            extra["consistency"] = self.consistency_weight * kl
        return self.main_loss(rec, **extra)


@OBJECTIVES.register("aae_semi")
class SemiSupervisedAAE(ClusterAAE):
    """Clustering AAE + cross-entropy of the categorical head on the labelled batch."""

    label_use = "subset"

    def supervised_terms(self, model: Any, batch: Any, step: int) -> dict[str, Tensor]:
        """CE(logits(x_l), y_l) on the batch's labelled pairs (x, x_l, y_l)."""
        if not isinstance(batch, (tuple, list)) or len(batch) < 3:
            raise ValueError("the aae_semi supervised phase needs batches (x, x_labelled, y_labelled)")
        h = model.encoder(batch[1])
        ce = F.cross_entropy(model.latent.logits(h).float(), batch[2].long())
        return {"loss": ce, "ce": ce.detach()}


def label_objective(model: Any) -> _LabelAAE | None:
    """The model's label-variant AAE objective, or None."""
    objective = getattr(model, "objective", None)
    return objective if isinstance(objective, _LabelAAE) else None
