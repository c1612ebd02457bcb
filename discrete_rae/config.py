"""Configuration: dataclasses whose fields are constructor/function arguments.

A run is described by four dataclasses, saved together in the run directory and the
checkpoint:

- the model config (family-specific, e.g. :class:`SequenceModelConfig`), registered with
  each model name as its defaults;
- :class:`TrainConfig` (optimiser, schedule, budget), :class:`DataConfig`,
  :class:`EvalConfig`.

Values resolve in this order (later wins): model defaults < preset < ``--config file.toml``
< command-line flags. Every field is a flag (``latent_dim`` -> ``--latent-dim``) and a key of
the TOML section of the same name ([model], [train], [data], [eval]).
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A bad configuration value or file; the message names the key and the problem."""


@dataclass
class LatentConfig:
    """Latent and regulariser fields shared by every model family.

    latent: gaussian | deterministic | gumbel | categorical.  beta: weight of the latent term
    (KL for VAEs, 1/2||z||^2 for RAEs).  decoder_reg: l2 | gp | sn | none, weighted by
    reg_weight.  n_vars x n_classes, tau*: categorical latents (latents_discrete.py).
    """

    latent: str = "deterministic"
    latent_dim: int = 56
    beta: float = 1e-3
    kl_anneal_steps: int = 0
    decoder_reg: str = "l2"
    reg_weight: float = 1e-4
    n_vars: int = 30
    n_classes: int = 10
    tau: float = 1.0
    tau_min: float = 0.5
    tau_rate: float = 1e-4
    tau_every: int = 500
    straight_through: bool = False
    categorical_mode: str = "argmax"


@dataclass
class TrainConfig:
    """Optimisation and budget. ``max_minutes`` caps the wall time of training (0 = none)."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    grad_clip: float = 5.0
    lr_factor: float = 0.5
    lr_patience: int = 2
    early_stop: int = 6
    max_minutes: float = 0.0
    seed: int = 0
    val_fraction: float = 0.05
    compile: bool = False


@dataclass
class DataConfig:
    """What to train on. ``n_train`` caps the molecules/expressions loaded (0 = all)."""

    dataset: str = ""
    n_train: int = 0
    n_test: int = 1000
    column: str = ""
    workers: int = 0
    data_dir: str = ""
    kekulize: bool = True


@dataclass
class EvalConfig:
    """Evaluation after training. ``sampler`` empty = the model's default sampler."""

    n_samples: int = 1000
    sampler: str = ""
    gmm_k: int = 10
    temperature: float = 0.0
    recon_protocol: str = "greedy"
    length_mask: bool = True
    ring_mask: bool = True
    chem_mask: bool = True


SECTIONS = ("model", "train", "data", "eval")

