"""The image table behind ``python -m discrete_rae image-table``: the RAE paper's image comparison on one data set.

Trains the image models (default: vae, rae, rae_l2, rae_gp, rae_sn, ae) with the same preset,
seed and budget into ``RUNS/image-table-DATASET/MODEL`` (a finished run whose resolved config
is unchanged is reused; an interrupted one is resumed; a trained row with other settings is an
error unless ``--retrain`` replaces it), then writes
``RUNS/image-table-DATASET/table.md`` and prints it.

Columns (all on the test split, see domains/images.py): reconstruction MSE per pixel;
feature-space Fréchet distance of samples drawn with N(0, I), a fitted Gaussian and the
10-component GMM; the Fréchet distance of decoded midpoints between random pairs of test codes
("interpolation"); precision / recall (Kynkäänniemi et al., k = 3) with N(0, I) and with GMM
samples. Lower Fréchet is better; the "data floor" in the notes is training vs test images.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import to_toml
from .errors import UsageError
from .runconfig import resolve_run_config

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("vae", "rae", "rae_l2", "rae_gp", "rae_sn", "ae")


@dataclass(frozen=True)
class TableSpec:
    """What every row shares: data set, preset, training seed, data directory."""

    dataset: str = "digits"
    preset: str = "quick"
    seed: int = 0
    data_dir: str = ""
    max_steps: int = 0  # 0 = the preset's step budget


def table_run_config(model: str, spec: TableSpec) -> Any:
    """The resolved RunConfig of one row: model defaults < preset < dataset/seed/data directory/steps."""
    data = {"dataset": spec.dataset, **({"data_dir": spec.data_dir} if spec.data_dir else {})}
    train = {"seed": spec.seed, **({"max_steps": spec.max_steps} if spec.max_steps else {})}
    return resolve_run_config("images", model, spec.preset, None, {"data": data, "train": train})


def train_or_reuse(model: str, spec: TableSpec, table_dir: Path, device: Any, amp: Any, retrain: bool = False,
                   progress: bool = True) -> dict[str, Any]:
    """Train one row, or reuse (finished) / resume (interrupted) a run with the same resolved config."""
    from .pipeline import train_run

    run = table_run_config(model, spec)
    run_dir = table_dir / model
    saved = run_dir / "config.toml"
    same_config = not retrain and saved.is_file() and saved.read_text() == to_toml(run.sections())
    if same_config and (run_dir / "metrics.json").is_file():
        log.info("%s: reusing the finished run %s", model, run_dir)
        return json.loads((run_dir / "metrics.json").read_text())
    resume = same_config and (run_dir / "checkpoint.pt").is_file()
    if not retrain and saved.is_file() and not same_config and (run_dir / "checkpoint.pt").is_file():
        # a trained row with other settings is the user's result: never delete it unasked
        raise UsageError(f"image-table row {model!r} ({run_dir}) was trained with other settings "
                             f"({config_differences(saved, run.sections())}); use --retrain to replace it, "
                             "or another --runs-dir")
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)
    log.info("%s: %s %s", model, "resuming" if resume else "training", run_dir)
    return train_run(run, run_dir, device, amp, resume=resume, progress=progress)


def config_differences(saved: Path, sections: dict[str, Any], limit: int = 6) -> str:
    """``section.key: saved -> now`` for the settings where a saved config.toml differs from ``sections``."""
    import tomllib

    try:
        old = tomllib.loads(saved.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as err:
        return f"its {saved.name} is unreadable: {err}"
    now = tomllib.loads(to_toml(sections))
    diffs = [f"{name}.{key}: {old.get(name, {}).get(key, '<unset>')!r} -> {value!r}"
             for name, values in now.items() for key, value in values.items()
             if old.get(name, {}).get(key, "<unset>") != value]
    diffs += [f"{name}.{key}: {value!r} -> <unset>" for name, values in old.items() for key, value in values.items()
              if key not in now.get(name, {})]
    more = f", and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more if diffs else "the same values, written differently"


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _epochs(m: dict[str, Any]) -> str:
    return f"{m.get('epochs', '-')}{'*' if m.get('stopped') == 'time budget' else ''}"


def _pr(m: dict[str, Any], sampler: str) -> str:
    return f"{_fmt(m.get(f'precision_{sampler}'))} / {_fmt(m.get(f'recall_{sampler}'))}"


def format_table(rows: list[dict[str, Any]], spec: TableSpec, seconds: float,
                 inception: dict[str, Any] | None = None) -> str:
    """The markdown table (one row per model) with its notes."""
    head = ["model", "recon MSE", "Fréchet N(0,I)", "Fréchet Gaussian", "Fréchet GMM", "Fréchet interp.",
            "P / R N(0,I)", "P / R GMM", "epochs", "train s"]
    with_fid = bool(inception) and "_skipped" not in inception
    if with_fid:
        head[6:6] = ["Inception FID N(0,I)", "Inception FID GMM"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in rows:
        cells = [m["model"], _fmt(m.get("recon_mse"), 4), _fmt(m.get("fid_feat_prior")),
                 _fmt(m.get("fid_feat_gaussian")), _fmt(m.get("fid_feat_gmm")), _fmt(m.get("fid_feat_interp")),
                 _pr(m, "prior"), _pr(m, "gmm"), _epochs(m), _fmt(m.get("train_seconds"), 0)]
        if with_fid:
            fids = inception.get(m["model"], {})
            cells[6:6] = [_fmt(fids.get("prior")), _fmt(fids.get("gmm"))]
        lines.append("| " + " | ".join(cells) + " |")
    first = rows[0] if rows else {}
    notes = [
        f"Data set {spec.dataset}, preset {spec.preset}, seed {spec.seed}, the same epochs / early stopping / "
        f"time budget for every model; {first.get('n_samples', '-')} samples per sampler against "
        f"{first.get('n_reference', '-')} test images.",
        "Fréchet = Fréchet distance in the feature space of the toolkit's own classifier for this data set "
        f"(held-out accuracy {_fmt(first.get('feature_net_accuracy'), 3)}); NOT comparable to Inception FID. "
        f"Data floor (training vs test images, same sizes): {_fmt(first.get('fid_feat_train'))}.",
        "Fréchet interp. = the same distance for decoded midpoints (z_i + z_j)/2 of random pairs of test codes. "
        "P / R = precision / recall, k-NN manifolds (Kynkäänniemi et al. 2019, k=3). Lower Fréchet is better.",
        f"Wall time of this command: {seconds:.0f} s (reused runs cost nothing).",
    ]
    if any(m.get("stopped") == "time budget" for m in rows):
        notes.append("* = stopped by the time budget (max_minutes) before its epochs: not the same training "
                     "budget as the other rows (a busy CPU; try --threads 1 or a GPU).")
    if inception and inception.get("_skipped"):
        notes.append(f"Inception FID skipped: {inception['_skipped']}")
    title = f"# Image models on {spec.dataset} ({spec.preset})"
    return "\n".join([title, "", *lines, "", *[f"- {n}" for n in notes]]) + "\n"


def inception_scores(models: list[str], table_dir: Path, device: Any, n: int) -> dict[str, Any]:
    """{model: {"prior": fid, "gmm": fid}}, or {"_skipped": reason} where Inception is unavailable."""
    import torch

    from .metrics.images import InceptionFeatures, frechet, inception_status
    from .pipeline import load_run
    from .registry import DOMAINS

    ok, why = inception_status()
    if not ok:
        log.warning("Inception FID skipped: %s", why)
        return {"_skipped": why}
    domain, features = DOMAINS.get("images"), InceptionFeatures(device)
    real = None  # every row shares data set, seed and so the test split
    out: dict[str, Any] = {}
    for model in models:
        loaded = load_run(table_dir / model, device)
        if real is None:
            real = features(domain.prepare(loaded.run, codec_state=loaded.checkpoint["codec"]).test)
        gen = torch.Generator().manual_seed(loaded.run.train.seed)
        out[model] = {name: frechet(real, features(domain.decode(
            loaded.model, loaded.samplers[name].sample(n, generator=gen), device))) for name in ("prior", "gmm")}
    return out
