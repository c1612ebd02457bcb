"""Name -> builder registries that feed the CLI's choices.

Every pluggable piece (models, samplers, decoder regularisers, domains) is looked up by
name here, so adding a model is one decorated function and never an if/elif chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


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
    """

    name: str
    description: str
    config: Any
    build: Callable[..., Any]
    domains: tuple[str, ...]
    sampler: str
    family: str = "sequence"

    def config_for(self, domain: str) -> Any:
        """The default config of this model on ``domain``."""
        if isinstance(self.config, dict):
            return self.config[domain]
        return self.config


MODELS: Registry[ModelSpec] = Registry("model")
SAMPLERS: Registry[type] = Registry("sampler")
REGULARIZERS: Registry[type] = Registry("decoder regulariser")
LATENTS: Registry[type] = Registry("latent type")
DOMAINS: Registry[Any] = Registry("domain")


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a :class:`ModelSpec` to :data:`MODELS`."""
    MODELS.register(spec.name, spec)
    return spec


def load_all() -> None:
    """Import the modules that register entries (idempotent; keeps package import light)."""
    from . import latents, regularizers, samplers, samplers_learned, selfies_codec  # noqa: F401  (selfies is imported lazily inside)
    from .models import sequence  # noqa: F401
    from .domains import molecules, expressions  # noqa: F401

    for optional in ("discrete_rae.models.images", "discrete_rae.domains.images",
                     "discrete_rae.models.discrete"):
        try:
            __import__(optional)
        except ModuleNotFoundError as err:  # a family that has not landed yet
            if err.name != optional:
                raise
