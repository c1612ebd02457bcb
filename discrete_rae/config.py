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

Every field declares, in its ``metadata`` (see :func:`option`), its ``--help`` line and the
rules that :mod:`discrete_rae.validate` checks before any work: numeric ranges, the allowed
names (often a registry, read when the check runs) and which components use it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from .registry import LATENTS, OBJECTIVES, PRIORS, REGULARIZERS, SAMPLERS


from .errors import ConfigError  # noqa: E402,F401  (defined with the other user errors; re-exported)


def option(default: Any, help: str, **rules: Any) -> Any:  # noqa: A002 - argparse's word
    """A dataclass field whose ``metadata`` holds its help line and validation rules.

    Rules (all optional; :func:`discrete_rae.validate.validate_run` checks them):

    - ``ge`` / ``gt`` / ``le`` / ``lt``: numeric bounds (per item for tuple fields); float
      values must also be finite. ``min_items``: least number of items of a tuple field.
    - ``choices``: the allowed names: a tuple, a :class:`~discrete_rae.registry.Registry` or a
      dict (its keys, read when the check runs, so later registrations count), or a function
      returning names (see :func:`names_in`). ``kind`` names them in messages ("latent type");
      ``optional=True``: the empty string is allowed and means "the default".
    - ``applies``: which components use the field: ``{component: names}`` (every entry must
      hold) or a tuple of such dicts (any one must hold). A component is a field of the model
      config (``latent``, ``codec``, ``encoder``, ``decoder``, ``likelihood``, ``decoder_reg``)
      or ``domain``. A value the user sets for a field the run does not use is an error.
    """
    return field(default=default, metadata={"help": help, **rules})


def names_in(module: str, attr: str) -> Callable[[], list[str]]:
    """Choices read lazily from ``module.attr``: a Registry, a dict, a tuple or a function.

    Lazy so that this module imports neither torch nor the modules that register names.
    """

    def names() -> list[str]:
        table = getattr(importlib.import_module(module), attr)
        return choice_names(table)

    return names


def choice_names(choices: Any) -> list[str]:
    """The names allowed by a ``choices`` rule (see :func:`option`)."""
    if hasattr(choices, "names"):
        return list(choices.names())
    if isinstance(choices, dict):
        return sorted(choices)
    if callable(choices):
        return list(choices())
    return list(choices)


# Component values that name fields in ``applies`` rules (shared by every family).
# style_label / style_category: a label part [y] and a continuous style z (objectives_labels.py)
CONTINUOUS_LATENTS = ("gaussian", "deterministic", "style_label", "style_category")
DISCRETE_LATENTS = ("gumbel", "categorical")
SEQUENCE_DOMAINS = ("molecules", "expressions")
_DISCRETE = {"latent": DISCRETE_LATENTS}
_LABEL_AAES = ("aae_supervised", "aae_semi", "aae_cluster")
_ADVERSARIAL = {"objective": ("aae", "wae_gan", *_LABEL_AAES)}
_CRITIC = {"objective": ("aae", "wae_gan", "mask_aae", *_LABEL_AAES)}  # rows with a network on the codes
_MASK = {"objective": ("mask_aae",)}


