"""Adversarial rows (aae, wae_gan): phases and optimizers, what each phase updates, the WAE-GAN
logit, held-out discriminator accuracy, validation on the reconstruction loss, exact resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from resume_exact import assert_same_training, resume_runs

from discrete_rae.cli import main
from discrete_rae.config import replace
from discrete_rae.errors import ConfigError
from discrete_rae.objectives_adversarial import (AdversarialAutoencoder, WaeGan, adversarial_metrics,
                                                 is_adversarial)
from discrete_rae.registry import MODELS
from discrete_rae.trainer import Trainer

PHASES = {"aae": ["main", "discriminator", "generator"], "wae_gan": ["main", "discriminator"]}


def _model(prepared_for, name: str, domain: str = "images", **overrides):
    run, prepared = prepared_for(domain, name)
    cfg = replace(run.model, overrides) if overrides else run.model
    torch.manual_seed(0)
    return run, prepared, MODELS.get(name).build(cfg, prepared.codec)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {k for k, v in module.named_parameters() if not torch.equal(v, before[k])}


@pytest.mark.parametrize("name", ["aae", "wae_gan"])
def test_rows_have_their_phases_and_optimizers(prepared_for, name):
    run, _, model = _model(prepared_for, name)
    assert MODELS.get(name).sampler == "prior" and run.model.objective == name
    assert [p.name for p in model.phases()] == PHASES[name]
    optimizers = model.configure_optimizers(1e-3)
    assert list(optimizers) == PHASES[name]  # one optimizer per phase, named after it
    disc = {id(p) for p in model.objective.discriminator.parameters()}
    main_params = {id(p) for g in optimizers["main"].param_groups for p in g["params"]}
    assert not disc & main_params  # the autoencoder's optimizer never moves the discriminator
    assert {id(p) for g in optimizers["discriminator"].param_groups for p in g["params"]} == disc
    assert all(g["betas"] == (0.5, 0.999) for opt in optimizers.values() for g in opt.param_groups)
    # the image aae row's slower discriminator (README: held-out accuracy 0.74 at 0.5, 0.66 at 0.2)
    ratio = 0.2 if name == "aae" else 0.5
    assert run.model.adv_lr_ratio == ratio
    assert optimizers["discriminator"].param_groups[0]["lr"] == pytest.approx(1e-3 * ratio)
    if name == "aae":
        gen = {id(p) for g in optimizers["generator"].param_groups for p in g["params"]}
        assert gen == {id(p) for m in (model.encoder, model.latent) for p in m.parameters()}


def test_each_phase_moves_only_its_parameters(prepared_for):
    run, prepared, model = _model(prepared_for, "aae")
    trainer = Trainer(model, run.train, None, torch.device("cpu"), progress=False)
    x = prepared.train[:32]
    model.train()
    parts = {"encoder": model.encoder, "latent": model.latent, "decoder": model.decoder,
             "discriminator": model.objective.discriminator}
    moved: dict[str, set[str]] = {}
    for phase in trainer.phases:
        before = {n: _snapshot(m) for n, m in parts.items()}
        trainer._optimizer_step(phase.loss(x, 0), phase.optimizer)
        moved[phase.name] = {n for n, m in parts.items() if _changed(m, before[n])}
    assert moved["main"] == {"encoder", "latent", "decoder"}
    assert moved["discriminator"] == {"discriminator"}
    assert moved["generator"] == {"encoder", "latent"}


def test_validation_loss_is_the_reconstruction_loss(prepared_for):
    """Early stopping and the validation NaN check read model.loss: no adversarial term in it."""
    for name in ("aae", "wae_gan"):
        _, prepared, model = _model(prepared_for, name)
        model.eval()
        terms = model.loss(prepared.val[:16])
        assert "adv" not in terms
        assert terms["loss"].item() == pytest.approx((terms["rec"] + terms["latent"] + terms["reg"]).item())
        assert terms["latent"].item() == 0.0  # the rows' beta is 0: no KL / code penalty
    main_terms = model.objective.main_terms(model, prepared.val[:16], 0)  # wae_gan's training loss
    assert main_terms["loss"].item() == pytest.approx(
        (main_terms["rec"] + 1000.0 * main_terms["adv"]).item(), rel=1e-5)


def test_training_logs_every_phase_and_validates_on_reconstruction(prepared_for):
    run, prepared, model = _model(prepared_for, "aae")
    cfg = replace(run.train, {"epochs": 2, "early_stop": 0})
    trainer = Trainer(model, cfg, None, torch.device("cpu"), progress=False)
    trainer.fit(prepared.train, prepared.val)
    train, val = trainer.state.history[-1]["train"], trainer.state.history[-1]["val"]
    assert {"discriminator/loss", "discriminator/acc", "generator/loss", "generator/adv"} <= set(train)
    assert set(val) == {"loss", "rec", "latent", "reg"}
    assert trainer.state.best_val == min(r["val"]["loss"] for r in trainer.state.history)


def test_wae_gan_logit_adds_the_prior_log_density(prepared_for):
    _, _, model = _model(prepared_for, "wae_gan", adv_sigma=2.0)
    for p in model.objective.discriminator.parameters():
        torch.nn.init.zeros_(p)
    z = torch.randn(5, model.latent.code_dim)
    expected = torch.distributions.Normal(0.0, 2.0).log_prob(z).sum(-1)
    assert torch.allclose(model.objective.logit(z), expected, atol=1e-5)
    assert isinstance(model.objective, WaeGan) and is_adversarial(model)


def test_held_out_discriminator_accuracy(prepared_for):
    _, prepared, model = _model(prepared_for, "aae")
    codes = model.eval().encode(prepared.test[:40])
    metrics = adversarial_metrics(model, codes, seed=1)
    assert 0.0 <= metrics["disc_accuracy"] <= 1.0 and 0.0 < metrics["disc_prob_codes"] < 1.0
    assert adversarial_metrics(model, codes, seed=1) == metrics  # seeded prior draws
    for p in model.objective.discriminator.parameters():
        torch.nn.init.zeros_(p)  # logit 0 everywhere: it calls everything a code, half right
    assert adversarial_metrics(model, codes)["disc_accuracy"] == pytest.approx(0.5)
    _, _, vae = _model(prepared_for, "vae")
    assert adversarial_metrics(vae, codes) == {} and not is_adversarial(vae)


def test_a_discrete_latent_is_refused(prepared_for):
    run, _ = prepared_for("images", "aae")
    cfg = replace(run.model, {"latent": "categorical", "prior": "uniform_categorical"})
    with pytest.raises(ConfigError, match="continuous latent"):
        AdversarialAutoencoder(cfg)


def test_aae_resume_is_exact_with_every_optimizer(prepared_for, tmp_path):
    ref_trainer, ref, ckpt, resumed_trainer, resumed = resume_runs(
        lambda: _model(prepared_for, "aae", latent="gaussian"), tmp_path)  # noise in every phase
    assert set(ckpt["trainer"]["optimizers"]) == {"main", "discriminator", "generator"}
    assert any(k.startswith("objective.discriminator.") for k in ckpt["model_state"])
    assert_same_training(ref_trainer, ref, resumed_trainer, resumed)


@pytest.mark.slow
def test_cli_resume_of_an_aae_is_exact(tmp_path):
    """Through the command line on expressions: 2 epochs at once == 1 epoch, then --resume to 2."""
    common = ["--domain", "expressions", "--model", "aae", "--preset", "smoke", "--runs-dir", str(tmp_path),
              "--data-dir", str(tmp_path / "data"), "--threads", "1", "-q"]
    assert main(["train", *common, "--run-name", "a", "--epochs", "2"]) == 0
    assert main(["train", *common, "--run-name", "c", "--epochs", "1"]) == 0
    assert main(["train", *common, "--run-name", "c", "--epochs", "2", "--resume"]) == 0
    logged = {k: [json.loads(line) for line in (tmp_path / k / "metrics.jsonl").read_text().splitlines()]
              for k in ("a", "c")}
    assert [(r["step"], r["train"], r["val"]) for r in logged["a"]] == \
        [(r["step"], r["train"], r["val"]) for r in logged["c"]]
    weights = {k: torch.load(tmp_path / k / "checkpoint.pt", weights_only=True)["model_state"] for k in ("a", "c")}
    assert all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert math.isfinite(metrics["disc_accuracy"])
