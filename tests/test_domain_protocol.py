"""Every registered domain implements the :class:`Domain` protocol, and one of the kind protocols
(:class:`TextDomain` for strings, :class:`PixelDomain` for images), member by member.

``isinstance`` against a runtime-checkable protocol only checks that the names exist; the
checker here also compares each method's parameters with the protocol's (names, order, kind,
defaults), so a domain that misses a member or renames a parameter fails.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any, Protocol

import pytest

from discrete_rae.catalog import load_all
from discrete_rae.domains.base import Domain, PixelDomain, SequenceDomain, TextDomain
from discrete_rae.registry import DOMAINS

load_all()
KINDS = (TextDomain, PixelDomain)
# What the callers use of every domain (the protocols must declare at least these).
CALLER_MEMBERS = {
    Domain: {"name", "datasets", "default_dataset", "prepare", "encode", "decode", "evaluate", "sample_texts",
             "sample_metrics"},
    TextDomain: {"grammar_name", "load_texts", "canonical", "reconstruction", "render", "decode"},
    PixelDomain: {"feature_extractor", "decode"},
}


def protocol_members(proto: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """(attributes -> declared type, methods -> function) that ``proto`` and its protocol bases declare."""
    attrs: dict[str, Any] = {}
    methods: dict[str, Any] = {}
    for cls in reversed(proto.__mro__):  # the most derived declaration wins
        if not getattr(cls, "_is_protocol", False) or cls is Protocol:
            continue
        hints = typing.get_type_hints(cls)
        for name in cls.__dict__.get("__annotations__", {}):
            attrs[name] = hints[name]
        methods.update({n: f for n, f in vars(cls).items() if inspect.isfunction(f) and not n.startswith("_")})
    return attrs, methods


def mismatches(proto: type, obj: object) -> list[str]:
    """Why ``obj`` does not implement ``proto`` (empty when it does)."""
    attrs, methods = protocol_members(proto)
    problems = []
    for name, kind in attrs.items():
        if not hasattr(obj, name):
            problems.append(f"missing attribute {name}")
            continue
        origin = typing.get_origin(kind) or kind
        if isinstance(origin, type) and not isinstance(getattr(obj, name), origin):
            problems.append(f"attribute {name} is {type(getattr(obj, name)).__name__}, not {origin.__name__}")
    for name, declared in methods.items():
        impl = getattr(obj, name, None)
        if not callable(impl):
            problems.append(f"missing method {name}")
            continue
        problems += [f"{name}: {p}" for p in _signature_problems(declared, impl)]
    return problems


def _signature_problems(declared: Any, impl: Any) -> list[str]:
    """Parameters of the bound method ``impl`` against the protocol function ``declared``: the
    declared ones first, same names, kinds and order, optional where declared optional; any
    extra ones optional (so every call the protocol allows works)."""
    want = list(inspect.signature(declared).parameters.values())[1:]  # drop self
    have = list(inspect.signature(impl).parameters.values())
    problems = []
    for i, p in enumerate(want):
        q = have[i] if i < len(have) else None
        if q is None or q.name != p.name or q.kind != p.kind:
            problems.append(f"parameter {i + 1} is {q.name if q else 'missing'!r}, the protocol says {p.name!r}")
        elif p.default is not inspect.Parameter.empty and q.default is inspect.Parameter.empty:
            problems.append(f"parameter {p.name!r} needs a default")
    for q in have[len(want):]:
        if q.default is inspect.Parameter.empty and q.kind not in (q.VAR_POSITIONAL, q.VAR_KEYWORD):
            problems.append(f"extra parameter {q.name!r} has no default")
    return problems


def test_domains_are_registered() -> None:
    assert {"molecules", "expressions", "images"} <= set(DOMAINS.names())


def test_protocols_declare_what_callers_use() -> None:
    for proto, needed in CALLER_MEMBERS.items():
        attrs, methods = protocol_members(proto)
        assert needed <= set(attrs) | set(methods), (proto.__name__, needed - set(attrs) - set(methods))


@pytest.mark.parametrize("name", DOMAINS.names())
def test_registered_domain_implements_the_protocol(name: str) -> None:
    domain = DOMAINS.get(name)
    assert isinstance(domain, Domain)
    assert mismatches(Domain, domain) == []
    assert domain.name == name
    assert domain.default_dataset in domain.datasets
    kinds = [k for k in KINDS if isinstance(domain, k)]
    assert len(kinds) == 1, f"{name} should be exactly one of {[k.__name__ for k in KINDS]}, is {kinds}"
    assert mismatches(kinds[0], domain) == []


def test_string_domains_are_text_domains_and_images_pixel_domains() -> None:
    assert isinstance(DOMAINS.get("molecules"), TextDomain) and isinstance(DOMAINS.get("expressions"), TextDomain)
    assert isinstance(DOMAINS.get("images"), PixelDomain) and not isinstance(DOMAINS.get("images"), TextDomain)


# --- the checker catches what it should --------------------------------------------------------------
class _Incomplete:
    """Has every Domain member but ``evaluate``; ``encode`` names its input ``ids``."""

    name, datasets, default_dataset = "toy", ("toy",), "toy"

    def prepare(self, run: Any, codec_state: dict | None = None, progress: bool = True) -> Any: ...
    def encode(self, model: Any, ids: Any, device: Any, batch: int = 500) -> Any: ...
    def decode(self, model: Any, z: Any, device: Any, batch: int = 500, extra: int = 0) -> Any: ...
    def sample_texts(self, model: Any, sampler: Any, n: int, device: Any, temperature: float = 0.0,
                     generator: Any = None) -> Any: ...
    def sample_metrics(self, samples: Any, train_texts: Any) -> Any: ...


def test_checker_reports_a_missing_method_and_a_renamed_parameter() -> None:
    problems = mismatches(Domain, _Incomplete())
    assert not isinstance(_Incomplete(), Domain)
    assert problems == ["encode: parameter 2 is 'ids', the protocol says 'x'", "missing method evaluate"]


def test_checker_reports_missing_defaults_and_wrong_attribute_types() -> None:
    class Strict(_Incomplete):
        datasets = ["toy"]  # a list, not the declared tuple

        def evaluate(self, model: Any, sampler: Any, prepared: Any, cfg: Any, run_dir: Path | None, device: Any,
                     progress: bool) -> Any: ...

        def encode(self, model: Any, x: Any, device: Any, batch: int = 500, chunks: int = 1, *, needed: int) -> Any:
            ...

    assert isinstance(Strict(), Domain)  # every name exists: the runtime check alone would pass it
    assert mismatches(Domain, Strict()) == ["attribute datasets is list, not tuple",
                                            "encode: extra parameter 'needed' has no default",
                                            "evaluate: parameter 'progress' needs a default"]


def test_a_sequence_domain_without_canonical_cannot_be_built() -> None:
    class NoCanonical(SequenceDomain):
        name, datasets, default_dataset, grammar_name = "toy", ("toy",), "toy", "smiles"

        def load_texts(self, run: Any, progress: bool) -> tuple[list[str], dict[str, Any]]:
            return [], {}

        def render(self, samples: list[str | None], path: Path) -> None: ...

    with pytest.raises(TypeError, match="canonical"):
        NoCanonical()
