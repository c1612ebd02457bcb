"""MaskAAE (mask_aae): the mask stays in [0, 1], each phase moves only its parameters, the
gradient penalty, the doubling polynomial weight, the masked decoder and prior, flags refused on
other rows, the evaluation's active count and trace picture, exact resume."""

from __future__ import annotations

import math

import pytest
import torch

from resume_exact import assert_same_training, resume_runs

from discrete_rae.config import replace, to_dict
from discrete_rae.errors import ConfigError, UsageError
from discrete_rae.objectives_mask import (DescentStall, LatentMask, MaskAAE, MaskedDecoder, gradient_penalty, is_masked,
                                          mask_report, poly_period, poly_weight, variance_penalty)
from discrete_rae.registry import MODELS
from discrete_rae.runconfig import resolve_run_config, run_config_from_checkpoint, validate
from discrete_rae.trainer import Trainer

PHASES = ["main", "critic", "generator", "mask"]


def _model(prepared_for, domain: str = "images", **overrides):
    run, prepared = prepared_for(domain, "mask_aae")
    cfg = replace(run.model, overrides) if overrides else run.model
    torch.manual_seed(0)
    return run, prepared, MODELS.get("mask_aae").build(cfg, prepared.codec)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(v, before[k]) for k, v in module.named_parameters())


def test_row_phases_and_optimizers(prepared_for):
    run, _, model = _model(prepared_for)
    assert MODELS.get("mask_aae").sampler == "prior" and run.model.objective == "mask_aae"
    phases = model.phases()
    assert [p.name for p in phases] == PHASES and phases[1].repeats == 5
    opts = model.configure_optimizers(1e-3)
    assert list(opts) == PHASES
    ids = lambda opt: {id(p) for g in opt.param_groups for p in g["params"]}  # noqa: E731
    objective = model.objective
    assert ids(opts["critic"]) == {id(p) for p in objective.critic.parameters()}
    assert ids(opts["mask"]) == {id(objective.mask.raw)}
    assert ids(opts["generator"]) == {id(p) for m in (model.encoder, model.latent) for p in m.parameters()}
    assert not ids(opts["main"]) & (ids(opts["critic"]) | ids(opts["mask"]))
    for name in ("critic", "generator", "mask"):
        assert opts[name].param_groups[0]["betas"] == (0.5, 0.9)
    assert opts["critic"].param_groups[0]["lr"] == pytest.approx(1e-4)


def test_mask_is_always_in_unit_interval():
    torch.manual_seed(0)
    mask = LatentMask(64)
    assert torch.all(mask.a() >= 0)
    for raw in (torch.linspace(-80, 80, 64), torch.full((64,), -1e4), torch.full((64,), 1e4), torch.randn(64) * 30):
        with torch.no_grad():
            mask.raw.copy_(raw)
        alpha = mask.alpha()
        assert torch.all(mask.a() >= 0) and torch.all(alpha >= 0) and torch.all(alpha <= 1)
        assert torch.allclose(alpha, 1 - torch.exp(-mask.a()), atol=1e-6)
    # a ~ U(0, 5) at the start, as in the paper's code: alpha in (0, 1 - e^-5]
    torch.manual_seed(1)
    start = LatentMask(1000).alpha()
    assert start.min() > 0 and start.max() <= 1 - torch.exp(torch.tensor(-5.0)) + 1e-6


def test_mask_stays_in_unit_interval_under_big_steps(prepared_for):
    run, prepared, model = _model(prepared_for, mask_lr=50.0)  # absurd rate: r jumps far
    trainer = Trainer(model, run.train, None, torch.device("cpu"), progress=False)
    model.train()
    for step in range(5):
        trainer._optimizer_step(model.objective.mask_terms(model, prepared.train[:16], step * 1000), "mask")
        alpha = model.objective.alpha()
        assert torch.all((alpha >= 0) & (alpha <= 1))


