"""Check a resolved run configuration at the boundary, before any data is read or file written.

Every field of every config dataclass declares its rules in its metadata
(:func:`discrete_rae.config.option`); :func:`validate_run` checks them for flags, config files
and presets alike, so a mistake ends in one :class:`~discrete_rae.errors.UsageError` line
that names the flag (or config-file key) and what is wrong:

1. values: numbers inside their declared range (floats also finite), tuples long enough,
   names among the declared choices (often a registry, read now so that late registrations
   count);
2. applicability: a value the user set (flag, or config-file key that changes the value) for
   a field that the chosen components do not use, e.g. ``--tau`` with a Gaussian latent;
3. cross-field checks that no single field can declare (sampler vs latent kind, grammar vs
   domain, conv channels vs kernels).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable

from .config import RunConfig, choice_names, field_rules, flag_name
from .errors import UsageError
from .catalog import load_all
from .registry import DOMAINS, LATENTS, MODELS, PRIORS, SAMPLERS

# How the components named in ``applies`` rules read in messages.
COMPONENT_WORDS = {"latent": "latent", "codec": "codec", "encoder": "encoder", "decoder": "decoder",
                   "likelihood": "likelihood", "decoder_reg": "decoder regulariser", "prior": "prior",
                   "objective": "objective", "domain": "domain"}


def validate_run(run: RunConfig) -> None:
    """Raise UsageError for the first value, inapplicable setting or combination that is wrong."""
    load_all()
    for section, obj in run.sections().items():
        for f in dataclasses.fields(obj):
            check_value(label_of(run, section, f.name), getattr(obj, f.name), field_rules(type(obj), f.name))
    check_applies(run)
    check_combinations(run)


def label_of(run: RunConfig, section: str, key: str) -> str:
    """How messages name a field: as the user set it (flag or config-file key), else its flag."""
    return run.explicit.get(section, {}).get(key) or flag_name(key)


# --- 1. values ----------------------------------------------------------------------------------
def check_value(label: str, value: Any, rules: dict[str, Any]) -> None:
    """One field's value against its declared rules (see config.option)."""
    if isinstance(value, tuple):
        if len(value) < rules.get("min_items", 0):
            raise UsageError(f"{label} needs at least {rules['min_items']} comma-separated value(s)")
        for item in value:
            _check_number(label, item, rules)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_number(label, value, rules)
    elif isinstance(value, str) and "choices" in rules:
        _check_choice(label, value, rules)


def describe_range(rules: dict[str, Any]) -> str:
    """The declared range in words: "positive", ">= 0", "in (0, 1)"."""
    lo = ("(", rules["gt"]) if "gt" in rules else ("[", rules["ge"]) if "ge" in rules else None
    hi = (")", rules["lt"]) if "lt" in rules else ("]", rules["le"]) if "le" in rules else None
    if lo and hi:
        return f"in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
    if lo:
        if lo == ("(", 0) or lo == ("[", 1):
            return "positive"
        return f"{'>' if lo[0] == '(' else '>='} {lo[1]}"
    if hi:
        return f"{'<' if hi[0] == ')' else '<='} {hi[1]}"
    return "a finite number"


def _check_number(label: str, value: Any, rules: dict[str, Any]) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{label} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{label} must be a finite number, got {value}")
    ok = (value > rules["gt"] if "gt" in rules else True) and (value >= rules["ge"] if "ge" in rules else True) \
        and (value < rules["lt"] if "lt" in rules else True) and (value <= rules["le"] if "le" in rules else True)
    if not ok:
        raise UsageError(f"{label} must be {describe_range(rules)}, got {value}")


def _check_choice(label: str, value: str, rules: dict[str, Any]) -> None:
    if value == "" and rules.get("optional"):
        return
    names = choice_names(rules["choices"])
    if value not in names:
        kind = rules.get("kind") or getattr(rules["choices"], "kind", None) or "value"
        raise UsageError(f"{label}: unknown {kind} {value!r}; choose one of: {', '.join(names)}")


# --- 2. applicability ---------------------------------------------------------------------------
def component(run: RunConfig, name: str) -> str | None:
    """The value of a component the ``applies`` rules name: the domain or a model-config field."""
    return run.domain if name == "domain" else getattr(run.model, name, None)


