"""Molecule data sets: SMILES from MOSES, RDKit's NCI sample, ZINC-250k or a file.

Every loader returns a :class:`MoleculeData`: RDKit-canonical SMILES (default
canonical form with stereochemistry, ``Chem.MolToSmiles(mol)``; with ``kekulize=True``
canonical Kekule SMILES, no aromatic atoms), deduplicated on the canonical form, plus a :class:`~discrete_rae.data.errors.LoadReport` that
counts what was read, kept and rejected (by reason, with examples). A bad record
never raises; a source that cannot be used at all raises a one-line
:class:`~discrete_rae.data.errors.DataError`.

Sources (``load_molecules(source, ...)``):

* ``"moses"`` (= ``"moses:train"``), ``"moses:test"``, ``"moses:test_scaffolds"``:
  the CSV files shipped in the ``molsets`` wheel (``pip install --no-deps
  molsets==0.3.1``; the package itself is never imported), or the same files put in
  ``<data_dir>/moses/``. ``train.csv.gz`` is *not* shuffled: a subset of ``n`` is a
  seeded random sample, never the head of the file.
* ``"nci5k"``: the 4,999 NCI molecules bundled with RDKit
  (``RDConfig.RDDataDir/NCI/first_5K.smi``, SMILES and NSC number per line).
* ``"zinc250k"``: ``250k_rndm_zinc_drugs_clean_3.csv`` of the chemical VAE
  repository, downloaded into ``<data_dir>/zinc250k/`` when the internet is
  reachable. The file's md5 is checked against the value published with
  TorchDrug's loader and its sha256 is recorded at first use and verified on every
  later use (trust on first use, see ``datasets/manifest.json``). Offline the loader
  raises a :class:`DataError` that says how to supply the file.
* a path to ``.smi``, ``.txt``, ``.csv``, ``.tsv`` (optionally ``.gz``; gzip is
  detected from the content): the SMILES column is the header column named
  ``smiles`` (any case; also ``smi``, ``canonical_smiles``, ``isomeric_smiles``) or
  else the first column; ``column=`` (a header name or a 0-based index) overrides.
  ``.smi``/``.txt`` lines are split on whitespace (SMILES hold none).

Subsets: with ``n`` smaller than the number of records, the records are visited in
a random order drawn from ``seed`` and the first ``n`` distinct valid molecules are
kept (so the result depends only on the file, ``n`` and ``seed``; not on the number
of worker processes). Without ``n`` (or when ``n`` covers the file) the file order
is kept.

Loads of files of 1 MB or more are cached in ``<data_dir>/cache/mol-<key>.txt.gz``
(molecules) + ``.json`` (report), keyed by the file's sha256, column, ``n``, ``seed``,
``canonicalize`` and the RDKit version, so that a second run skips RDKit
(``cache=`` controls it).

The data directory (downloads, caches) is ``$DISCRETE_RAE_DATA`` or else
``./datasets`` relative to the working directory (:func:`default_data_dir`).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import hashlib
import importlib.util
import io
import json
import logging
import math
import multiprocessing
import os
import secrets
import sys
import zlib
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .errors import DataError, LoadReport

logger = logging.getLogger(__name__)

__all__ = [
    "MoleculeData",
    "load_molecules",
    "moses_split",
    "moses_path",
    "nci5k_path",
    "zinc250k_path",
    "default_data_dir",
    "canonicalize_smiles",
    "kekulize_smiles",
    "DATASETS",
    "MAX_LINE_CHARS",
]

#: Records longer than this (characters) are rejected as ``too_long``.
MAX_LINE_CHARS = 10_000

#: Named molecule sources accepted by :func:`load_molecules`.
DATASETS = ("moses", "moses:train", "moses:test", "moses:test_scaffolds", "nci5k", "zinc250k")

MOSES_SPLITS = ("train", "test", "test_scaffolds")

ZINC250K_FILENAME = "250k_rndm_zinc_drugs_clean_3.csv"
ZINC250K_URLS = (
    "https://raw.githubusercontent.com/aspuru-guzik-group/chemical_vae/master/models/zinc_properties/"
    + ZINC250K_FILENAME,
    "https://raw.githubusercontent.com/aspuru-guzik-group/chemical_vae/main/models/zinc_properties/"
    + ZINC250K_FILENAME,
)
#: md5 of the upstream file as published in TorchDrug's ZINC250k loader (``md5 = ...``).
ZINC250K_MD5 = "b59078b2b04c6e9431280e3dc42048d5"

#: Header names recognised as the SMILES column (compared case-insensitively).
SMILES_HEADERS = ("smiles", "smi", "canonical_smiles", "isomeric_smiles")

_AUTO_WORKERS_MIN_RECORDS = 20_000  # workers=None: use processes from this many records on
_CACHE_MIN_BYTES = 1 << 20  # cache=None: cache loads of files at least this large
_LOAD_CACHE_VERSION = 1
_BINARY_PROBE_BYTES = 1 << 16


# --------------------------------------------------------------------------------------
# Result container
# --------------------------------------------------------------------------------------


@dataclass
class MoleculeData:
    """Loaded molecules.

    Attributes:
        smiles: canonical (unless loaded with ``canonicalize=False``), distinct SMILES.
        report: what was read, kept and rejected.
    """

    smiles: list[str]
    report: LoadReport = field(repr=False)

    @property
    def texts(self) -> list[str]:
        """Alias of :attr:`smiles` (the strings a model is trained on)."""
        return self.smiles

    def __len__(self) -> int:
        return len(self.smiles)


# --------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """``$DISCRETE_RAE_DATA`` if set, else ``./datasets`` (relative to the working directory)."""
    env = os.environ.get("DISCRETE_RAE_DATA")
    return Path(env).expanduser() if env else Path.cwd() / "datasets"


def _moses_dirs(data_dir: Path | None) -> list[Path]:
    """Candidate folders holding the MOSES csv.gz files, in order of preference."""
    dirs = [Path(data_dir or default_data_dir()) / "moses"]
    # find_spec on a top-level name locates the package without executing it
    # (molsets does not import on Python 3.11; its data files are all we need)
    try:
        spec = importlib.util.find_spec("moses")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        dirs += [Path(p) / "dataset" / "data" for p in spec.submodule_search_locations]
    for entry in sys.path:
        if entry:
            dirs.append(Path(entry) / "moses" / "dataset" / "data")
    return dirs


def moses_path(split: str = "train", data_dir: Path | None = None) -> Path:
    """Path of a MOSES split file (``train``, ``test`` or ``test_scaffolds``).

    Looks in ``<data_dir>/moses/`` first, then in the installed ``molsets`` wheel.

    Raises:
        DataError: unknown split or files not found.
    """
    if split not in MOSES_SPLITS:
        raise DataError(f"moses: unknown split {split!r}; choose one of {', '.join(MOSES_SPLITS)}")
    for d in _moses_dirs(data_dir):
        f = d / f"{split}.csv.gz"
        if f.is_file():
            return f
    raise DataError(
        f"moses: {split}.csv.gz not found; install the data files with "
        f"`pip install --no-deps molsets==0.3.1` or put {split}.csv.gz in "
        f"{Path(data_dir or default_data_dir()) / 'moses'}"
    )


def nci5k_path() -> Path:
    """Path of RDKit's bundled ``NCI/first_5K.smi`` (4,999 molecules)."""
    from rdkit import RDConfig

    f = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    if not f.is_file():
        raise DataError(f"nci5k: {f} not found in this RDKit installation")
    return f


