"""Cache of molecule loads: ``<data_dir>/cache/mol-<key>.txt.gz`` + ``.json`` (the report).

The key covers everything the result depends on (file sha256, column, n, seed, canonicalize,
kekulize, RDKit version), so a hit is exactly what loading again would give.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from ..io import write_bytes, write_text
from .errors import LoadReport
from .molecule_sources import default_data_dir
from .records import MAX_LINE_CHARS

logger = logging.getLogger(__name__)

_LOAD_CACHE_VERSION = 1


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
        write_bytes(cache_file, payload)
        meta_file = cache_file.with_name(cache_file.name[: -len(".txt.gz")] + ".json")
        write_text(meta_file, json.dumps(report.to_dict(), indent=1) + "\n")
    except OSError as exc:
        logger.warning("could not write the load cache %s: %s", cache_file, exc)