@dataclass
class LatentConfig:
    """The zoo's columns, shared by every network family (zoo.py).

    latent: gaussian | deterministic | gumbel | categorical.  beta: weight of the latent term,
    posterior.divergence(prior): KL(q || p) for stochastic posteriors, the prior's energy for
    deterministic codes (1/2||z||^2 under N(0, I); the centred-logit penalty for categorical
    codes).  prior, objective: registered by name.  decoder_reg: l2 | gp | sn | none,
    weighted by reg_weight.  n_vars x n_classes, tau*: categorical latents (latents_discrete.py).
    """

    latent: str = option("deterministic", "latent type: gaussian = VAE, deterministic = RAE, gumbel = "
                         "Gumbel-softmax VAE, categorical = discrete RAE", choices=LATENTS)
    prior: str = option("standard_normal", "prior p(z): standard_normal (continuous latents) | uniform_categorical "
                        "(discrete latents) | vamp (images, gaussian latent)", choices=PRIORS)
    objective: str = option("penalized", "objective: penalized = reconstruction + beta * latent term + decoder "
                            "penalty (the beta-ELBO for VAEs, the RAE loss for RAEs)", choices=OBJECTIVES)
    latent_dim: int = option(56, "code size D", ge=1, applies={"latent": CONTINUOUS_LATENTS})
    beta: float = option(1e-3, "weight of the latent term: KL(q || prior) for stochastic latents, the prior's "
                         "energy (1/2||z||^2 under N(0, I)) for deterministic codes", ge=0)
    kl_anneal_steps: int = option(0, "steps over which the KL weight rises linearly from 0 to beta", ge=0,
                                  applies={"latent": ("gaussian", "gumbel")})
    decoder_reg: str = option("l2", "decoder regulariser", choices=REGULARIZERS)
    reg_weight: float = option(1e-4, "its weight (weight decay for l2, penalty weight for gp)", ge=0,
                               applies={"decoder_reg": ("l2", "gp")})
    n_vars: int = option(30, "categorical latents: number of variables N", ge=1, applies=_DISCRETE)
    n_classes: int = option(10, "categorical latents: classes per variable K", ge=2, applies=_DISCRETE)
    tau: float = option(1.0, "Gumbel-softmax initial temperature", gt=0, applies=_DISCRETE)
    tau_min: float = option(0.5, "Gumbel-softmax temperature floor", gt=0, applies=_DISCRETE)
    tau_rate: float = option(1e-4, "temperature decay rate r in tau = max(tau_min, tau exp(-r step))", ge=0,
                             applies=_DISCRETE)
    tau_every: int = option(500, "update the temperature every this many steps (0 = every step)", ge=0,
                            applies=_DISCRETE)
    straight_through: bool = option(False, "Gumbel: one-hot forward, relaxed gradient",
                                    applies={"latent": ("gumbel",)})
    vamp_k: int = option(50, "VampPrior: number of learned pseudo-inputs K (mixture components)", ge=1,
                         applies={"prior": ("vamp",)})
    categorical_mode: str = option("argmax", "deterministic categorical code: argmax (straight-through) | softmax",
                                   choices=names_in("discrete_rae.latents_discrete", "CATEGORICAL_MODES"),
                                   kind="categorical mode", applies={"latent": ("categorical",)})
    # adversarial objectives (objectives_adversarial.py)
    disc_hidden: int = option(512, "adversarial objectives: discriminator (MaskAAE: critic) hidden width", ge=1,
                              applies=_CRITIC)
    disc_layers: int = option(4, "adversarial objectives: discriminator (MaskAAE: critic) hidden layers", ge=1,
                              applies=_CRITIC)
    adv_weight: float = option(1.0, "adversarial objectives: weight of the encoder's (generator's) adversarial loss "
                               "(WAE-GAN: lambda in the main loss)", ge=0, applies=_ADVERSARIAL)
    adv_lr_ratio: float = option(0.5, "adversarial objectives: discriminator learning rate / --lr", gt=0,
                                 applies=_ADVERSARIAL)
    adv_beta1: float = option(0.5, "adversarial objectives: Adam beta1 of every optimizer", ge=0, lt=1,
                              applies=_ADVERSARIAL)
    adv_sigma: float = option(1.0, "WAE-GAN: sigma of log N(z; 0, sigma^2 I) added to the discriminator's logit",
                              gt=0, applies={"objective": ("wae_gan",)})
    # MaskAAE (objectives_mask.py)
    critic_steps: int = option(5, "MaskAAE: WGAN-GP critic steps per batch", ge=1, applies=_MASK)
    critic_gp: float = option(10.0, "MaskAAE: weight of the critic's gradient penalty (||grad|| - 1)^2", ge=0,
                              applies=_MASK)
    critic_lr: float = option(1e-4, "MaskAAE: Adam learning rate of the critic and of the encoder's generator "
                              "phase (betas 0.5, 0.9)", gt=0, applies=_MASK)
    mask_lr: float = option(2e-2, "MaskAAE: Adam learning rate of the mask parameters", gt=0, applies=_MASK)
    mask_var_weight: float = option(100.0, "MaskAAE: weight of the variance penalty on masked-off code dimensions",
                                    ge=0, applies=_MASK)
    mask_rec_weight: float = option(1.0, "MaskAAE: weight of the reconstruction in the mask's loss", ge=0,
                                    applies=_MASK)
    mask_poly_every: int = option(0, "MaskAAE: the mask's polynomial weight sum alpha(1 - alpha) doubles every "
                                  "this many steps (from 2 / latent_dim up to 2048); 0: per dimension, "
                                  "round(mask_poly_every_per_dim * latent_dim) steps (50 at D = 16, 200 at "
                                  "D = 64); 50: the fixed schedule of earlier versions", ge=0, applies=_MASK)
    mask_poly_every_per_dim: float = option(3.125, "MaskAAE, with --mask-poly-every 0: the doubling period per code "
                                            "dimension, so that every latent_dim reaches the rounding strength at "
                                            "the same point of its descent (3.125: 50 steps at D = 16)", gt=0,
                                            applies=_MASK)
    mask_noise: float = option(0.0, "MaskAAE: std of Gaussian noise added to the code before the mask in training "
                               "(the decoder reads alpha (z + noise); 0: off)", ge=0, applies=_MASK)
    mask_code_bound: float = option(0.0, "MaskAAE: squash the code to B tanh(z / B) before the mask, in the decoder, "
                                    "the critic and the penalties (0: off). Why: alpha * z is invariant to "
                                    "shrinking alpha while the encoder enlarges z, which lets every alpha fall "
                                    "together at large latent_dim", ge=0, applies=_MASK)
    mask_poly_start: int = option(300, "MaskAAE: the paused doubling resumes at this step at the latest (0: only "
                                  "when the descent stalls)", ge=0, applies=_MASK)
    mask_poly_hold: float = option(2048.0, "MaskAAE: the doubling pauses at this polynomial weight (per dimension, "
                                   "the same for every latent_dim) until the mask's descent stalls (>= 2048: no "
                                   "pause, the paper's schedule)", gt=0,
                                   applies=_MASK)
    mask_poly_patience: int = option(100, "MaskAAE: the paused doubling resumes once sum(alpha) has not fallen "
                                     "by 1 for this many steps (0: at step 0)", ge=0, applies=_MASK)
    # the AAE's label variants (objectives_labels.py)
    label_classes: int = option(10, "AAE label variants: classes K of the label / categorical part of the code "
                                "(clustering: clusters)", ge=2, applies={"latent": ("style_label", "style_category")})
    cluster_mi_weight: float = option(0.0, "clustering / semi-supervised AAE: weight w of -w * I(x; y) in the main "
                                      "loss, I = H(mean y) - mean H(y) over the batch (keeps every category in "
                                      "use and each y confident; IMSAT, Hu et al. 2017); 0 = the AAE paper",
                                      ge=0, applies={"objective": ("aae_semi", "aae_cluster")})
    category_prior_tau: float = option(0.0, "semi-supervised / clustering AAE: temperature of relaxed "
                                       "(Gumbel-softmax) draws of a uniform categorical as the category "
                                       "discriminator's prior side; 0 = exact one-hot draws (the AAE paper)", ge=0,
                                       applies={"objective": ("aae_semi", "aae_cluster")})
    consistency_weight: float = option(0.0, "semi-supervised / clustering AAE: weight w of w * KL(y(x) || "
                                       "y(x')) in the main loss, x' = x shifted by up to --consistency-shift "
                                       "pixels plus N(0, --consistency-noise^2) noise, y(x) held fixed; 0 = the "
                                       "AAE paper", ge=0, applies={"objective": ("aae_semi", "aae_cluster")})
    consistency_shift: int = option(2, "semi-supervised / clustering AAE: largest random shift (pixels, each "
                                    "axis) of the consistency term's perturbed image", ge=0,
                                    applies={"objective": ("aae_semi", "aae_cluster")})
    consistency_noise: float = option(0.1, "semi-supervised / clustering AAE: standard deviation of the "
                                      "consistency term's pixel noise", ge=0,
                                      applies={"objective": ("aae_semi", "aae_cluster")})
    labels_per_class: int = option(10, "semi-supervised AAE: labelled training examples per class (a seeded, "
                                   "stratified draw)", ge=1, applies={"objective": ("aae_semi",)})
    # objective weights (objectives_mmd.py, objectives_iwae.py, objectives_mae.py)
    mmd_weight: float = option(10.0, "WAE-MMD: weight lambda of MMD(codes, prior draws)", ge=0,
                               applies={"objective": ("wae_mmd",)})
    info_alpha: float = option(0.0, "InfoVAE: alpha in rec + (1 - alpha) KL + (alpha + lambda - 1) MMD", le=1,
                               applies={"objective": ("info_vae",)})
    info_lambda: float = option(1000.0, "InfoVAE: lambda in rec + (1 - alpha) KL + (alpha + lambda - 1) MMD", ge=0,
                                applies={"objective": ("info_vae",)})
    iw_k: int = option(5, "IWAE: importance samples k per example", ge=1, applies={"objective": ("iwae",)})
    iw_estimator: str = option("dreg", "IWAE: gradient estimator: dreg (doubly reparameterised, Tucker et al. 2019) "
                               "| iwae (the bound's plain reparameterised gradient)",
                               choices=names_in("discrete_rae.objectives_iwae", "IW_ESTIMATORS"),
                               kind="IWAE gradient estimator", applies={"objective": ("iwae",)})
    mae_eta: float = option(50.0, "MAE: weight eta of the diversity term -mean_d log sigmoid(mean pairwise KL_d)",
                            ge=0, applies={"objective": ("mae",)})
    mae_gamma: float = option(0.1, "MAE: weight gamma of the smoothness term mean_d std(pairwise KL_d)", ge=0,
                              applies={"objective": ("mae",)})


