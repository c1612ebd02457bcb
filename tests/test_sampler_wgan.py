"""The ``wgan`` ex-post sampler's options: EMA generator, held-out selection, lr decay, old states."""

from __future__ import annotations

import io

import pytest
import torch

from discrete_rae.samplers import build_sampler, sampler_from_state
from discrete_rae.samplers_wgan import LEGACY, WGANSampler, code_frechet, energy_distance

SMALL = {"hidden": 32, "layers": 2, "batch_size": 64, "eval_every": 20, "n_eval": 300}


def gaussian(n: int, seed: int = 0) -> torch.Tensor:
    """A correlated 2-D Gaussian far from N(0, I): [n, 2]."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.tensor([[1.5, 0.0], [0.9, 0.4]])
    return torch.tensor([4.0, -3.0]) + torch.randn(n, 2, generator=g) @ mix.T


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    return gaussian(600)


def round_trip(state: dict) -> WGANSampler:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return sampler_from_state(torch.load(buf, weights_only=True))


def draw(sampler, n: int = 40) -> torch.Tensor:
    return sampler.sample(n, generator=torch.Generator().manual_seed(7))


def test_new_defaults():
    o = WGANSampler().options
    assert (o["steps"], o["lr"], o["betas"], o["ema"], o["select"], o["lr_decay"]) == (
        6000, 3e-4, [0.5, 0.9], 0.999, "frechet", True)


@pytest.mark.parametrize("options, message", [
    ({"ema": 1.0}, r"ema=1.0: expected an EMA decay in \[0, 1\)"), ({"ema": -0.1}, "ema=-0.1"),
    ({"ema": True}, "ema=True"), ({"ema": "high"}, "ema='high'"),
    ({"select": "fid"}, "select='fid': choose one of frechet, energy"),
    ({"lr_decay": "yes"}, "lr_decay='yes': expected True or False"), ({"lr_decay": 1}, "lr_decay=1"),
    ({"betas": (0.5,)}, "betas=.*two numbers in"), ({"betas": (1.0, 0.9)}, "betas="),
    ({"noise_dim": -1}, "noise_dim=-1"), ({"steps": 0}, "steps=0")])
def test_bad_options_are_one_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        build_sampler("wgan", **options)


def test_fit_sampler_refuses_a_bad_option_before_loading_the_run(tmp_path, capsys):
    from discrete_rae.cli import main

    code = main(["fit-sampler", "--run", str(tmp_path / "missing"), "--sampler", "wgan", "--set", "select=fid", "-q"])
    assert code == 2
    assert "select='fid'" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--set", "emma=0.9"], "sampler 'wgan': unknown option emma; choose from: hidden, layers"),
    (["--set", "ema=0.9"] + ["--sampler", "nope"], "unknown sampler 'nope'")])
def test_fit_sampler_refuses_unknown_names_in_one_line(args, message, tmp_path, capsys):
    from discrete_rae.cli import main

    argv = ["fit-sampler", "--run", str(tmp_path / "missing"), "--sampler", "wgan", *args, "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_fit_sampler_help_lists_the_wgan_options(capsys):
    from discrete_rae.cli import main

    with pytest.raises(SystemExit):
        main(["fit-sampler", "--help"])
    out = capsys.readouterr().out
    assert all(key in out for key in ("ema:", "select:", "lr_decay:"))


def test_code_frechet():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g)
    assert code_frechet(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = a + torch.tensor([2.0, 0.0, 0.0])  # same covariance, the mean moved by 2: distance 4
    assert code_frechet(a, shifted) == pytest.approx(4.0, rel=1e-6)
    # N(0, I) vs N(0, 4 I) in 3-D: 3 (1 + 4 - 2 * 2) = 3
    assert code_frechet(a, 2 * torch.randn(4000, 3, generator=g)) == pytest.approx(3.0, abs=0.3)


def test_ema_copy_samples_and_averages(data):
    sampler = build_sampler("wgan", **SMALL, steps=30, ema=0.9).fit(data, seed=1)
    assert set(sampler.nets) == {"generator", "critic", "ema"}
    assert sampler.sampling_generator is sampler.nets["ema"]
    e = torch.randn(40, 2, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert torch.equal(draw(sampler), sampler._to_codes(sampler.nets["ema"](e)))
        assert not torch.allclose(draw(sampler), sampler._to_codes(sampler.nets["generator"](e)))
    # one update: avg <- 0.9 avg + 0.1 current
    before = [p.clone() for p in sampler.nets["ema"].parameters()]
    sampler._update_ema()
    for old, new, cur in zip(before, sampler.nets["ema"].parameters(), sampler.nets["generator"].parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * cur, atol=1e-6)
    # ema 0: no copy, the trained generator samples
    plain = build_sampler("wgan", **SMALL, steps=30, ema=0.0).fit(data, seed=1)
    assert "ema" not in plain.nets and plain.sampling_generator is plain.nets["generator"]


@pytest.mark.parametrize("select", ["frechet", "energy"])
def test_the_kept_step_is_the_best_held_out_check(select, data):
    sampler = WGANSampler(**SMALL, steps=120, ema=0.9, select=select)
    seen: list[float] = []
    held: list[torch.Tensor] = []
    original = sampler._val_loss

    def recording(x: torch.Tensor) -> float:
        held.append(x)
        seen.append(original(x))
        return seen[-1]

    sampler._val_loss = recording
    sampler.fit(data, seed=2)
    assert len(seen) == 6 and sampler.history["best_val_loss"] == min(seen)
    assert sampler.history["best_step"] == 20 * (seen.index(min(seen)) + 1)
    assert original(held[0]) == pytest.approx(min(seen), rel=1e-5)  # the kept weights score the best
    assert len(held[0]) == 60  # the held-out tenth of the codes, never more
    with torch.no_grad():
        e = torch.randn(SMALL["n_eval"], 2, generator=torch.Generator().manual_seed(1))
        fake = sampler.sampling_generator(e)
    expected = (code_frechet(sampler._to_codes(fake), sampler._to_codes(held[0])) if select == "frechet"
                else energy_distance(fake, held[0]))
    assert min(seen) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("decay", [True, False])
def test_lr_decay_is_linear_to_zero(decay, data):
    sampler = build_sampler("wgan", **SMALL, steps=40, lr_decay=decay, patience=100).fit(data, seed=0)
    for opt in (sampler.opt_g, sampler.opt_c):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.0 if decay else 3e-4)
    if decay:  # half way: half the rate
        factor = sampler.schedules[0].lr_lambdas[0]
        assert factor(20) == pytest.approx(0.5)


def test_state_round_trip_keeps_the_ema_and_options(data):
    sampler = build_sampler("wgan", **SMALL, steps=30, ema=0.95, select="energy").fit(data, seed=4)
    again = round_trip(sampler.state_dict())
    assert again.options == sampler.options and "ema" in again.nets
    assert torch.equal(draw(again), draw(sampler))


def test_a_state_saved_before_the_new_options_loads_and_samples_as_before(data):
    # the old format: options without ema / select / lr_decay, weights of generator and critic only
    old = build_sampler("wgan", **SMALL, steps=30, betas=(0.0, 0.9), **LEGACY).fit(data, seed=4)
    state = old.state_dict()
    state["options"] = {k: v for k, v in state["options"].items() if k not in LEGACY}
    assert not any(k.startswith("ema.") for k in state["weights"])
    loaded = round_trip(state)
    assert loaded.options["ema"] == 0.0 and loaded.options["select"] == "energy"
    assert loaded.options["lr_decay"] is False and "ema" not in loaded.nets
    e = torch.randn(40, 2, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():  # what the old sampler drew: code = g(e), mapped back
        expected = loaded._to_codes(loaded.nets["generator"](e))
    assert torch.equal(draw(loaded), expected) and torch.equal(draw(loaded), draw(old))


def test_a_short_fit_moves_the_samples_to_a_gaussian(data):
    # 300 steps (2 s): lr 1e-3 and ema 0.9 instead of the defaults' 3e-4 and 0.999, which need the
    # thousands of steps of a real fit (at 3e-4 the held-out distance is still above its start
    # after 300-400 steps). Seed 0 gives 2.67 -> 0.14 (seeds 1-3: 0.25, 1.06, 0.38).
    untrained = build_sampler("wgan", **SMALL, steps=1, ema=0.0).fit(data, seed=0)
    fitted = build_sampler("wgan", **SMALL, steps=300, ema=0.9, lr=1e-3).fit(data, seed=0, progress=True)
    held = gaussian(2000, seed=1)
    start, end = code_frechet(draw(untrained, 2000), held), code_frechet(draw(fitted, 2000), held)
    assert end < 0.25 * start, (start, end)
    start_e, end_e = (energy_distance(draw(s, 1000), held[:1000]) for s in (untrained, fitted))
    assert end_e < 0.25 * start_e, (start_e, end_e)
