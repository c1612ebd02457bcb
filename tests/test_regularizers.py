"""Decoder regularisers and latent terms: what each one touches and computes."""

from __future__ import annotations

import torch
from torch import nn

from types import SimpleNamespace

from discrete_rae.distributions import DiagonalGaussian, PointMass, StandardNormal
from discrete_rae.latents import DeterministicLatent, LatentOutput
from discrete_rae.model import AutoEncoder
from discrete_rae.objectives import Penalized
from discrete_rae.regularizers import build_regularizer


def _objective(beta: float, kl_anneal_steps: int = 0) -> Penalized:
    return Penalized(SimpleNamespace(beta=beta, kl_anneal_steps=kl_anneal_steps))


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 6))
        self.rnn = nn.GRU(6, 6, batch_first=True)

    def forward(self, z, x=None):
        return self.net(z)


class _Lik(nn.Module):
    def nll(self, out, x):
        return (out - x).pow(2).sum(-1)

    def mean(self, out, x):
        return out


def _model(reg: str, weight: float = 0.1) -> AutoEncoder:
    torch.manual_seed(0)
    return AutoEncoder(nn.Sequential(nn.Linear(6, 8), nn.ReLU()), DeterministicLatent(8, 4), _Decoder(),
                       _Lik(), build_regularizer(reg, weight), objective=_objective(0.01))


def test_l2_decays_only_decoder_weight_matrices():
    model = _model("l2", 0.5)
    opt = model.configure_optimizer(1e-3)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    decoder_mats = {id(p) for p in model.decoder.parameters() if p.ndim > 1}
    assert decayed == decoder_mats
    assert all(g["weight_decay"] == 0.5 for g in opt.param_groups if g["weight_decay"] > 0)
    # With zero gradients, one AdamW step shrinks exactly the decayed tensors.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        moved = not torch.equal(p, before[n])
        assert moved == (id(p) in decayed), n


def test_gradient_penalty_is_positive_and_differentiable():
    model = _model("gp", 1.0)
    x = torch.randn(5, 6)
    terms = model.loss(x)
    assert terms["reg"] > 0
    terms["loss"].backward()
    grads = [p.grad for p in model.decoder.net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # The penalty alone has a non-zero gradient on the decoder (second-order path works).
    model.zero_grad()
    lat, out = model(x)
    model.regularizer.penalty(lat.z, out).backward()
    assert model.decoder.net[0].weight.grad.abs().sum() > 0


def test_gradient_penalty_matches_definition():
    reg = build_regularizer("gp", 2.0)
    z = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(4, 5)
    out = z @ w  # d/dz sum (z w)^2 = 2 (z w) w^T
    expected = 2.0 * (2 * (z @ w) @ w.T).pow(2).mean()
    assert torch.allclose(reg.penalty(z, out), expected)


def test_spectral_norm_bounds_linear_layers_and_skips_rnn():
    model = _model("sn")
    for _ in range(20):  # power iterations converge in training mode forward passes
        model.train()
        model(torch.randn(4, 6))
    model.eval()
    for layer in (model.decoder.net[0], model.decoder.net[2]):
        assert hasattr(layer, "parametrizations")
        assert torch.linalg.matrix_norm(layer.weight, ord=2) <= 1 + 1e-3
    assert not hasattr(model.decoder.rnn, "parametrizations")
    assert not hasattr(model.encoder[0], "parametrizations")


def test_gaussian_kl_and_annealing():
    prior, objective = StandardNormal(2), _objective(2.0, kl_anneal_steps=10)
    model = SimpleNamespace(prior=prior)
    assert torch.allclose(DiagonalGaussian(torch.zeros(4, 2), torch.zeros(4, 2)).kl(prior), torch.zeros(4))
    q = DiagonalGaussian(torch.ones(4, 2), torch.zeros(4, 2))
    assert torch.allclose(q.kl(prior), torch.full((4,), 1.0))  # 1/2 * sum(mu^2) = 1
    out = LatentOutput(z=q.mu, code=q.mu, posterior=q)
    assert objective.latent_term(model, out, 0) == 0
    assert torch.isclose(objective.latent_term(model, out, 5), torch.tensor(1.0))
    assert torch.isclose(objective.latent_term(model, out, 100), torch.tensor(2.0))


def test_deterministic_latent_penalty():
    z = torch.tensor([[3.0, 4.0]])
    out = LatentOutput(z, z, posterior=PointMass(z))
    model = SimpleNamespace(prior=StandardNormal(2))
    # beta/2 ||z||^2, and not annealed: a deterministic code's term has its full weight from step 0
    assert torch.isclose(_objective(0.5, kl_anneal_steps=10).latent_term(model, out, 0), torch.tensor(0.5 * 0.5 * 25))
