"""Per-domain views of a comparison: decoding, sample quality and the pictures."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from .side import Side, probe_labels
from .stats import _batches

log = logging.getLogger(__name__)


class ImageView:
    """Images: decoded pixels, Fréchet distance / precision / recall in the classifier's features."""

    quality_key, better = "fid_feat", "min"

    def __init__(self) -> None:
        self._real: dict[int, Tensor] = {}

    def decode(self, side: Side, z: Tensor) -> Tensor:
        return side.domain.decode(side.model, z, side.device)

    def _extractor(self, side: Side) -> Any:
        from ..domains.images import data_dir_of

        dataset = side.prepared.codec.dataset or side.prepared.info.get("dataset", "digits")
        return side.domain.feature_extractor(dataset, data_dir_of(side.prepared.info.get("data_dir", "")))

    def quality(self, side: Side, outputs: Tensor) -> dict[str, float]:
        from ..metrics.images import frechet, precision_recall

        fe = self._extractor(side)
        key = id(side.prepared.test)
        if key not in self._real:
            self._real[key] = fe(side.prepared.test)
        fake = fe(outputs)
        pr = precision_recall(self._real[key], fake, seed=side.run.train.seed)
        return {"fid_feat": frechet(self._real[key], fake), "precision": pr["precision"], "recall": pr["recall"]}

    def reference(self, side: Side) -> dict[str, float]:
        """The floor: training images against the test images, same sample size."""
        from ..metrics.images import frechet

        n = min(len(side.prepared.train), side.results["n_samples"])
        fe = self._extractor(side)
        return {"fid_feat_train_vs_test": frechet(fe(side.prepared.test), fe(side.prepared.train[:n]))}

    def reconstruction(self, side: Side, x: Tensor) -> dict[str, float]:
        from ..nn.images import as_float_images

        codes = side.domain.encode(side.model, x, side.device)
        recon = self.decode(side, codes)
        return {"recon_mse": float((recon - as_float_images(x)).pow(2).mean())}

    def real(self, side: Side, n: int) -> Tensor:
        return side.prepared.test[:n]

    def draw_samples(self, panels: list[tuple[str, Any]], path: Path) -> None:
        from ..domains.images import image_grid, save_panels

        save_panels([(t, image_grid(o[:64])) for t, o in panels], path)

    def sample_pictures(self, sides: list[Side]) -> list[tuple[str, Callable[[Path], Any]]]:
        """samples.png: real test images next to each model's best sampler; one PNG per model
        with every sampler."""
        panels = [("real (test)", self.real(sides[0], 64))]
        panels += [(f"{s.label} ({s.results['best_sampler']})", s.shown["samples"][s.results["best_sampler"]])
                   for s in sides]
        out: list[tuple[str, Callable[[Path], Any]]] = [("samples.png", lambda p: self.draw_samples(panels, p))]
        for s in sides:
            per = sorted(s.shown["samples"].items())
            out.append((f"samplers-{_slug(s.label)}.png", lambda p, per=per: self.draw_samples(per, p)))
        return out

    def draw_paths(self, sides: list[Side], path: Path) -> None:
        from ..domains.images import image_grid, save_panels

        panels = [(f"{s.label}: {s.shown['path_kind']}", image_grid(s.shown["path_images"], ncol=s.shown["path_cols"]))
                  for s in sides if "path_images" in s.shown]
        save_panels(panels, path)

    def path_outputs(self, side: Side, paths: list[Tensor], cols: int = 10) -> dict[str, Any]:
        """Decode each path and keep ``cols`` evenly spaced points per path for the picture."""
        rows = []
        for z in paths:
            pick = torch.linspace(0, len(z) - 1, cols).round().long()
            rows.append(self.decode(side, z[pick]))
        side.shown.update(path_images=torch.cat(rows), path_cols=cols)
        return {}

    def text_lines(self, outputs: Any, n: int) -> list[str]:
        return []


