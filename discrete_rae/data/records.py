"""Reading SMILES records from text files (``.smi``/``.txt``/``.csv``/``.tsv``, optionally gzipped).

Every bad line is counted in a :class:`~discrete_rae.data.errors.LoadReport` by reason (with
examples); a file that cannot be used at all (missing, binary, wrong column) is a one-line
:class:`~discrete_rae.data.errors.DataError`.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import sys
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from .canonical import _quiet_rdkit
from .errors import DataError, LoadReport

logger = logging.getLogger(__name__)

#: Records longer than this (characters) are rejected as ``too_long``.
MAX_LINE_CHARS = 10_000

#: Header names recognised as the SMILES column (compared case-insensitively).
SMILES_HEADERS = ("smiles", "smi", "canonical_smiles", "isomeric_smiles")

_BINARY_PROBE_BYTES = 1 << 16


@dataclass
class _Records:
    texts: list[str]
    lines: array  # physical line number of each record (1-based)
    column: str  # description of the column used


def _open_binary(path: Path, label: str) -> io.BufferedIOBase:
    """Open ``path`` for reading bytes, transparently gunzipping; reject binary content."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except OSError as exc:
        raise DataError(f"{label}: cannot open the file ({exc.strerror or exc})") from None
    if magic == b"\x1f\x8b":
        raw: Any = gzip.open(path, "rb")
    elif path.name.lower().endswith(".gz"):
        raise DataError(f"{label}: not a gzip file although its name ends in .gz")
    else:
        raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
    try:
        probe = raw.peek(_BINARY_PROBE_BYTES)[:_BINARY_PROBE_BYTES] if hasattr(raw, "peek") else b""
    except (OSError, EOFError, zlib.error) as exc:
        raw.close()
        raise DataError(f"{label}: cannot read the gzip stream ({exc})") from None
    if _mostly_nul_lines(probe):
        raw.close()
        raise DataError(f"{label}: looks like a binary file (NUL bytes), expected text with one SMILES per line")
    if not probe:
        raw.close()
        raise DataError(f"{label}: the file is empty")
    return raw


def _mostly_nul_lines(probe: bytes) -> bool:
    """A binary file: at least half of the non-blank lines of the probe hold a NUL byte.

    One stray NUL in a text file only spoils its line, which is then a counted bad record
    wherever it is (before, a NUL in the first 64 KiB rejected the whole file).
    """
    if b"\x00" not in probe:
        return False
    lines = [line for line in probe.split(b"\n") if line.strip()]
    return 2 * sum(b"\x00" in line for line in lines) >= len(lines)