# One line of --help per configuration field (shared by every model family).
FIELD_HELP = {
    "latent": "latent type: gaussian (VAE) | deterministic (RAE) | gumbel | categorical",
    "latent_dim": "code size D",
    "beta": "weight of the latent term (KL for VAEs, 1/2||z||^2 for RAEs)",
    "kl_anneal_steps": "steps over which the KL weight rises linearly from 0 to beta",
    "decoder_reg": "decoder regulariser: l2 | gp | sn | none",
    "reg_weight": "its weight (weight decay for l2, penalty weight for gp)",
    "n_vars": "categorical latents: number of variables N",
    "n_classes": "categorical latents: classes per variable K",
    "tau": "Gumbel-softmax initial temperature",
    "tau_min": "Gumbel-softmax temperature floor",
    "tau_rate": "temperature decay rate r in tau = max(tau_min, tau exp(-r step))",
    "tau_every": "update the temperature every this many steps",
    "straight_through": "Gumbel: one-hot forward, relaxed gradient",
    "categorical_mode": "deterministic categorical code: argmax (straight-through) | softmax",
    "codec": "sequence codec: grammar (production rules) | char (characters)",
    "grammar": ("builtin grammar for the grammar codec: smiles | smiles_compact | expressions | "
                "expressions_compact; empty = the domain's"),
    "max_length": "sequence length; 0 = longest in the data",
    "encoder": "sequence encoder: conv (Grammar VAE) | gru (bidirectional)",
    "conv_channels": "conv encoder channels, comma-separated",
    "conv_kernels": "conv encoder kernel sizes, comma-separated",
    "enc_hidden": "encoder dense/hidden width",
    "decoder": "sequence decoder: gru (autoregressive) | repeat (code repeated at every step)",
    "dec_hidden": "decoder GRU width",
    "dec_layers": "decoder GRU layers",
    "embed_dim": "token embedding size of the autoregressive decoder",
    "word_dropout": "autoregressive decoder: probability of hiding each previous token in training",
    "epochs": "maximum epochs",
    "batch_size": "examples per step (per process under torchrun)",
    "lr": "AdamW learning rate",
    "grad_clip": "clip the gradient norm to this (0 = off)",
    "lr_factor": "ReduceLROnPlateau factor",
    "lr_patience": "ReduceLROnPlateau patience (epochs)",
    "early_stop": "stop after this many epochs without validation improvement (0 = off)",
    "max_minutes": "wall-clock training budget in minutes (0 = none)",
    "seed": "random seed (data split, initialisation, batches)",
    "val_fraction": "share of the non-test data held out for validation",
    "compile": "wrap the loss in torch.compile (true/false)",
    "dataset": "data set name or a file path",
    "n_train": "how many molecules/expressions to load (0 = all)",
    "n_test": "held-out examples for reconstruction",
    "column": "SMILES column of a CSV file",
    "workers": "worker processes for loading/parsing (0 = automatic)",
    "data_dir": "data and cache directory (default ./datasets or $DISCRETE_RAE_DATA)",
    "kekulize": ("molecules: train on canonical Kekule SMILES (explicit double bonds, no aromatic atoms); "
                 "metrics still compare canonical aromatic SMILES"),
    "n_samples": "samples drawn for evaluation",
    "sampler": "ex-post sampler for evaluation (default: the model's)",
    "gmm_k": "GMM components",
    "temperature": "decoding temperature; 0 = greedy",
    "recon_protocol": "greedy | stochastic (10 encodings x 100 decodes)",
    "length_mask": ("grammar decoding: allow only rules that can still finish within max_length "
                    "(false: the Grammar VAE's cut-off, unfinished decodes count as invalid)"),
    "ring_mask": ("SMILES grammar decoding: open rings with the lowest free digit, close only open ones, "
                  "do not finish with a ring open (false: grammar mask only)"),
    "chem_mask": ("SMILES grammar decoding: valence, bond orders and ring bonds checked while decoding, "
                  "no aromatic atoms when the data is kekulised (false: ring_mask only)"),
}


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(cls)
    return hints[f.name]


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Convert a TOML/CLI value to the declared type of field ``name`` of ``cls``."""
    by_name = {f.name: f for f in fields(cls)}
    if name not in by_name:
        known = ", ".join(sorted(by_name))
        raise ConfigError(f"unknown key {name!r} for {cls.__name__}; known keys: {known}")
    typ = _field_type(cls, by_name[name])
    origin = typing.get_origin(typ)
    try:
        if typ is bool:
            if isinstance(value, str):
                low = value.lower()
                if low not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return low in ("1", "true", "yes")
            return bool(value)
        if origin in (tuple, list):
            (item,) = {a for a in typing.get_args(typ) if a is not Ellipsis}
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(item(v) for v in items)
        return typ(value)
    except (TypeError, ValueError):
        raise ConfigError(f"bad value {value!r} for {cls.__name__}.{name} (expected {typ})") from None


def replace(obj: Any, overrides: dict[str, Any]) -> Any:
    """``dataclasses.replace`` with type coercion and a clear error for unknown keys."""
    cls = type(obj)
    return dataclasses.replace(obj, **{k: _coerce(cls, k, v) for k, v in overrides.items()})


def load_toml(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a config file with [model]/[train]/[data]/[eval] sections."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"config file {path}: unknown section(s) {sorted(unknown)}; use {list(SECTIONS)}")
    return data


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, section: str) -> None:
    """Add one ``--flag`` per field of ``cls``; values are kept as strings and coerced later."""
    group = parser.add_argument_group(f"{section} options ([{section}] in --config)")
    for f in fields(cls):
        typ = _field_type(cls, f)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        meta = FIELD_HELP.get(f.name, "")
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"{section}.{f.name}", default=None,
                           metavar=getattr(typ, "__name__", "LIST").upper(),
                           help=f"{meta} (default: {shown})".strip())


def collect_flags(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """The flags of ``section`` that the user actually set."""
    prefix = section + "."
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-data dict of a config (tuples become lists, so it loads with weights_only)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Inverse of :func:`to_dict` (ignores keys the class no longer has)."""
    known = {f.name for f in fields(cls)}
    return replace(cls(), {k: v for k, v in data.items() if k in known})


def to_toml(sections: dict[str, Any]) -> str:
    """Serialise config dataclasses as TOML (the resolved config saved in the run dir)."""
    lines: list[str] = []
    for name, obj in sections.items():
        lines.append(f"[{name}]")
        for key, value in to_dict(obj).items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class RunConfig:
    """Everything that defines a run; what the checkpoint and run directory record."""

    domain: str
    model_name: str
    model: Any
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    preset: str = "quick"

    def sections(self) -> dict[str, Any]:
        return {"model": self.model, "train": self.train, "data": self.data, "eval": self.eval}
