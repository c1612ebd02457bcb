"""Cached grammar encoding: strings -> compact padded rule-index arrays.

:func:`encode_cached` parses a list of strings with a grammar once and stores the
result in ``<cache_dir>`` (by default ``<data_dir>/cache/``) as

* ``enc-<grammar name>-<key>.npz``: the rule indices of all parsed strings
  concatenated (``uint8`` when the grammar has fewer than 256 rules, else ``int16``),
  their lengths, the positions of the parsed strings in the input list, and the
  positions and reasons of the failures;
* ``enc-<grammar name>-<key>.json``: counts and the full key material.

The key is the sha256 of the grammar hash and of the sha256 of the input list, so
a changed grammar or a changed / reordered input list never reuses a stale entry.
Both files are written atomically (temporary file + ``os.replace``; the JSON, which
marks a complete entry, last). A later call with the same grammar and strings loads
the arrays instead of parsing ("loaded from cache" in the log). Nothing is ever
stored one-hot or as floats.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..io import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["EncodedData", "encode_cached", "texts_sha256", "cache_key", "pad_sequences"]

#: Bump when the cache layout changes (old entries are then ignored).
CACHE_VERSION = 1


@dataclass
class EncodedData:
    """Grammar-encoded strings.

    Attributes:
        ids: ``[n_ok, width]`` rule indices, ``uint8`` (fewer than 256 rules) or
            ``int16``, padded with the grammar's ``pad_index``; ``width`` is the
            grammar's ``max_length`` unless another width was asked for.
        lengths: ``int16`` ``[n_ok]`` number of rules of each string.
        texts: the strings that parsed (row ``k`` of ``ids`` encodes ``texts[k]``).
        ok_index: ``int64`` ``[n_ok]`` positions of those strings in the input list.
        failures: ``(index, text, reason)`` for every input that did not parse.
        grammar_hash: hash of the grammar that produced the encoding.
        key: cache key (see :func:`cache_key`).
        from_cache: True when loaded from the cache instead of parsed.
        path: the cache ``.npz`` (None when caching was off).
    """

    ids: np.ndarray
    lengths: np.ndarray
    texts: list[str]
    ok_index: np.ndarray
    failures: list[tuple[int, str, str]]
    grammar_hash: str
    key: str
    from_cache: bool = False
    path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.lengths))

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (``ids``, ``lengths``, ``ok_index``)."""
        return int(self.ids.nbytes + self.lengths.nbytes + self.ok_index.nbytes)


def texts_sha256(texts: Sequence[str]) -> str:
    """sha256 of a list of strings (order-sensitive; each string length-prefixed, so unambiguous)."""
    h = hashlib.sha256()
    h.update(f"{len(texts)}\n".encode())
    buf: list[bytes] = []
    size = 0
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        buf.append(f"{len(b)}:".encode())
        buf.append(b)
        size += len(b)
        if size > 1 << 22:
            h.update(b"".join(buf))
            buf, size = [], 0
    h.update(b"".join(buf))
    return h.hexdigest()


def cache_key(grammar_hash: str, texts_hash: str) -> str:
    """Cache key of an encoding: sha256 over the layout version, grammar hash and texts hash."""
    return hashlib.sha256(f"v{CACHE_VERSION}:{grammar_hash}:{texts_hash}".encode()).hexdigest()