@dataclass
class TrainConfig:
    """Optimisation and budget.

    ``max_steps`` > 0 stops after exactly that many optimiser steps (reproducible: the same
    seed gives the same model on any machine); ``max_minutes`` caps the wall time (0 = none),
    the budget itself when ``max_steps`` is 0, else only a safety cap.  ``lr_schedule``:
    ``plateau`` (ReduceLROnPlateau on the validation loss, per epoch) or ``linear`` (warm-up
    over ``warmup_fraction`` of the steps, then linear decay to zero at the last step).
    ``bucket_batches`` > 0 sorts the shuffled examples by sequence length within chunks of
    that many batches, so each batch holds similar lengths (0 = off).
    """

    epochs: int = option(20, "maximum epochs", ge=1)
    batch_size: int = option(128, "examples per step (per process under torchrun)", ge=1)
    lr: float = option(1e-3, "AdamW learning rate (the peak rate of the linear schedule)", gt=0)
    grad_clip: float = option(5.0, "clip the gradient norm to this (0 = off)", ge=0)
    lr_schedule: str = option("plateau", "plateau (ReduceLROnPlateau on the validation loss) | linear (warm-up, "
                              "then linear decay to 0 at max_steps)", choices=("plateau", "linear"),
                              kind="learning-rate schedule")
    warmup_fraction: float = option(0.03, "linear schedule: share of the steps with a linear warm-up from 0",
                                    ge=0, lt=1)
    lr_factor: float = option(0.5, "ReduceLROnPlateau factor", gt=0, lt=1)
    lr_patience: int = option(2, "ReduceLROnPlateau patience (epochs)", ge=0)
    early_stop: int = option(6, "stop after this many epochs without validation improvement (0 = off)", ge=0)
    max_steps: int = option(0, "stop after exactly this many optimiser steps (0 = off; epochs and max_minutes "
                            "still cap)", ge=0)
    max_minutes: float = option(0.0, "wall-clock training budget in minutes (0 = none); with --max-steps only a "
                                "safety cap", ge=0)
    bucket_batches: int = option(0, "sort examples by sequence length within chunks of this many batches, then "
                                 "shuffle the batches (0 = off); grammar decoders run only to each batch's longest "
                                 "sequence", ge=0)
    # sklearn's GaussianMixture (the ex-post GMM) takes seeds below 2**32
    seed: int = option(0, "random seed (data split, initialisation, batches)", ge=0, le=2**32 - 1)
    val_fraction: float = option(0.05, "share of the non-test data held out for validation", gt=0, lt=0.5)
    compile: bool = option(False, "wrap the loss in torch.compile (true/false)")


