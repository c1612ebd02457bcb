"""Resolve a run's configuration from plain data: model defaults < preset < config file < overrides.

:func:`resolve_run_config` is the one way to build a :class:`~discrete_rae.config.RunConfig`
from names and override values; the command line (``train``), ``compare``, ``image-table``
and the tests call it; :func:`validate` (discrete_rae.validate) checks the result. Overrides are ``{section: {key: value}}`` with the sections ``model``,
``train``, ``data`` and ``eval``; values may be typed or strings (as typed on a command line),
coerced by :func:`discrete_rae.config.replace`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .catalog import load_all
from .config import DataConfig, EvalConfig, RunConfig, TrainConfig, from_dict, load_toml, resolve_sections
from .errors import UsageError
from .presets import get_preset
from .registry import DOMAINS, LATENTS, MODELS, PRIORS
from .validate import validate_run

SECTIONS = ("model", "train", "data", "eval")


def default_model(domain: str) -> str:
    """The model a run on ``domain`` gets when none is named."""
    return "rae_l2" if domain == "images" else "grammar_rae"


def resolve_run_config(domain: str, model: str | None = None, preset: str = "quick",
                       config_file: str | Path | None = None,
                       overrides: Mapping[str, Mapping[str, Any]] | None = None) -> RunConfig:
    """The validated RunConfig: model defaults < ``preset`` < ``config_file`` < ``overrides``.

    ``model=None`` takes :func:`default_model`. Unknown names, a model that does not run on the
    domain, unknown sections or keys and values that fail the cross-field checks are user errors.
    """
    load_all()
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(SECTIONS)
    if unknown:
        raise UsageError(f"unknown config section(s) {sorted(unknown)}; use {', '.join(SECTIONS)}")
    DOMAINS.get(domain)
    model_name = model or default_model(domain)
    spec = MODELS.get(model_name)
    if domain not in spec.domains:
        raise UsageError(f"model {model_name!r} does not run on domain {domain!r} "
                         f"(it supports: {', '.join(spec.domains)})")
    try:
        preset_values = get_preset(domain, preset)
    except KeyError as err:
        raise UsageError(str(err.args[0])) from None
    file_cfg = load_toml(config_file) if config_file else {}
    defaults: dict[str, Any] = {"model": spec.config_for(domain), "train": TrainConfig(), "data": DataConfig(),
                                "eval": EvalConfig()}
    values = {name: dict(overrides.get(name, {})) for name in defaults}
    sections, explicit = resolve_sections(defaults, preset_values, file_cfg, values, file_name=str(config_file or ""))
    _prior_follows_latent(sections["model"], explicit.get("model", {}))
    run = RunConfig(domain=domain, model_name=model_name, preset=preset, explicit=explicit, **sections)
    validate(run)
    return run


def _prior_follows_latent(model_cfg: Any, explicit: dict[str, str]) -> None:
    """A latent switched to the other kind (``--latent gumbel`` on an RAE) takes that kind's
    standard prior unless the prior was set too (then validation checks that they fit)."""
    from .distributions import STANDARD_PRIORS

    if "prior" in explicit or not hasattr(model_cfg, "prior"):
        return
    kind = "discrete" if getattr(LATENTS.get(model_cfg.latent), "discrete", False) else "continuous"
    if getattr(PRIORS.get(model_cfg.prior), "kind", "continuous") != kind:
        model_cfg.prior = STANDARD_PRIORS[kind]


def validate(run: RunConfig) -> None:
    """Every value, its applicability and the cross-field checks (discrete_rae.validate)."""
    validate_run(run)


def run_config_from_checkpoint(ckpt: dict[str, Any]) -> RunConfig:
    """The RunConfig recorded in a checkpoint (its plain-data ``config`` sections)."""
    load_all()
    spec = MODELS.get(ckpt["model_name"])
    cfg = ckpt["config"]
    return RunConfig(domain=ckpt["domain"], model_name=ckpt["model_name"],
                     model=from_dict(spec.config_for(ckpt["domain"]), cfg["model"]),
                     train=from_dict(TrainConfig, cfg["train"]), data=from_dict(DataConfig, cfg["data"]),
                     eval=from_dict(EvalConfig, cfg["eval"]), preset=ckpt.get("preset", ""))
