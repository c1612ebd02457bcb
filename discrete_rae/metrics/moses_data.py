"""Locate and read the MOSES reference files without importing the ``moses`` package.

The PyPI wheel ``molsets==0.3.1`` (install with ``pip install --no-deps molsets==0.3.1``; the
package itself no longer imports on current Python/RDKit, but its data files are fine) contains::

    moses/dataset/data/train.csv.gz          1,584,663 SMILES (NOT shuffled)
    moses/dataset/data/test.csv.gz             176,074 SMILES
    moses/dataset/data/test_scaffolds.csv.gz   176,225 SMILES (scaffold-split test set)
    moses/dataset/data/test_stats.npz          precomputed reference statistics, key "stats":
    moses/dataset/data/test_scaffolds_stats.npz  {"FCD": {"mu", "sigma"}, "SNN": {"fps"},
                                                   "Frag": {"frag"}, "Scaf": {"scaf"},
                                                   "logP"/"SA"/"QED"/"weight": {"values"}}

The directory is ``$DISCRETE_RAE_MOSES_DATA`` when set, else the installed ``molsets``
distribution's ``moses/dataset/data`` (looked up on ``sys.path`` without the working directory:
nothing is read from the working directory unless the variable names it).  The statistics files are
read by :mod:`.stats_files`: molsets' own pickled files only when their sha256 is that of the
molsets 0.3.1 wheel (converted once into a pickle-free cache), anything else only in our
pickle-free format.

The canonical MOSES training set (for novelty) is canonicalised with the *installed* RDKit, since
canonical SMILES change slightly between RDKit releases (~1 in 10,000 training SMILES is no
longer canonical under RDKit 2026.09), and cached under ``$DISCRETE_RAE_CACHE`` (default
``$XDG_CACHE_HOME/discrete_rae`` or ``~/.cache/discrete_rae``).
"""

from __future__ import annotations

import functools
import gzip
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..io import atomic_write
from .stats_files import load_stats_file

logger = logging.getLogger(__name__)

__all__ = [
    "MOSES_DATA_ENV",
    "CACHE_ENV",
    "cache_dir",
    "load_moses_smiles",
    "moses_data_dir",
    "moses_reference_stats",
    "moses_train_canonical",
]

MOSES_DATA_ENV = "DISCRETE_RAE_MOSES_DATA"
CACHE_ENV = "DISCRETE_RAE_CACHE"
MOSES_INSTALL_HINT = "install the MOSES data files with: pip install --no-deps molsets==0.3.1"
_SPLITS = {"train": "train.csv.gz", "test": "test.csv.gz", "test_scaffolds": "test_scaffolds.csv.gz"}
_STATS = {"test": "test_stats.npz", "test_scaffolds": "test_scaffolds_stats.npz"}


def _looks_like_moses_dir(path: Path) -> bool:
    return (path / "test_stats.npz").is_file() or (path / "train.csv.gz").is_file()


def _search_path() -> list[str]:
    """``sys.path`` without the working directory ('' or an entry that resolves to it)."""
    cwd = Path.cwd().resolve()
    kept = []
    for entry in sys.path:
        try:
            if entry and Path(entry).resolve() != cwd:
                kept.append(entry)
        except OSError:
            continue
    return kept


@functools.lru_cache(maxsize=1)
def _find_moses_dir() -> Path | None:
    env = os.environ.get(MOSES_DATA_ENV)
    if env:
        p = Path(env).expanduser()
        if _looks_like_moses_dir(p):
            return p
        logger.warning("%s=%s holds no MOSES data files; searching elsewhere", MOSES_DATA_ENV, env)
    from importlib.metadata import distributions

    for dist in distributions(name="molsets", path=_search_path()):
        p = Path(str(dist.locate_file("moses/dataset/data")))
        if _looks_like_moses_dir(p):
            return p
    return None


def moses_data_dir(required: bool = False) -> Path | None:
    """Directory with the MOSES data files, or ``None`` (``FileNotFoundError`` if ``required``)."""
    if os.environ.get(MOSES_DATA_ENV):
        _find_moses_dir.cache_clear()  # honour changes of the variable within a process
    found = _find_moses_dir()
    if found is None and required:
        raise FileNotFoundError(f"MOSES data files not found; {MOSES_INSTALL_HINT} or set ${MOSES_DATA_ENV}")
    return found


