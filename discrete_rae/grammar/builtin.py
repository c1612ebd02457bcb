"""The packaged grammar files (``discrete_rae.grammars``) and their compact forms."""

from __future__ import annotations

from pathlib import Path

from ..errors import GrammarError
from .compact import COMPACT_SUFFIX, compact_grammar_text

# source checkout without installation: grammars/ lies next to the package directory
_SOURCE_GRAMMARS = Path(__file__).resolve().parents[2] / "grammars"


def builtin_names() -> list[str]:
    """Names accepted by :meth:`Grammar.builtin`: the packaged ``.cfg`` files and their ``_compact`` forms."""
    names: set[str] = set()
    try:
        from importlib.resources import files

        names |= {res.name[:-4] for res in files("discrete_rae.grammars").iterdir() if res.name.endswith(".cfg")}
    except (ModuleNotFoundError, ImportError):
        pass
    names |= {path.stem for path in _SOURCE_GRAMMARS.glob("*.cfg")}
    return sorted(names | {name + COMPACT_SUFFIX for name in names})


def _builtin_text(name: str) -> str:
    """Text of a packaged grammar file (``NAME_compact``: that file without unit rules)."""
    if name.endswith(COMPACT_SUFFIX):
        return compact_grammar_text(_builtin_text(name[: -len(COMPACT_SUFFIX)]))
    fname = f"{name}.cfg"
    try:
        from importlib.resources import files

        res = files("discrete_rae.grammars") / fname
        if res.is_file():
            return res.read_text(encoding="utf-8")
    except (ModuleNotFoundError, ImportError):
        pass
    path = _SOURCE_GRAMMARS / fname
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise GrammarError(f"no builtin grammar {name!r} (expected {fname} in discrete_rae.grammars)")