def test_each_phase_moves_only_its_parameters(prepared_for):
    run, prepared, model = _model(prepared_for)
    trainer = Trainer(model, run.train, None, torch.device("cpu"), progress=False)
    x = prepared.train[:32]
    model.train()
    parts = {"encoder": model.encoder, "latent": model.latent, "decoder": model.decoder,
             "critic": model.objective.critic, "mask": model.objective.mask}
    moved = {}
    for phase in trainer.phases:
        before = {n: _snapshot(m) for n, m in parts.items()}
        trainer._optimizer_step(phase.loss(x, 0), phase.optimizer)
        moved[phase.name] = {n for n, m in parts.items() if _changed(m, before[n])}
    assert moved["main"] == {"encoder", "latent", "decoder"}
    assert moved["critic"] == {"critic"}
    assert moved["generator"] == {"encoder", "latent"}
    assert moved["mask"] == {"mask"}


def test_gradient_penalty_of_a_linear_critic():
    """C(z) = w.z has gradient w everywhere: the penalty is weight * (||w|| - 1)^2."""
    critic = torch.nn.Linear(6, 1, bias=True)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, -4.0, 0.0, 0.0, 12.0, 0.0]]))  # ||w|| = 13
    real, fake = torch.randn(20, 6), torch.randn(20, 6) + 3
    gp = gradient_penalty(critic, real, fake, 10.0)
    assert gp.item() == pytest.approx(10 * (13 - 1) ** 2)
    gp.backward()  # the penalty trains the critic: d/dw 10 (||w|| - 1)^2 = 20 (||w|| - 1) w / ||w||
    expected = 20 * 12 * critic.weight.detach() / 13
    assert torch.allclose(critic.weight.grad, expected, rtol=1e-5)
    with torch.no_grad():
        critic.weight.div_(13.0)  # unit norm: no penalty
    assert gradient_penalty(critic, real, fake, 10.0).item() == pytest.approx(0.0, abs=1e-10)


def test_poly_weight_doubles_on_its_schedule(prepared_for):
    assert poly_weight(0, 32, 100) == pytest.approx(2 / 32)
    assert poly_weight(99, 32, 100) == pytest.approx(2 / 32)
    assert poly_weight(100, 32, 100) == pytest.approx(4 / 32)
    assert poly_weight(250, 32, 100) == pytest.approx(8 / 32)
    assert [poly_weight(s, 16, 7) for s in (0, 7, 14, 21)] == pytest.approx([0.125, 0.25, 0.5, 1.0])
    assert poly_weight(10**6, 32, 100) == 2048.0  # the cap
    # a finite hold: the doubling pauses at h = max(hold, 2 / D) until ``start``, then doubles from h
    assert [poly_weight(s, 32, 10, -1, 0.5) for s in (0, 10, 20, 30, 40, 10**5)] == pytest.approx(
        [2 / 32, 4 / 32, 8 / 32, 16 / 32, 0.5, 0.5])
    assert [poly_weight(s, 32, 10, 300, 0.5) for s in (20, 299, 300, 309, 310, 335, 10**5)] == pytest.approx(
        [8 / 32, 0.5, 0.5, 0.5, 1.0, 4.0, 2048.0])
    assert poly_weight(500, 8, 10, -1, 0.1) == pytest.approx(2 / 8)  # the hold never lowers the start
    # the hold is per dimension: the same value at every D (the paper's start 2 / D is not)
    assert {poly_weight(400, dim, 10, -1, 0.5) for dim in (16, 32, 64)} == {0.5}
    assert poly_weight(10**5, 32, 100) == 2048.0 and poly_weight(250, 32, 100, 0, math.inf) == pytest.approx(8 / 32)
    # hold 2048 (the cap): the paper's schedule from step 0 whatever the start, through the objective
    _, prepared, model = _model(prepared_for, mask_poly_every=3, mask_poly_start=2, mask_poly_hold=2048.0)
    model.train()
    dim = model.objective.dim
    for step, expected in ((0, 2 / dim), (3, 4 / dim), (6, 8 / dim), (30, 2**11 / dim)):
        terms = model.objective.mask_terms(model, prepared.train[:8], step)
        assert terms["poly_weight"].item() == pytest.approx(expected)


