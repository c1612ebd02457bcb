"""Name -> builder registries that feed the CLI's choices.

Every pluggable piece (models, samplers, decoder regularisers, domains) is looked up by
name here, so adding a model is one decorated function and never an if/elif chain.

A leaf: it imports no plugin (that would make the registry and its plugins import each
other). :mod:`discrete_rae.catalog` imports every plugin so that the registries fill.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


from .errors import UnknownNameError  # noqa: E402,F401  (defined with the other user errors; re-exported)


class Registry(Generic[T]):
    """A named mapping of entries (builders, classes or spec objects)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None) -> Any:
        """Register ``entry`` under ``name``; usable as a decorator when ``entry`` is omitted."""

        def _add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return _add if entry is None else _add(entry)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[n]) for n in self.names()]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: default config(s) and a builder.

    ``config`` is a config dataclass instance, or a dict ``{domain: instance}`` for models that
    run on several domains with different networks (e.g. ``gumbel_vae`` on images and on
    sequences); :meth:`config_for` picks. ``build(config, codec) -> AutoEncoder``.
    ``domains`` lists the domains it runs on; ``sampler`` is the default ex-post sampler.
    ``row`` names the zoo row (zoo.py) it comes from (itself, or the row an alias stands for).
    """

    name: str
    description: str
    config: Any
    build: Callable[..., Any]
    domains: tuple[str, ...]
    sampler: str
    row: str = ""

    def config_for(self, domain: str) -> Any:
        """The default config of this model on ``domain``."""
        if isinstance(self.config, dict):
            return self.config[domain]
        return self.config


@dataclass(frozen=True)
class Family:
    """A network family: the config class of its models, the domains it serves and
    ``networks(config, codec) -> models.build.Networks`` (encoder, decoder factory, likelihood)."""

    name: str
    config: type
    networks: Callable[..., Any]
    domains: tuple[str, ...]


MODELS: Registry[ModelSpec] = Registry("model")
FAMILIES: Registry[Family] = Registry("network family")
SAMPLERS: Registry[type] = Registry("sampler")
REGULARIZERS: Registry[type] = Registry("decoder regulariser")
LATENTS: Registry[type] = Registry("latent type")
PRIORS: Registry[type] = Registry("prior")
OBJECTIVES: Registry[type] = Registry("objective")
DOMAINS: Registry[Any] = Registry("domain")


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a :class:`ModelSpec` to :data:`MODELS`."""
    MODELS.register(spec.name, spec)
    return spec
