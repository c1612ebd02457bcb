"""Errors and rejection reports of the data loaders.

* :class:`DataError` -- a user-facing problem with an input (a missing, empty or
  binary file, a wrong column name, a data set that cannot be found offline, ...).
  Its message is one line that names the input and says what is wrong, so that the
  command line can print it without a traceback.
* :class:`LoadReport` -- what a loader read, kept and rejected (counts by reason with
  a few examples each). Bad records are never fatal: they are counted here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DataError", "LoadReport", "MAX_EXAMPLES"]

#: Examples kept per rejection reason.
MAX_EXAMPLES = 5


from ..errors import DataError  # noqa: E402,F401  (defined with the other user errors; re-exported)


def _clip(text: str, limit: int = 80) -> str:
    """``repr`` of ``text``, cut to about ``limit`` characters (length noted when cut)."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text):,} chars)"


@dataclass
class LoadReport:
    """Counts of what a loader did with its input.

    Attributes:
        source: the data set name or path as given.
        path: the file actually read (None for generated data).
        sha256: sha256 of that file (None when not computed).
        records: data records in the input (header and blank lines excluded).
        blank: blank lines / rows skipped.
        examined: records validated (fewer than ``records`` when a random subset
            was drawn: records are examined in a seeded random order until enough
            are kept).
        kept: records returned.
        duplicates: valid records dropped because an equal (canonical) one was kept.
        changed: kept records whose canonical form differs from the input string.
        rejected: count of rejected records per reason.
        examples: up to :data:`MAX_EXAMPLES` examples per reason
            (``"line 12: 'C1CC'"``).
        lengths: optional histogram ``{derivation length: count}`` of the kept records.
        notes: free-form remarks (header detection, subset drawing, ...).
    """

    source: str
    path: str | None = None
    sha256: str | None = None
    records: int = 0
    blank: int = 0
    examined: int = 0
    kept: int = 0
    duplicates: int = 0
    changed: int = 0
    rejected: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    lengths: dict[int, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def n_rejected(self) -> int:
        """Total number of rejected records."""
        return int(sum(self.rejected.values()))

    def reject(self, reason: str, where: str, text: str) -> None:
        """Count one rejected record and keep it as an example if there are few so far."""
        self.rejected[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(f"{where}: {_clip(text)}")

    def counts_line(self) -> str:
        """The counts on one line (no examples)."""
        parts = [f"{self.records:,} records"]
        if self.examined != self.records:
            parts.append(f"{self.examined:,} examined")
        parts.append(f"{self.kept:,} kept")
        parts.append(f"{self.duplicates:,} duplicates")
        if self.changed:
            parts.append(f"{self.changed:,} rewritten to canonical form")
        rej = f"{self.n_rejected:,} rejected"
        if self.rejected:
            rej += " (" + ", ".join(f"{r} {c:,}" for r, c in self.rejected.most_common()) + ")"
        parts.append(rej)
        if self.blank:
            parts.append(f"{self.blank:,} blank")
        return ", ".join(parts)

    def summary(self) -> str:
        """Human-readable multi-line summary: counts, then examples per rejection reason."""
        head = self.source if self.path is None or self.path == self.source else f"{self.source} ({self.path})"
        lines = [f"{head}: {self.counts_line()}"]
        if self.lengths:
            hist = ", ".join(f"{k}: {v:,}" for k, v in sorted(self.lengths.items()))
            lines.append(f"  derivation lengths: {hist}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        for reason, count in self.rejected.most_common():
            shown = "; ".join(self.examples.get(reason, []))
            lines.append(f"  rejected {reason} ({count:,}): {shown}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "source": self.source,
            "path": self.path,
            "sha256": self.sha256,
            "records": self.records,
            "blank": self.blank,
            "examined": self.examined,
            "kept": self.kept,
            "duplicates": self.duplicates,
            "changed": self.changed,
            "rejected": dict(self.rejected),
            "examples": {k: list(v) for k, v in self.examples.items()},
            "lengths": {str(k): v for k, v in sorted(self.lengths.items())},
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        return self.summary()
