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

__all__ = ["DataError", "LoadReport", "MAX_EXAMPLES", "MIN_TRAIN", "MIN_VAL", "drop_counts", "describe_drops",
           "check_split_sizes"]

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

    def counts(self) -> dict[str, Any]:
        """The counts only (no examples, notes or histogram): what a run records of its load."""
        return {"records": self.records, "examined": self.examined, "kept": self.kept,
                "duplicates": self.duplicates, "rejected": dict(self.rejected)}

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


# --------------------------------------------------------------------------------------
# What preparation dropped, and the smallest data set a run accepts
# --------------------------------------------------------------------------------------

#: Fewest training examples a run accepts: the ex-post Gaussian sampler fits a covariance to
#: the training codes, and one code has none (two give a rank-one estimate plus the ridge).
MIN_TRAIN = 2
#: Fewest validation examples: the validation loss steers early stopping, the learning-rate
#: schedule and the choice of the best weights.
MIN_VAL = 1


def drop_counts(load_counts: dict[str, Any] | None, encode_failures: dict[str, int] | None,
                too_long: int) -> dict[str, int]:
    """Examples lost between the source and the splits, by reason (only non-zero counts).

    ``load_counts`` is :meth:`LoadReport.counts` of the loader (records it rejected, by reason,
    and duplicates), ``encode_failures`` the codec's failures by reason (strings the grammar
    cannot derive) and ``too_long`` the encoded strings longer than the model's max_length.
    """
    out: dict[str, int] = {}
    if load_counts:
        for reason, count in dict(load_counts.get("rejected", {})).items():
            out[f"rejected by the loader ({reason})"] = int(count)
        out["duplicates"] = int(load_counts.get("duplicates", 0))
    out["not encodable (grammar/vocabulary)"] = int(sum((encode_failures or {}).values()))
    out["longer than max_length"] = int(too_long)
    return {k: v for k, v in out.items() if v}


def describe_drops(info: dict[str, Any]) -> str:
    """One phrase: what preparation kept and dropped by reason (from a Prepared.info dict)."""
    dropped = info.get("dropped")
    if dropped is None:
        return f"{info.get('n_train', 0)} train / {info.get('n_val', 0)} val / {info.get('n_test', 0)} test"
    lost = sum(dropped.values())
    reasons = ", ".join(f"{n:,} {why}" + (f" {info.get('max_length')}" if why == "longer than max_length" else "")
                        for why, n in dropped.items()) or "none"
    kept = int(info.get("n_kept", 0))
    return (f"{kept + lost:,} read, {lost:,} dropped ({reasons}), {kept:,} left: "
            f"{info.get('n_train', 0)} train / {info.get('n_val', 0)} val / {info.get('n_test', 0)} test")


def check_split_sizes(dataset: str, n_train: int, n_val: int, info: dict[str, Any]) -> None:
    """Raise :class:`DataError` when the splits are too small to train a run and fit its samplers."""
    if n_train >= MIN_TRAIN and n_val >= MIN_VAL:
        return
    raise DataError(
        f"data set {dataset!r} is too small: {describe_drops(info)}; a run needs at least {MIN_TRAIN} train "
        f"and {MIN_VAL} val example ({MIN_TRAIN} because the ex-post Gaussian sampler fits a covariance to the "
        f"training codes; {MIN_VAL} because the validation loss drives early stopping and the best weights). "
        "Use a larger data set, or raise --n-train or --max-length"
    )