@dataclass
class DataConfig:
    """What to train on. ``n_train`` caps the molecules/expressions loaded (0 = all)."""

    dataset: str = option("", "data set name; molecules and expressions also take a file path (images: names only)")
    n_train: int = option(0, "how many molecules/expressions/images to load (0 = all)", ge=0)
    n_test: int = option(1000, "held-out examples for reconstruction", ge=0)
    column: str = option("", "SMILES column of a CSV file", applies={"domain": ("molecules",)})
    workers: int = option(0, "worker processes for loading/parsing (0 = automatic)", ge=0)
    data_dir: str = option("", "data and cache directory (default ./datasets or $DISCRETE_RAE_DATA)")
    kekulize: bool = option(True, "molecules: train on canonical Kekule SMILES (explicit double bonds, no aromatic "
                            "atoms); metrics still compare canonical aromatic SMILES", applies={"domain": ("molecules",)})


@dataclass
class EvalConfig:
    """Evaluation after training. ``sampler`` empty = the model's default sampler."""

    n_samples: int = option(1000, "samples drawn for evaluation", ge=1)
    sampler: str = option("", "ex-post sampler for evaluation (default: the model's)", choices=SAMPLERS,
                          optional=True)
    gmm_k: int = option(10, "GMM components", ge=1, applies={"latent": CONTINUOUS_LATENTS})
    temperature: float = option(0.0, "decoding temperature; 0 = greedy", ge=0,
                                applies={"domain": SEQUENCE_DOMAINS})
    recon_protocol: str = option("greedy", "greedy | stochastic (10 encodings x 100 decodes)",
                                 choices=("greedy", "stochastic"), kind="reconstruction protocol",
                                 applies={"domain": SEQUENCE_DOMAINS})
    length_mask: bool = option(True, "grammar decoding: allow only rules that can still finish within max_length "
                               "(false: the Grammar VAE's cut-off, unfinished decodes count as invalid)",
                               applies={"codec": ("grammar",)})
    ring_mask: bool = option(True, "SMILES grammar decoding: open rings with the lowest free digit, close only "
                             "open ones, do not finish with a ring open (false: grammar mask only)",
                             applies={"codec": ("grammar",), "domain": ("molecules",)})
    chem_mask: bool = option(True, "SMILES grammar decoding: valence, bond orders and ring bonds checked while "
                             "decoding, no aromatic atoms when the data is kekulised (false: ring_mask only)",
                             applies={"codec": ("grammar",), "domain": ("molecules",)})
    beam_width: int = option(0, "molecules: also report reconstruction by beam search of this width (0 = off)",
                             ge=0, applies={"domain": ("molecules",)})


