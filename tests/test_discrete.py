"""Discrete latents (Gumbel-softmax VAE, discrete RAE / AE), discrete samplers, the compare tool."""

from __future__ import annotations

import io
import math
import random

import pytest
import torch

from discrete_rae.codecs import GrammarCodec
from discrete_rae.grammar import Grammar
from discrete_rae.latents_discrete import (CategoricalLatent, GumbelLatent, categorical_kl_uniform,
                                           gumbel_softmax_sample, sample_gumbel, temperature_at)
from discrete_rae.catalog import load_all
from discrete_rae.distributions import CategoricalCode, UniformCategorical
from discrete_rae.registry import MODELS, SAMPLERS
from discrete_rae.samplers import build_sampler, sampler_from_state

load_all()

DISCRETE_MODELS = ("gumbel_vae", "discrete_rae", "discrete_ae")
DISCRETE_SAMPLERS = ("categorical", "cat_mixture", "autoregressive")
# a smaller MADE than the default keeps the sampler tests fast
OPTIONS = {"autoregressive": {"hidden": 48, "epochs": 30, "patience": 3, "batch_size": 512}}


# --- Gumbel-softmax numerics ---------------------------------------------------------------------
@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0, 5.0])
def test_no_nan_in_a_million_draws_with_extreme_logits(tau):
    g = torch.Generator().manual_seed(0)
    logits = torch.zeros(100_000, 10)  # 10^6 draws in all
    logits[0::3] = 1e4
    logits[1::3, ::2] = -1e4
    logits[2::3] = torch.randn(logits[2::3].shape, generator=g) * 1e4
    logits.requires_grad_(True)
    y = gumbel_softmax_sample(logits, tau, generator=g)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert torch.allclose(y.sum(-1), torch.ones(len(y)), atol=1e-4)
    (y * torch.randn(y.shape, generator=g)).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_gumbel_noise_is_finite_even_at_the_uniform_extremes(monkeypatch):
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.tensor([0.0, 1.0 - 2 ** -24, 0.5]))
    g = sample_gumbel((3,))
    assert torch.isfinite(g).all()


def test_gumbel_rejects_bad_temperatures():
    for tau in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            gumbel_softmax_sample(torch.zeros(2, 3), tau)


def test_gumbel_samples_follow_the_categorical_at_low_temperature():
    probs = torch.tensor([0.6, 0.3, 0.1])
    y = gumbel_softmax_sample(probs.log().expand(40_000, 3), 0.05, generator=torch.Generator().manual_seed(1))
    freq = torch.nn.functional.one_hot(y.argmax(-1), 3).float().mean(0)
    assert torch.allclose(freq, probs, atol=0.015)  # 4 sigma of a 40k-draw frequency is < 0.01


def test_kl_is_zero_for_uniform_logits_and_positive_otherwise():
    lat = GumbelLatent(8, n_vars=4, n_classes=5)
    with torch.no_grad():
        lat.head.weight.zero_(), lat.head.bias.zero_()
    out = lat.eval()(torch.randn(3, 8))
    assert torch.equal(out.posterior.kl(UniformCategorical(20, 4, 5)), torch.zeros(3))
    log_q = torch.log_softmax(torch.tensor([[[5.0, 0, 0, 0, 0]]]), -1)
    expected = float((log_q.exp() * (log_q + math.log(5))).sum())
    assert categorical_kl_uniform(log_q).item() == pytest.approx(expected) and expected > 0
    extreme = torch.log_softmax(torch.tensor([[[1e4, -1e4, 0.0]]]), -1)
    assert categorical_kl_uniform(extreme).item() == pytest.approx(math.log(3), rel=1e-5)


def test_temperature_schedule():
    assert temperature_at(0, 1.0, 0.5, 1e-3, 100) == 1.0
    assert temperature_at(99, 1.0, 0.5, 1e-3, 100) == 1.0  # updated every 100 steps only
    assert temperature_at(100, 1.0, 0.5, 1e-3, 100) == pytest.approx(math.exp(-0.1))
    assert temperature_at(10**6, 1.0, 0.5, 1e-3, 100) == 0.5
    lat = GumbelLatent(4, 2, 3, tau=2.0, tau_min=0.5, tau_rate=1e-2, tau_every=10)
    assert lat.on_step(25)["tau"] == pytest.approx(2.0 * math.exp(-0.2)) and lat.tau == lat.on_step(25)["tau"]


@pytest.mark.parametrize("make", [lambda: GumbelLatent(6, 3, 4, straight_through=True),
                                  lambda: CategoricalLatent(6, 3, 4, mode="argmax"),
                                  lambda: CategoricalLatent(6, 3, 4, mode="softmax")])
