"""Labels for the AAE's label variants (objectives_labels.py): batches, held-out figures, pictures.

Batches. The trainer stays model-agnostic: it batches one tensor or a tuple of aligned tensors
row by row (trainer.take) and hands the batch to the model's phases. :func:`training_data` builds
that data from ``Prepared.labels["class"]`` (and ``"class_val"``) for the model's objective:

- ``aae_supervised``: (x, label) for training and validation;
- ``aae_semi``: (x, x_l, y_l) for training, where the labelled subset (``labels_per_class``
  examples of every class, a seeded stratified draw from the training split:
  :func:`labelled_subset`) is repeated in a seeded order to one labelled pair per training
  row; validation is x alone (its loss is the reconstruction; no label beyond the subset is
  ever read in training);
- every other model (``aae_cluster`` included): the plain tensors, as before.

A model that reads labels on data without class labels is one ConfigError.

Held-out figures (:func:`label_metrics`, in ``metrics.json``), on the test split:

- ``label_swap_accuracy`` (supervised): the styles of the first ``n_styles`` (100) test images,
  each decoded with every label; the share of decodes the data set's feature classifier (the
  offline feature net of metrics/images.py, trained on the training images) assigns to the
  label the decoder was given;
- ``head_accuracy`` (semi-supervised; also for supervised: its detached label head): argmax of
  the head vs the test label;
- ``cluster_error`` (clustering): each cluster is named by the majority training label of its
  members (clusters with no training member: the overall majority label); the share of test
  images whose cluster's name is not their label. ``clusters_used``: clusters with a member.

Picture ``label_grid.png``: one row per test image's style (the first 10), one column per label / category
(:func:`label_grid`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigError, DataError
from .objectives_labels import label_objective

log = logging.getLogger(__name__)

LABEL_KEY = "class"


def labelled_subset(labels: Tensor, per_class: int, seed: int) -> Tensor:
    """Indices [C * per_class] of ``per_class`` examples of every class of ``labels`` [N].

    Seeded and stratified: within each class (ascending), a permutation of its members drawn
    from numpy's generator seeded with ``seed``; the result is sorted. A class with fewer
    members than ``per_class`` is a DataError.
    """
    rng = np.random.default_rng(seed)
    y = labels.cpu().numpy()
    picked = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) < per_class:
            raise DataError(f"class {c} has {len(members)} training examples, fewer than --labels-per-class "
                            f"{per_class}")
        picked.append(rng.permutation(members)[:per_class])
    return torch.from_numpy(np.sort(np.concatenate(picked)))


def paired_labelled(n: int, subset: Tensor, seed: int) -> Tensor:
    """Indices [n] into the training split: the subset repeated in a seeded order, one per row."""
    g = torch.Generator().manual_seed(seed + 104_729)
    reps = -(-n // len(subset))
    order = torch.cat([subset[torch.randperm(len(subset), generator=g)] for _ in range(reps)])
    return order[:n]


def _class_labels(prepared: Any, key: str, model_name: str) -> Tensor:
    labels = prepared.labels.get(key)
    if labels is None or labels.ndim != 1:
        dataset = prepared.info.get("dataset", "this data set")
        raise ConfigError(f"model {model_name} reads class labels, which {dataset} does not have")
    return labels.long()


def training_data(model: Any, prepared: Any, seed: int, labels_per_class: int = 10,
                  model_name: str = "") -> tuple[Any, Any]:
    """(train, val) for ``trainer.fit``: tensors, or tuples for models whose loss reads labels."""
    objective = label_objective(model)
    use = getattr(objective, "label_use", "")
    if not use:
        return prepared.train, prepared.val
    name = model_name or type(objective).__name__
    y = _class_labels(prepared, LABEL_KEY, name)
    _check_range(y, objective.n_labels, name)
    if use == "labels":
        y_val = _class_labels(prepared, f"{LABEL_KEY}_val", name)
        return (prepared.train, y), (prepared.val, y_val)
    subset = labelled_subset(y, labels_per_class, seed)
    pairs = paired_labelled(len(y), subset, seed)
    log.info("labelled subset: %d examples (%d per class) of %d", len(subset), labels_per_class, len(y))
    return (prepared.train, prepared.train[pairs], y[pairs]), prepared.val


def _check_range(y: Tensor, k: int, name: str) -> None:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
        raise ConfigError(f"model {name}: class labels run from {int(y.min())} to {int(y.max())}, but "
                          f"--label-classes is {k}")


# --- figures ---------------------------------------------------------------------------------
@torch.no_grad()
def _encode_parts(model: Any, x: Tensor, device: torch.device, batch: int = 500) -> tuple[Tensor, Tensor]:
    """(logits [N, K], codes [N, K + D]) of images x, in eval mode, on the CPU."""
    model.eval()
    logits, codes = [], []
    for b in x.split(batch):
        lat = model.latent(model.encoder(b.to(device)))
        logits.append(lat.stats["logits"].float().cpu())
        codes.append(lat.code.float().cpu())
    return torch.cat(logits), torch.cat(codes)


@torch.no_grad()
def decode_with_labels(model: Any, styles: Tensor, device: torch.device, labels: Tensor | None = None) -> Tensor:
    """Decode every style [R, D] with every label: images [R, K, C, H, W] (``labels``: a subset of 0..K-1)."""
    k = model.latent.n_labels
    labels = torch.arange(k) if labels is None else labels.long()
    y = F.one_hot(labels, k).float()  # [L, K]
    codes = torch.cat([y[None].expand(len(styles), -1, -1), styles[:, None, :].expand(-1, len(labels), -1)], -1)
    model.eval()
    images = model.generate(codes.flatten(0, 1).to(device)).float().cpu()
    return images.reshape(len(styles), len(labels), *images.shape[1:])


def label_grid(model: Any, styles: Tensor, device: torch.device) -> np.ndarray:
    """The grid array: row r = style r decoded with labels 0..K-1 (one column per label)."""
    from .domains.images import image_grid

    images = decode_with_labels(model, styles, device)
    return image_grid(images.flatten(0, 1), ncol=images.shape[1])


def cluster_error(train_clusters: Tensor, train_labels: Tensor, test_clusters: Tensor,
                  test_labels: Tensor, k: int) -> tuple[float, int]:
    """(test error, clusters used) when each cluster takes the majority training label of its members."""
    overall = int(torch.bincount(train_labels).argmax())
    names = torch.full((k,), overall, dtype=torch.long)
    for c in range(k):
        members = train_labels[train_clusters == c]
        if len(members):
            names[c] = int(torch.bincount(members).argmax())
    error = float((names[test_clusters] != test_labels).float().mean())
    return error, int(len(torch.unique(train_clusters)))


@torch.no_grad()
def label_swap_accuracy(model: Any, styles: Tensor, classify: Any, device: torch.device) -> float:
    """Share of decodes of styles [R, D] x every label that ``classify`` (images -> logits) calls that label."""
    images = decode_with_labels(model, styles, device)  # [R, K, ...]
    r, k = images.shape[:2]
    predicted = classify(images.flatten(0, 1)).argmax(-1).reshape(r, k)
    return float((predicted == torch.arange(k)[None]).float().mean())


def feature_classifier(prepared: Any) -> Any:
    """The data set's cached feature net as images -> logits (CPU), plus its held-out accuracy."""
    from .domains.images import data_dir_of
    from .nn.images import as_float_images
    from .registry import DOMAINS

    dataset = prepared.codec.dataset or prepared.info.get("dataset", "digits")
    extractor = DOMAINS.get("images").feature_extractor(dataset, data_dir_of(prepared.info.get("data_dir", "")))
    net = extractor.net.eval()
    dev = next(net.parameters()).device

    @torch.no_grad()
    def classify(images: Tensor) -> Tensor:
        return torch.cat([net(as_float_images(b.to(dev))).float().cpu() for b in images.split(1000)])

    return classify, extractor.accuracy


