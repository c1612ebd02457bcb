"""The image table behind ``python -m discrete_rae image-table``: the RAE paper's image comparison on one data set.

Trains any zoo rows that run on images (default: the paper's vae, rae, rae_l2, rae_gp, rae_sn,
ae) with the same preset, seed and step budget (the quick preset: a fixed 800 steps, so the
table does not depend on the machine's load; ``max_steps`` overrides it) into
``RUNS/image-table-DATASET/MODEL`` (a finished run whose resolved config is unchanged is reused;
an interrupted one is resumed; a trained row with other settings is an error unless
``--retrain`` replaces it), then writes ``RUNS/image-table-DATASET/table.md`` and prints it.

Columns (all on the test split, see domains/images.py): reconstruction MSE per pixel;
feature-space Fréchet distance of samples drawn from the model's prior (N(0, I), or e.g. the
VampPrior mixture), a fitted Gaussian and the 10-component GMM (plus any ``--samplers``, e.g.
the trained ``two_stage`` / ``flow``: :func:`extra_sampler_scores`); the Fréchet distance of
decoded midpoints between random pairs of test codes ("interpolation"); precision / recall
(Kynkäänniemi et al., k = 3) with prior and with GMM samples; a link to each run's sample
grid. Lower Fréchet is better; the "data floor" in the notes is training vs test images.
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


def _steps(m: dict[str, Any]) -> str:
    return f"{m.get('steps', '-')}{'*' if m.get('stopped') == 'time budget' else ''}"


def _pr(m: dict[str, Any], sampler: str) -> str:
    return f"{_fmt(m.get(f'precision_{sampler}'))} / {_fmt(m.get(f'recall_{sampler}'))}"


def _sampler_cells(m: dict[str, Any], extra: dict[str, Any] | None, names: tuple[str, ...]) -> list[str]:
    """Fréchet of each extra ex-post sampler for one row ("-" where it was not fitted)."""
    scores = (extra or {}).get(m["model"], {})
    return [_fmt(scores.get(name, {}).get("fid_feat")) for name in names]


def format_table(rows: list[dict[str, Any]], spec: TableSpec, seconds: float,
                 inception: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                 extra_names: tuple[str, ...] = ()) -> str:
    """The markdown table (one row per model) with its notes; ``extra`` holds the scores of the
    extra ex-post samplers ``extra_names`` ({model: {sampler: {"fid_feat", "precision", "recall"}}})."""
    head = ["model", "recon MSE", "Fréchet prior", "Fréchet Gaussian", "Fréchet GMM",
            *[f"Fréchet {n}" for n in extra_names], "Fréchet interp.", "P / R prior", "P / R GMM", "steps",
            "train s", "samples"]
    with_fid = bool(inception) and "_skipped" not in inception
    at = 6 + len(extra_names)
    if with_fid:
        head[at:at] = ["Inception FID prior", "Inception FID GMM"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in rows:
        cells = [m["model"], _fmt(m.get("recon_mse"), 4), _fmt(m.get("fid_feat_prior")),
                 _fmt(m.get("fid_feat_gaussian")), _fmt(m.get("fid_feat_gmm")),
                 *_sampler_cells(m, extra, extra_names), _fmt(m.get("fid_feat_interp")),
                 _pr(m, "prior"), _pr(m, "gmm"), _steps(m), _fmt(m.get("train_seconds"), 0),
                 f"[grid]({m['model']}/samples.png)"]
        if with_fid:
            fids = inception.get(m["model"], {})
            cells[at:at] = [_fmt(fids.get("prior")), _fmt(fids.get("gmm"))]
        lines.append("| " + " | ".join(cells) + " |")
    first = rows[0] if rows else {}
    budget = f"{spec.max_steps} steps (--max-steps)" if spec.max_steps else "the preset's budget"
    notes = [
        f"Data set {spec.dataset}, preset {spec.preset}, seed {spec.seed}, {budget}, the same epochs / early "
        f"stopping for every model; {first.get('n_samples', '-')} samples per sampler against "
        f"{first.get('n_reference', '-')} test images.",
        "prior = draws from the model's own prior p(z): N(0, I) for every row except those with another prior "
        "(vamp_vae: its VampPrior mixture). Gaussian / GMM = one Gaussian / the 10-component GMM fitted to the "
        "training codes after training (ex-post)"
        + (f"; {', '.join(extra_names)} = further samplers of the toolkit (--samplers; the trained ones fitted to "
           "the same codes, once per run)" if extra_names else "") + ".",
        "Fréchet = Fréchet distance in the feature space of the toolkit's own classifier for this data set "
        f"(held-out accuracy {_fmt(first.get('feature_net_accuracy'), 3)}); NOT comparable to Inception FID. "
        f"Data floor (training vs test images, same sizes): {_fmt(first.get('fid_feat_train'))}.",
        "Fréchet interp. = the same distance for decoded midpoints (z_i + z_j)/2 of random pairs of test codes. "
        "P / R = precision / recall, k-NN manifolds (Kynkäänniemi et al. 2019, k=3). Lower Fréchet is better. "
        "samples = each run's grid of 64 decoded draws per sampler.",
        f"Wall time of this command: {seconds:.0f} s (reused runs cost nothing).",
    ]
    if any(m.get("stopped") == "time budget" for m in rows):
        notes.append("* = stopped by the time budget (max_minutes) before its steps: not the same training "
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


def extra_sampler_scores(models: list[str], table_dir: Path, device: Any, names: tuple[str, ...],
                         n: int) -> dict[str, dict[str, dict[str, float]]]:
    """{model: {sampler: {"fid_feat", "precision", "recall"}}} for ex-post samplers beyond the
    evaluation's own (e.g. the trained ``two_stage`` / ``flow``), for continuous-code rows.

    Each sampler is fitted to the run's training codes once and stored in its checkpoint
    (samplers_fit.fit_sampler); n decoded draws (the run's seed) are judged against the test
    images like the evaluation's samplers; scores are cached in ``extra_samplers.json`` and the
    grid of the first 64 draws saved as ``samples_NAME.png`` in the run directory.
    """
    import torch

    from .domains.images import data_dir_of, image_grid, save_panels
    from .io import write_json
    from .metrics.images import frechet, precision_recall
    from .pipeline import load_run
    from .registry import DOMAINS, SAMPLERS
    from .samplers_fit import fit_sampler

    domain, out = DOMAINS.get("images"), {}
    for model in models:
        run_dir = table_dir / model
        cache = run_dir / "extra_samplers.json"
        scores = json.loads(cache.read_text()) if cache.is_file() else {}
        todo = [name for name in names if name not in scores]
        loaded = load_run(run_dir, device) if todo else None
        if loaded is not None and getattr(loaded.model.latent, "discrete", False):
            log.info("%s: categorical codes; the continuous samplers %s do not apply", model, ", ".join(todo))
            todo = []
        if todo:
            prepared = domain.prepare(loaded.run, codec_state=loaded.checkpoint["codec"], progress=False)
            extractor = domain.feature_extractor(prepared.codec.dataset, data_dir_of(loaded.run.data.data_dir))
            real, seed = extractor(prepared.test), loaded.run.train.seed
            for name in todo:
                needs = getattr(SAMPLERS.get(name), "needs_prior", None)
                if needs and loaded.run.model.prior != needs:  # e.g. vamp: only models with that prior
                    continue
                sampler = loaded.samplers.get(name) or fit_sampler(run_dir, name, device)
                fake = domain.decode(loaded.model, sampler.sample(n, generator=torch.Generator().manual_seed(seed)),
                                     device)
                feats = extractor(fake)
                scores[name] = {"fid_feat": frechet(real, feats), **precision_recall(real, feats, seed=seed)}
                save_panels([(name, image_grid(fake[:64]))], run_dir / f"samples_{name}.png")
                log.info("%s: sampler %s Fréchet %.2f", model, name, scores[name]["fid_feat"])
            write_json(cache, scores)
        out[model] = scores
    return out
