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

This module holds the loader (:func:`load_molecules`: subsetting, the worker pool,
deduplication); the pieces live beside it and their public names are re-exported here:
:mod:`.molecule_sources` (data set locations, the ZINC-250k download),
:mod:`.records` (reading SMILES records from text files, counting bad lines),
:mod:`.canonical` (RDKit canonicalisation / kekulisation) and :mod:`.load_cache`.
"""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .canonical import (  # noqa: F401  (public names re-exported)
    _canonical_chunk,
    _identity_chunk,
    _worker_init,
    canonicalize_smiles,
    kekule_smiles_of,
    kekulize_smiles,
)
from .errors import DataError, LoadReport
from .load_cache import _load_cache_path, _read_load_cache, _write_load_cache
from .molecule_sources import (  # noqa: F401  (re-exported)
    DATASETS,
    MOSES_SPLITS,
    ZINC250K_FILENAME,
    ZINC250K_MD5,
    ZINC250K_URLS,
    _sha256_file,
    default_data_dir,
    moses_path,
    nci5k_path,
    zinc250k_path,
)
from .records import MAX_LINE_CHARS, SMILES_HEADERS, _open_binary, _read_records, _Records  # noqa: F401

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


_AUTO_WORKERS_MIN_RECORDS = 20_000  # workers=None: use processes from this many records on
_CACHE_MIN_BYTES = 1 << 20  # cache=None: cache loads of files at least this large


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