def _sha256_file(path: Path) -> str:
    """sha256 hex digest of a file; an unreadable file is a :class:`DataError`."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    return h.hexdigest()


def _open_temp_beside(path: Path, suffix: str = ".tmp") -> tuple[Any, Path]:
    """A new hidden temporary file next to ``path`` (for atomic replace), opened ``"xb"``.

    Unlike ``tempfile.mkstemp`` (mode 0600) the file gets the default permissions of
    the umask, so the renamed result is readable like any other file.
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")
        try:
            return open(tmp, "xb"), tmp  # noqa: SIM115 - the caller closes it
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file next to {path}")


def _urlopen(url: str, timeout: float) -> Any:
    """``urllib.request.urlopen`` (a seam so tests never touch the network)."""
    import urllib.request

    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (fixed https URLs)


def _download(url: str, dest: Path, timeout: float = 60.0) -> tuple[str, str]:
    """Stream ``url`` into ``dest`` atomically; return (md5, sha256) of the content."""
    md5, sha = hashlib.md5(), hashlib.sha256()  # noqa: S324 (md5 only to compare with the published value)
    out, tmp = _open_temp_beside(dest, ".part")
    try:
        with out, contextlib.closing(_urlopen(url, timeout)) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                md5.update(block)
                sha.update(block)
                out.write(block)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return md5.hexdigest(), sha.hexdigest()


