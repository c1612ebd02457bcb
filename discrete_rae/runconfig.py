"""Resolve a run's configuration from plain data: model defaults < preset < config file < overrides.

:func:`resolve_run_config` is the one way to build a :class:`~discrete_rae.config.RunConfig`
from names and override values; the command line (``train``), ``compare``, ``image-table``
and the tests call it. Overrides are ``{section: {key: value}}`` with the sections ``model``,
``train``, ``data`` and ``eval``; values may be typed or strings (as typed on a command line),
coerced by :func:`discrete_rae.config.replace`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .catalog import load_all
from .config import DataConfig, EvalConfig, RunConfig, TrainConfig, load_toml, replace
from .errors import UsageError
from .presets import get_preset
from .registry import DOMAINS, MODELS, SAMPLERS

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
    sections: dict[str, Any] = {"model": spec.config_for(domain), "train": TrainConfig(), "data": DataConfig(),
                                "eval": EvalConfig()}
    for name in sections:
        for values in (preset_values.get(name, {}), file_cfg.get(name, {}), overrides.get(name, {})):
            sections[name] = replace(sections[name], dict(values))
    run = RunConfig(domain=domain, model_name=model_name, preset=preset, **sections)
    validate(run)
    return run


def validate(run: RunConfig) -> None:
    """Cross-field checks that give one clear message instead of a failure deep in training."""
    from .registry import LATENTS, REGULARIZERS

    m = run.model
    LATENTS.get(m.latent)
    REGULARIZERS.get(m.decoder_reg)
    if run.eval.sampler:
        cls = SAMPLERS.get(run.eval.sampler)
        discrete_latent = m.latent in ("gumbel", "categorical")
        if getattr(cls, "discrete", False) != discrete_latent:
            kind = "categorical" if discrete_latent else "continuous"
            raise UsageError(f"--sampler {run.eval.sampler!r} does not fit the {kind} latent {m.latent!r}")
    for key in ("epochs", "batch_size"):
        if getattr(run.train, key) <= 0:
            raise UsageError(f"--{key.replace('_', '-')} must be positive")
    if run.train.lr <= 0:
        raise UsageError("--lr must be positive")
    if not 0 < run.train.val_fraction < 0.5:
        raise UsageError("--val-fraction must be in (0, 0.5)")
    grammar = getattr(m, "grammar", "")
    if grammar:
        from .grammar import builtin_names

        if grammar not in builtin_names():
            raise UsageError(f"unknown grammar {grammar!r}; choose one of: {', '.join(builtin_names())}")
        if not grammar.startswith(DOMAINS.get(run.domain).grammar_name):
            raise UsageError(f"--grammar {grammar!r} does not describe the {run.domain} domain")
    if not 0 <= getattr(m, "word_dropout", 0.0) < 1:
        raise UsageError("--word-dropout must be in [0, 1)")
