"""Reference statistics files of the MOSES metrics, read without running code from them.

The molsets wheel stores its test-set statistics as a pickled Python object inside an ``.npz``
(``np.load(allow_pickle=True)`` would run whatever a crafted file asks for).  We read such a file
only when its sha256 equals the digest of the file shipped in molsets 0.3.1
(:data:`PACKAGED_STATS_SHA256`), and even then through an unpickler that can build nothing but
NumPy arrays, dtypes and ``Counter`` objects.  The result is converted once into our own
pickle-free format and cached; the cache is trusted only when the digest of its *content*
equals :data:`CONVERTED_STATS_SHA256`.  Any other file is read with ``allow_pickle=False`` and
must be in our format, or it is refused with a :class:`~discrete_rae.data.errors.DataError`
naming it.

Our format (``format`` = :data:`STATS_FORMAT`) is an ``.npz`` of plain arrays::

    FCD.mu [512] float64, FCD.sigma [512, 512] float64       (optional: FCD needs both)
    SNN.fps_packed [N, ceil(bits / 8)] uint8, SNN.n_bits []   (np.packbits of the 0/1 fingerprints)
    SNN.weights [N] float64                                   (optional multiplicities)
    Frag.keys / Scaf.keys [bytes] uint8                       (UTF-8 keys joined by newlines)
    Frag.counts / Scaf.counts [K] int64
    logP.values, SA.values, QED.values, weight.values [N] float64

:func:`save_reference_stats` writes it, e.g. for statistics from
:func:`discrete_rae.metrics.molecules.reference_stats_from_smiles`.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..data.errors import DataError
from ..io import atomic_write

logger = logging.getLogger(__name__)

__all__ = [
    "CONVERTED_STATS_SHA256",
    "PACKAGED_STATS_SHA256",
    "STATS_FORMAT",
    "content_digest",
    "file_sha256",
    "load_stats_file",
    "read_packaged_stats",
    "save_reference_stats",
]

STATS_FORMAT = "discrete_rae.moses_stats.v1"
#: sha256 of the statistics files of the molsets 0.3.1 wheel (the digests its RECORD lists).
PACKAGED_STATS_SHA256 = {
    "test": "ded25073225a895d4ed17bf1d4223d27560e87ff4cb85786346ca1cc8efa03d3",
    "test_scaffolds": "7b7aba6c1474634a019bebf16f389d554cb9dd1021dfc8c1d1e54430a9f0e7f8",
}
#: :func:`content_digest` of those files once converted to our format.
CONVERTED_STATS_SHA256 = {
    "test": "5506b4085a545bcd5472bf64abe18cfb4ebcb9ded098ea8175a39f24ee01dfb9",
    "test_scaffolds": "5bfe93d7d795fd9ce95f13cd4b804069ed4cdd53460642fe5bebb13d2fec3ff7",
}
_PHYSCHEM = ("logP", "SA", "QED", "weight")
_COUNTERS = (("Frag", "frag"), ("Scaf", "scaf"))


# --- digests ----------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over the sorted keys, dtypes, shapes and bytes of plain arrays (not of a zip file,
    whose timestamps change from one write to the next)."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        arr = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}\0{arr.dtype.str}\0{arr.shape}\0".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


# --- the packaged (pickled) files -------------------------------------------------------------------
def _numpy_reconstruct() -> Any:
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise ImportError("numpy's array reconstructor not found")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles only what the MOSES statistics contain: arrays, dtypes, Counters, bytes."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _numpy_reconstruct()
        allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
        if (module, name) in allowed:
            return allowed[(module, name)]
        if (module, name) == ("collections", "Counter"):
            from collections import Counter

            return Counter
        if (module, name) == ("_codecs", "encode"):  # how protocol-2 pickles spell bytes
            import codecs

            return codecs.encode
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_packaged_stats(path: Path) -> dict[str, Any]:
    """The statistics dict of a molsets ``*_stats.npz``, via the restricted unpickler.

    Call only on a file whose sha256 is in :data:`PACKAGED_STATS_SHA256`.
    """
    with zipfile.ZipFile(path) as zf, zf.open("stats.npy") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(fh)
        if shape != () or dtype != np.dtype(object):
            raise DataError(f"{path}: expected one pickled object in stats.npy, found {dtype} {shape}")
        obj = _ArraysOnlyUnpickler(fh, encoding="ASCII").load()
    stats = obj.item() if isinstance(obj, np.ndarray) else obj
    if not isinstance(stats, dict):
        raise DataError(f"{path}: stats.npy holds {type(stats).__name__}, not a dict of statistics")
    return stats


# --- our format ---------------------------------------------------------------------------------------
def _encode_keys(keys: list[str]) -> np.ndarray:
    if any("\n" in k for k in keys):
        raise ValueError("statistics keys must not contain newlines")
    return np.frombuffer("\n".join(keys).encode(), np.uint8).copy()


def _decode_keys(blob: np.ndarray) -> list[str]:
    text = blob.tobytes().decode()
    return text.split("\n") if text else []


def flatten_stats(stats: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Plain arrays of our format from a statistics dict (molsets' layout or ours)."""
    fps = np.asarray(stats["SNN"]["fps"])
    if fps.ndim != 2 or (fps.size and not np.isin(np.unique(fps), (0, 1)).all()):
        raise ValueError("SNN fingerprints must be a 2-D 0/1 matrix")
    out: dict[str, np.ndarray] = {
        "format": np.array(STATS_FORMAT),
        "SNN.fps_packed": np.packbits(fps.astype(np.uint8), axis=1),
        "SNN.n_bits": np.array(fps.shape[1], np.int64),
    }
    if stats["SNN"].get("weights") is not None:
        out["SNN.weights"] = np.asarray(stats["SNN"]["weights"], np.float64)
    if "FCD" in stats:
        out["FCD.mu"] = np.asarray(stats["FCD"]["mu"], np.float64)
        out["FCD.sigma"] = np.asarray(stats["FCD"]["sigma"], np.float64)
    for group, field in _COUNTERS:
        items = sorted((str(k), int(v)) for k, v in dict(stats[group][field]).items())
        out[f"{group}.keys"] = _encode_keys([k for k, _ in items])
        out[f"{group}.counts"] = np.array([v for _, v in items], np.int64)
    for key in _PHYSCHEM:
        out[f"{key}.values"] = np.asarray(stats[key]["values"], np.float64)
    return out


