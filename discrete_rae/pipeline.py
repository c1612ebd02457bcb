"""Run orchestration: config -> data -> model -> trainer -> ex-post samplers -> evaluation.

This is the only place that wires the parts together; it is domain- and model-agnostic
(everything specific is behind the DOMAINS / MODELS / SAMPLERS registries).

Run directory layout (``runs/NAME``):
    config.toml     the resolved configuration       run.json      versions, hashes, data report
    metrics.jsonl   one line per epoch (trainer)     checkpoint.pt weights + everything to resume
    metrics.json    final evaluation                 samples.txt / samples.png
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .catalog import load_all
from .checkpoint import CheckpointError, codec_fingerprint, load_run_checkpoint, save_atomic
from .codecs import codec_from_state
from .config import ConfigError, EvalConfig, RunConfig, from_dict, to_dict, to_toml
from .data.errors import DataError, check_split_sizes, describe_drops
from .grammar.teacher_mask import warm_training_masks
from .io import write_json, write_text
from .labels import label_metrics, training_data
from .objectives_adversarial import adversarial_metrics, is_adversarial
from .objectives_mask import is_masked, mask_report
from .registry import DOMAINS, MODELS, SAMPLERS
from .runconfig import run_config_from_checkpoint  # noqa: F401  (re-exported: callers of the old home)
from .resume import reopen, resume_history
from .samplers import Sampler, fit_codes_sampler, sampler_from_state
from .trainer import DistInfo, Trainer
from .version import __version__

if TYPE_CHECKING:
    from .domains.base import Domain

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    """A trained run loaded from its checkpoint."""

    run: RunConfig
    model: torch.nn.Module
    samplers: dict[str, Sampler]
    checkpoint: dict[str, Any]
    run_dir: Path


def versions() -> dict[str, str]:
    out = {"discrete_rae": __version__, "python": platform.python_version(), "torch": str(torch.__version__)}  # TorchVersion is not weights_only-loadable
    for name in ("rdkit", "nltk", "numpy", "sklearn"):
        try:
            out[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            out[name] = "missing"
    return out


DECODING_OPTIONS = ("length_mask", "ring_mask", "chem_mask")  # EvalConfig fields that the grammar codec reads


def apply_decoding_options(codec: Any, cfg: EvalConfig) -> None:
    """Copy the decoding options of ``cfg`` onto a codec that has them (the grammar codec)."""
    for key in DECODING_OPTIONS:
        if hasattr(codec, key):
            setattr(codec, key, bool(getattr(cfg, key)))


def build_model(run: RunConfig, codec: Any) -> torch.nn.Module:
    """The registered model for ``run`` over ``codec``; the codec takes the run's decoding options."""
    apply_decoding_options(codec, run.eval)
    return MODELS.get(run.model_name).build(run.model, codec)


def fit_samplers(model: torch.nn.Module, domain: Domain, train: torch.Tensor, run: RunConfig,
                 device: torch.device) -> dict[str, Sampler]:
    """Fit every registered sampler that suits the latent type to the training codes.

    Samplers with ``auto_fit = False`` (the trained ones of samplers_learned.py) are fitted only
    when ``run.eval.sampler`` names them; ``samplers_fit.fit_sampler`` adds one to a finished run.
    """
    codes = domain.encode(model, train, device)
    discrete = bool(getattr(model.latent, "discrete", False))
    samplers: dict[str, Sampler] = {}
    for name, cls in SAMPLERS.items():
        if getattr(cls, "discrete", False) != discrete:
            continue
        if not getattr(cls, "auto_fit", True) and name != run.eval.sampler:
            continue
        options = {"k": run.eval.gmm_k} if name == "gmm" else {}
        if discrete:
            options = {"n_vars": run.model.n_vars, "n_classes": run.model.n_classes, **options}
        t0 = time.monotonic()
        samplers[name] = fit_codes_sampler(name, codes, run.train.seed, model, **options)
        log.info("fitted sampler %s on %d codes in %.1fs", name, len(codes), time.monotonic() - t0)
    return samplers


def default_sampler(run: RunConfig) -> str:
    return run.eval.sampler or MODELS.get(run.model_name).sampler


def checkpoint_payload(run: RunConfig, codec: Any, meta: dict[str, Any],
                       samplers: dict[str, Sampler] | None = None) -> dict[str, Any]:
    return {"domain": run.domain, "model_name": run.model_name, "preset": run.preset,
            "config": {name: to_dict(obj) for name, obj in run.sections().items()},
            "codec": codec.state_dict(), "meta": meta,
            "samplers": {k: s.state_dict() for k, s in (samplers or {}).items()}}


