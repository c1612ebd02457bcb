"""discrete_rae: regularized autoencoders for discrete and structured data.

The package never configures logging on import; the CLI does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .version import __version__


def load(run_dir: str | Path, device: Any = "cpu") -> Any:
    """A trained run as a :class:`discrete_rae.api.Model` (``sample``, ``encode``, ``decode``,
    ``reconstruct``); see :mod:`discrete_rae.api`. Imported lazily: ``import discrete_rae`` stays light."""
    from .api import load as _load

    return _load(run_dir, device)


__all__ = ["__version__", "load"]
