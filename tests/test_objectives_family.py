"""The objective family: WAE-MMD, InfoVAE, IWAE, MAE, and the posterior report of ``evaluate``."""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch

from discrete_rae.catalog import load_all
from discrete_rae.config import replace
from discrete_rae.distributions import StandardNormal
from discrete_rae.errors import ConfigError
from discrete_rae.objectives import Penalized
from discrete_rae.objectives_iwae import iwae_bound, repeat_batch
from discrete_rae.objectives_mae import divergence_stats, pairwise_kl_per_dim
from discrete_rae.objectives_mmd import IMQ_SCALES, imq_kernel, mmd_imq
from discrete_rae.posterior_report import posterior_report
from discrete_rae.registry import MODELS

load_all()

NEW_ROWS = ("wae_mmd", "info_vae", "iwae", "mae")


def _image_model(name: str, **overrides):
    """A tiny image model of row ``name`` on 8x8 pictures (seeded)."""
    from discrete_rae.domains.images import PixelCodec

    cfg = replace(MODELS.get(name).config_for("images"), {"channels": (8,), "latent_dim": 4, **overrides})
    torch.manual_seed(0)
    return MODELS.get(name).build(cfg, PixelCodec((1, 8, 8))), cfg


def _pictures(n: int = 6) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(3))


# --- MMD -------------------------------------------------------------------------------------------
def test_imq_kernel_is_the_sum_over_the_wae_scales():
    a, b = torch.zeros(1, 3), torch.ones(1, 3)  # ||a - b||^2 = 3, C_s = 2 * 3 * s
    expected = sum(6 * s / (6 * s + 3) for s in IMQ_SCALES)
    assert imq_kernel(a, b).item() == pytest.approx(expected)
    assert imq_kernel(a, a).item() == pytest.approx(len(IMQ_SCALES))


def test_mmd_is_near_zero_for_two_normal_batches_and_positive_for_shifted_ones():
    g = torch.Generator().manual_seed(0)
    same = [mmd_imq(torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)).item() for _ in range(5)]
    shifted = [mmd_imq(torch.randn(400, 8, generator=g) + 1.0, torch.randn(400, 8, generator=g)).item()
               for _ in range(5)]
    assert max(abs(v) for v in same) < 0.02
    assert min(shifted) > 0.2 and min(shifted) > 10 * max(abs(v) for v in same)