SECTIONS = ("model", "train", "data", "eval")


def field_rules(cls: type, name: str) -> dict[str, Any]:
    """The metadata (help and rules) of field ``name`` of ``cls``.

    A subclass that only changes a default (``latent_dim: int = 16``) keeps the rules of the
    base class's field, so the first non-empty metadata along the MRO counts.
    """
    for klass in cls.__mro__:
        for f in getattr(klass, "__dataclass_fields__", {}).values():
            if f.name == name and f.metadata:
                return dict(f.metadata)
    return {}


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
        if origin in (tuple, list):
            (item,) = {a for a in typing.get_args(typ) if a is not Ellipsis}
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(_coerce_scalar(item, v) for v in items)
        return _coerce_scalar(typ, value)
    except (TypeError, ValueError):
        shown = getattr(typ, "__name__", str(typ))
        raise ConfigError(f"bad value {value!r} for {cls.__name__}.{name} (expected {shown})") from None


def _coerce_scalar(typ: Any, value: Any) -> Any:
    """``value`` as ``typ``: strings (flags) are parsed; typed values (TOML) must already fit.

    A TOML float for an int field (``epochs = 1.7``) is refused rather than truncated, and a
    bool is never taken for a number (``True`` would silently become 1).
    """
    if typ is bool:
        if isinstance(value, str):
            low = value.lower()
            if low not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return low in ("1", "true", "yes")
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        raise TypeError(value)
    if isinstance(value, bool) and typ in (int, float):
        raise TypeError(value)
    if typ is int and not isinstance(value, (int, str)):
        raise TypeError(value)  # a float (1.7) would be truncated
    if typ is float and not isinstance(value, (int, float, str)):
        raise TypeError(value)
    if typ is str and not isinstance(value, (str, int)) or isinstance(value, (list, dict)):
        raise TypeError(value)
    return typ(value)


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
    bad = [name for name in SECTIONS if not isinstance(data.get(name, {}), dict)]
    if bad:
        raise ConfigError(f"config file {path}: [{bad[0]}] must be a table of key = value lines")
    return data