def load_moses_smiles(split: str) -> list[str]:
    """SMILES of a MOSES split (``"train"``, ``"test"`` or ``"test_scaffolds"``), file order."""
    if split not in _SPLITS:
        raise ValueError(f"unknown MOSES split {split!r}; choose from {sorted(_SPLITS)}")
    path = moses_data_dir(required=True) / _SPLITS[split]
    with gzip.open(path, "rt") as fh:
        lines = fh.read().split("\n")
    header = lines[0].strip().split(",")
    col = header.index("SMILES") if "SMILES" in header else 0
    rows = (line.split(",") for line in lines[1:] if line.strip())
    return [r[col].strip() for r in rows]


@functools.lru_cache(maxsize=2)
def _stats_memo(path: str, size: int, mtime_ns: int) -> dict[str, Any]:
    """Statistics of one file version (size and mtime in the key: a replaced file is read anew)."""
    return load_stats_file(Path(path), cache_dir=cache_dir())


def moses_reference_stats(split: str) -> dict[str, Any]:
    """Precomputed MOSES statistics of ``"test"`` or ``"test_scaffolds"`` (see the module docstring).

    Raises:
        DataError: the statistics file is neither molsets 0.3.1's (by sha256) nor in our
            pickle-free format; nothing in it has been unpickled.
    """
    if split not in _STATS:
        raise ValueError(f"unknown MOSES stats {split!r}; choose from {sorted(_STATS)}")
    path = moses_data_dir(required=True) / _STATS[split]
    try:
        st = path.stat()
    except OSError:
        return load_stats_file(path)  # raises the DataError naming the missing file
    return _stats_memo(str(path), st.st_size, st.st_mtime_ns)


def cache_dir() -> Path:
    """Per-user cache directory of the toolkit (created on demand by writers)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "discrete_rae"


_TRAIN_MEMO: dict[str, frozenset[str]] = {}


def _train_canonical_build(n_jobs: int, progress: bool) -> frozenset[str]:
    import rdkit

    from .mol_descriptors import canonicalize_parallel

    src = moses_data_dir(required=True) / _SPLITS["train"]
    target = cache_dir() / f"moses_train_canonical_rdkit{rdkit.__version__}_{src.stat().st_size}.txt.gz"
    if target.is_file():
        try:
            with gzip.open(target, "rt") as fh:
                result = frozenset(line for line in fh.read().split("\n") if line)
            logger.debug("read %d canonical MOSES training SMILES from %s", len(result), target)
            return result
        except (OSError, EOFError) as exc:
            logger.warning("ignoring unreadable cache %s (%s)", target, exc)
    raw = load_moses_smiles("train")
    logger.info("canonicalising the %d MOSES training SMILES once (cached at %s)", len(raw), target)
    canon = canonicalize_parallel(raw, n_jobs=n_jobs, progress=progress, desc="canonical MOSES train")
    result = frozenset(c for c in canon if c is not None)
    def write(raw_fh: Any) -> None:
        with gzip.GzipFile(fileobj=raw_fh, mode="wb", compresslevel=1) as fh:
            fh.write("\n".join(sorted(result)).encode())

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, write)
    except OSError as exc:
        logger.warning("could not write the canonical-train cache %s (%s); it will be rebuilt next time", target, exc)
    return result


def moses_train_canonical(n_jobs: int = 1, progress: bool = True) -> frozenset[str]:
    """The MOSES training set as canonical SMILES under the installed RDKit (disk- and memory-cached).

    The first call in a fresh cache canonicalises 1.58M SMILES (~3 min on one core, divided by
    ``n_jobs``); later calls read the cache in about a second.
    """
    key = str(moses_data_dir(required=True))
    if key not in _TRAIN_MEMO:
        _TRAIN_MEMO.clear()
        _TRAIN_MEMO[key] = _train_canonical_build(max(1, n_jobs), progress)
    return _TRAIN_MEMO[key]