def train_run(run: RunConfig, run_dir: Path, device: torch.device, amp_dtype: torch.dtype | None = None,
              resume: bool = False, dist: DistInfo | None = None, progress: bool = True,
              evaluate: bool = True) -> dict[str, Any]:
    """Train, fit the ex-post samplers, evaluate; returns the final metrics.

    ``evaluate=False`` skips the domain's evaluation (callers that evaluate themselves, e.g.
    ``compare``); metrics.json then holds the training figures only.
    """
    load_all()
    dist = dist or DistInfo()
    torch.manual_seed(run.train.seed)
    domain = DOMAINS.get(run.domain)
    ckpt = load_run_checkpoint(run_dir / "checkpoint.pt") if resume else None
    t0 = time.monotonic()
    prepared = domain.prepare(run, codec_state=ckpt["codec"] if ckpt else None, progress=progress and dist.is_main)
    prep_seconds = time.monotonic() - t0
    report_data(run, prepared, prep_seconds)
    torch.manual_seed(run.train.seed)
    model = build_model(run, prepared.codec)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s: %.2fM parameters, sequence length %s", run.model_name, n_params / 1e6,
             getattr(prepared.codec, "max_length", "-"))
    meta = {"versions": versions(), "data": prepared.info, "n_parameters": n_params,
            "grammar_hash": getattr(getattr(prepared.codec, "grammar", None), "hash", None),
            "data_hash": prepared.info.get("data_hash"), "codec_hash": codec_fingerprint(prepared.codec.state_dict())}
    trainer = Trainer(model, run.train, run_dir if dist.is_main else None, device, amp_dtype,
                      checkpoint_extra=lambda: checkpoint_payload(run, prepared.codec, meta), dist=dist,
                      progress=progress)
    # tuples (x, labels, ...) for models whose loss reads labels, else the plain tensors
    train_data, val_data = training_data(model, prepared, run.train.seed,
                                         getattr(run.model, "labels_per_class", 10), run.model_name)
    if ckpt is not None:  # every check before anything in the run directory is rewritten
        _check_compatible(ckpt, run, prepared, run_dir)
        _restore(model, trainer, ckpt, run_dir / "checkpoint.pt")
        reopen(trainer.state, run.train)
        if resume_history(ckpt, run):
            meta["resumed"] = resume_history(ckpt, run)
        log.info("resumed from epoch %d, step %d", trainer.state.epoch, trainer.state.step)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.toml", to_toml(run.sections()))
        write_json(run_dir / "run.json", {"domain": run.domain, "model": run.model_name, "preset": run.preset, **meta},
                   default=str)
    warm_training_masks(model, prepared.train, prepared.val)  # train_mask = constraints: once per example
    state = trainer.fit(train_data, val_data)
    train_seconds = state.seconds
    if not dist.is_main:
        return {}
    samplers = fit_samplers(model, domain, prepared.train, run, device)
    payload = {**checkpoint_payload(run, prepared.codec, meta, samplers), "model_state": model.state_dict(),
               "trainer": trainer.state_dict()}
    save_atomic(payload, run_dir / "checkpoint.pt")
    metrics = (evaluate_loaded(LoadedRun(run, model, samplers, payload, run_dir), prepared, device,
                               sampler_name=default_sampler(run), progress=progress) if evaluate else
               {"model": run.model_name, "domain": run.domain, "dataset": run.data.dataset})
    metrics.update({"train_seconds": round(train_seconds, 1), "prepare_seconds": round(prep_seconds, 1),
                    "epochs": state.epoch, "steps": state.step, "stopped": state.stopped or "epochs done",
                    "best_val_loss": state.best_val})
    write_json(run_dir / "metrics.json", metrics, default=float)
    return metrics


def report_data(run: RunConfig, prepared: Any, seconds: float) -> None:
    """Log what preparation kept and dropped (by reason) and refuse splits too small to train on.

    A warning when preparation itself dropped examples (too long, not encodable): that loss is
    the user's settings' doing (e.g. --max-length) and must not pass silently.
    """
    info = prepared.info
    info.setdefault("n_train", len(prepared.train))
    info.setdefault("n_val", len(prepared.val))
    info.setdefault("n_test", len(prepared.test))
    lost_in_prep = sum(n for why, n in (info.get("dropped") or {}).items() if not why.startswith("rejected by")
                       and why != "duplicates")
    log.log(logging.WARNING if lost_in_prep else logging.INFO, "data: %s (%.1fs)", describe_drops(info), seconds)
    check_split_sizes(run.data.dataset or info.get("dataset", ""), len(prepared.train), len(prepared.val), info)


