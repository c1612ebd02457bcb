"""Image models: VAE, RAE, RAE-L2, RAE-GP, RAE-SN and AE (Ghosh et al. 2020, REFERENCE §1).

One builder over :class:`ImageModelConfig`; the registered names differ only in config values,
and the VAE/RAE difference is the two dicts ``_VAE`` and ``_RAE`` below. Every model uses the
shared latent types, decoder regularisers and ex-post samplers and the one
:class:`~discrete_rae.model.AutoEncoder`; only the pixel likelihood lives here.

Likelihood (``likelihood`` field), with mu = sigmoid(decoder logits) in [0, 1]:

- ``gaussian`` (default): p(x|z) = N(x; mu, sigma^2 I) with a fixed ``pixel_sigma``.
  nll[b] = sum_{c,h,w} (x - mu)^2 / (2 sigma^2)   (the constant log(2 pi sigma^2)/2 per pixel
  is dropped). That is the squared error summed over pixels, scaled by 1/(2 sigma^2); the
  official RAE code uses the per-pixel *mean* instead, so its beta/lambda values do not carry
  over (REFERENCE §1). Summing keeps the VAE's KL and the reconstruction on the same (nats per
  image) scale.
- ``bernoulli``: nll[b] = sum BCE(logits, x), for binarised images (also accepts grey values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import LatentConfig, option
from ..latents import build_latent
from ..model import AutoEncoder
from ..nn.images import ConvImageDecoder, ConvImageEncoder, as_float_images
from ..registry import ModelSpec, register_model
from ..regularizers import build_regularizer

PIXEL_LIKELIHOODS = ("gaussian", "bernoulli")


@dataclass
class ImageModelConfig(LatentConfig):
    """Conv image autoencoder.

    channels: widths of the stride-2 stages (paper 128, 256, 512, 1024; only as many as the
    image size allows are used). likelihood: gaussian | bernoulli; pixel_sigma: the Gaussian's
    fixed standard deviation. batch_norm: BatchNorm after each (transposed) conv.
    """

    latent_dim: int = 16
    channels: tuple[int, ...] = option((32, 64, 128, 256), "widths of the stride-2 conv stages, comma-separated",
                                       ge=1, min_items=1)
    likelihood: str = option("gaussian", "pixel likelihood", choices=PIXEL_LIKELIHOODS, kind="pixel likelihood")
    pixel_sigma: float = option(0.1, "standard deviation of the Gaussian pixel likelihood", gt=0,
                                applies={"likelihood": ("gaussian",)})
    batch_norm: bool = option(True, "BatchNorm after each (transposed) conv (true/false)")


class PixelLikelihood(nn.Module):
    """-log p(x | z) per image from pixel logits; see the module docstring for the maths.

    output: logits [B, C, H, W]; x: images [B, C, H, W] (float [0, 1] or uint8).
    """

    def __init__(self, kind: str = "gaussian", sigma: float = 0.1) -> None:
        super().__init__()
        if kind not in PIXEL_LIKELIHOODS:
            raise ValueError(f"unknown pixel likelihood {kind!r}; choose one of: {', '.join(PIXEL_LIKELIHOODS)}")
        if kind == "gaussian" and sigma <= 0:
            raise ValueError(f"pixel_sigma must be positive, got {sigma}")
        self.kind, self.sigma = kind, float(sigma)

    def nll(self, output: Tensor, x: Tensor) -> Tensor:
        """[B] nats per image (up to the dropped Gaussian constant)."""
        x = as_float_images(x)
        logits = output.float()
        if self.kind == "bernoulli":
            per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        else:
            per_pixel = (x - torch.sigmoid(logits)).pow(2) / (2.0 * self.sigma ** 2)
        return per_pixel.flatten(1).sum(-1)

    def mean(self, output: Tensor, x: Tensor | None = None) -> Tensor:
        """Decoder mean image mu = sigmoid(logits) [B, C, H, W] (the gradient penalty's D(z))."""
        return torch.sigmoid(output)

    def decode(self, output: Tensor) -> Tensor:
        """Images in [0, 1], [B, C, H, W], float32 (what ``AutoEncoder.generate`` returns)."""
        return torch.sigmoid(output.float())


def build_image_model(cfg: ImageModelConfig, codec: Any) -> AutoEncoder:
    """Assemble the conv encoder/decoder for ``codec.shape`` (C, H, W) with cfg's latent and regulariser."""
    shape = tuple(codec.shape)
    encoder = ConvImageEncoder(shape, cfg.channels, cfg.batch_norm)
    latent = build_latent(cfg, encoder.out_dim)
    decoder = ConvImageDecoder(latent.code_dim, shape, cfg.channels, cfg.batch_norm)
    return AutoEncoder(encoder, latent, decoder, PixelLikelihood(cfg.likelihood, cfg.pixel_sigma),
                       build_regularizer(cfg.decoder_reg, cfg.reg_weight), codec)


# The whole difference between the VAE and the RAE readings of the same network:
_VAE = dict(latent="gaussian", beta=1.0, kl_anneal_steps=0, decoder_reg="none", reg_weight=0.0)
_RAE = dict(latent="deterministic", beta=1e-2, decoder_reg="none", reg_weight=0.0)

# Decoder regulariser weights, on the summed-nll scale above: L2 is an AdamW decay coefficient
# on the decoder's kernels, GP multiplies mean (d sum mu^2 / dz)^2, SN has no weight. Picked
# from {1e-2, 1e-1, 1} (L2) and {1e-3, 1e-1, 1} (GP) by one seed of the digits quick preset
# (GMM Fréchet-features 9.0 / 6.1 / 15.1 and 10.7 / 8.8 / 11.9): 1e-2 and 1e-3 left the
# training curves indistinguishable from the plain RAE; 1 cost reconstruction or time.
_REG_WEIGHTS = {"l2": 1e-1, "gp": 1e-1, "sn": 0.0}

IMAGE_MODELS = ("vae", "rae", "rae_l2", "rae_gp", "rae_sn", "ae")

_DOMAINS = ("images",)

register_model(ModelSpec("vae", "image VAE: Gaussian latent + KL, N(0, I) sampling",
                         ImageModelConfig(**_VAE), build_image_model, _DOMAINS, "prior", family="images"))
register_model(ModelSpec("rae", "image RAE: deterministic code + beta/2 ||z||^2, no decoder regulariser, GMM",
                         ImageModelConfig(**_RAE), build_image_model, _DOMAINS, "gmm", family="images"))
for _reg, _weight in _REG_WEIGHTS.items():
    register_model(ModelSpec(f"rae_{_reg}", f"image RAE with decoder regulariser {_reg}, GMM sampling",
                             ImageModelConfig(**{**_RAE, "decoder_reg": _reg, "reg_weight": _weight}),
                             build_image_model, _DOMAINS, "gmm", family="images"))
register_model(ModelSpec("ae", "image AE control: deterministic code, beta 0, no decoder regulariser, GMM",
                         ImageModelConfig(latent="deterministic", beta=0.0, decoder_reg="none", reg_weight=0.0),
                         build_image_model, _DOMAINS, "gmm", family="images"))