def test_gradients_reach_the_encoder(make):
    torch.manual_seed(0)
    encoder, lat = torch.nn.Linear(5, 6), make().train()
    out = lat(encoder(torch.randn(7, 5)))
    assert out.z.shape == out.code.shape == (7, 12)
    hard = getattr(lat, "hard", False) or getattr(lat, "mode", "") == "argmax"
    if hard:  # straight-through: the forward value is exactly one-hot
        assert set(out.z.detach().unique().tolist()) <= {0.0, 1.0}
    (out.z * torch.randn(7, 12)).sum().backward()
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0


def test_codes_are_one_hot_and_evaluation_is_deterministic():
    torch.manual_seed(0)
    for lat in (GumbelLatent(6, 3, 4), CategoricalLatent(6, 3, 4)):
        h = torch.randn(5, 6)
        a, b = lat.eval()(h), lat.eval()(h)
        assert torch.equal(a.z, b.z) and torch.equal(a.z, a.code)
        assert torch.equal(a.code.view(5, 3, 4).sum(-1), torch.ones(5, 3))


def test_categorical_logit_penalty_is_shift_invariant():
    lat = CategoricalLatent(4, 2, 3)
    prior = UniformCategorical(6, 2, 3)
    q = lat.train()(torch.randn(3, 4)).posterior
    shifted = CategoricalCode(q.log_q + 7.0)
    assert torch.allclose(q.divergence(prior), shifted.divergence(prior), rtol=1e-5)
    assert (q.divergence(prior) > 0).all()


def test_posterior_draws_and_log_ratio():
    lat = GumbelLatent(4, n_vars=2, n_classes=3).eval()
    out = lat(torch.randn(5, 4))
    z, log_q = out.posterior.sample(16, torch.Generator().manual_seed(0))
    assert z.shape == (16, 5, 6) and torch.equal(z.view(16, 5, 2, 3).sum(-1), torch.ones(16, 5, 2))
    lq = (out.stats["log_q"].unsqueeze(0) * z.view(16, 5, 2, 3)).sum((-2, -1))
    assert torch.allclose(log_q, lq, atol=1e-5)
    assert torch.allclose(out.posterior.log_prob(z), lq, atol=1e-5)
    prior = UniformCategorical(6, 2, 3)
    assert torch.allclose(log_q - prior.log_prob(z), lq + 2 * math.log(3), atol=1e-5)


# --- ex-post samplers over codes -------------------------------------------------------------------
def _correlated_codes(m: int = 3000, n: int = 6, k: int = 4, seed: int = 0) -> torch.Tensor:
    """Two clusters of codes (variables agree within a cluster, with 20% noise)."""
    g = torch.Generator().manual_seed(seed)
    cluster = torch.randint(2, (m, 1), generator=g)
    idx = (cluster * 2 + torch.arange(n)) % k
    noise = torch.rand(m, n, generator=g) < 0.2
    idx = torch.where(noise, torch.randint(k, (m, n), generator=g), idx)
    return torch.nn.functional.one_hot(idx, k).float().reshape(m, n * k)


def _freq(codes: torch.Tensor, n: int, k: int) -> torch.Tensor:
    return codes.view(len(codes), n, k).mean(0)


@pytest.mark.parametrize("name", DISCRETE_SAMPLERS)
def test_sampler_reproduces_per_variable_frequencies(name):
    """Sampled per-variable class frequencies match the codes' within 0.02 (20k draws: the
    sampling s.d. is <= 0.0035, so 0.02 leaves room for the model's own fitting error)."""
    n, k = 6, 4
    codes = _correlated_codes(n=n, k=k)
    s = build_sampler(name, n_vars=n, n_classes=k, **OPTIONS.get(name, {})).fit(codes, seed=0)
    draws = s.sample(20_000, generator=torch.Generator().manual_seed(1))
    assert draws.shape == (20_000, n * k) and torch.equal(draws.view(-1, n, k).sum(-1), torch.ones(20_000, n))
    assert (_freq(draws, n, k) - _freq(codes, n, k)).abs().max() < 0.02


def test_mixture_and_autoregressive_capture_dependence():
    """On clustered codes the joint models beat the independent one in held-out log-mass."""
    n, k = 6, 4
    codes, held_out = _correlated_codes(n=n, k=k), _correlated_codes(1000, n, k, seed=5)
    nll = {name: -float(build_sampler(name, n_vars=n, n_classes=k, **OPTIONS.get(name, {})).fit(codes)
                        .log_prob(held_out).mean())
           for name in ("uniform", *DISCRETE_SAMPLERS)}
    assert nll["uniform"] == pytest.approx(n * math.log(k), rel=1e-5)
    assert nll["categorical"] < nll["uniform"]
    assert nll["cat_mixture"] < nll["categorical"] - 0.5 and nll["autoregressive"] < nll["categorical"] - 0.5