def check_applies(run: RunConfig) -> None:
    """A setting the user made explicitly for a field that the run's components do not use."""
    for section, keys in run.explicit.items():
        obj = run.sections()[section]
        for key, label in keys.items():
            applies = field_rules(type(obj), key).get("applies")
            if applies is None:
                continue
            alternatives = applies if isinstance(applies, tuple) else (applies,)
            if not any(all(component(run, c) in names for c, names in alt.items()) for alt in alternatives):
                raise UsageError(f"{label} does not apply to {_what(run, alternatives)} "
                                 f"(only to {_needs(alternatives)})")


def _what(run: RunConfig, alternatives: Iterable[dict[str, tuple[str, ...]]]) -> str:
    """The run's components that fail the rule, e.g. "the gaussian latent of grammar_vae"."""
    failing: list[str] = []
    for alt in alternatives:
        for c, names in alt.items():
            value = component(run, c)
            part = f"the {value} {COMPONENT_WORDS.get(c, c)}"
            if c != "domain" and value is not None and value not in names and part not in failing:
                failing.append(part)
    if not failing:
        return f"the {run.domain} domain"
    return " and ".join(failing) + f" of {run.model_name}"


def _needs(alternatives: Iterable[dict[str, tuple[str, ...]]]) -> str:
    return " or ".join(" with ".join(f"{COMPONENT_WORDS.get(c, c)} {'/'.join(names)}" for c, names in alt.items())
                       for alt in alternatives)


# --- 3. combinations ----------------------------------------------------------------------------
def check_combinations(run: RunConfig) -> None:
    """Checks across fields: the sampler fits the latent, the grammar the domain, the conv stack."""
    m = run.model
    discrete = bool(getattr(LATENTS.get(m.latent), "discrete", False))
    kind = "categorical" if discrete else "continuous"
    if run.eval.sampler:
        if getattr(SAMPLERS.get(run.eval.sampler), "discrete", False) != discrete:
            raise UsageError(f"--sampler {run.eval.sampler!r} does not fit the {kind} latent {m.latent!r}")
        needs = getattr(SAMPLERS.get(run.eval.sampler), "needs_prior", None)
        if needs and m.prior != needs:
            raise UsageError(f"--sampler {run.eval.sampler!r} needs the {needs} prior; {run.model_name} has {m.prior!r}")
    else:
        default = MODELS.get(run.model_name).sampler
        if getattr(SAMPLERS.get(default), "discrete", False) != discrete:
            fitting = [n for n, cls in SAMPLERS.items() if getattr(cls, "discrete", False) == discrete]
            raise UsageError(f"{label_of(run, 'model', 'latent')} {m.latent!r}: the default sampler {default!r} "
                             f"of {run.model_name} does not fit a {kind} latent; pass --sampler "
                             f"({' | '.join(fitting)})")
    prior_kind = getattr(PRIORS.get(m.prior), "kind", "continuous")
    prior_domains = getattr(PRIORS.get(m.prior), "domains", None)
    if prior_domains and run.domain not in prior_domains:
        raise UsageError(f"{label_of(run, 'model', 'prior')} {m.prior!r} runs only on {'/'.join(prior_domains)}, "
                         f"not on {run.domain}")
    if (prior_kind == "discrete") != discrete:
        fitting = [n for n, cls in PRIORS.items() if (getattr(cls, "kind", "") == "discrete") == discrete]
        raise UsageError(f"{label_of(run, 'model', 'prior')} {m.prior!r} is a {prior_kind} prior but the latent "
                         f"{m.latent!r} is {kind}; pass --prior ({' | '.join(fitting)})")
    grammar = getattr(m, "grammar", "")
    if grammar and not grammar.startswith(DOMAINS.get(run.domain).grammar_name):
        raise UsageError(f"--grammar {grammar!r} does not describe the {run.domain} domain")
    if getattr(m, "encoder", None) == "conv" and len(m.conv_channels) != len(m.conv_kernels):
        raise UsageError(f"--conv-channels has {len(m.conv_channels)} values but --conv-kernels "
                         f"{len(m.conv_kernels)}; give one kernel size per conv layer")