def zinc250k_path(data_dir: Path | None = None, download: bool = True) -> Path:
    """Path of ``250k_rndm_zinc_drugs_clean_3.csv`` in ``<data_dir>/zinc250k/``, downloading it if needed.

    Integrity: a download must match the md5 published with TorchDrug's loader
    (:data:`ZINC250K_MD5`). The sha256 of the file is written next to it
    (``.sha256``) at first use -- download or a file put there by hand -- and every
    later use verifies it (trust on first use: no sha256 of the upstream file is
    published).

    Raises:
        DataError: offline / download failed (the message says how to supply the
            file), checksum mismatch.
    """
    folder = Path(data_dir or default_data_dir()) / "zinc250k"
    target = folder / ZINC250K_FILENAME
    record = folder / (ZINC250K_FILENAME + ".sha256")
    if target.is_file():
        digest = _sha256_file(target)
        if record.is_file():
            words = record.read_text(encoding="utf-8").split()
            expected = words[0] if words else ""
            if digest != expected:
                raise DataError(
                    f"zinc250k: {target} has sha256 {digest[:16]}..., but {expected[:16]}... was recorded "
                    f"at first use in {record}; the file changed. Delete both files to download it again"
                )
        else:
            _write_text_atomic(record, f"{digest}  {ZINC250K_FILENAME}\n")
            logger.info("zinc250k: recorded sha256 %s of %s (trust on first use)", digest, target)
        return target
    how = (
        f"download {ZINC250K_FILENAME} (from {ZINC250K_URLS[0]}) on a machine with internet access and "
        f"pass it with --dataset /path/to/{ZINC250K_FILENAME}, or put it at {target}"
    )
    if not download:
        raise DataError(f"zinc250k: {target} not found; {how}")
    folder.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in ZINC250K_URLS:
        logger.info("zinc250k: downloading %s", url)
        try:
            md5, digest = _download(url, target)
        except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts are OSErrors
            errors.append(f"{url}: {exc}")
            continue
        if md5 != ZINC250K_MD5:
            with contextlib.suppress(OSError):
                target.unlink()
            raise DataError(
                f"zinc250k: the file downloaded from {url} has md5 {md5}, not the published {ZINC250K_MD5}; "
                f"it was not kept. {how}"
            )
        _write_text_atomic(record, f"{digest}  {ZINC250K_FILENAME}\n")
        logger.info("zinc250k: downloaded to %s (sha256 %s recorded)", target, digest)
        return target
    reason = errors[-1] if errors else "no URL"
    raise DataError(f"zinc250k: {target} not found and the download failed ({reason}); {how}")