def test_descent_stall_starts_the_doubling():
    """The doubling starts `patience` steps after the soft count last fell by one dimension."""
    stall = DescentStall(patience=5)
    assert stall.update(0, 30.0) == -1  # the first value is the reference
    # falling by >= 1 resets the clock; smaller wiggles do not
    for step, soft in ((1, 29.5), (2, 28.9), (3, 28.5), (4, 28.2), (5, 27.85), (6, 27.8)):
        assert stall.update(step, soft) == -1
    assert float(stall.ref) == pytest.approx(27.85) and int(stall.since) == 5
    for step in range(7, 10):
        assert stall.update(step, 27.5) == -1  # less than one below 27.85: no reset
    assert stall.update(10, 27.5) == 10  # 5 steps since step 5: stalled, doubling from step 10
    assert stall.update(11, 3.0) == 10 and stall.update(500, 1.0) == 10  # fixed once started
    assert DescentStall(patience=0).update(7, 30.0) == 0
    # the latest start: a descent that never stalls still ends its pause at step ``latest``
    deadline = DescentStall(patience=5, latest=8)
    assert [deadline.update(step, 30.0 - 2 * step) for step in range(10)] == [-1] * 8 + [8, 8]
    assert DescentStall(patience=5, latest=0).update(10**6, 3.0) == -1  # latest 0: only the stall
    # the schedule it drives, at D = 16, hold 1, doubling every 3 steps
    assert [poly_weight(s, 16, 3, 10, 1.0) for s in (3, 9, 10, 13, 16)] == pytest.approx([0.25, 1.0, 1.0, 2.0, 4.0])


def test_stall_is_tracked_in_training_only_and_saved(prepared_for):
    _, prepared, model = _model(prepared_for, mask_poly_patience=2, mask_poly_every=1, mask_poly_hold=2.0)
    obj = model.objective
    x = prepared.train[:8]
    h = max(obj.poly_hold, 2 / obj.dim)
    model.eval()
    for step in range(5):  # evaluation calls leave the schedule alone: paused at h
        assert obj.mask_terms(model, x, step)["poly_weight"].item() == pytest.approx(min(h, 2**step * 2 / obj.dim))
    assert int(obj.stall.start) == -1 and float(obj.stall.ref) == float("inf")
    model.train()
    weights = [obj.mask_terms(model, x, step)["poly_weight"].item() for step in range(5)]
    # the mask does not move (no optimizer step): stalled at step 2, then doubling from h every step
    assert weights == pytest.approx([min(h, 2 / obj.dim), min(h, 4 / obj.dim), h, 2 * h, 4 * h])
    state = model.state_dict()
    assert int(state["objective.stall.start"]) == 2 and "objective.stall.ref" in state


def test_mask_loss_terms(prepared_for):
    _, prepared, model = _model(prepared_for, mask_rec_weight=2.0)
    obj = model.objective
    torch.manual_seed(5)
    terms = obj.mask_terms(model, prepared.train[:8], 0)
    alpha = obj.alpha().detach()
    assert terms["poly"].item() == pytest.approx(float((alpha * (1 - alpha)).sum()), rel=1e-5)
    expected = 2.0 * terms["rec"] + (1 + terms["w"]) ** 2 + terms["poly_weight"] * terms["poly"]
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["active"].item() == float((alpha > 0.5).sum())
    assert [terms[f"alpha_{d:02d}"].item() for d in range(obj.dim)] == pytest.approx(alpha.tolist())


def test_variance_penalty_weighs_off_dimensions():
    z = torch.tensor([[1.0, 5.0], [3.0, -5.0]])  # batch variances (population) 1 and 25
    on_off = torch.tensor([1.0, 0.0])
    assert variance_penalty(z, on_off).item() == pytest.approx((1 * torch.exp(torch.tensor(-10.0)).item() + 25) / 2)
    assert variance_penalty(z, torch.ones(2)).item() < 1e-3


