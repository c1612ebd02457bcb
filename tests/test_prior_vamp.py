"""The VampPrior (prior_vamp.py): closed-form check of the sampled KL, batch statistics, sampling
through plain data, the model reference, and the row's restrictions."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from conftest import smoke_run
from discrete_rae.config import replace
from discrete_rae.distributions import DiagonalGaussian, StandardNormal
from discrete_rae.domains.images import PixelCodec
from discrete_rae.errors import ConfigError, UsageError
from discrete_rae.models.build import build_model
from discrete_rae.prior_vamp import VampPrior, VampSampler, mixture_log_prob
from discrete_rae.registry import MODELS
from discrete_rae.samplers import fit_codes_sampler, sampler_from_state
from discrete_rae.validate import validate_run

SHAPE = (1, 8, 8)


def vamp_model(k: int = 5, dim: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = replace(MODELS.get("vamp_vae").config_for("images"), {"channels": (4, 8), "latent_dim": dim, "vamp_k": k})
    return build_model(cfg, PixelCodec(SHAPE))


def batch_norm_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.encoder.state_dict().items()
            if "running" in k or "num_batches" in k}


def test_row_builds_a_vamp_prior_of_k_pseudo_images_without_a_second_encoder():
    model = vamp_model(k=7)
    prior = model.prior
    assert isinstance(prior, VampPrior) and prior.pseudo_inputs().shape == (7, *SHAPE)
    assert list(prior.modules()) == [prior]  # the encoder is reached, not registered, through the prior
    assert [k for k in model.state_dict() if k.startswith("prior.")] == ["prior.pseudo_logits"]
    assert len(list(model.parameters())) == len({id(p) for p in model.parameters()})
    u = prior.pseudo_inputs().detach()
    assert float(u.min()) > 0 and float(u.max()) < 1


def test_sampled_kl_matches_the_closed_form_when_one_component_is_standard_normal():
    model = vamp_model(k=1, dim=4)
    head = model.latent.head
    with torch.no_grad():  # q(z|u) = N(0, I) for every input: the prior is exactly N(0, I)
        head.weight.zero_()
        head.bias.zero_()
    means, logvars = model.prior.components()
    assert torch.equal(means, torch.zeros(1, 4)) and torch.equal(logvars, torch.zeros(1, 4))
    z = torch.randn(10, 4)
    assert torch.allclose(model.prior.log_prob(z), StandardNormal(4).log_prob(z), atol=1e-5)
    torch.manual_seed(1)
    mu, logvar = torch.randn(3, 4), 0.5 * torch.randn(3, 4)
    n = 40_000  # the one-draw estimate, averaged over n draws per posterior
    q = DiagonalGaussian(mu.repeat(n, 1), logvar.repeat(n, 1))
    sampled = q.kl(model.prior).reshape(n, 3).mean(0)
    closed = StandardNormal.kl_from_gaussian(mu, logvar)
    assert torch.allclose(sampled, closed, rtol=0.05, atol=0.05), (sampled, closed)
    assert not hasattr(model.prior, "kl_from_gaussian")  # the Monte Carlo fallback was what ran


def test_mixture_log_prob_is_the_log_mean_of_the_component_densities():
    means, logvars = torch.randn(3, 2), torch.randn(3, 2)
    z = torch.randn(5, 2)
    dens = torch.stack([DiagonalGaussian(means[k].expand(5, 2), logvars[k].expand(5, 2)).log_prob(z).exp()
                        for k in range(3)])
    assert torch.allclose(mixture_log_prob(z, means, logvars), dens.mean(0).log(), atol=1e-5)


def test_pseudo_inputs_leave_the_batch_statistics_alone_in_training():
    model = vamp_model().train()
    before = batch_norm_buffers(model)
    model.prior.log_prob(torch.randn(6, 3))
    model.prior.export()
    after = batch_norm_buffers(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and all(m.training for m in model.modules())  # every mode restored
    # control: the same pseudo-inputs through the encoder in train mode would have moved them
    model.encoder(model.prior.pseudo_inputs())
    moved = batch_norm_buffers(model)
    assert any(not torch.equal(before[k], moved[k]) for k in before)


def test_loss_trains_the_pseudo_inputs_and_the_encoder_through_the_prior():
    model = vamp_model().train()
    x = torch.rand(8, *SHAPE)
    terms = model.loss(x)
    assert all(torch.isfinite(v) for v in terms.values()) and terms["latent"] != 0
    terms["loss"].backward()
    assert model.prior.pseudo_logits.grad is not None and model.prior.pseudo_logits.grad.abs().sum() > 0
    opt = model.configure_optimizer(1e-3)
    assert any(p is model.prior.pseudo_logits for g in opt.param_groups for p in g["params"])


def test_prior_and_vamp_samplers_round_trip_through_plain_data():
    model = vamp_model().eval()
    codes = torch.randn(20, 3)
    for name in ("prior", "vamp"):
        sampler = fit_codes_sampler(name, codes, 0, model)
        buf = io.BytesIO()
        torch.save(sampler.state_dict(), buf)
        buf.seek(0)
        again = sampler_from_state(torch.load(buf, weights_only=True))
        a = sampler.sample(50, generator=torch.Generator().manual_seed(3))
        b = again.sample(50, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b) and a.shape == (50, 3)
        z = torch.randn(4, 3)
        with torch.no_grad():
            assert torch.allclose(again.log_prob(z), model.prior.log_prob(z), atol=1e-5)


def test_exported_mixture_draws_follow_the_components():
    state = {"dim": 2, "means": torch.tensor([[-5.0, 0.0], [5.0, 0.0]]), "logvars": torch.full((2, 2), -4.0)}
    z = VampPrior.sample_exported(state, 4000, torch.Generator().manual_seed(0))
    left = (z[:, 0] < 0).float().mean()
    assert abs(float(left) - 0.5) < 0.05 and float((z[:, 0].abs() - 5).abs().max()) < 1.0


def test_deep_copy_points_the_prior_at_the_copied_encoder():
    model = vamp_model()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.latent.head.bias.add_(1.0)
    assert not torch.allclose(twin.prior.components()[0], model.prior.components()[0])


def test_vamp_sampler_refuses_a_model_without_the_vamp_prior():
    torch.manual_seed(0)
    cfg = replace(MODELS.get("vae").config_for("images"), {"channels": (4, 8), "latent_dim": 3})
    with pytest.raises(ConfigError, match="vamp"):
        VampSampler().bind(build_model(cfg, PixelCodec(SHAPE)))


def test_vamp_needs_images_and_a_gaussian_latent():
    assert MODELS.get("vamp_vae").domains == ("images",)
    with pytest.raises(UsageError, match="vamp"):
        smoke_run("expressions", "vae", model={"prior": "vamp"})
    with pytest.raises(UsageError, match="vamp-k"):
        smoke_run("images", "vae", model={"vamp_k": 3})
    with pytest.raises(UsageError, match="needs the vamp prior"):
        smoke_run("images", "vae", eval={"sampler": "vamp"})
    validate_run(smoke_run("images", "vamp_vae", model={"vamp_k": 3}, eval={"sampler": "vamp"}))
    cfg = replace(MODELS.get("rae").config_for("images"), {"channels": (4, 8), "latent_dim": 3, "prior": "vamp"})
    with pytest.raises(ConfigError, match="gaussian"):
        build_model(cfg, PixelCodec(SHAPE))
