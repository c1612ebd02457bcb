"""The WGAN-GP critic's gradient penalty (Gulrajani et al. 2017), shared by the MaskAAE objective
and the ``wgan`` ex-post sampler; each caller draws its own interpolation points."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def unit_gradient_penalty(critic: nn.Module, xhat: Tensor) -> Tensor:
    """mean_i (||grad_x C(xhat_i)||_2 - 1)^2 for points xhat [B, D] (requires_grad set by the
    caller); the graph is kept (create_graph) so the penalty trains the critic."""
    (grad,) = torch.autograd.grad(critic(xhat).sum(), xhat, create_graph=True)
    return (grad.norm(dim=-1) - 1.0).pow(2).mean()
