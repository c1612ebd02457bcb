"""Image family: conv networks, the six models, pixel likelihood, metrics, CLI and table command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import smoke_run

from discrete_rae.cli import main
from discrete_rae.config import replace
from discrete_rae.domains.images import ImageDataError, PixelCodec, load_images
from discrete_rae.metrics.images import frechet, precision_recall
from discrete_rae.models.build import build_model as build_image_model
from discrete_rae.models.images import IMAGE_MODELS, ImageModelConfig
from discrete_rae.nn.images import ImageGeometry
from discrete_rae.pipeline import load_run
from discrete_rae.registry import MODELS

TINY = {"channels": (4, 8, 8, 8), "latent_dim": 3}
SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def tiny_model(name: str, shape: tuple[int, int, int], **overrides) -> torch.nn.Module:
    cfg = replace(MODELS.get(name).config_for("images"), {**TINY, **overrides})
    return build_image_model(cfg, PixelCodec(shape))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """One data dir for the module, so the feature classifier is trained and cached once."""
    return tmp_path_factory.mktemp("image-data")


@pytest.mark.parametrize("shape", SHAPES + [(1, 7, 9)])
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_models_build_forward_and_finite_loss(name, shape):
    torch.manual_seed(0)
    model = tiny_model(name, shape).train()
    x = torch.rand(4, *shape)
    lat, out = model(x)
    assert lat.z.shape == (4, 3) and out.shape == x.shape
    terms = model.loss(x)
    assert all(torch.isfinite(v) for v in terms.values())
    assert model.generate(torch.randn(2, 3)).shape == (2, *shape)
    if name == "rae_gp":
        assert terms["reg"] > 0  # the gradient penalty is computed in training
    if name == "rae_sn":
        assert any(hasattr(m, "parametrizations") for m in model.decoder.modules())


def test_stage_plan_follows_the_image_size():
    assert ImageGeometry((1, 8, 8), (128, 256, 512, 1024)).heights == [8, 4, 2]
    assert ImageGeometry((1, 28, 28), (128, 256, 512, 1024)).heights == [28, 14, 7, 4, 2]
    assert ImageGeometry((3, 64, 64), (128, 256, 512, 1024)).heights == [64, 32, 16, 8, 4]
    with pytest.raises(ValueError):
        ImageGeometry((1, 2, 2), (8,))


def test_vae_and_rae_differ_only_in_latent_and_regulariser_fields():
    vae, rae = (MODELS.get(n).config_for("images") for n in ("vae", "rae_l2"))
    differing = {k for k in vars(vae) if getattr(vae, k) != getattr(rae, k)}
    # the image VAE does not anneal its KL, so kl_anneal_steps is equal here (0)
    assert differing == {"latent", "beta", "decoder_reg", "reg_weight"}
    assert MODELS.get("vae").sampler == "prior" and MODELS.get("rae_l2").sampler == "gmm"


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_a_train_step_changes_encoder_and_decoder(name):
    torch.manual_seed(0)
    model = tiny_model(name, (1, 8, 8)).train()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = model.configure_optimizer(1e-2)
    model.loss(torch.rand(8, 1, 8, 8))["loss"].backward()
    opt.step()
    changed = {k.split(".")[0] for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert {"encoder", "latent", "decoder"} <= changed


def test_l2_decays_only_decoder_kernels():
    groups = tiny_model("rae_l2", (1, 8, 8)).configure_optimizer(1e-3).param_groups
    decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    assert decayed and all(p.ndim > 1 for p in decayed)


def test_state_dict_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = tiny_model("rae_sn", (1, 28, 28)).train()
    model.loss(torch.rand(8, 1, 28, 28))  # moves BatchNorm statistics and SN vectors off their init
    torch.save(model.state_dict(), tmp_path / "w.pt")
    fresh = tiny_model("rae_sn", (1, 28, 28))
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    x = torch.rand(5, 1, 28, 28)
    model.eval(), fresh.eval()
    assert torch.equal(model.encode(x), fresh.encode(x))
    assert torch.equal(model.generate(model.encode(x)), fresh.generate(fresh.encode(x)))


def test_pixel_likelihood_is_the_scaled_summed_squared_error():
    model = tiny_model("rae", (1, 8, 8), pixel_sigma=0.5)
    logits, x = torch.randn(3, 1, 8, 8), torch.rand(3, 1, 8, 8)
    expected = ((x - torch.sigmoid(logits)) ** 2).sum((1, 2, 3)) / (2 * 0.25)
    assert torch.allclose(model.likelihood.nll(logits, x), expected)
    uint8 = (x * 255).round().to(torch.uint8)  # uint8 storage is read as grey levels / 255
    assert torch.allclose(model.likelihood.nll(logits, uint8), model.likelihood.nll(logits, uint8.float() / 255))


def test_overfits_a_handful_of_digits(data_dir):
    torch.manual_seed(0)
    x = load_images("digits", data_dir).train_x[:16]
    cfg = ImageModelConfig(latent="deterministic", beta=0.0, decoder_reg="none", channels=(16, 32), latent_dim=8)
    model = build_image_model(cfg, PixelCodec((1, 8, 8))).train()
    opt = model.configure_optimizer(3e-3)
    for _ in range(250):
        opt.zero_grad()
        model.loss(x)["loss"].backward()
        opt.step()
    model.eval()
    mse = float((model.generate(model.encode(x)) - x).pow(2).mean())
    baseline = float((x - x.mean(0)).pow(2).mean())  # predicting the mean digit
    assert mse < 0.01 and mse < baseline / 10, (mse, baseline)


def test_frechet_and_precision_recall_behave():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 4))
    b = rng.normal(size=(2000, 4))
    assert frechet(a, b) < 0.05
    assert frechet(a, b + 3.0) == pytest.approx(36.0, rel=0.05)  # ||mu_a - mu_b||^2 = 4 * 9
    same = precision_recall(torch.tensor(a[:300]), torch.tensor(b[:300]))
    far = precision_recall(torch.tensor(a[:300]), torch.tensor(b[:300] + 50.0))
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    assert far == {"precision": 0.0, "recall": 0.0}
    # A collapsed generator is precise but has no recall.
    collapsed = precision_recall(torch.tensor(a[:300]), torch.zeros(300, 4) + torch.tensor(a[:1]))
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.05


def test_cli_smoke_run_writes_metrics_and_pictures_and_reloads(tmp_path, data_dir):
    argv = ["train", "--domain", "images", "--dataset", "digits", "--model", "rae_l2", "--preset", "smoke",
            "--runs-dir", str(tmp_path), "--run-name", "x", "--data-dir", str(data_dir), "--quiet"]
    assert main(argv) == 0
    run_dir = tmp_path / "x"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("recon_mse", "fid_feat", "fid_feat_prior", "fid_feat_gaussian", "fid_feat_gmm", "fid_feat_interp",
                "precision", "recall", "n_samples", "sampler", "dataset", "model"):
        assert key in metrics, key
    assert metrics["sampler"] == "gmm" and metrics["dataset"] == "digits" and metrics["model"] == "rae_l2"
    assert np.isfinite(metrics["fid_feat_gmm"]) and 0 <= metrics["precision"] <= 1
    for picture in ("samples.png", "reconstructions.png", "interpolations.png"):
        assert (run_dir / picture).stat().st_size > 1000, picture
    # The checkpoint reloads into the same model: same reconstruction error on the same test split.
    from discrete_rae.registry import DOMAINS

    loaded = load_run(run_dir, torch.device("cpu"))
    domain = DOMAINS.get("images")
    test = domain.prepare(loaded.run, codec_state=loaded.checkpoint["codec"]).test
    recon = domain.decode(loaded.model, domain.encode(loaded.model, test, torch.device("cpu")), torch.device("cpu"))
    assert float((recon - test).pow(2).mean()) == pytest.approx(metrics["recon_mse"], rel=1e-5)
    assert set(loaded.samplers) >= {"prior", "gaussian", "gmm"}
    # `sample` writes one image per line as grey levels.
    assert main(["sample", "--run", str(run_dir), "--n", "5", "--sampler", "gaussian", "--quiet"]) == 0
    lines = (run_dir / "samples-gaussian.txt").read_text().splitlines()
    assert len(lines) == 5 and all(len(line.split()) == 64 for line in lines)


def test_labels_are_aligned_with_the_splits(data_dir):
    from discrete_rae.registry import DOMAINS

    run = smoke_run("images", "rae", data={"data_dir": str(data_dir)})
    prepared = DOMAINS.get("images").prepare(run, progress=False)
    labels = prepared.labels
    assert len(labels["class"]) == len(prepared.train) and len(labels["class_test"]) == len(prepared.test)
    assert len(labels["class_val"]) == len(prepared.val)
    # Labels travel with their images: the same image in the full data set has the same label.
    full = load_images("digits", data_dir)
    i = int(torch.nonzero((full.train_x == prepared.test[:1]).flatten(1).all(1))[0])
    assert int(full.train_y[i]) == int(labels["class_test"][0])


def test_mnist_without_torchvision_is_a_clear_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` raise ImportError
    with pytest.raises(ImageDataError, match="needs torchvision"):
        load_images("mnist", tmp_path)
    argv = ["train", "--domain", "images", "--dataset", "mnist", "--preset", "smoke", "--runs-dir", str(tmp_path),
            "--data-dir", str(tmp_path), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: dataset 'mnist' needs torchvision") and "\n" not in err


def test_image_table_trains_then_reuses(tmp_path, data_dir, capsys, monkeypatch):
    argv = ["image-table", "--dataset", "digits", "--preset", "smoke", "--models", "vae,rae_gp",
            "--runs-dir", str(tmp_path), "--data-dir", str(data_dir), "--quiet"]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(argv + ["--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    table = (tmp_path / "image-table-digits" / "table.md").read_text()
    assert "| vae |" in table and "| rae_gp |" in table and "Fréchet GMM" in table
    stamp = (tmp_path / "image-table-digits" / "vae" / "checkpoint.pt").stat().st_mtime_ns
    monkeypatch.setitem(sys.modules, "pytorch_fid", None)
    assert main(argv + ["--inception"]) == 0  # finished runs with the same config are reused, not retrained
    assert (tmp_path / "image-table-digits" / "vae" / "checkpoint.pt").stat().st_mtime_ns == stamp
    out = capsys.readouterr().out
    assert "| vae |" in out and "Inception FID skipped: pytorch_fid" in out and "Inception FID prior" not in out
    # Where pytorch_fid and its cached weights exist, the Inception columns appear (a stand-in net here).
    _fake_pytorch_fid(monkeypatch, tmp_path / "hub")
    assert main(argv + ["--inception"]) == 0
    header = capsys.readouterr().out.splitlines()[2]
    assert "Inception FID prior" in header and "Inception FID GMM" in header


def _fake_pytorch_fid(monkeypatch, hub: Path) -> None:
    """A pytorch_fid.inception stand-in (mean colour as features) and a weights file in a fake hub."""
    import types

    class InceptionV3(torch.nn.Module):
        BLOCK_INDEX_BY_DIM = {2048: 3}

        def __init__(self, blocks):
            super().__init__()

        def forward(self, x):
            return [torch.cat([x.mean((2, 3), keepdim=True), x.std((2, 3), keepdim=True)], 1)]

    module = types.ModuleType("pytorch_fid.inception")
    module.InceptionV3, module.FID_WEIGHTS_URL = InceptionV3, "https://example.invalid/pt_inception.pth"
    monkeypatch.setitem(sys.modules, "pytorch_fid", types.ModuleType("pytorch_fid"))
    monkeypatch.setitem(sys.modules, "pytorch_fid.inception", module)
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / "pt_inception.pth").write_bytes(b"stand-in")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