class SequenceView:
    """Strings: grammar-masked greedy decoding, validity / uniqueness / novelty."""

    quality_key, better = "valid", "max"

    def decode(self, side: Side, z: Tensor) -> list[str | None]:
        return side.domain.decode(side.model, z, side.device)

    def quality(self, side: Side, outputs: list[str | None]) -> dict[str, float]:
        return side.domain.sample_metrics(outputs, side.prepared.train_texts)

    def reference(self, side: Side) -> dict[str, float]:
        return {}

    def reconstruction(self, side: Side, x: Tensor) -> dict[str, float]:
        from ..config import EvalConfig

        n = len(x)
        sub = dataclasses.replace(side.prepared, test=x, test_texts=side.prepared.test_texts[:n])
        rec = side.domain.reconstruction(side.model, sub, EvalConfig(recon_protocol="greedy"), side.device)
        with torch.no_grad():
            side.model.eval()
            acc = [float(side.model.likelihood.token_accuracy(side.model(xb.to(side.device))[1], xb.to(side.device)))
                   * len(xb) for xb in _batches(x, 256)]
        return {"recon_accuracy": rec["recon_accuracy"], "token_accuracy": sum(acc) / n}

    def real(self, side: Side, n: int) -> list[str]:
        return side.prepared.test_texts[:n]

    def valid(self, side: Side, outputs: list[str | None]) -> list[bool]:
        return [s is not None and side.domain.canonical(s) is not None for s in outputs]

    def sample_pictures(self, sides: list[Side]) -> list[tuple[str, Callable[[Path], Any]]]:
        """The domain's own picture (molecule grid, expression plots) of the real test strings
        and of each model's best-sampler samples."""
        out: list[tuple[str, Callable[[Path], Any]]] = [
            ("samples-real.png", lambda p: sides[0].domain.render(self.real(sides[0], 64), p))]
        for s in sides:
            best = s.shown["samples"][s.results["best_sampler"]]
            out.append((f"samples-{_slug(s.label)}.png", lambda p, s=s, best=best: s.domain.render(best, p)))
        return out

    def path_outputs(self, side: Side, paths: list[Tensor], bins: int = 11) -> dict[str, Any]:
        """Validity along the paths, by relative position t in [0, 1] (bins of 0.1)."""
        hits, counts = np.zeros(bins), np.zeros(bins)
        example: list[str] = []
        for z in paths:
            texts = self.decode(side, z)
            ok = self.valid(side, texts)
            pos = np.round(np.linspace(0, 1, len(z)) * (bins - 1)).astype(int)
            np.add.at(hits, pos, ok)
            np.add.at(counts, pos, 1)
            if not example:
                example = ["<unfinished>" if t is None else t for t in texts]
        curve = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan).tolist()  # nan: no path point there
        side.shown.update(path_validity=curve, path_example=example)
        return {"path_validity_mean": float(hits.sum() / max(counts.sum(), 1)), "path_validity_by_t": curve}

    def draw_paths(self, sides: list[Side], path: Path) -> None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.4))
        ax = fig.add_subplot(1, 1, 1)
        for s in sides:
            curve = s.shown.get("path_validity")
            if curve is not None:
                ax.plot(np.linspace(0, 1, len(curve)), curve, marker="o", label=f"{s.label} ({s.shown['path_kind']})")
        ax.set_xlabel("position along the path (0 = code a, 1 = code b)")
        ax.set_ylabel("share of valid decodes")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    def text_lines(self, outputs: Any, n: int) -> list[str]:
        return ["<unfinished>" if s is None else s for s in list(outputs)[:n]]


VIEWS: dict[str, Any] = {"images": ImageView(), "molecules": SequenceView(), "expressions": SequenceView()}


# --- pictures ----------------------------------------------------------------------------------------
def embedding_plot(sides: list[Side], path: Path) -> None:
    """PCA of the test codes of each model, coloured by the probe label where there is one."""
    from matplotlib.figure import Figure
    from sklearn.decomposition import PCA

    fig = Figure(figsize=(5 * len(sides), 4.4))
    for i, side in enumerate(sides):
        ax = fig.add_subplot(1, len(sides), i + 1)
        codes = side.shown["test_codes"].numpy().astype(np.float64)
        with warnings.catch_warnings():  # constant codes: PCA divides by a zero variance
            warnings.simplefilter("ignore", RuntimeWarning)
            xy = PCA(2, random_state=0).fit_transform(codes) if codes.shape[1] >= 2 else np.c_[codes, 0 * codes]
        labels = probe_labels(side, 0, len(codes))
        colour = labels[3] if labels is not None else None
        cmap = "tab10" if labels is not None and labels[1] == "class" else "viridis"
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=colour, cmap=cmap if colour is not None else None, s=8, alpha=0.8)
        if colour is not None:
            fig.colorbar(sc, ax=ax, label=labels[0])
        ax.set_title(f"{side.label}: PCA of test codes", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def draw_pictures(sides: list[Side], out_dir: Path) -> list[str]:
    """Sample grids, embedding and path pictures; returns the names of the PNGs written."""
    view = VIEWS[sides[0].run.domain]
    written: list[str] = []

    def attempt(name: str, fn: Callable[[Path], Any]) -> None:
        try:
            result = fn(out_dir / name)
            if result is not False and (out_dir / name).is_file():
                written.append(name)
        except Exception as err:  # noqa: BLE001 - a picture must never cost the report
            log.warning("could not draw %s: %s", name, err)

    for name, draw in view.sample_pictures(sides):
        attempt(name, draw)
    attempt("embedding.png", lambda p: embedding_plot(sides, p))
    attempt("paths.png", lambda p: view.draw_paths(sides, p))
    return written


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)
