"""Decoder regularisers shared by every model (Ghosh et al. 2020, docs/REFERENCE.md §1).

An RAE replaces the VAE's latent noise by an explicit smoothness constraint on the decoder:

- ``l2``: weight decay on the decoder's weight matrices / kernels only (no biases, no norm
  scales, never the encoder). Implemented as a decoder-only AdamW parameter group, so the
  optimiser, not the loss, carries it: ``weight`` is the decay coefficient.
- ``gp``: gradient penalty of the decoder output w.r.t. the code, the official RAE variant:
  ``weight * mean_{b,d} (d/dz_{b,d} sum_j D(z)_{b,j}^2)^2`` where D(z) is the decoder's mean
  output (pixels, or per-step probabilities for sequences) and z the code as used in the
  forward pass (so the penalty also reaches the encoder through z, as in the official code).
  We differentiate w.r.t. the code, not the input x (pythae's variant).
- ``sn``: spectral normalisation of the decoder's Linear / Conv layers (never RNN weights:
  on nn.GRU / nn.LSTM it silently freezes the recurrent weights, pytorch issue 65688).
- ``none``: implicit regularisation only.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from .registry import REGULARIZERS

_SN_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)


class DecoderRegularizer:
    """No-op base (the ``none`` regulariser)."""

    name = "none"

    def __init__(self, weight: float = 0.0) -> None:
        self.weight = float(weight)

    def prepare(self, decoder: nn.Module) -> nn.Module:
        """Modify the decoder in place before training (SN); returns it."""
        return decoder

    def param_groups(self, decoder: nn.Module, others: Iterable[nn.Parameter]) -> list[dict]:
        """AdamW parameter groups: the decoder's and the rest's, no weight decay by default."""
        return [{"params": list(decoder.parameters()), "weight_decay": 0.0},
                {"params": list(others), "weight_decay": 0.0}]

    def penalty(self, z: Tensor, output: Tensor) -> Tensor:
        """Loss term computed from the code ``z`` [B, D] and the decoder's output [B, ...]."""
        return z.new_zeros(())

    @property
    def needs_penalty(self) -> bool:
        return False


REGULARIZERS.register("none", DecoderRegularizer)


@REGULARIZERS.register("l2")
class L2Regularizer(DecoderRegularizer):
    """Decoder-only weight decay on weight matrices/kernels (``weight`` = decay coefficient)."""

    name = "l2"

    def param_groups(self, decoder: nn.Module, others: Iterable[nn.Parameter]) -> list[dict]:
        decayed, plain = [], []
        for p in decoder.parameters():
            # ndim > 1: matrices and kernels; biases and norm scales stay free (official RAE).
            (decayed if p.ndim > 1 else plain).append(p)
        return [{"params": decayed, "weight_decay": self.weight},
                {"params": plain + list(others), "weight_decay": 0.0}]


@REGULARIZERS.register("gp")
class GradientPenalty(DecoderRegularizer):
    """weight * mean over batch and code dims of (grad_z sum D(z)^2)^2."""

    name = "gp"

    @property
    def needs_penalty(self) -> bool:
        return True

    def penalty(self, z: Tensor, output: Tensor) -> Tensor:
        if not (torch.is_grad_enabled() and z.requires_grad):
            return z.new_zeros(())  # evaluation: the penalty is a training-time constraint
        (grad,) = torch.autograd.grad(output.float().pow(2).sum(), z, create_graph=True)
        return self.weight * grad.pow(2).mean()


@REGULARIZERS.register("sn")
class SpectralNorm(DecoderRegularizer):
    """Spectral normalisation of every Linear/Conv layer of the decoder (RNNs skipped)."""

    name = "sn"

    def prepare(self, decoder: nn.Module) -> nn.Module:
        for module in list(decoder.modules()):
            if isinstance(module, _SN_TYPES) and not hasattr(module, "parametrizations"):
                spectral_norm(module)
        return decoder


def build_regularizer(name: str, weight: float) -> DecoderRegularizer:
    return REGULARIZERS.get(name)(weight)

