"""Offline image-generation metrics in the feature space of a small, cached classifier.

FID (Heusel et al. 2017) needs Inception-v3 weights, which an offline machine does not have.
The toolkit therefore trains, once per data set, a small conv classifier on the data set's
own labels, caches it on disk, and measures everything in its penultimate (pre-ReLU) feature
space of ``feat_dim`` dimensions:

- ``frechet``: the Fréchet distance between Gaussians fitted to real and generated features,
  ||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^{1/2}).
- ``precision_recall``: the k-NN manifold estimate of Kynkäänniemi et al. 2019 (k = 3). Each
  real feature r gets the radius rho_k(r) = distance to its k-th nearest other real feature;
  precision = share of generated features inside at least one real ball; recall = the same
  with the roles swapped (balls around generated features, real features tested). Both sets
  are subsampled to the same size first, as in the paper.

These numbers rank models on the same data set and feature net; they are NOT comparable to
Inception FIDs in papers (different features, dimension and sample sizes). An Inception FID is
available through :class:`InceptionFeatures` only where ``pytorch_fid`` imports and its weights are
already in the torch hub cache; otherwise it reports why it was skipped.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import CheckpointError, load_checkpoint, save_atomic
from ..nn.images import ConvImageEncoder, as_float_images
from .frechet import frechet_distance, gaussian_stats

log = logging.getLogger(__name__)

FEATURE_NET_VERSION = 1
PR_K = 3


# --- Fréchet distance ------------------------------------------------------------------------
def frechet(real: Tensor | np.ndarray, fake: Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two feature sets [N, F] and [M, F] (metrics/frechet.py)."""
    return frechet_distance(*gaussian_stats(np.asarray(real, dtype=np.float64)),
                            *gaussian_stats(np.asarray(fake, dtype=np.float64)))


# --- precision / recall ------------------------------------------------------------------------
def _kth_neighbour_radius(x: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """[N] distance of each row of x [N, F] to its k-th nearest *other* row."""
    radii = []
    for block in x.split(chunk):
        d = torch.cdist(block, x)
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, -1])  # index 0 is the point itself
    return torch.cat(radii)


def _coverage(centres: Tensor, radii: Tensor, queries: Tensor, chunk: int = 2048) -> float:
    """Share of queries [M, F] inside at least one ball (centres [N, F], radii [N])."""
    inside = [(torch.cdist(block, centres) <= radii[None, :]).any(1) for block in queries.split(chunk)]
    return float(torch.cat(inside).float().mean())