def _split_fields(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return line.split()
    return [f.strip() for f in line.split(delimiter)]


def _looks_like_header(fields: Sequence[str], is_csv: bool, column: str | int | None = None) -> bool:
    """True when a first record is a header row.

    A header: a field named like a SMILES column, or like the requested ``column``. Otherwise a
    CSV row is a header only when its SMILES field (``column`` if an index, else the first) is
    not a molecule and no field is a number (so a header without the requested name is still
    taken as one, and the error lists its columns) (header rows hold names; a data row whose molecule
    is broken is a bad record, counted like any other, not a header).
    """
    names = [f.strip().lower() for f in fields]
    if any(n in SMILES_HEADERS for n in names):
        return True
    by_index = isinstance(column, int) or (isinstance(column, str) and column.strip().isdigit())
    if isinstance(column, str) and column and not by_index and column.strip().lower() in names:
        return True
    if not is_csv or not fields:
        return False
    col = int(column) if by_index else 0
    if col >= len(fields) or any(_is_number(f) for f in fields):
        return False
    from rdkit import Chem

    with _quiet_rdkit():
        return Chem.MolFromSmiles(fields[col].strip()) is None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _pick_column(header: list[str] | None, column: str | int | None, label: str) -> tuple[int, str]:
    """Index and description of the SMILES column."""
    if column is None:
        if header is not None:
            lowered = [h.strip().lower() for h in header]
            for name in SMILES_HEADERS:
                if name in lowered:
                    i = lowered.index(name)
                    return i, f"{header[i]!r} (column {i})"
            return 0, f"{header[0]!r} (column 0, first column: no header named smiles)"
        return 0, "column 0 (no header)"
    if isinstance(column, int) or (isinstance(column, str) and column.strip().isdigit()):
        i = int(column)
        width = len(header) if header is not None else None
        if i < 0 or (width is not None and i >= width):
            raise DataError(f"{label}: column index {i} out of range (the file has {width} columns)")
        name = f"{header[i]!r} " if header is not None else ""
        return i, f"{name}(column {i})"
    if header is None:
        raise DataError(
            f"{label}: column {column!r} requested but the file has no header row; "
            "give the column as a 0-based index instead"
        )
    names = [h.strip() for h in header]
    if column in names:
        i = names.index(column)
    elif column.lower() in [n.lower() for n in names]:
        i = [n.lower() for n in names].index(column.lower())
    else:
        raise DataError(f"{label}: no column {column!r}; available columns: {', '.join(repr(n) for n in names)}")
    return i, f"{header[i]!r} (column {i})"


def _read_records(path: Path, label: str, column: str | int | None, report: LoadReport) -> _Records:
    """Read the SMILES column of a text / CSV file (gzip detected from the content)."""
    name = path.name.lower()
    base = name[:-3] if name.endswith(".gz") else name
    delimiter: str | None
    if base.endswith(".csv"):
        delimiter, is_csv = ",", True
    elif base.endswith(".tsv"):
        delimiter, is_csv = "\t", True
    else:
        delimiter, is_csv = None, False
    raw = _open_binary(path, label)
    texts: list[str] = []
    lines = array("l")
    old_limit = csv.field_size_limit()
    try:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
        if not is_csv:
            # plain text: sniff a comma-separated file saved as .txt/.smi
            first = text.readline()
            while first and not first.strip():
                first = text.readline()
            if "," in first and len(first.split()) <= 1:
                delimiter, is_csv = ",", True
            text.seek(0)
        if is_csv:
            csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
            reader = csv.reader(text, delimiter=delimiter or ",")
            rows: Iterator[tuple[int, list[str]]] = ((reader.line_num, row) for row in reader)
        else:
            rows = enumerate(text, 1)  # type: ignore[assignment]  # (lineno, raw line)
        header: list[str] | None = None
        col, desc = 0, ""
        # first non-blank record: header detection and column choice
        for lineno, row in rows:
            fields = row if is_csv else row.split()
            if not fields or not any(f.strip() for f in fields):
                report.blank += 1
                continue
            if _looks_like_header(fields, is_csv, column):
                header = [f.strip() for f in fields]
                col, desc = _pick_column(header, column, label)
                report.notes.append(f"header row {header[:8]}; SMILES from {desc}")
                logger.info("%s: line %d taken as the header row %s", label, lineno, header[:8])
            else:
                col, desc = _pick_column(None, column, label)
                if col >= len(fields):
                    raise DataError(
                        f"{label}: column index {col} out of range (the first record, line {lineno}, "
                        f"has {len(fields)} field{'s' if len(fields) != 1 else ''})"
                    )
                report.notes.append(f"no header row; SMILES from {desc}")
                if is_csv:
                    logger.info("%s: no header row (line %d is data); SMILES from %s", label, lineno, desc)
                _take(fields, col, lineno, report, texts, lines)
            break
        # the rest, in a tight loop
        records = report.records
        blank = report.blank
        append, line_append = texts.append, lines.append
        maxsplit = col + 1
        for lineno, row in rows:
            fields = row if is_csv else row.split(None, maxsplit)
            if not fields or not any(fields):
                blank += 1
                continue
            records += 1
            if col < len(fields):
                smi = fields[col].strip() if is_csv else fields[col]
                if smi and len(smi) <= MAX_LINE_CHARS:
                    append(smi)
                    line_append(lineno)
                    continue
            _reject_field(fields, col, lineno, report)
        report.records = records
        report.blank = blank
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{label}: cannot read the file ({exc})") from None
    except csv.Error as exc:
        raise DataError(f"{label}: malformed CSV ({exc})") from None
    finally:
        csv.field_size_limit(old_limit)
        raw.close()
    if report.records == 0:
        what = "only a header row" if header is not None else "only blank lines"
        raise DataError(f"{label}: the file is empty ({what}, no data records)")
    return _Records(texts, lines, desc)


def _take(fields: list[str], col: int, lineno: int, report: LoadReport, texts: list[str], lines: array) -> None:
    """Count one record; keep its SMILES field or reject it."""
    report.records += 1
    if col < len(fields):
        smi = fields[col].strip()
        if smi and len(smi) <= MAX_LINE_CHARS:
            texts.append(smi)
            lines.append(lineno)
            return
    _reject_field(fields, col, lineno, report)


def _reject_field(fields: list[str], col: int, lineno: int, report: LoadReport) -> None:
    """Record why the SMILES field of a record is unusable."""
    where = f"line {lineno}"
    if col >= len(fields):
        report.reject("missing_column", where, " ".join(fields))
        return
    smi = fields[col].strip()
    if not smi:
        report.reject("empty_field", where, " ".join(fields))
    else:
        report.reject("too_long", where, smi)

