"""The zoo table, the posterior / prior / objective objects and multi-phase training."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from torch import nn

from discrete_rae import zoo
from discrete_rae.catalog import load_all
from discrete_rae.config import TrainConfig
from discrete_rae.distributions import (DiagonalGaussian, NoDensityError, PointMass, StandardNormal,
                                        UniformCategorical, build_prior)
from discrete_rae.objectives import Phase
from discrete_rae.registry import MODELS
from discrete_rae.samplers import fit_codes_sampler, sampler_from_state
from discrete_rae.trainer import Trainer

load_all()


# --- the table ------------------------------------------------------------------------------------
def test_vae_and_rae_rows_differ_exactly_in_latent_regulariser_and_sampler():
    vae, rae = zoo.row("vae"), zoo.row("rae_l2")
    differ = {c for c in zoo.Row.COLUMNS if getattr(vae, c) != getattr(rae, c)}
    # the sampler differs because an RAE has no prior its codes follow (ex-post GMM instead)
    assert differ == {"latent", "regularizer", "sampler"}
    assert vae.prior == rae.prior and vae.objective == rae.objective


def test_every_row_and_alias_is_registered_with_the_rows_values():
    for r in zoo.ROWS:
        spec = MODELS.get(r.name)
        assert spec.sampler == r.sampler and spec.row == r.name
        for domain in spec.domains:
            family = "images" if domain == "images" else "sequence"
            cfg = asdict(spec.config_for(domain))
            assert {k: cfg[k] for k in r.values(family)} == r.values(family)
    for a in zoo.ALIASES:
        spec, base = MODELS.get(a.name), MODELS.get(a.row)
        assert spec.domains == a.domains and spec.sampler == base.sampler
        for domain in spec.domains:
            expected = {**asdict(base.config_for(domain)), **a.values}
            assert asdict(spec.config_for(domain)) == expected


def test_documented_names_still_resolve():
    for name in ("grammar_vae", "grammar_rae", "char_vae", "char_rae", "selfies_vae", "selfies_rae", "grammar_ae",
                 "grammar_rae_gp", "gumbel_vae", "discrete_rae", "vae", "rae", "rae_l2", "rae_gp", "rae_sn", "ae"):
        assert name in MODELS
    assert zoo.row("grammar_rae").name == "rae_l2" and MODELS.get("grammar_rae").config_for("molecules").codec == "grammar"


def test_beta_vae_is_one_row_with_beta_4_on_every_domain():
    spec = MODELS.get("beta_vae")
    assert set(spec.domains) == {"molecules", "expressions", "images"} and spec.sampler == "prior"
    for domain in spec.domains:
        vae, beta = asdict(MODELS.get("vae").config_for(domain)), asdict(spec.config_for(domain))
        assert {k for k in vae if vae[k] != beta[k]} == {"beta"} and beta["beta"] == 4.0


def test_beta_weights_the_kl_in_the_loss():
    from discrete_rae.domains.images import PixelCodec
    from discrete_rae.config import replace

    codec = PixelCodec((1, 8, 8))
    x = torch.rand(6, 1, 8, 8)
    terms = {}
    for name in ("vae", "beta_vae"):
        cfg = replace(MODELS.get(name).config_for("images"), {"channels": (8,), "latent_dim": 4})
        torch.manual_seed(0)
        model = MODELS.get(name).build(cfg, codec).eval()
        terms[name] = model.loss(x)
    assert terms["beta_vae"]["latent"].item() == pytest.approx(4.0 * terms["vae"]["latent"].item(), rel=1e-5)
    assert terms["beta_vae"]["rec"].item() == pytest.approx(terms["vae"]["rec"].item(), rel=1e-6)


# --- posteriors and priors -----------------------------------------------------------------------
def test_gaussian_posterior_sample_log_prob_and_kl():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g) * 0.5
    q, p = DiagonalGaussian(mu, logvar), StandardNormal(3)
    z, log_q = q.sample(20_000, g)
    assert z.shape == (20_000, 4, 3) and log_q.shape == (20_000, 4)
    assert torch.allclose(q.log_prob(z), log_q, atol=1e-4)
    exact = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    assert torch.allclose(log_q, exact, atol=1e-4)
    monte_carlo = (log_q - p.log_prob(z)).mean(0)
    assert torch.allclose(q.kl(p), monte_carlo, atol=0.05)  # closed form vs 20k draws
    assert torch.allclose(q.divergence(p), q.kl(p))


def test_point_mass_has_no_density_and_its_divergence_is_the_prior_energy():
    z = torch.randn(5, 3)
    q = PointMass(z)
    assert not q.has_density and torch.equal(q.rsample(), z) and torch.equal(q.mode(), z)
    assert torch.allclose(q.divergence(StandardNormal(3)), 0.5 * z.pow(2).sum(-1))
    for call in (lambda: q.sample(2), lambda: q.log_prob(z), lambda: q.kl(StandardNormal(3))):
        with pytest.raises(NoDensityError):
            call()


def test_priors_sample_and_score_consistently():
    g = torch.Generator().manual_seed(1)
    normal = StandardNormal(2)
    z = normal.sample(50_000, g)
    assert z.shape == (50_000, 2) and abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    assert torch.allclose(normal.log_prob(z), torch.distributions.Normal(0, 1).log_prob(z).sum(-1), atol=1e-5)
    uniform = UniformCategorical(6, 2, 3)
    y = uniform.sample(9, g)
    assert torch.equal(y.view(9, 2, 3).sum(-1), torch.ones(9, 2))
    assert torch.allclose(uniform.log_prob(y), torch.full((9,), -2 * math.log(3)))


def test_a_prior_must_fit_the_latent_kind():
    class _Discrete:
        discrete, code_dim, n_vars, n_classes = True, 6, 2, 3

    with pytest.raises(ValueError, match="uniform_categorical"):
        build_prior("standard_normal", _Discrete())


def test_the_prior_sampler_draws_from_the_bound_model_prior():
    class _Model:
        prior = UniformCategorical(6, 2, 3)

    codes = torch.eye(3).repeat(4, 2)  # any [N, 6] codes: only the dimension is read
    sampler = fit_codes_sampler("prior", codes, 0, _Model())
    draws = sampler.sample(7, torch.Generator().manual_seed(0))
    assert torch.equal(draws.view(7, 2, 3).sum(-1), torch.ones(7, 2))  # one-hot, not Gaussian
    again = sampler_from_state(sampler.state_dict())
    assert torch.equal(again.sample(7, torch.Generator().manual_seed(0)), draws)


# --- several optimizers and phases -----------------------------------------------------------------
class _TwoPhase(nn.Module):
    """A toy model with two optimizers: a regression net and a 'critic' trained in phase two."""

    def __init__(self) -> None:
        super().__init__()
        self.net, self.critic = nn.Linear(3, 1), nn.Linear(1, 1)

    def loss(self, x: torch.Tensor, step: int = 0) -> dict[str, torch.Tensor]:
        rec = (self.net(x) - x.sum(-1, keepdim=True)).pow(2).mean()
        return {"loss": rec, "rec": rec.detach()}

    def critic_loss(self, x: torch.Tensor, step: int = 0) -> dict[str, torch.Tensor]:
        out = self.critic(self.net(x).detach()).pow(2).mean()
        return {"loss": out}

    def configure_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        return {"main": torch.optim.Adam(self.net.parameters(), lr=lr),
                "critic": torch.optim.SGD(self.critic.parameters(), lr=lr, momentum=0.9)}

    def phases(self) -> list[Phase]:
        return [Phase("main", "main", self.loss), Phase("critic", "critic", self.critic_loss, repeats=2)]

    def on_step(self, step: int) -> dict[str, float]:
        return {}


def _fit(run_dir: Path | None, epochs: int, resume_from: dict | None = None) -> tuple[Trainer, _TwoPhase]:
    torch.manual_seed(0)
    model = _TwoPhase()
    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=1e-2, early_stop=0, seed=3)
    trainer = Trainer(model, cfg, run_dir, torch.device("cpu"), progress=False)
    if resume_from is not None:
        model.load_state_dict(resume_from["model_state"])
        trainer.load_state_dict(resume_from["trainer"])
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 3, generator=g)
    trainer.fit(x, x[:16])
    return trainer, model


def test_each_phase_steps_its_own_optimizer_and_logs_its_terms():
    trainer, model = _fit(None, 1)
    assert set(trainer.optimizers) == {"main", "critic"}
    assert trainer.state.step == 4  # 64 / 16 batches; the critic's repeats are not extra steps
    critic_steps = trainer.optimizers["critic"].state[model.critic.weight]["momentum_buffer"] is not None
    assert critic_steps and "critic/loss" in trainer.state.history[0]["train"]
    assert "critic/loss" not in trainer.state.history[0]["val"]  # validation is the model's loss


def test_multi_optimizer_resume_is_exact(tmp_path):
    (tmp_path / "ref").mkdir()
    ref_trainer, ref = _fit(tmp_path / "ref", 3)
    (tmp_path / "part").mkdir()
    _fit(tmp_path / "part", 1)
    ckpt = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert set(ckpt["trainer"]["optimizers"]) == {"main", "critic"}
    resumed_trainer, resumed = _fit(tmp_path / "part", 3, resume_from=ckpt)
    for (k, a), (_, b) in zip(ref.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    assert [r["train"] for r in ref_trainer.state.history] == [r["train"] for r in resumed_trainer.state.history]


def test_a_phase_naming_an_unknown_optimizer_is_refused():
    class _Bad(_TwoPhase):
        def phases(self) -> list[Phase]:
            return [Phase("main", "main", self.loss), Phase("x", "nope", self.critic_loss)]

    from discrete_rae.errors import ConfigError

    with pytest.raises(ConfigError, match="nope"):
        Trainer(_Bad(), TrainConfig(), None, torch.device("cpu"), progress=False)


def test_zoo_command_lists_every_row_and_alias(capsys):
    from discrete_rae.cli import main

    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    for name in [r.name for r in zoo.ROWS] + [a.name for a in zoo.ALIASES]:
        assert f"| `{name}` |" in out, name