def unflatten_stats(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The statistics dict (layout of :func:`moses_reference_stats`) from our plain arrays."""
    n_bits = int(arrays["SNN.n_bits"])
    stats: dict[str, Any] = {"SNN": {"fps": np.unpackbits(arrays["SNN.fps_packed"], axis=1)[:, :n_bits]}}
    if "SNN.weights" in arrays:
        stats["SNN"]["weights"] = np.asarray(arrays["SNN.weights"], np.float64)
    if "FCD.mu" in arrays:
        stats["FCD"] = {"mu": np.asarray(arrays["FCD.mu"]), "sigma": np.asarray(arrays["FCD.sigma"])}
    for group, field in _COUNTERS:
        keys = _decode_keys(arrays[f"{group}.keys"])
        counts = arrays[f"{group}.counts"]
        if len(keys) != len(counts):
            raise ValueError(f"{group}: {len(keys)} keys but {len(counts)} counts")
        stats[group] = {field: dict(zip(keys, counts.tolist()))}
    for key in _PHYSCHEM:
        stats[key] = {"values": np.asarray(arrays[f"{key}.values"], np.float64)}
    return stats


def _read_plain(path: Path) -> dict[str, np.ndarray]:
    """All arrays of one of our files; ``ValueError`` (never code execution) for anything else."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            arrays = {key: data[key] for key in data.files}
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from exc
    if arrays.get("format", np.array("")).item() != STATS_FORMAT:
        raise ValueError(f"no format entry {STATS_FORMAT!r}")
    return arrays


def save_reference_stats(stats: Mapping[str, Any], path: str | Path) -> str:
    """Write statistics in our pickle-free format, atomically; returns the :func:`content_digest`."""
    path = Path(path)
    arrays = flatten_stats(stats)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: np.savez(fh, **arrays))
    return content_digest(arrays)


# --- loading ----------------------------------------------------------------------------------------------
def _packaged_split(digest: str) -> str | None:
    return next((split for split, known in PACKAGED_STATS_SHA256.items() if known == digest), None)


def _load_packaged(path: Path, split: str, cache: Path | None) -> dict[str, Any]:
    expected = CONVERTED_STATS_SHA256[split]
    if cache is not None and cache.is_file():
        try:
            arrays = _read_plain(cache)
            if content_digest(arrays) == expected:
                return unflatten_stats(arrays)
            logger.warning("ignoring %s: its content digest is not that of the converted MOSES %s statistics",
                           cache, split)
        except ValueError as exc:
            logger.warning("ignoring unreadable cache %s (%s)", cache, exc)
    logger.info("converting the MOSES %s statistics %s once into a pickle-free cache", split, path)
    arrays = flatten_stats(read_packaged_stats(path))
    if content_digest(arrays) != expected:
        raise DataError(f"{path}: converted statistics differ from the known content of molsets 0.3.1's file")
    if cache is not None:
        try:
            save_reference_stats(unflatten_stats(arrays), cache)
        except OSError as exc:
            logger.warning("could not write the statistics cache %s (%s); converting again next time", cache, exc)
    return unflatten_stats(arrays)


def load_stats_file(path: str | Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """Reference statistics from ``path``, never unpickling an unknown file.

    The molsets 0.3.1 files (recognised by sha256) are converted once and cached under
    ``cache_dir`` (no caching when ``None``); any other file must be in our pickle-free format.

    Raises:
        DataError: the file is missing, or is neither molsets' packaged file nor ours.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: statistics file not found")
    digest = file_sha256(path)
    split = _packaged_split(digest)
    if split is not None:
        cache = None if cache_dir is None else Path(cache_dir) / f"moses_{split}_stats_{digest[:16]}.npz"
        return _load_packaged(path, split, cache)
    try:
        return unflatten_stats(_read_plain(path))
    except (ValueError, KeyError) as exc:
        raise DataError(
            f"{path}: refusing to read these statistics: not a file shipped with molsets 0.3.1 (sha256 "
            f"{digest[:16]}...) and not a pickle-free statistics file ({exc}); write your own with "
            "discrete_rae.metrics.stats_files.save_reference_stats"
        ) from None