def test_mixture_marginals_equal_code_frequencies():
    n, k = 6, 4
    codes = _correlated_codes(n=n, k=k)
    s = build_sampler("cat_mixture", n_vars=n, n_classes=k, k=3, alpha=0.0).fit(codes)
    assert torch.allclose(s.marginals().float(), _freq(codes, n, k), atol=1e-5)


@pytest.mark.parametrize("name", ("uniform", *DISCRETE_SAMPLERS))
def test_discrete_sampler_state_roundtrip_weights_only(name):
    assert SAMPLERS.get(name).discrete
    codes = _correlated_codes(400)
    s = build_sampler(name, n_vars=6, n_classes=4, **OPTIONS.get(name, {})).fit(codes)
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    t = sampler_from_state(torch.load(buf, weights_only=True))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(s.sample(50, g1), t.sample(50, g2))
    assert torch.allclose(s.log_prob(codes[:20]), t.log_prob(codes[:20]))


def test_autoregressive_sampler_is_autoregressive():
    """Changing variable j of the input never changes the logits of variables <= j."""
    from discrete_rae.samplers_discrete import MADE

    torch.manual_seed(0)
    net = MADE(5, 3, (16, 16))
    x = torch.nn.functional.one_hot(torch.randint(3, (1, 5)), 3).float().view(1, 15)
    for j in range(5):
        y = x.clone().view(1, 5, 3)
        y[0, j] = y[0, j].roll(1)
        changed = (net(x) - net(y.view(1, 15))).abs().sum(-1)[0] > 0
        assert not changed[: j + 1].any()


# --- registry-wide: the three models on a sequence domain and on images -------------------------------
def _expression_batch(n: int = 16) -> tuple[GrammarCodec, torch.Tensor]:
    grammar = Grammar.builtin("expressions")
    codec = GrammarCodec(grammar)
    rng, rows = random.Random(0), []
    while len(rows) < n:
        d = grammar.random_derivation(rng, fit=True)
        if d is not None:
            rows.append(d + [grammar.pad_index] * (codec.max_length - len(d)))
    return codec, torch.tensor(rows)


def _image_batch(n: int = 16):
    images = pytest.importorskip("discrete_rae.domains.images", reason="the image family is not installed")
    return images.PixelCodec((1, 8, 8), "digits"), torch.rand(n, 1, 8, 8)


def _small(name: str, domain: str):
    over = {"n_vars": 5, "n_classes": 4}
    over.update({"channels": (8, 16)} if domain == "images" else {"enc_hidden": 32, "dec_hidden": 32,
                                                                    "embed_dim": 8, "conv_channels": (4,),
                                                                    "conv_kernels": (3,)})
    from discrete_rae.config import replace

    return replace(MODELS.get(name).config_for(domain), over)