def test_mmd_u_statistic_leaves_out_the_diagonal():
    z, y = torch.randn(5, 2), torch.randn(7, 2)
    kzz, kyy, kzy = imq_kernel(z, z), imq_kernel(y, y), imq_kernel(z, y)
    by_hand = ((kzz.sum() - kzz.trace()) / 20 + (kyy.sum() - kyy.trace()) / 42 - 2 * kzy.mean())
    assert mmd_imq(z, y).item() == pytest.approx(by_hand.item(), rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        mmd_imq(z[:1], y)


def test_wae_mmd_loss_is_reconstruction_plus_weighted_mmd():
    model, cfg = _image_model("wae_mmd")
    assert cfg.latent == "deterministic" and cfg.beta == 0.0 and cfg.mmd_weight == 500.0
    model.train()
    terms = model.loss(_pictures())
    assert terms["loss"].item() == pytest.approx((terms["rec"] + 500.0 * terms["mmd"]).item(), rel=1e-5)
    assert terms["latent"].item() == pytest.approx(500.0 * terms["mmd"].item(), rel=1e-5)


# --- InfoVAE ---------------------------------------------------------------------------------------
def test_info_vae_mmd_weight_is_positive_at_the_defaults():
    from discrete_rae.objectives_mmd import InfoVae

    for domain in MODELS.get("info_vae").domains:
        cfg = MODELS.get("info_vae").config_for(domain)
        assert (cfg.info_alpha, cfg.info_lambda) == (0.0, 1000.0)
        objective = InfoVae(cfg)
        assert objective.kl_weight == 1.0 and objective.mmd_weight == 999.0 > 0


def test_info_vae_loss_combines_kl_and_mmd():
    model, _ = _image_model("info_vae")
    model.train()
    t = model.loss(_pictures())
    assert t["loss"].item() == pytest.approx((t["rec"] + t["kl"] + 999.0 * t["mmd"]).item(), rel=1e-5)


def test_info_vae_refuses_a_negative_mmd_weight():
    with pytest.raises(ConfigError, match="alpha \\+ lambda - 1"):
        _image_model("info_vae", info_alpha=0.0, info_lambda=0.5)


# --- IWAE ------------------------------------------------------------------------------------------
def test_iwae_with_one_sample_is_the_elbo_for_the_same_draw():
    model, _ = _image_model("iwae", iw_k=1)
    x = _pictures()
    model.train()
    torch.manual_seed(7)
    loss = model.loss(x)["loss"]
    # by hand with the same random stream: the latent's own draw, then the objective's one draw
    torch.manual_seed(7)
    q = model.latent(model.encoder(x)).posterior
    eps = torch.randn(1, *q.mu.shape)
    z = q.mu + (0.5 * q.logvar).exp() * eps
    rec = model.likelihood.nll(model.decoder(z[0], x), x)
    elbo = -rec - (q.log_prob(z) - StandardNormal(4).log_prob(z))[0]
    assert loss.item() == pytest.approx(-elbo.mean().item(), rel=1e-5)


def test_iwae_with_one_sample_matches_the_penalized_elbo_in_expectation():
    """k = 1 against the ``penalized`` objective (beta 1, no annealing, closed-form KL): equal
    up to the Monte Carlo error of the KL over 4,000 draws per example."""
    model, cfg = _image_model("iwae", iw_k=1)
    x = repeat_batch(_pictures(3), 4000)
    model.train()
    torch.manual_seed(1)
    iwae = model.loss(x)["loss"].item()
    elbo = Penalized(replace(cfg, {"objective": "penalized", "beta": 1.0, "kl_anneal_steps": 0}))
    torch.manual_seed(2)
    assert iwae == pytest.approx(elbo.terms(model, x, step=0)["loss"].item(), rel=2e-3)


def test_iwae_bound_tightens_with_k_and_trains_the_encoder():
    model, _ = _image_model("iwae")
    x = repeat_batch(_pictures(3), 300)
    model.train()
    torch.manual_seed(0)
    loss5 = model.loss(x)["loss"]
    model.objective.k = 1
    torch.manual_seed(0)
    loss1 = model.loss(x)["loss"]
    assert loss5.item() < loss1.item()  # -L_5 <= -L_1 in expectation; 900 examples make it certain here
    loss5.backward()
    assert model.latent.head.weight.grad.abs().sum() > 0  # reparameterised: gradients reach mu and logvar


def test_iwae_bound_of_equal_weights_is_that_weight():
    log_w = torch.full((5, 3), -2.0)
    assert torch.allclose(iwae_bound(log_w), torch.full((3,), -2.0))
    assert iwae_bound(torch.log(torch.tensor([[1.0], [3.0]]))).item() == pytest.approx(math.log(2.0))


def test_iwae_needs_a_gaussian_latent():
    cfg = replace(MODELS.get("iwae").config_for("images"), {"latent": "gumbel", "prior": "uniform_categorical"})
    from discrete_rae.objectives_iwae import Iwae

    with pytest.raises(ConfigError, match="gaussian latent"):
        Iwae(cfg)


# --- MAE -------------------------------------------------------------------------------------------
def test_pairwise_kl_per_dimension_matches_torch():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g) * 0.3
    kl = pairwise_kl_per_dim(mu, logvar)
    normal = torch.distributions.Normal
    sd = (0.5 * logvar).exp()
    for i in range(4):
        for j in range(4):
            ref = torch.distributions.kl_divergence(normal(mu[i], sd[i]), normal(mu[j], sd[j]))
            assert torch.allclose(kl[i, j], ref, atol=1e-5)


