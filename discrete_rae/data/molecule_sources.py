"""Where molecule data sets live: MOSES files, RDKit's NCI sample, the ZINC-250k download.

See :mod:`discrete_rae.data.molecules` for the sources and the data directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import IO, Any, Callable, TypeVar

from ..io import atomic_write, sha256_file, write_text
from .errors import DataError

T = TypeVar("T")

logger = logging.getLogger(__name__)

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
    try:
        return sha256_file(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


def _urlopen(url: str, timeout: float) -> Any:
    """``urllib.request.urlopen`` (a seam so tests never touch the network)."""
    import urllib.request

    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (fixed https URLs)


class _NetworkError(Exception):
    """Carries a network OSError through :func:`atomic_write`, which relabels every OSError as
    one of the destination file (right for a full disk, wrong for an unreachable host)."""


def _net(call: Callable[[], T]) -> T:
    """``call()``, its OSError wrapped in :class:`_NetworkError`."""
    try:
        return call()
    except OSError as exc:
        raise _NetworkError() from exc


def _download(url: str, dest: Path, timeout: float = 60.0) -> tuple[str, str]:
    """Stream ``url`` into ``dest`` atomically; return (md5, sha256) of the content.
    A network error (URLError, HTTPError, timeout: OSErrors) is raised as it came."""
    md5, sha = hashlib.md5(), hashlib.sha256()  # noqa: S324 (md5 only to compare with the published value)

    def stream(out: IO[bytes]) -> None:
        with contextlib.closing(_net(lambda: _urlopen(url, timeout))) as resp:
            while block := _net(lambda: resp.read(1 << 20)):
                md5.update(block)
                sha.update(block)
                out.write(block)

    try:
        atomic_write(dest, stream)
    except _NetworkError as wrapped:
        raise wrapped.__cause__ from None  # the original network error, unchanged
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
            write_text(record, f"{digest}  {ZINC250K_FILENAME}\n")
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
        write_text(record, f"{digest}  {ZINC250K_FILENAME}\n")
        logger.info("zinc250k: downloaded to %s (sha256 %s recorded)", target, digest)
        return target
    reason = errors[-1] if errors else "no URL"
    raise DataError(f"zinc250k: {target} not found and the download failed ({reason}); {how}")