@pytest.mark.parametrize("domain", ["expressions", "images"])
@pytest.mark.parametrize("name", DISCRETE_MODELS)
def test_model_builds_trains_and_changes_weights(name, domain):
    codec, x = _expression_batch() if domain == "expressions" else _image_batch()
    assert domain in MODELS.get(name).domains
    torch.manual_seed(0)
    model = MODELS.get(name).build(_small(name, domain), codec)
    assert model.latent.discrete and model.latent.code_dim == 20
    model.train()
    model.on_step(0)
    lat, out = model(x)
    assert lat.z.shape == lat.code.shape == (16, 20)
    terms = model.loss(x, step=0)
    assert all(torch.isfinite(v) for v in terms.values())
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = model.configure_optimizer(1e-2)
    opt.zero_grad()
    terms["loss"].backward()
    opt.step()
    changed = {k.split(".")[0] for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert {"encoder", "latent", "decoder"} <= changed
    model.eval()
    codes = model.encode(x)
    assert torch.equal(codes.view(16, 5, 4).sum(-1), torch.ones(16, 5))


def test_models_differ_only_in_latent_and_regulariser():
    for domain in MODELS.get("gumbel_vae").domains:
        cfgs = [vars(MODELS.get(n).config_for(domain)) for n in DISCRETE_MODELS]
        differ = {k for k in cfgs[0] if len({repr(c[k]) for c in cfgs}) > 1}
        assert differ <= {"latent", "beta", "decoder_reg", "reg_weight", "straight_through", "categorical_mode",
                          "kl_anneal_steps"}


def test_gp_regulariser_reaches_the_encoder_through_the_straight_through_code():
    from discrete_rae.config import replace

    codec, x = _expression_batch()
    cfg = replace(_small("discrete_rae", "expressions"), {"decoder_reg": "gp", "reg_weight": 1.0})
    torch.manual_seed(0)
    model = MODELS.get("discrete_rae").build(cfg, codec).train()
    terms = model.loss(x)
    assert terms["reg"] > 0
    lat, out = model(x)
    reg = model.regularizer.penalty(lat.z, model.likelihood.mean(out, x))
    reg.backward()
    assert model.latent.head.weight.grad.abs().sum() > 0


# --- the compare command -----------------------------------------------------------------------------
def test_compare_smoke(tmp_path):
    pytest.importorskip("discrete_rae.domains.images", reason="the image family is not installed")
    from discrete_rae.cli import main

    args = ["compare", "--domain", "digits", "--models", "gumbel_vae,discrete_rae", "--preset", "smoke",
            "--runs-dir", str(tmp_path), "--name", "t", "--device", "cpu", "-q",
            "--set", "model.n_vars=4", "--set", "model.n_classes=3", "--set", "data.n_train=120",
            "--set", "data.n_test=40", "--n-samples", "30", "--iw-k", "3", "--n-eval", "20"]
    assert main(args) == 0
    out = tmp_path / "compare-t"
    report = (out / "report.md").read_text()
    for needle in ("Verdict", "negative ELBO", "importance-weighted bound", "cat_mixture", "autoregressive",
                   "linear probe", "I(X; C)", "Hamming"):
        assert needle in report
    assert (out / "samples.png").is_file() and (out / "embedding.png").is_file() and (out / "paths.png").is_file()
    import json

    data = json.loads((out / "comparison.json").read_text())
    vae, rae = data["sides"]["gumbel_vae"], data["sides"]["discrete_rae"]
    assert vae["neg_iwae"] <= vae["neg_elbo"] + 1e-4  # the k-sample bound is at least as tight
    assert "neg_elbo" not in rae and rae["mi"]["mi"] <= rae["mi"]["mi_upper_log_m"] + 1e-9
    # a second call reuses the finished runs instead of retraining them
    assert main(args) == 0


def test_compare_rejects_bad_pairs(tmp_path, capsys):
    from discrete_rae.cli import main

    assert main(["compare", "--models", "gumbel_vae", "--runs-dir", str(tmp_path)]) == 2
    assert main(["compare", "--runs", f"{tmp_path}/a,{tmp_path}/b"]) == 2
    assert main(["compare", "--domain", "digits", "--dataset", "mnist", "--runs-dir", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err


# --- compare's estimators ------------------------------------------------------------------------------
def _fake_side(n_vars: int, n_classes: int, discrete: bool = True):
    from types import SimpleNamespace

    from discrete_rae.compare import Side

    run = SimpleNamespace(model=SimpleNamespace(n_vars=n_vars, n_classes=n_classes), train=SimpleNamespace(seed=0))
    loaded = SimpleNamespace(model=SimpleNamespace(latent=SimpleNamespace(discrete=discrete)), run=run)
    return Side("fake", loaded, None, torch.device("cpu"))


def test_hamming_paths_change_one_variable_per_step():
    from discrete_rae.compare import hamming_paths

    n, k = 6, 4
    codes = torch.nn.functional.one_hot(torch.randint(k, (10, n), generator=torch.Generator().manual_seed(0)), k)
    codes = codes.float().view(10, n * k)
    for path in hamming_paths(_fake_side(n, k), codes, 5):
        idx = path.view(len(path), n, k).argmax(-1)
        assert ((idx[1:] != idx[:-1]).sum(-1) == 1).all()
        assert any(torch.equal(path[0], c) for c in codes) and any(torch.equal(path[-1], c) for c in codes)
        assert len(path) - 1 == int((idx[0] != idx[-1]).sum())


def test_categorical_mi_estimator_limits():
    """Uniform encoder: I = 0. Near-deterministic encoder with distinct codes: I = log M."""
    from discrete_rae.compare.stats import _mc_mi_categorical

    m, n, k = 40, 3, 5
    uniform = torch.full((m, n, k), -math.log(k))
    assert abs(_mc_mi_categorical(uniform, 4, 0)) < 1e-5
    idx = torch.stack([torch.arange(m) % k, (torch.arange(m) // k) % k, torch.arange(m) // (k * k)], 1)
    sharp = torch.log_softmax(torch.nn.functional.one_hot(idx, k).float() * 50.0, -1)
    assert _mc_mi_categorical(sharp, 4, 0) == pytest.approx(math.log(m), abs=1e-3)


def test_discrete_code_stats():
    from discrete_rae.compare import discrete_code_stats

    idx = torch.tensor([[0, 1, 2], [0, 1, 3], [0, 2, 0], [0, 2, 1]])
    stats = discrete_code_stats(idx, 4)
    assert stats["active_vars"] == 2  # variable 0 is constant
    assert stats["entropy_min"] == 0.0 and stats["entropy_max"] == pytest.approx(math.log(4))
    assert stats["unused_classes"] == pytest.approx((3 + 2 + 0) / 12)
    assert stats["distinct_codes"] == 1.0