def test_mae_terms_at_collapse_and_their_weights():
    mu, logvar = torch.zeros(5, 2), torch.zeros(5, 2)
    mean_d, std_d = divergence_stats(mu, logvar)
    assert torch.equal(mean_d, torch.zeros(2)) and torch.equal(std_d, torch.zeros(2))
    model, cfg = _image_model("mae")
    assert (cfg.mae_eta, cfg.mae_gamma) == (50.0, 0.1) and cfg.kl_anneal_steps == 0  # images: no annealing
    x = _pictures()
    model.train()
    t = model.loss(x)
    stats = model.latent(model.encoder(x)).stats  # mu, logvar do not depend on the draw
    mean_d, std_d = divergence_stats(stats["mu"], stats["logvar"])
    penalty = -50.0 * torch.nn.functional.logsigmoid(mean_d).mean() + 0.1 * std_d.mean()
    assert t["latent"].item() == pytest.approx((t["kl"] + penalty).item(), rel=1e-5)
    assert t["loss"].item() == pytest.approx((t["rec"] + t["latent"]).item(), rel=1e-5)
    assert t["diversity"].item() == pytest.approx(mean_d.mean().item(), rel=1e-5)


def test_mae_diversity_rewards_distinct_posteriors():
    from discrete_rae.objectives_mae import Mae
    from discrete_rae.latents import LatentOutput

    objective = Mae(replace(MODELS.get("mae").config_for("images"), {}))
    same = LatentOutput(torch.zeros(4, 2), torch.zeros(4, 2), {"mu": torch.zeros(4, 2), "logvar": torch.zeros(4, 2)})
    spread = torch.tensor([[-2.0, 1.0], [-1.0, -1.0], [1.0, 2.0], [2.0, 0.0]])
    apart = LatentOutput(spread, spread, {"mu": spread, "logvar": torch.full((4, 2), -2.0)})
    collapsed, _, _ = objective.mutual_terms(same)
    assert collapsed.item() == pytest.approx(50.0 * math.log(2.0))
    assert objective.mutual_terms(apart)[0].item() < collapsed.item()


# --- evaluate: bounds and active units -------------------------------------------------------------
def test_posterior_report_for_stochastic_latents_only():
    x = _pictures(20)
    vae, _ = _image_model("vae")
    report = posterior_report(vae, x, torch.device("cpu"), seed=0)
    assert set(report) >= {"neg_elbo", "neg_iwae", "kl", "active_units", "latent_dims"}
    assert report["iw_k"] == 5 and report["latent_dims"] == 4 and report["bound_examples"] == 20
    assert report["neg_iwae"] <= report["neg_elbo"] + 1e-3 and report["kl"] >= 0
    assert 0 <= report["active_units"] <= 4
    rae, _ = _image_model("rae")
    assert posterior_report(rae, x, torch.device("cpu")) == {}
    gumbel, _ = _image_model("gumbel_vae")
    g = posterior_report(gumbel, x, torch.device("cpu"))
    assert g["latent_dims"] == 30 * 10 and math.isfinite(g["neg_iwae"])


def test_active_units_count_dimensions_whose_mean_varies():
    vae, _ = _image_model("vae")
    x = _pictures(50)
    with torch.no_grad():  # make dimension 0 of mu vary with x strongly, the others not at all
        head = vae.latent.head
        head.weight.zero_(), head.bias.zero_()
        head.weight[0, 0] = 50.0
    assert posterior_report(vae, x, torch.device("cpu"))["active_units"] == 1


# --- the rows --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NEW_ROWS)
def test_rows_run_on_every_family_with_their_defaults(name):
    spec = MODELS.get(name)
    assert set(spec.domains) == {"molecules", "expressions", "images"} and spec.sampler == "prior"
    for domain in spec.domains:
        cfg = asdict(spec.config_for(domain))
        assert cfg["objective"] == name


def test_gaussian_logvar_clamp_passes_gradients_beyond_its_bounds():
    """A logvar pushed past the clamp must still get a gradient (else it stays there for good)."""
    from discrete_rae.latents import GaussianLatent

    latent = GaussianLatent(2, 1)
    with torch.no_grad():
        latent.head.weight.zero_()
        latent.head.bias.copy_(torch.tensor([0.0, 20.0]))  # mu 0, logvar 20 > 8
    out = latent.eval()(torch.zeros(3, 2))
    assert out.stats["logvar"].max().item() == 8.0  # the forward value is clamped
    out.posterior.kl(StandardNormal(1)).sum().backward()
    assert latent.head.bias.grad[1].item() > 0  # and the KL pulls it back down