def label_metrics(model: Any, prepared: Any, device: torch.device, run_dir: Path | None = None,
                  n_styles: int = 100, grid_rows: int = 10) -> dict[str, Any]:
    """The figures of the module docstring ({} for other models); draws ``label_grid.png``."""
    objective = label_objective(model)
    if objective is None or LABEL_KEY not in prepared.labels or prepared.labels[LABEL_KEY].ndim != 1:
        return {}
    k = objective.n_labels
    logits, codes = _encode_parts(model, prepared.test, device)
    y_test = prepared.labels[f"{LABEL_KEY}_test"].long()
    out: dict[str, Any] = {}
    if objective.label_use:
        out["head_accuracy"] = float((logits.argmax(-1) == y_test).float().mean())
    styles = codes[:n_styles, k:]
    if objective.label_use == "labels":
        classify, acc = feature_classifier(prepared)
        out["label_swap_accuracy"] = label_swap_accuracy(model, styles, classify, device)
        out["label_swap_classifier_accuracy"] = acc
    if not objective.label_use:
        train_logits, _ = _encode_parts(model, prepared.train, device)
        error, used = cluster_error(train_logits.argmax(-1), prepared.labels[LABEL_KEY].long(), logits.argmax(-1),
                                    y_test, k)
        out.update({"cluster_error": error, "clusters_used": used})
    if run_dir is not None:
        _draw(model, styles[:grid_rows], device, run_dir, objective)
    return out


def _draw(model: Any, styles: Tensor, device: torch.device, run_dir: Path, objective: Any) -> None:
    from .domains.images import save_panels

    what = "label" if objective.label_use else "cluster"
    try:  # a picture must never cost the metrics
        save_panels([(f"one test style per row, decoded with each {what} (columns 0..{objective.n_labels - 1})",
                      label_grid(model, styles, device))], Path(run_dir) / "label_grid.png")
    except Exception as err:  # noqa: BLE001
        log.warning("could not draw the label grid: %s", err)