def test_decoder_and_prior_draws_read_the_masked_code(prepared_for):
    _, prepared, model = _model(prepared_for)
    assert isinstance(model.decoder, MaskedDecoder) and is_masked(model)
    model.eval()
    with torch.no_grad():
        model.objective.mask.raw.copy_(torch.tensor([50.0, -50.0] * (model.objective.dim // 2)))
        alpha = model.objective.alpha()
        z = torch.randn(4, model.objective.dim)
        off = alpha < 0.5
        z2 = z.clone()
        z2[:, off] = torch.randn(4, int(off.sum())) * 10  # switched-off dimensions change nothing
        assert torch.allclose(model.generate(z), model.generate(z2), atol=1e-5)
        assert torch.allclose(model.decoder(z, None), model.decoder.inner(z * alpha, None))
    # the mask is a plain parameter of the objective, not of the decoder's parameter groups
    assert "objective.mask.raw" in model.state_dict()
    assert not any("mask" in k for k, _ in model.decoder.named_parameters())


@pytest.mark.parametrize("domain", ["expressions"])
def test_sequence_decoder_generates_through_the_mask(prepared_for, domain):
    _, prepared, model = _model(prepared_for, domain)
    model.eval()
    with torch.no_grad():
        model.objective.mask.raw.fill_(-60.0)  # every dimension off: all codes decode alike
        a, b = torch.randn(3, model.objective.dim), torch.randn(3, model.objective.dim)
        out_a, out_b = model.generate(a), model.generate(b)
    assert all(torch.equal(x, y) for x, y in zip(out_a, out_b))
    inner = model.decoder.inner
    if hasattr(inner, "_h0"):  # beam search's stepping API reads the masked code too
        alpha = model.objective.alpha()
        with torch.no_grad():
            h = model.decoder._h0(a)
            expected = inner._h0(a * alpha)
        assert all(torch.equal(x, y) for x, y in zip(torch.atleast_1d(h), torch.atleast_1d(expected)))
    assert model.decoder.length == inner.length  # plain attributes come from the inner decoder


def test_a_flag_of_this_objective_on_another_row_is_one_error_line():
    """Like --adv-lr-ratio: an objective's option set on a row that does not use it is refused with
    one line naming the flag (the validation's user error), before any work."""
    for model, flag in (("aae", {"critic_gp": 5.0}), ("vae", {"mask_poly_every": 10}), ("rae", {"mask_lr": 1e-3})):
        with pytest.raises(UsageError) as err:
            resolve_run_config("images", model, "smoke", None, {"model": flag})
        message = str(err.value)
        assert len(message.splitlines()) == 1 and "--" + next(iter(flag)).replace("_", "-") in message
        assert "mask_aae" in message
    with pytest.raises(UsageError, match="--adv-lr-ratio"):
        resolve_run_config("images", "mask_aae", "smoke", None, {"model": {"adv_lr_ratio": 0.2}})
    run = resolve_run_config("images", "mask_aae", "smoke", None, {"model": {"mask_poly_every": 10}})
    assert run.model.mask_poly_every == 10


def test_a_discrete_latent_is_refused(prepared_for):
    run, _ = prepared_for("images", "mask_aae")
    cfg = replace(run.model, {"latent": "categorical", "prior": "uniform_categorical"})
    with pytest.raises(ConfigError, match="continuous latent"):
        MaskAAE(cfg)


def test_report_counts_active_dimensions_and_draws_the_trace(prepared_for, tmp_path):
    run, prepared, model = _model(prepared_for)
    cfg = replace(run.train, {"epochs": 2, "early_stop": 0})
    trainer = Trainer(model, cfg, None, torch.device("cpu"), progress=False)
    trainer.fit(prepared.train, prepared.val)
    train, val = trainer.state.history[-1]["train"], trainer.state.history[-1]["val"]
    dim = model.objective.dim
    assert {"critic/w", "critic/gp", "generator/adv", "mask/active", "mask/poly_weight", "var"} <= set(train)
    assert {f"mask/alpha_{d:02d}" for d in range(dim)} <= set(train)
    assert set(val) == {"loss", "rec", "latent", "reg"}  # validation on the reconstruction only
    report = mask_report(model, trainer.state.history, tmp_path)
    alpha = model.objective.alpha().detach()
    assert report["mask_active"] == int((alpha > 0.5).sum()) and len(report["mask_alpha"]) == dim
    assert (tmp_path / "mask_trace.png").stat().st_size > 1000


def test_report_is_empty_for_other_models(prepared_for):
    run, prepared = prepared_for("images", "aae")
    model = MODELS.get("aae").build(run.model, prepared.codec)
    assert mask_report(model) == {} and not is_masked(model)


def test_resume_is_exact_with_the_mask_and_every_optimizer(prepared_for, tmp_path):
    ref_trainer, ref, ckpt, resumed_trainer, resumed = resume_runs(
        lambda: _model(prepared_for, latent="gaussian"), tmp_path)  # noise in every phase
    assert set(ckpt["trainer"]["optimizers"]) == set(PHASES)
    assert type(ckpt["model_state"]["objective.mask.raw"]) is torch.Tensor
    assert_same_training(ref_trainer, ref, resumed_trainer, resumed)


def test_default_schedule_is_the_papers(prepared_for):
    """The defaults (hold 2048, the cap) never pause: (2 / D) 2^floor(t / T), T = round(3.125 D),
    whatever the stall options; without the pause there is no stall state at all."""
    _, prepared, model = _model(prepared_for, mask_poly_patience=1, mask_poly_start=2)
    obj = model.objective
    period = math.floor(3.125 * obj.dim + 0.5)
    assert obj.poly_every == period and obj.stall is None and not obj.paused
    model.train()
    for step in (0, 1, 2, 3, period, 2 * period + 1, 5 * period, 40 * period):
        expected = min(2048.0, 2 / obj.dim * 2 ** (step // period))
        assert obj.mask_terms(model, prepared.train[:8], step)["poly_weight"].item() == pytest.approx(expected)
    assert not any(".stall." in k for k in model.state_dict())


def test_doubling_period_per_dimension(prepared_for):
    """--mask-poly-every 0 (the default): T = round(per_dim * D); a positive value is a fixed period."""
    assert [poly_period(0, 3.125, d) for d in (16, 32, 64)] == [50, 100, 200]
    assert [poly_period(50, 3.125, d) for d in (16, 32, 64)] == [50, 50, 50]
    assert poly_period(0, 6.25, 16) == 100 and poly_period(0, 3.125, 8) == 25 and poly_period(0, 3.125, 4) == 13
    assert poly_period(0, 0.01, 4) == 1  # never below one step
    # the same number of doublings at the same fraction of T: (2 / D) 2^k at step k T for every D
    assert {poly_weight(3 * poly_period(0, 3.125, d), d, poly_period(0, 3.125, d)) * d for d in (16, 32, 64)} == {16.0}
    for overrides, period in (({}, 13), ({"mask_poly_every": 50}, 50), ({"mask_poly_every_per_dim": 6.25}, 25),
                              ({"mask_poly_every": 7, "mask_poly_every_per_dim": 100.0}, 7)):
        _, _, model = _model(prepared_for, **overrides)  # smoke images preset: latent_dim 4
        assert model.objective.dim == 4 and model.objective.poly_every == period, overrides


def test_new_options_are_validated_and_refused_on_other_rows():
    for model in ("aae", "vae", "rae"):
        for flag in ({"mask_poly_every_per_dim": 2.0}, {"mask_noise": 0.1}):
            with pytest.raises(UsageError) as err:
                resolve_run_config("images", model, "smoke", None, {"model": flag})
            message = str(err.value)
            assert len(message.splitlines()) == 1 and "--" + next(iter(flag)).replace("_", "-") in message
    for bad in ({"mask_poly_every": -1}, {"mask_poly_every_per_dim": 0.0}, {"mask_noise": -0.5},
                {"mask_noise": float("inf")}):
        with pytest.raises(UsageError):
            resolve_run_config("images", "mask_aae", "smoke", None, {"model": bad})
    run = resolve_run_config("images", "mask_aae", "smoke", None,
                             {"model": {"mask_poly_every": 0, "mask_poly_every_per_dim": 2.5, "mask_noise": 0.1}})
    assert (run.model.mask_poly_every, run.model.mask_poly_every_per_dim, run.model.mask_noise) == (0, 2.5, 0.1)
    defaults = resolve_run_config("images", "mask_aae", "smoke", None, {})
    assert (defaults.model.mask_poly_every, defaults.model.mask_poly_every_per_dim, defaults.model.mask_noise) == (
        0, 3.125, 0.0)


def test_old_run_config_keeps_the_fixed_schedule(prepared_for):
    """A config written before the per-dimension period recorded mask_poly_every 50 and neither
    mask_poly_every_per_dim nor mask_noise: it loads with the fixed 50-step schedule, no noise."""
    run, prepared = prepared_for("images", "mask_aae")
    old = {k: v for k, v in to_dict(run.model).items() if k not in ("mask_poly_every_per_dim", "mask_noise")}
    old["mask_poly_every"] = 50
    ckpt = {"domain": "images", "model_name": "mask_aae", "preset": "smoke",
            "config": {"model": old, "train": to_dict(run.train), "data": to_dict(run.data), "eval": to_dict(run.eval)}}
    loaded = run_config_from_checkpoint(ckpt)
    assert loaded.model.mask_poly_every == 50 and loaded.model.mask_noise == 0.0
    validate(loaded)
    model = MODELS.get("mask_aae").build(loaded.model, prepared.codec)
    obj = model.objective
    assert obj.poly_every == 50 and model.decoder.noise == 0.0
    model.train()
    for step in (0, 49, 50, 149, 150):
        expected = 2 / obj.dim * 2 ** (step // 50)
        assert obj.mask_terms(model, prepared.train[:8], step)["poly_weight"].item() == pytest.approx(expected)


def _roundtrip(state: dict[str, torch.Tensor], tmp_path) -> dict[str, torch.Tensor]:
    torch.save(state, tmp_path / "state.pt")
    return torch.load(tmp_path / "state.pt", weights_only=True)


def test_stall_keys_of_either_kind_of_checkpoint_load(prepared_for, tmp_path):
    """Checkpoints of earlier versions hold the stall's buffers even with the pause off; the load
    hook drops them there, and a paused model loading a checkpoint without them starts afresh."""
    _, _, paused = _model(prepared_for, mask_poly_hold=2.0, mask_poly_patience=3)
    old_state = _roundtrip(paused.state_dict(), tmp_path)
    assert {"objective.stall.ref", "objective.stall.since", "objective.stall.start"} <= set(old_state)
    old_state["objective.stall.start"].fill_(7)
    _, _, plain = _model(prepared_for)
    assert plain.objective.stall is None
    result = plain.load_state_dict(old_state)  # strict: no unexpected keys left
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(plain.objective.mask.raw, old_state["objective.mask.raw"])
    new_state = _roundtrip(plain.state_dict(), tmp_path)
    assert not any(".stall." in k for k in new_state)
    _, _, paused2 = _model(prepared_for, mask_poly_hold=2.0, mask_poly_patience=3)
    paused2.objective.stall.start.fill_(5)
    paused2.load_state_dict(new_state)  # no stall keys: a fresh stall
    assert int(paused2.objective.stall.start) == -1 and float(paused2.objective.stall.ref) == math.inf
    paused2.load_state_dict(old_state)  # with stall keys: restored
    assert int(paused2.objective.stall.start) == 7


def test_resume_is_exact_with_the_pause_on(prepared_for, tmp_path):
    ref_trainer, ref, ckpt, resumed_trainer, resumed = resume_runs(
        lambda: _model(prepared_for, mask_poly_hold=2.0, mask_poly_patience=2, mask_poly_every=1), tmp_path)
    assert "objective.stall.start" in ckpt["model_state"]
    assert_same_training(ref_trainer, ref, resumed_trainer, resumed)


def test_code_noise_in_training_only(prepared_for):
    _, _, model = _model(prepared_for, mask_noise=0.5)
    decoder = model.decoder
    assert decoder.noise == 0.5
    z = torch.randn(4, model.objective.dim)
    model.eval()
    with torch.no_grad():
        assert torch.equal(decoder(z, None), decoder.inner(model.objective.mask(z), None))
        model.train()
        torch.manual_seed(3)
        noisy = decoder(z, None)
        torch.manual_seed(3)
        eps = torch.randn_like(z)
        assert torch.allclose(noisy, decoder.inner(model.objective.mask(z + 0.5 * eps), None), atol=1e-6)
    _, _, plain = _model(prepared_for)
    assert plain.decoder.noise == 0.0


def test_latest_start_from_the_config(prepared_for):
    """--mask-poly-start ends the pause even while the soft count keeps falling."""
    _, prepared, model = _model(prepared_for, mask_poly_patience=1000, mask_poly_start=3, mask_poly_every=1,
                                mask_poly_hold=2.0)
    obj = model.objective
    h = max(obj.poly_hold, 2 / obj.dim)
    model.train()
    weights = [obj.mask_terms(model, prepared.train[:8], step)["poly_weight"].item() for step in range(6)]
    assert int(obj.stall.start) == 3
    assert weights[3:] == pytest.approx([h, 2 * h, 4 * h]) and max(weights[:3]) <= h


def test_code_bound_squashes_every_code_the_mask_reads(prepared_for):
    """--mask-code-bound B: the decoder, the critic's codes and prior draws and the variance penalty
    all read B tanh(z / B), so |code| < B; off (0) by default, the identity."""
    _, prepared, model = _model(prepared_for, mask_code_bound=2.0)
    obj = model.objective
    assert obj.mask.bound == 2.0
    z = torch.randn(5, obj.dim) * 50
    squashed = obj.mask.squash(z)
    assert squashed.abs().max() <= 2.0 and torch.allclose(squashed, 2.0 * torch.tanh(z / 2.0))
    model.eval()
    with torch.no_grad():
        alpha = obj.alpha()
        assert torch.allclose(model.decoder(z, None), model.decoder.inner(squashed * alpha, None))
        # a code 10x larger decodes like the bounded one: the encoder cannot outgrow a small alpha
        big = torch.full((2, obj.dim), 30.0)
        assert torch.allclose(model.decoder(big, None), model.decoder(big * 10, None), atol=1e-5)
        codes = obj.raw_codes(model, prepared.train[:8])
        assert codes.abs().max() <= 2.0
        torch.manual_seed(0)
        draws = obj.masked_prior(model, 4000, torch.ones(obj.dim))
    assert draws.abs().max() <= 2.0 and draws.abs().max() > 1.0
    assert obj.mask_terms(model, prepared.train[:8], 0)["loss"].isfinite()
    _, _, plain = _model(prepared_for)
    assert plain.objective.mask.bound == 0.0 and torch.equal(plain.objective.mask.squash(z), z)


def test_code_bound_is_validated_and_refused_on_other_rows():
    with pytest.raises(UsageError) as err:
        resolve_run_config("images", "aae", "smoke", None, {"model": {"mask_code_bound": 3.0}})
    assert len(str(err.value).splitlines()) == 1 and "--mask-code-bound" in str(err.value)
    with pytest.raises(UsageError):
        resolve_run_config("images", "mask_aae", "smoke", None, {"model": {"mask_code_bound": -1.0}})
    run = resolve_run_config("images", "mask_aae", "smoke", None, {"model": {"mask_code_bound": 3.0}})
    assert run.model.mask_code_bound == 3.0
