"""Convolutional encoder and decoder for images, in the style of Ghosh et al. 2020.

Shapes: images x [B, C, H, W] (float in [0, 1], or uint8 in [0, 255]); features h [B, F];
codes z [B, D]; decoder output (pixel logits) [B, C, H, W].

Encoder: ``n`` stride-2 4x4 convolutions, each followed by BatchNorm and ReLU, then the
feature map is flattened; the latent head (latents.py) turns it into the dense code.
Decoder: a dense layer from the code to the smallest feature map, then the mirror image of the
encoder with stride-2 4x4 transposed convolutions (BatchNorm + ReLU between them), ending in
one logit per pixel and channel.

The number of stride-2 stages is chosen from the input size: keep halving (rounding up) while
the smaller side is above 2, at most ``len(channels)`` times. So 8x8 -> 2 stages (8-4-2),
28x28 -> 4 (28-14-7-4-2), 32x32 -> 4 (32-16-8-4-2), 64x64 -> 4 with 4 channel widths
(64-32-16-8-4). Odd sizes are handled exactly: the encoder pads so that a side s becomes
ceil(s / 2), and the decoder's transposed convolution gets the matching output padding, so
the reconstruction has the input's exact shape.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


def as_float_images(x: Tensor) -> Tensor:
    """Images as float in [0, 1]: uint8 storage (large data sets) is scaled by 1/255."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float() if not x.is_floating_point() else x


def stage_sizes(size: int, max_stages: int, min_size: int = 2) -> list[int]:
    """Side lengths through the stride-2 stages: [size, ceil(size/2), ...].

    Stops when the side reaches ``min_size`` or after ``max_stages`` halvings.
    """
    sizes = [int(size)]
    while sizes[-1] > min_size and len(sizes) - 1 < max_stages:
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def _pad_for(side: int) -> int:
    # A 4x4 stride-2 conv maps s -> floor((s + 2p - 4) / 2) + 1; p=1 gives s/2 for even s,
    # p=2 gives (s+1)/2 for odd s: both are ceil(s/2).
    return 1 if side % 2 == 0 else 2


class ImageGeometry:
    """The spatial plan shared by the encoder and the decoder for one input shape.

    shape: (C, H, W). heights / widths: the sides before each stage and after the last one.
    channels: the widths of the stages actually used (the first ``n_stages`` of the config).
    """

    def __init__(self, shape: Sequence[int], channels: Sequence[int]) -> None:
        if len(shape) != 3:
            raise ValueError(f"image shape must be (C, H, W), got {tuple(shape)}")
        if not channels:
            raise ValueError("channels must name at least one stage width")
        self.shape = tuple(int(s) for s in shape)
        c, h, w = self.shape
        n = len(stage_sizes(min(h, w), len(channels))) - 1
        if n == 0:
            raise ValueError(f"images of {h}x{w} are too small for a stride-2 stage (need at least 3x3)")
        self.heights = stage_sizes(h, n, min_size=0)[: n + 1]
        self.widths = stage_sizes(w, n, min_size=0)[: n + 1]
        self.channels = tuple(int(ch) for ch in channels[:n])

    @property
    def n_stages(self) -> int:
        return len(self.channels)

    @property
    def bottom(self) -> tuple[int, int, int]:
        """(channels, height, width) of the smallest feature map."""
        return self.channels[-1], self.heights[-1], self.widths[-1]

    @property
    def flat_dim(self) -> int:
        c, h, w = self.bottom
        return c * h * w


class ConvImageEncoder(nn.Module):
    """x [B, C, H, W] -> n x (Conv 4x4 stride 2 -> BatchNorm -> ReLU) -> flatten -> h [B, F].

    F = channels[n-1] * H_n * W_n (``out_dim``); the latent head maps h to the code.
    """

    def __init__(self, shape: Sequence[int], channels: Sequence[int] = (128, 256, 512, 1024),
                 batch_norm: bool = True) -> None:
        super().__init__()
        self.geometry = geo = ImageGeometry(shape, channels)
        layers: list[nn.Module] = []
        in_ch = geo.shape[0]
        for i, ch in enumerate(geo.channels):
            pad = (_pad_for(geo.heights[i]), _pad_for(geo.widths[i]))
            layers += [nn.Conv2d(in_ch, ch, 4, stride=2, padding=pad, bias=not batch_norm)]
            layers += [nn.BatchNorm2d(ch)] if batch_norm else []
            layers += [nn.ReLU()]
            in_ch = ch
        self.convs = nn.Sequential(*layers)
        self.out_dim = geo.flat_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.convs(as_float_images(x)).flatten(1)


class ConvImageDecoder(nn.Module):
    """z [B, D] -> Linear -> [B, C_n, H_n, W_n] -> mirrored transposed convs -> logits [B, C, H, W].

    Every transposed conv is 4x4 stride 2 and doubles the side (plus one where the encoder
    rounded an odd side up); all but the last are followed by BatchNorm and ReLU. The last
    one outputs the image channels as unbounded logits: the likelihood squashes them.
    """

    def __init__(self, code_dim: int, shape: Sequence[int], channels: Sequence[int] = (128, 256, 512, 1024),
                 batch_norm: bool = True) -> None:
        super().__init__()
        self.geometry = geo = ImageGeometry(shape, channels)
        self.dense = nn.Linear(code_dim, geo.flat_dim)
        self.dense_post = nn.Sequential(nn.BatchNorm2d(geo.bottom[0]) if batch_norm else nn.Identity(), nn.ReLU())
        self.deconvs = nn.Sequential(*self._layers(geo, batch_norm))

    @staticmethod
    def _layers(geo: ImageGeometry, batch_norm: bool) -> list[nn.Module]:
        outs = list(geo.channels[:-1][::-1]) + [geo.shape[0]]  # widths after each transposed conv
        layers: list[nn.Module] = []
        in_ch = geo.channels[-1]
        for j, out_ch in enumerate(outs):
            i = geo.n_stages - 1 - j  # the encoder stage this layer undoes: side i+1 -> side i
            h, w = geo.heights[i], geo.widths[i]
            last = j == len(outs) - 1
            layers.append(nn.ConvTranspose2d(
                in_ch, out_ch, 4, stride=2, padding=(_pad_for(h), _pad_for(w)),
                output_padding=(h % 2, w % 2), bias=last or not batch_norm))
            if not last:
                layers += ([nn.BatchNorm2d(out_ch)] if batch_norm else []) + [nn.ReLU()]
            in_ch = out_ch
        return layers

    def forward(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        """Pixel logits for codes z [B, D]; ``x`` (teacher forcing for sequences) is unused."""
        c, h, w = self.geometry.bottom
        return self.deconvs(self.dense_post(self.dense(z).view(-1, c, h, w)))