def precision_recall(real: Tensor, fake: Tensor, k: int = PR_K, seed: int = 0) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of features [N, F] / [M, F]."""
    real, fake = torch.as_tensor(real).double(), torch.as_tensor(fake).double()
    n = min(len(real), len(fake))
    if n <= k:
        return {"precision": math.nan, "recall": math.nan}
    g = torch.Generator().manual_seed(seed)
    real = real[torch.randperm(len(real), generator=g)[:n]]
    fake = fake[torch.randperm(len(fake), generator=g)[:n]]
    precision = _coverage(real, _kth_neighbour_radius(real, k), fake)
    recall = _coverage(fake, _kth_neighbour_radius(fake, k), real)
    return {"precision": precision, "recall": recall}


# --- the feature classifier ------------------------------------------------------------------
class FeatureNet(nn.Module):
    """x [B, C, H, W] -> conv stages -> Linear -> features [B, feat_dim] -> ReLU -> Linear -> logits.

    ``features`` is the pre-ReLU layer: ReLU outputs have many exact zeros, which makes the
    feature covariance nearly singular.
    """

    def __init__(self, shape: Sequence[int], n_out: int, channels: Sequence[int] = (32, 64, 128),
                 feat_dim: int = 64) -> None:
        super().__init__()
        self.body = ConvImageEncoder(shape, channels)
        self.feat = nn.Linear(self.body.out_dim, feat_dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.2), nn.Linear(feat_dim, n_out))

    def features(self, x: Tensor) -> Tensor:
        return self.feat(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@dataclass
class FeatureExtractor:
    """A trained :class:`FeatureNet` and how well it classifies held-out images."""

    net: FeatureNet
    accuracy: float
    dataset: str

    @torch.no_grad()
    def __call__(self, images: Tensor, batch: int = 1000) -> Tensor:
        """Features [N, feat_dim] (float64, CPU) of images [N, C, H, W]."""
        self.net.eval()
        dev = next(self.net.parameters()).device
        return torch.cat([self.net.features(as_float_images(b.to(dev))).double().cpu() for b in images.split(batch)])


def _classification_loss(logits: Tensor, y: Tensor) -> Tensor:
    # 1-D integer labels: classes; 2-D labels: independent binary attributes (e.g. CelebA).
    if y.ndim == 1:
        return F.cross_entropy(logits, y.long())
    return F.binary_cross_entropy_with_logits(logits, y.float())


@torch.no_grad()
def _accuracy(net: FeatureNet, x: Tensor, y: Tensor) -> float:
    net.eval()
    logits = torch.cat([net(as_float_images(b)) for b in x.split(1000)])
    hits = logits.argmax(1) == y.long() if y.ndim == 1 else (logits > 0) == y.bool()
    return float(hits.float().mean())


def train_feature_net(x: Tensor, y: Tensor, steps: int = 600, batch: int = 128, lr: float = 2e-3,
                      seed: int = 0, held_out: float = 0.1) -> tuple[FeatureNet, float]:
    """Train a FeatureNet on images x [N, C, H, W] and labels y ([N] classes or [N, A] binary).

    A seeded ``held_out`` share is kept out of training to report the accuracy.
    Returns (net in eval mode, held-out accuracy).
    """
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    n_test = max(1, int(len(x) * held_out))
    test_idx, train_idx = order[:n_test], order[n_test:]
    n_out = int(y.max()) + 1 if y.ndim == 1 else y.shape[1]
    torch.manual_seed(seed)
    net = FeatureNet(tuple(x.shape[1:]), n_out)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    net.train()
    for _ in range(steps):
        idx = train_idx[torch.randint(len(train_idx), (batch,), generator=g)]
        loss = _classification_loss(net(as_float_images(x[idx])), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval(), _accuracy(net, x[test_idx], y[test_idx])


def load_or_train_feature_net(path: Path, dataset: str, load_data: Callable[[], tuple[Tensor, Tensor]],
                              steps: int = 600) -> FeatureExtractor:
    """The cached feature net at ``path``, or train one on ``load_data()`` and cache it there."""
    path = Path(path)
    if path.is_file():
        try:
            return _load_feature_net(path, dataset)
        except (CheckpointError, KeyError, RuntimeError) as err:
            log.warning("ignoring unusable feature-net cache %s (%s); retraining", path, err)
    t0 = time.monotonic()
    x, y = load_data()
    net, acc = train_feature_net(x, y, steps=steps)
    save_atomic({"version": FEATURE_NET_VERSION, "dataset": dataset, "shape": list(x.shape[1:]),
                 "n_out": int(y.max()) + 1 if y.ndim == 1 else int(y.shape[1]), "accuracy": acc,
                 "state": net.state_dict()}, path)
    log.info("trained the %s feature net on %d images in %.1fs: held-out accuracy %.3f (cached at %s)",
             dataset, len(x), time.monotonic() - t0, acc, path)
    return FeatureExtractor(net, acc, dataset)


def _load_feature_net(path: Path, dataset: str) -> FeatureExtractor:
    state = load_checkpoint(path)
    if state.get("version") != FEATURE_NET_VERSION or state.get("dataset") != dataset:
        raise CheckpointError(f"made for {state.get('dataset')!r}, version {state.get('version')}")
    net = FeatureNet(tuple(state["shape"]), state["n_out"])
    net.load_state_dict(state["state"])
    return FeatureExtractor(net.eval(), float(state["accuracy"]), dataset)


# --- optional Inception FID ------------------------------------------------------------------
def inception_status() -> tuple[bool, str]:
    """(available, reason or weights path). Never downloads anything."""
    try:
        from pytorch_fid.inception import FID_WEIGHTS_URL  # imports torchvision
    except Exception as err:  # noqa: BLE001 - any import failure means "not available here"
        return False, f"pytorch_fid/torchvision do not import ({type(err).__name__}: {str(err)[:80]})"
    weights = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_URL.rsplit("/", 1)[-1]
    if not weights.is_file():
        return False, f"FID Inception weights not found at {weights} (nothing is downloaded)"
    return True, str(weights)


class InceptionFeatures:
    """2048-d pool features of the FID Inception net (pytorch_fid); build only where
    :func:`inception_status` says it is available. Grey images are repeated to RGB."""

    def __init__(self, device: torch.device) -> None:
        from pytorch_fid.inception import InceptionV3

        self.device = device
        self.net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()

    @torch.no_grad()
    def __call__(self, images: Tensor, batch: int = 100) -> np.ndarray:
        """images [N, C, H, W] in [0, 1] (or uint8) -> features [N, 2048] float64."""
        out = []
        for b in images.split(batch):
            b = as_float_images(b).to(self.device)
            b = b.expand(-1, 3, -1, -1) if b.shape[1] == 1 else b
            out.append(self.net(b)[0].flatten(1).double().cpu())
        return torch.cat(out).numpy()