def pad_sequences(flat: np.ndarray, lengths: np.ndarray, width: int, pad_index: int) -> np.ndarray:
    """Padded ``[len(lengths), width]`` matrix (dtype of ``flat``) from concatenated sequences."""
    lengths = np.asarray(lengths)
    longest = int(lengths.max()) if len(lengths) else 0
    width = grammar.max_length if width is None else longest if width == "longest" else int(width)
    if width < longest:
        raise ValueError(f"width {width} is shorter than the longest sequence ({longest})")
    out = np.full((len(lengths), width), pad_index, dtype=flat.dtype)
    col = np.arange(width)[None, :]
    start = 0
    block = 1 << 16  # rows per step: keeps the boolean mask small
    for r0 in range(0, len(lengths), block):
        lens = lengths[r0 : r0 + block]
        stop = start + int(lens.sum())
        # boolean assignment fills row-major, i.e. sequence after sequence
        out[r0 : r0 + block][col < lens[:, None]] = flat[start:stop]
        start = stop
    return out


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "grammar"


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it over ``path``."""
    atomic_write(path, write)


def _lengths_dtype(max_length: int) -> type:
    return np.int16 if max_length <= np.iinfo(np.int16).max else np.int32


def _ids_dtype(n_rules: int) -> type:
    return np.uint8 if n_rules < 256 else np.int16


def _load(npz_path: Path, json_path: Path, meta_expected: dict[str, Any]) -> dict[str, Any] | None:
    """Arrays and metadata of a cache entry, or None when absent / stale / damaged."""
    if not (npz_path.is_file() and json_path.is_file()):
        return None
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        for k, v in meta_expected.items():
            if meta.get(k) != v:
                logger.warning("cache entry %s does not match (%s); parsing again", npz_path.name, k)
                return None
        with np.load(npz_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("flat", "lengths", "ok_index", "fail_index", "fail_reasons")}
        if (
            len(arrays["lengths"]) != meta["n_ok"]
            or len(arrays["ok_index"]) != meta["n_ok"]
            or len(arrays["fail_index"]) != meta["n_failed"]
            or int(arrays["lengths"].sum()) != len(arrays["flat"])
        ):
            logger.warning("cache entry %s is inconsistent; parsing again", npz_path.name)
            return None
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, KeyError, zipfile.BadZipFile, ...
        logger.warning("cache entry %s is unreadable (%s); parsing again", npz_path.name, exc)
        return None
    arrays["meta"] = meta
    return arrays


def encode_cached(
    grammar: Any,
    texts: Sequence[str],
    cache_dir: Path | None = None,
    workers: int = 1,
    progress: bool = True,
    width: int | str | None = None,
    use_cache: bool = True,
) -> EncodedData:
    """Parse ``texts`` with ``grammar`` into compact padded arrays, reusing a disk cache.

    Args:
        grammar: a :class:`~discrete_rae.grammar.Grammar`.
        texts: the strings (e.g. canonical SMILES).
        cache_dir: cache folder; default ``<default_data_dir()>/cache``.
        workers: processes for parsing (only when not cached).
        progress: progress bar while parsing.
        width: columns of ``ids``: default ``grammar.max_length``; ``"longest"`` = the
            longest encoded sequence (saves memory: MOSES needs about half the SMILES
            grammar's max_length); or an int (at least the longest sequence).
        use_cache: False = always parse, never read or write the cache.

    Returns:
        :class:`EncodedData`.
    """
    texts = list(texts)
    t0 = time.monotonic()
    t_hash = texts_sha256(texts)
    key = cache_key(grammar.hash, t_hash)
    ids_dtype = _ids_dtype(grammar.n_rules)
    len_dtype = _lengths_dtype(grammar.max_length)
    if width is not None and not isinstance(width, (int, np.integer)) and width != "longest":
        raise ValueError(f"width must be None, an int or 'longest', got {width!r}")
    meta_expected = {
        "version": CACHE_VERSION,
        "grammar_hash": grammar.hash,
        "texts_sha256": t_hash,
        "n_inputs": len(texts),
    }
    npz_path = json_path = None
    cached = None
    if use_cache:
        if cache_dir is None:
            from .molecules import default_data_dir

            cache_dir = default_data_dir() / "cache"
        cache_dir = Path(cache_dir)
        stem = f"enc-{_safe_name(getattr(grammar, 'name', 'grammar'))}-{key[:32]}"
        npz_path, json_path = cache_dir / f"{stem}.npz", cache_dir / f"{stem}.json"
        cached = _load(npz_path, json_path, meta_expected)
    if cached is not None:
        flat = cached["flat"].astype(ids_dtype, copy=False)
        lengths = cached["lengths"].astype(len_dtype, copy=False)
        ok_index = cached["ok_index"].astype(np.int64, copy=False)
        reasons = bytes(cached["fail_reasons"]).decode("utf-8").split("\n") if len(cached["fail_index"]) else []
        failures = [(int(i), texts[int(i)], r) for i, r in zip(cached["fail_index"], reasons)]
        from_cache = True
        logger.info(
            "encoded %d strings loaded from cache %s (%d parsed, %d failed) in %.1fs",
            len(texts), npz_path, len(lengths), len(failures), time.monotonic() - t0,
        )
    else:
        result = grammar.parse_many(texts, workers=workers, progress=progress)
        flat = np.asarray(result.ids).astype(ids_dtype, copy=False)
        lengths = np.asarray(result.lengths).astype(len_dtype, copy=False)
        ok_index = np.asarray(result.ok_index, dtype=np.int64)
        failures = [(int(i), t, str(r)) for i, t, r in result.failures]
        del result  # its flat ids may be a second copy; keep only ours
        from_cache = False
        logger.info(
            "parsed %d strings with grammar %s: %d ok, %d failed, %.1fs",
            len(texts), getattr(grammar, "name", "?"), len(lengths), len(failures), time.monotonic() - t0,
        )
        if use_cache and npz_path is not None and json_path is not None:
            _store(npz_path, json_path, meta_expected, grammar, flat, lengths, ok_index, failures)
    longest = int(lengths.max()) if len(lengths) else 0
    width = grammar.max_length if width is None else longest if width == "longest" else int(width)
    if width < longest:
        raise ValueError(f"width {width} is shorter than the longest encoded sequence ({longest})")
    ids = pad_sequences(flat, lengths, width, grammar.pad_index)
    del flat
    kept = [texts[int(i)] for i in ok_index]
    info = {
        "n_inputs": len(texts),
        "n_ok": len(kept),
        "n_failed": len(failures),
        "max_length": longest,
        "mean_length": float(lengths.mean()) if len(lengths) else 0.0,
        "seconds": round(time.monotonic() - t0, 3),
    }
    return EncodedData(
        ids=ids,
        lengths=lengths,
        texts=kept,
        ok_index=ok_index,
        failures=failures,
        grammar_hash=grammar.hash,
        key=key,
        from_cache=from_cache,
        path=npz_path,
        info=info,
    )


def _store(
    npz_path: Path,
    json_path: Path,
    meta_expected: dict[str, Any],
    grammar: Any,
    flat: np.ndarray,
    lengths: np.ndarray,
    ok_index: np.ndarray,
    failures: list[tuple[int, str, str]],
) -> None:
    """Write a cache entry (npz, then the JSON that marks it complete); failures only logged."""
    try:
        npz_path.parent.mkdir(parents=True, exist_ok=True)
        fail_index = np.asarray([f[0] for f in failures], dtype=np.int64)
        reasons = "\n".join(f[2].replace("\n", " ") for f in failures).encode("utf-8")
        arrays = {
            "flat": flat,
            "lengths": lengths,
            "ok_index": ok_index,
            "fail_index": fail_index,
            "fail_reasons": np.frombuffer(reasons, dtype=np.uint8),
        }
        _atomic_write(npz_path, lambda fh: np.savez(fh, **arrays))
        meta = {
            **meta_expected,
            "grammar_name": getattr(grammar, "name", None),
            "n_rules": int(grammar.n_rules),
            "pad_index": int(grammar.pad_index),
            "grammar_max_length": int(grammar.max_length),
            "ids_dtype": str(flat.dtype),
            "n_ok": int(len(lengths)),
            "n_failed": len(failures),
            "max_length": int(lengths.max()) if len(lengths) else 0,
            "mean_length": float(lengths.mean()) if len(lengths) else 0.0,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _atomic_write(json_path, lambda fh: fh.write((json.dumps(meta, indent=1) + "\n").encode("utf-8")))
        logger.info("cached encoding in %s", npz_path)
    except OSError as exc:
        logger.warning("could not write the encoding cache %s: %s", npz_path, exc)
