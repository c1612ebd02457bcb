"""Constants and small helpers shared by the grammar modules (no imports from them)."""

from __future__ import annotations

import re

#: Left-hand side of the padding (no-op) rule.
PAD_LHS = "Nothing"

_HEADER_RE = re.compile(r"^\s*#\s*(max_length|joiner|skip_whitespace|name)\s*:\s*(.*?)\s*$")
_INF = 10**12  # "no finite derivation" in minimal-length computations


def _short(text: str, limit: int = 120) -> str:
    """Repr of ``text`` cut to about ``limit`` characters for error messages."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
