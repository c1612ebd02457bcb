"""The image network family: conv encoder/decoder and the pixel likelihoods (Ghosh et al. 2020,
docs/REFERENCE.md §1).

The zoo (zoo.py) supplies latent type, prior, objective and decoder regulariser; every image
model (VAE, RAE, RAE-L2/GP/SN, AE, ...) is one zoo row over these networks. Only the pixel
likelihood lives here.

Likelihood (``likelihood`` field), with mu = sigmoid(decoder logits) in [0, 1]:

- ``gaussian`` (default): p(x|z) = N(x; mu, sigma^2 I) with a fixed ``pixel_sigma``.
  nll[b] = sum_{c,h,w} (x - mu)^2 / (2 sigma^2)   (the constant log(2 pi sigma^2)/2 per pixel
  is dropped). That is the squared error summed over pixels, scaled by 1/(2 sigma^2); the
  official RAE code uses the per-pixel *mean* instead, so its beta/lambda values do not carry
  over (docs/REFERENCE.md §1). Summing keeps the VAE's KL and the reconstruction on the same (nats per
  image) scale.
- ``gaussian_learned``: p(x|z) = N(x; mu, gamma I) with one scalar variance gamma = exp(log_gamma)
  learned with the network (Dai & Wipf 2019, "Diagnosing and enhancing VAE models"):
  nll[b] = ||x - mu||^2 / (2 gamma) + (D/2) log(2 pi gamma), D = C*H*W. Here the constant is
  kept: the log-term is what stops gamma from growing without bound, and without it the
  optimum gamma = ||x - mu||^2 / D (the mean squared error per pixel) would not be reached.
  log_gamma starts at ``log_gamma_init`` (0: gamma = 1) and is logged per epoch as
  ``log_gamma``. It is stored as log_gamma / GAMMA_STEP_SCALE: Adam moves a parameter by about
  lr per step whatever its gradient's size, so at lr 1e-3 a plain log_gamma would need ~4,000
  steps to reach a typical log MSE of -4; the scale (10) makes that ~400 steps. As
  reconstructions improve log_gamma falls; as reconstructions improve it falls, which raises the weight of the
  reconstruction against the latent penalty (for a VAE: sharper decoder, fewer unused units).
  The nll may be negative; its values are not comparable with the other two likelihoods'.
- ``bernoulli``: nll[b] = sum BCE(logits, x), for binarised images (also accepts grey values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import LatentConfig, option
from ..nn.images import ConvImageDecoder, ConvImageEncoder, as_float_images
from ..registry import FAMILIES, Family
from .build import Networks

PIXEL_LIKELIHOODS = ("gaussian", "gaussian_learned", "bernoulli")
#: log gamma = GAMMA_STEP_SCALE * the stored parameter: a faster Adam step on it (module docstring).
GAMMA_STEP_SCALE = 10.0


@dataclass
class ImageModelConfig(LatentConfig):
    """Conv image autoencoder.

    channels: widths of the stride-2 stages (paper 128, 256, 512, 1024; only as many as the
    image size allows are used). likelihood: gaussian | gaussian_learned | bernoulli;
    pixel_sigma: the fixed Gaussian's standard deviation; log_gamma_init: the learned Gaussian's
    starting log variance. batch_norm: BatchNorm after each (transposed) conv.
    """

    latent_dim: int = 16
    channels: tuple[int, ...] = option((32, 64, 128, 256), "widths of the stride-2 conv stages, comma-separated",
                                       ge=1, min_items=1)
    likelihood: str = option("gaussian", "pixel likelihood", choices=PIXEL_LIKELIHOODS, kind="pixel likelihood")
    pixel_sigma: float = option(0.1, "standard deviation of the Gaussian pixel likelihood", gt=0,
                                applies={"likelihood": ("gaussian",)})
    log_gamma_init: float = option(0.0, "initial log variance of the learned-variance Gaussian (0: gamma = 1)",
                                   ge=-10.0, le=5.0, applies={"likelihood": ("gaussian_learned",)})
    batch_norm: bool = option(True, "BatchNorm after each (transposed) conv (true/false)")


class PixelLikelihood(nn.Module):
    """-log p(x | z) per image from pixel logits; see the module docstring for the maths.

    output: logits [B, C, H, W]; x: images [B, C, H, W] (float [0, 1] or uint8).
    """

    def __init__(self, kind: str = "gaussian", sigma: float = 0.1, log_gamma_init: float = 0.0) -> None:
        super().__init__()
        if kind not in PIXEL_LIKELIHOODS:
            raise ValueError(f"unknown pixel likelihood {kind!r}; choose one of: {', '.join(PIXEL_LIKELIHOODS)}")
        if kind == "gaussian" and sigma <= 0:
            raise ValueError(f"pixel_sigma must be positive, got {sigma}")
        self.kind, self.sigma = kind, float(sigma)
        # Only the learned Gaussian owns a parameter, so the other kinds' state dicts are unchanged.
        self.log_gamma_raw = (nn.Parameter(torch.tensor(float(log_gamma_init) / GAMMA_STEP_SCALE))
                              if kind == "gaussian_learned" else None)

    @property
    def log_gamma(self) -> Tensor | None:
        """log gamma (scalar) of the learned Gaussian, None for the other likelihoods."""
        return None if self.log_gamma_raw is None else self.log_gamma_raw * GAMMA_STEP_SCALE

    def nll(self, output: Tensor, x: Tensor) -> Tensor:
        """[B] nats per image (the fixed Gaussian drops its constant; the learned one keeps it)."""
        x = as_float_images(x)
        logits = output.float()
        if self.kind == "bernoulli":
            per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        elif self.log_gamma_raw is not None:
            return self.learned_gaussian_nll(torch.sigmoid(logits), x, self.log_gamma)
        else:
            per_pixel = (x - torch.sigmoid(logits)).pow(2) / (2.0 * self.sigma ** 2)
        return per_pixel.flatten(1).sum(-1)

    @staticmethod
    def learned_gaussian_nll(mu: Tensor, x: Tensor, log_gamma: Tensor) -> Tensor:
        """||x - mu||^2 / (2 gamma) + (D/2) log(2 pi gamma) per image [B]; mu, x [B, C, H, W]."""
        sq = (x - mu).pow(2).flatten(1).sum(-1)
        d = x[0].numel()
        return 0.5 * sq * torch.exp(-log_gamma) + 0.5 * d * (math.log(2.0 * math.pi) + log_gamma)

    def logged_terms(self) -> dict[str, Tensor]:
        """Extra scalars for the training log: ``log_gamma`` of the learned Gaussian, else none.

        A copy: the optimiser step that follows would otherwise change the logged value in place.
        """
        return {} if self.log_gamma_raw is None else {"log_gamma": self.log_gamma.detach().clone()}

    def mean(self, output: Tensor, x: Tensor | None = None) -> Tensor:
        """Decoder mean image mu = sigmoid(logits) [B, C, H, W] (the gradient penalty's D(z))."""
        return torch.sigmoid(output)

    def decode(self, output: Tensor) -> Tensor:
        """Images in [0, 1], [B, C, H, W], float32 (what ``AutoEncoder.generate`` returns)."""
        return torch.sigmoid(output.float())


def image_networks(cfg: ImageModelConfig, codec: Any) -> Networks:
    """The conv encoder/decoder for ``codec.shape`` (C, H, W) and the configured pixel likelihood."""
    shape = tuple(codec.shape)
    encoder = ConvImageEncoder(shape, cfg.channels, cfg.batch_norm)

    def decoder(code_dim: int) -> ConvImageDecoder:
        return ConvImageDecoder(code_dim, shape, cfg.channels, cfg.batch_norm)

    return Networks(encoder, decoder, PixelLikelihood(cfg.likelihood, cfg.pixel_sigma, cfg.log_gamma_init))


#: The rows of the paper's image table (Ghosh et al. 2020, Table 1), in its order.
IMAGE_MODELS = ("vae", "rae", "rae_l2", "rae_gp", "rae_sn", "ae")

FAMILIES.register("images", Family("images", ImageModelConfig, image_networks, ("images",)))