def _check_compatible(ckpt: dict[str, Any], run: RunConfig, prepared: Any, run_dir: Path) -> None:
    """The resumed checkpoint must be this model, domain and data (the data hash of its splits)."""
    if ckpt["model_name"] != run.model_name or ckpt["domain"] != run.domain:
        raise CheckpointError(f"checkpoint is a {ckpt['model_name']} on {ckpt['domain']}, "
                              f"not {run.model_name} on {run.domain}")
    recorded, now = (ckpt.get("meta") or {}).get("data_hash"), prepared.info.get("data_hash")
    if recorded is not None and now is not None and recorded != now:
        raise DataError(f"data set {run.data.dataset!r} changed since run {run_dir} was trained (data hash "
                        f"{str(now)[:12]}, recorded {str(recorded)[:12]}); a resumed run must see the same data")


def _restore(model: torch.nn.Module, trainer: Trainer, ckpt: dict[str, Any], path: Path) -> None:
    """Load the weights and the trainer state; a damaged or hand-made state is one CheckpointError."""
    try:
        model.load_state_dict(ckpt["model_state"])
        trainer.load_state_dict(ckpt["trainer"])
    except KeyError as err:
        raise CheckpointError(f"checkpoint {path}: its trainer state lacks the key {err}") from None
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit model {ckpt['model_name']}: "
                              f"{str(err).strip().splitlines()[0][:200]}") from None


def load_run(run_dir: Path, device: torch.device) -> LoadedRun:
    """Load a finished (or interrupted) run from ``run_dir/checkpoint.pt``."""
    path = Path(run_dir) / "checkpoint.pt"
    ckpt = load_run_checkpoint(path)
    run = run_config_from_checkpoint(ckpt)
    try:
        codec = codec_from_state(ckpt["codec"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: its codec cannot be rebuilt (missing or bad {err})") from None
    model = build_model(run, codec)
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {run_dir}/checkpoint.pt does not match model "
                              f"{run.model_name}: {str(err).splitlines()[0]}") from None
    samplers = {}
    for name, state in (ckpt.get("samplers") or {}).items():
        try:
            samplers[name] = sampler_from_state(state)
        except (KeyError, TypeError) as err:
            raise CheckpointError(f"checkpoint {path}: the state of sampler {name!r} lacks {err}") from None
    return LoadedRun(run, model.to(device).eval(), samplers, ckpt, Path(run_dir))


def pick_sampler(loaded: LoadedRun, name: str | None) -> Sampler:
    name = name or default_sampler(loaded.run)
    if name not in loaded.samplers:
        have = ", ".join(sorted(loaded.samplers)) or "none (training did not finish)"
        raise ConfigError(f"sampler {name!r} is not fitted in this run; available: {have}")
    return loaded.samplers[name]


def evaluate_loaded(loaded: LoadedRun, prepared: Any, device: torch.device, sampler_name: str | None = None,
                    progress: bool = True, n_samples: int | None = None) -> dict[str, Any]:
    domain = DOMAINS.get(loaded.run.domain)
    cfg = loaded.run.eval if n_samples is None else from_dict(EvalConfig, {**to_dict(loaded.run.eval), "n_samples": n_samples})
    metrics = domain.evaluate(loaded.model, pick_sampler(loaded, sampler_name), prepared, cfg, loaded.run_dir,
                              device, progress)
    if is_adversarial(loaded.model):  # the discriminator on held-out codes vs prior draws
        codes = domain.encode(loaded.model, prepared.test, device)
        metrics.update(adversarial_metrics(loaded.model, codes, seed=loaded.run.train.seed))
    if is_masked(loaded.model):  # MaskAAE: active dimensions, the mask, mask_trace.png
        history = (loaded.checkpoint.get("trainer") or {}).get("history", [])
        metrics.update(mask_report(loaded.model, history, loaded.run_dir))
    metrics.update(label_metrics(loaded.model, prepared, device, loaded.run_dir))  # AAE label variants
    return {"model": loaded.run.model_name, "domain": loaded.run.domain,
            "dataset": loaded.run.data.dataset, **metrics}
