"""Generic file I/O written once: atomic writes and sha256 digests.

Atomic write: the content goes to a hidden temporary file beside the target, is flushed and
fsynced, then renamed over the target (``os.replace`` is atomic on POSIX and Windows), so a
crash at any moment leaves the old file or the new one, never a mix. The temporary file gets
the umask's permissions (unlike ``tempfile.mkstemp``'s 0600), so the result reads like any
other file. A failure removes the temporary file and re-raises.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import IO, Any, Callable

TMP_SUFFIX = ".tmp"


def with_path(err: OSError, path: Path) -> OSError:
    """``err`` with ``path`` as its file name where the OS did not say which file failed
    (a full disk reports ENOSPC without one), so the command line can name it."""
    if getattr(err, "filename", None) is not None:
        return err
    cause = err.strerror or (str(err) if str(err) else type(err).__name__)
    return type(err)(err.errno, cause, str(path)) if err.errno is not None else OSError(None, cause, str(path))


def open_temp_beside(path: Path, suffix: str = TMP_SUFFIX) -> tuple[IO[bytes], Path]:
    """A new hidden temporary file ``.NAME.PID.RANDOM.tmp`` next to ``path``, opened ``"xb"``."""
    path = Path(path)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")
        try:
            return open(tmp, "xb"), tmp  # noqa: SIM115 - the caller closes it
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "cannot create a temporary file beside it", str(path))


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _naming(err: OSError, path: Path) -> OSError:
    """``err`` naming ``path`` (the file the caller asked for, not our temporary file)."""
    if err.errno is None:
        return with_path(err, path)
    return type(err)(err.errno, err.strerror or str(err), str(path))


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any], durable: bool = False) -> Path:
    """Call ``write(binary file)`` on a temporary file beside ``path``, then rename it over ``path``.

    The folder must exist (a missing one is an OSError naming ``path``, as for a plain write).
    ``durable`` also fsyncs the folder, so the rename survives a power cut (checkpoints; not
    needed for reports that can be rewritten). An existing target that is not a regular file (a
    device such as /dev/null, a FIFO) is written in place: renaming over it would replace the
    device. A symlink is followed. An OSError names ``path``.
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file():
        try:
            with open(path, "wb") as fh:
                write(fh)
        except OSError as err:
            raise _naming(err, path) from None
        return path
    try:
        fh, tmp = open_temp_beside(path)
    except OSError as err:
        raise _naming(err, path) from None
    try:
        with fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise _naming(err, path) from None
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    """Atomically replace ``path`` by ``data``."""
    return atomic_write(path, lambda fh: fh.write(data))


def write_text(path: Path, text: str) -> Path:
    """Atomically replace ``path`` by ``text`` (UTF-8)."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any, indent: int | None = 2, default: Callable[[Any], Any] | None = None) -> Path:
    """Atomically write ``obj`` as JSON (with a final newline)."""
    return write_text(path, json.dumps(obj, indent=indent, default=default) + "\n")


def sha256_bytes(data: bytes) -> str:
    """sha256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """sha256 hex digest of ``text`` in UTF-8."""
    return sha256_bytes(text.encode("utf-8"))


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in blocks of ``block`` bytes (OSError if unreadable)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()