def _write_text_atomic(path: Path, text: str) -> None:
    fh, tmp = _open_temp_beside(path)
    try:
        with fh:
            fh.write(text.encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------
# Canonicalisation
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_rdkit() -> Iterator[None]:
    """Silence RDKit's per-molecule error messages for the duration of the block."""
    from rdkit import rdBase

    if hasattr(rdBase, "BlockLogs"):
        blocker = rdBase.BlockLogs()
        try:
            yield
        finally:
            del blocker
    else:  # pragma: no cover - old RDKit
        from rdkit import RDLogger

        RDLogger.DisableLog("rdApp.*")
        try:
            yield
        finally:
            RDLogger.EnableLog("rdApp.error")


def _rejection_reason(smiles: str) -> str:
    """Why RDKit rejects ``smiles`` (called only on failures)."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None:
        return "invalid_smiles"
    try:
        Chem.SanitizeMol(mol)
    except Chem.AtomValenceException:
        return "valence"
    except Chem.KekulizeException:
        return "aromaticity"
    except Exception:  # noqa: BLE001 - any other sanitisation failure
        return "sanitization"
    return "rdkit"


def canonicalize_smiles(smiles: str) -> tuple[str | None, str]:
    """RDKit canonical SMILES of ``smiles`` (``Chem.MolToSmiles(Chem.MolFromSmiles(s))``).

    Returns:
        ``(canonical, "")`` or ``(None, reason)`` with reason one of
        ``invalid_smiles`` (syntax), ``valence``, ``aromaticity`` (kekulisation),
        ``sanitization``, ``empty_molecule``. RDKit's own messages are not printed.
    """
    from rdkit import Chem

    with _quiet_rdkit():
        return _canonical_one(Chem, smiles)


def _canonical_one(chem: Any, smiles: str, kekulize: bool = False) -> tuple[str | None, str]:
    mol = chem.MolFromSmiles(smiles)
    if mol is None:
        return None, _rejection_reason(smiles)
    if mol.GetNumAtoms() == 0:
        return None, "empty_molecule"
    if kekulize:
        return kekule_smiles_of(chem, mol)
    return chem.MolToSmiles(mol), ""


def kekule_smiles_of(chem: Any, mol: Any) -> tuple[str | None, str]:
    """Canonical Kekule SMILES of a sanitized molecule: no aromatic atoms, explicit ``=`` bonds.

    ``Chem.Kekulize(mol, clearAromaticFlags=True)`` then ``MolToSmiles(kekuleSmiles=True)``
    (canonical atom order). Returns ``(smiles, "")`` or ``(None, "aromaticity")``.
    """
    try:
        chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception:  # noqa: BLE001 - RDKit raises KekulizeException
        return None, "aromaticity"
    return chem.MolToSmiles(mol, kekuleSmiles=True), ""


def kekulize_smiles(smiles: str) -> tuple[str | None, str]:
    """Canonical Kekule SMILES of ``smiles`` (see :func:`kekule_smiles_of`), or ``(None, reason)``."""
    from rdkit import Chem

    with _quiet_rdkit():
        return _canonical_one(Chem, smiles, kekulize=True)


def _canonical_chunk(texts: list[str], kekulize: bool = False) -> list[tuple[str | None, str]]:
    """Canonicalise (optionally kekulise) a chunk (runs in worker processes too)."""
    from rdkit import Chem

    with _quiet_rdkit():
        return [_canonical_one(Chem, s, kekulize) for s in texts]


def _identity_chunk(texts: list[str]) -> list[tuple[str | None, str]]:
    return [(s, "") for s in texts]


def _worker_init() -> None:
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")  # our own worker process: silence RDKit for its lifetime


# --------------------------------------------------------------------------------------
# Reading records
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Validation / canonicalisation driver
# --------------------------------------------------------------------------------------


def _resolve_workers(workers: int | None, n_work: int) -> int:
    if workers is None:
        if n_work < _AUTO_WORKERS_MIN_RECORDS:
            return 1
        return max(1, min(os.cpu_count() or 1, 8))
    return max(1, int(workers))


def _process(
    records: _Records,
    report: LoadReport,
    n: int | None,
    seed: int,
    workers: int | None,
    progress: bool,
    canonicalize: bool,
    label: str,
    kekulize: bool = False,
) -> list[str]:
    """Canonicalise + deduplicate records in file order or a seeded random order until ``n`` are kept."""
    from tqdm.auto import tqdm

    total = len(records.texts)
    subset = n is not None and n < report.records
    if subset:
        order: np.ndarray | range = np.random.default_rng(seed).permutation(total)
        report.notes.append(f"random subset: records visited in an order drawn with seed {seed}")
    else:
        order = range(total)
    target = n if subset else None
    fn: Callable[[list[str]], list[tuple[str | None, str]]] = (
        functools.partial(_canonical_chunk, kekulize=kekulize) if (canonicalize or kekulize) else _identity_chunk)
    n_workers = _resolve_workers(workers, total if target is None else min(total, 2 * target))
    if not (canonicalize or kekulize):
        n_workers = 1
    texts, lines = records.texts, records.lines
    kept: list[str] = []
    seen: set[str] = set()
    pos = 0
    bar = tqdm(total=target or total, disable=not progress, desc=f"load {label}", unit="mol")
    pool = None
    try:
        if n_workers > 1:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            pool = ctx.Pool(n_workers, initializer=_worker_init)
        while pos < total:
            if target is None:
                size = total - pos
            else:
                need = target - len(kept)
                # a little more than needed, as some records are rejected or duplicates
                size = min(total - pos, max(64, int(need * 1.1) + 32))
            idx = order[pos : pos + size]
            pos += len(idx)
            if pool is None:
                step = 5000
            else:
                step = max(32, min(2000, math.ceil(len(idx) / (2 * n_workers))))
            chunks = [idx[i : i + step] for i in range(0, len(idx), step)]
            payloads = ([texts[int(i)] for i in c] for c in chunks)
            results = pool.imap(fn, payloads) if pool is not None else map(fn, payloads)
            done = False
            for chunk, res in zip(chunks, results):
                if done:
                    # target reached: drain the round's remaining results so the pool can be
                    # closed gracefully (Pool.terminate() with tasks in flight can deadlock)
                    continue
                for i, (smi, reason) in zip(chunk, res):
                    i = int(i)
                    report.examined += 1
                    if smi is None:
                        report.reject(reason, f"line {lines[i]}", texts[i])
                    elif smi in seen:
                        report.duplicates += 1
                    else:
                        if smi == texts[i]:
                            smi = texts[i]  # share the input's string object (saves memory)
                        else:
                            report.changed += 1
                        seen.add(smi)
                        kept.append(smi)
                        if target is not None:
                            bar.update(1)
                            if len(kept) >= target:
                                done = True
                                break
                if target is None:
                    bar.update(len(chunk))
            if done:
                break
        if pool is not None:
            pool.close()
            pool.join()
            pool = None
    finally:
        bar.close()
        if pool is not None:  # only after an error / interrupt
            pool.terminate()
            pool.join()
    return kept


# --------------------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------------------


def _resolve_source(source: str, data_dir: Path | None) -> tuple[Path, str, dict[str, Any]]:
    """Map a source name or path to (file, label, read options)."""
    key = source.strip()
    low = key.lower()
    if low in ("moses", "moses:train"):
        return moses_path("train", data_dir), "moses:train", {"column": "SMILES"}
    if low.startswith("moses:"):
        split = low.split(":", 1)[1]
        return moses_path(split, data_dir), f"moses:{split}", {"column": "SMILES"}
    if low == "nci5k":
        return nci5k_path(), "nci5k", {"column": 0}
    if low == "zinc250k":
        return zinc250k_path(data_dir), "zinc250k", {"column": "smiles"}
    path = Path(key).expanduser()
    if not path.exists() and not path.is_absolute():
        alt = Path(data_dir or default_data_dir()) / key
        if alt.exists():
            path = alt
    if not path.exists():
        raise DataError(
            f"{source}: no such file, and not a known data set (known: {', '.join(DATASETS)})"
        )
    if path.is_dir():
        raise DataError(f"{source}: is a directory, expected a SMILES file (.smi, .txt, .csv, optionally .gz)")
    return path, str(path), {}


def load_molecules(
    source: str,
    n: int | None = None,
    seed: int = 0,
    data_dir: Path | None = None,
    column: str | int | None = None,
    progress: bool = True,
    workers: int | None = None,
    canonicalize: bool = True,
    cache: bool | None = None,
    kekulize: bool = False,
) -> MoleculeData:
    """Load, validate, canonicalise and deduplicate molecules.

    Args:
        source: ``"moses"`` / ``"moses:train"`` / ``"moses:test"`` /
            ``"moses:test_scaffolds"``, ``"nci5k"``, ``"zinc250k"``, or a path to a
            ``.smi``/``.txt``/``.csv``/``.tsv`` file (optionally gzipped).
        n: number of molecules wanted; ``None`` = all. With ``n`` below the number
            of records a seeded random subset is returned (in that random order).
        seed: seed of the subset.
        data_dir: data directory (downloads); default :func:`default_data_dir`.
        column: SMILES column (header name or 0-based index) for files; default:
            the header column named smiles, else the first column.
        progress: show a progress bar.
        workers: processes for RDKit; ``None`` = all cores (at most 8) for 20,000
            records or more, else 1.
        canonicalize: if False, records are only stripped and deduplicated (no
            RDKit): for files already in canonical form (e.g. MOSES), much faster.
        kekulize: write every molecule as canonical Kekule SMILES (no aromatic atoms,
            explicit double bonds; :func:`kekule_smiles_of`); implies RDKit processing.
            Molecules that cannot be kekulised are rejected (reason ``aromaticity``).
        cache: keep the result in ``<data_dir>/cache/mol-<key>.txt.gz`` (+ ``.json``
            with the report) and reuse it when the same file (by sha256) is loaded
            with the same column, n, seed, canonicalize, kekulize and RDKit version. ``None``
            (default): only for files of 1 MB or more, where canonicalising costs
            seconds to minutes (full MOSES: about 220 CPU seconds).

    Returns:
        :class:`MoleculeData`; fewer than ``n`` molecules (with a warning) when the
        source does not hold ``n`` distinct valid ones.

    Raises:
        DataError: unknown source, missing / empty / binary file, wrong column, no
            valid molecule at all, zinc250k unavailable offline.
    """
    if n is not None and n <= 0:
        raise DataError(f"{source}: n must be positive, got {n}")
    path, label, opts = _resolve_source(str(source), data_dir)
    if column is None:
        column = opts.get("column")
    report = LoadReport(source=label, path=str(path))
    report.sha256 = _sha256_file(path)
    if cache is None:
        cache = path.stat().st_size >= _CACHE_MIN_BYTES
    cache_file = None
    if cache:
        cache_file = _load_cache_path(data_dir, report.sha256, column, n, seed, canonicalize, kekulize)
        hit = _read_load_cache(cache_file, report)
        if hit is not None:
            logger.info("%s: %d molecules loaded from cache %s", label, len(hit), cache_file)
            return MoleculeData(hit, report)
    records = _read_records(path, label, column, report)
    kept = _process(records, report, n, seed, workers, progress, canonicalize, label, kekulize)
    del records
    report.kept = len(kept)
    if kekulize:
        report.notes.append("kekulised: canonical Kekule SMILES (no aromatic atoms)")
    elif not canonicalize:
        report.notes.append("not canonicalised (canonicalize=False): strings as in the file")
    if not kept:
        examples = "; ".join(f"{r}: {ex[0]}" for r, ex in report.examples.items() if ex)
        col_note = next((n.split("SMILES from ", 1)[1] for n in report.notes if "SMILES from " in n), None)
        where = f"; SMILES read from {col_note}, choose another column with column= / --column" if col_note else ""
        raise DataError(f"{label}: no line is a valid molecule ({report.counts_line()}; e.g. {examples}{where})")
    if n is not None and len(kept) < n:
        logger.warning("%s: only %d distinct valid molecules, fewer than the %d requested", label, len(kept), n)
    if report.n_rejected:
        logger.info("%s: %d records rejected: %s", label, report.n_rejected, dict(report.rejected))
    logger.info("%s: %s", label, report.counts_line())
    if cache_file is not None:
        _write_load_cache(cache_file, kept, report)
    return MoleculeData(kept, report)


def _load_cache_path(
    data_dir: Path | None, file_sha256: str, column: Any, n: int | None, seed: int, canonicalize: bool,
    kekulize: bool = False,
) -> Path:
    """Cache file of a load: keyed by everything the result depends on."""
    from rdkit import rdBase

    material = json.dumps(
        {
            "version": _LOAD_CACHE_VERSION,
            "file_sha256": file_sha256,
            "column": column,
            "n": n,
            "seed": seed,
            "canonicalize": canonicalize,
            "rdkit": rdBase.rdkitVersion if (canonicalize or kekulize) else None,
            "max_line_chars": MAX_LINE_CHARS,
            # only present when set, so the keys of existing non-Kekule caches stay valid
            **({"kekulize": True} if kekulize else {}),
        },
        sort_keys=True,
    )
    key = hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]
    return Path(data_dir or default_data_dir()) / "cache" / f"mol-{key}.txt.gz"


def _read_load_cache(cache_file: Path, report: LoadReport) -> list[str] | None:
    """Molecules of a cached load (and restore ``report``), or None when absent / damaged."""
    meta_file = cache_file.with_name(cache_file.name[: -len(".txt.gz")] + ".json")
    if not (cache_file.is_file() and meta_file.is_file()):
        return None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        with gzip.open(cache_file, "rt", encoding="utf-8") as fh:
            smiles = fh.read().split("\n")
        if smiles and smiles[-1] == "":
            smiles.pop()
        if len(smiles) != meta["kept"] or meta.get("sha256") != report.sha256:
            raise ValueError("counts or checksum do not match")
    except Exception as exc:  # noqa: BLE001 - any damage: load from the source again
        logger.warning("load cache %s is unreadable (%s); reading the source again", cache_file, exc)
        return None
    report.records, report.blank, report.examined = meta["records"], meta["blank"], meta["examined"]
    report.kept, report.duplicates, report.changed = meta["kept"], meta["duplicates"], meta.get("changed", 0)
    report.rejected = Counter(meta["rejected"])
    report.examples = {k: list(v) for k, v in meta["examples"].items()}
    report.notes = list(meta["notes"]) + [f"loaded from cache {cache_file.name}"]
    return smiles


def _write_load_cache(cache_file: Path, smiles: list[str], report: LoadReport) -> None:
    """Store a load's molecules + report (atomically; failures only logged)."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        payload = gzip.compress(("\n".join(smiles) + "\n").encode("utf-8"), compresslevel=1)
        fh, tmp = _open_temp_beside(cache_file)
        try:
            with fh:
                fh.write(payload)
            os.replace(tmp, cache_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        meta_file = cache_file.with_name(cache_file.name[: -len(".txt.gz")] + ".json")
        _write_text_atomic(meta_file, json.dumps(report.to_dict(), indent=1) + "\n")
    except OSError as exc:
        logger.warning("could not write the load cache %s: %s", cache_file, exc)


def moses_split(
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    data_dir: Path | None = None,
    progress: bool = True,
    workers: int | None = None,
    canonicalize: bool = True,
    cache: bool | None = None,
) -> MoleculeData:
    """One MOSES split (``"train"``, ``"test"``, ``"test_scaffolds"``); see :func:`load_molecules`."""
    if split not in MOSES_SPLITS:
        raise DataError(f"moses: unknown split {split!r}; choose one of {', '.join(MOSES_SPLITS)}")
    return load_molecules(
        f"moses:{split}", n=n, seed=seed, data_dir=data_dir, progress=progress, workers=workers,
        canonicalize=canonicalize, cache=cache,
    )