def flag_name(key: str) -> str:
    """The command-line flag of a config field: ``latent_dim`` -> ``--latent-dim``."""
    return "--" + key.replace("_", "-")


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, section: str) -> None:
    """Add one ``--flag`` per field of ``cls``; values are kept as strings and coerced later."""
    group = parser.add_argument_group(f"{section} options ([{section}] in --config)")
    for f in fields(cls):
        typ = _field_type(cls, f)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rules = field_rules(cls, f.name)
        text = rules.get("help", "")
        if "choices" in rules and "|" not in text:
            try:
                text += f" ({' | '.join(choice_names(rules['choices']))})"
            except ImportError:  # a lazily read table whose module is missing: no list in --help
                pass
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        group.add_argument(flag_name(f.name), dest=f"{section}.{f.name}", default=None,
                           metavar=getattr(typ, "__name__", "LIST").upper(),
                           help=f"{text} (default: {shown})".strip())


def collect_flags(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """The flags of ``section`` that the user actually set."""
    prefix = section + "."
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


Layers = dict[str, dict[str, Any]]  # section -> key -> value


def resolve_sections(defaults: dict[str, Any], preset: Layers, file_cfg: Layers, flags: Layers,
                     file_name: str = "") -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Apply the layers defaults < preset < config file < flags to each section.

    Returns the sections and what the user set explicitly: ``{section: {key: label}}`` with
    the label the error messages use (``--tau``, or ``[model] tau in FILE``). A config-file key
    counts only where it changes the value, so that a run's saved config.toml (which lists
    every key) can be passed back with --config.
    """
    sections = dict(defaults)
    explicit: dict[str, dict[str, str]] = {name: {} for name in sections}
    for name in sections:
        sections[name] = replace(sections[name], preset.get(name, {}))
        from_file = file_cfg.get(name, {})
        before = sections[name]
        sections[name] = replace(before, from_file)
        for key in from_file:
            if getattr(sections[name], key) != getattr(before, key):
                explicit[name][key] = f"[{name}] {key} in {file_name or 'the config file'}"
        user = flags.get(name, {})
        sections[name] = replace(sections[name], user)
        explicit[name].update({key: flag_name(key) for key in user})
    return sections, explicit


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-data dict of a config (tuples become lists, so it loads with weights_only)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}


def from_dict(cls: type | Any, data: dict[str, Any]) -> Any:
    """Inverse of :func:`to_dict` (ignores keys the class no longer has).

    ``cls`` may be a default instance: keys missing from ``data`` (fields added since the data
    was written, e.g. ``prior``) then keep that instance's values instead of the class defaults.
    """
    base = cls() if isinstance(cls, type) else cls
    known = {f.name for f in fields(base)}
    return replace(base, {k: v for k, v in data.items() if k in known})


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
    """Everything that defines a run; what the checkpoint and run directory record.

    ``explicit`` (not saved): the keys the user set, ``{section: {key: label}}`` (see
    :func:`resolve_sections`); validation reports fields the run does not use only for these.
    """

    domain: str
    model_name: str
    model: Any
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    preset: str = "quick"
    explicit: dict[str, dict[str, str]] = field(default_factory=dict, repr=False, compare=False)

    def sections(self) -> dict[str, Any]:
        return {"model": self.model, "train": self.train, "data": self.data, "eval": self.eval}
