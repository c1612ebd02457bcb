"""Run orchestration: config -> data -> model -> trainer -> ex-post samplers -> evaluation.

This is the only place that wires the parts together; it is domain- and model-agnostic
(everything specific is behind the DOMAINS / MODELS / SAMPLERS registries).

Run directory layout (``runs/NAME``):
    config.toml     the resolved configuration       run.json      versions, hashes, data report
    metrics.jsonl   one line per epoch (trainer)     checkpoint.pt weights + everything to resume
    metrics.json    final evaluation                 samples.txt / samples.png
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .checkpoint import CheckpointError, codec_fingerprint, load_checkpoint, save_atomic
from .codecs import codec_from_state
from .config import ConfigError, DataConfig, EvalConfig, RunConfig, TrainConfig, from_dict, to_dict, to_toml
from .registry import DOMAINS, MODELS, SAMPLERS, load_all
from .samplers import Sampler, build_sampler, sampler_from_state
from .trainer import DistInfo, Trainer

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


def fit_samplers(model: torch.nn.Module, domain: Any, train: torch.Tensor, run: RunConfig,
                 device: torch.device) -> dict[str, Sampler]:
    """Fit every registered sampler that suits the latent type to the training codes."""
    codes = domain.encode(model, train, device)
    discrete = bool(getattr(model.latent, "discrete", False))
    samplers: dict[str, Sampler] = {}
    for name, cls in SAMPLERS.items():
        if getattr(cls, "discrete", False) != discrete:
            continue
        options = {"k": run.eval.gmm_k} if name == "gmm" else {}
        if discrete:
            options = {"n_vars": run.model.n_vars, "n_classes": run.model.n_classes, **options}
        t0 = time.monotonic()
        samplers[name] = build_sampler(name, **options).fit(codes, seed=run.train.seed)
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


def run_config_from_checkpoint(ckpt: dict[str, Any]) -> RunConfig:
    load_all()
    spec = MODELS.get(ckpt["model_name"])
    cfg = ckpt["config"]
    return RunConfig(domain=ckpt["domain"], model_name=ckpt["model_name"],
                     model=from_dict(type(spec.config_for(ckpt["domain"])), cfg["model"]), train=from_dict(TrainConfig, cfg["train"]),
                     data=from_dict(DataConfig, cfg["data"]), eval=from_dict(EvalConfig, cfg["eval"]),
                     preset=ckpt.get("preset", ""))


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
    ckpt = load_checkpoint(run_dir / "checkpoint.pt") if resume else None
    t0 = time.monotonic()
    prepared = domain.prepare(run, codec_state=ckpt["codec"] if ckpt else None, progress=progress and dist.is_main)
    prep_seconds = time.monotonic() - t0
    log.info("data: %d train / %d val / %d test examples (%.1fs)", len(prepared.train), len(prepared.val),
             len(prepared.test), prep_seconds)
    torch.manual_seed(run.train.seed)
    model = build_model(run, prepared.codec)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s: %.2fM parameters, sequence length %s", run.model_name, n_params / 1e6,
             getattr(prepared.codec, "max_length", "-"))
    meta = {"versions": versions(), "data": prepared.info, "n_parameters": n_params,
            "grammar_hash": getattr(getattr(prepared.codec, "grammar", None), "hash", None),
            "data_hash": prepared.info.get("data_hash"), "codec_hash": codec_fingerprint(prepared.codec.state_dict())}
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(to_toml(run.sections()))
        (run_dir / "run.json").write_text(json.dumps({"domain": run.domain, "model": run.model_name,
                                                      "preset": run.preset, **meta}, indent=2, default=str))
    trainer = Trainer(model, run.train, run_dir if dist.is_main else None, device, amp_dtype,
                      checkpoint_extra=lambda: checkpoint_payload(run, prepared.codec, meta), dist=dist,
                      progress=progress)
    if ckpt is not None:
        _check_compatible(ckpt, run, prepared)
        model.load_state_dict(ckpt["model_state"])
        trainer.load_state_dict(ckpt["trainer"])
        log.info("resumed from epoch %d, step %d", trainer.state.epoch, trainer.state.step)
    state = trainer.fit(prepared.train, prepared.val)
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
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    return metrics


def _check_compatible(ckpt: dict[str, Any], run: RunConfig, prepared: Any) -> None:
    if ckpt["model_name"] != run.model_name or ckpt["domain"] != run.domain:
        raise CheckpointError(f"checkpoint is a {ckpt['model_name']} on {ckpt['domain']}, "
                              f"not {run.model_name} on {run.domain}")


def load_run(run_dir: Path, device: torch.device) -> LoadedRun:
    """Load a finished (or interrupted) run from ``run_dir/checkpoint.pt``."""
    ckpt = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    run = run_config_from_checkpoint(ckpt)
    codec = codec_from_state(ckpt["codec"])
    model = build_model(run, codec)
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {run_dir}/checkpoint.pt does not match model "
                              f"{run.model_name}: {str(err).splitlines()[0]}") from None
    samplers = {k: sampler_from_state(v) for k, v in ckpt.get("samplers", {}).items()}
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
    return {"model": loaded.run.model_name, "domain": loaded.run.domain,
            "dataset": loaded.run.data.dataset, **metrics}
