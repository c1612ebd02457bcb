"""Run directories: names confined to the runs folder, one process per run, safe replacement.

Three guarantees (each has a test in tests/test_rundir.py):

- **Confinement.** A run name is one plain path component (letters, digits, ``._+=@-``, not
  starting with a dot, at most ``MAX_NAME`` characters): ``..``, ``.``, absolute paths and
  separators are refused before anything is read, written or deleted, so a run never reaches
  outside ``--runs-dir``. A run directory that is a symbolic link is refused too.
- **One process per run.** A run is claimed with an exclusive ``flock`` on
  ``RUNS/.locks/NAME.lock``, held for the life of the process (the kernel drops it when the
  process dies, even on SIGKILL, so a stale lock never blocks anyone). A second process that
  wants the same run (train, ``--resume`` or ``--overwrite``) gets a clear error.
- **Replacement never loses a run.** ``--overwrite`` moves the old run aside to the hidden
  sibling ``RUNS/.NAME.replaced`` (an atomic rename on the same file system) and deletes it
  only when the new run has written its first checkpoint; if the new run stops before that
  (a typo in ``--dataset``, Ctrl-C, an error), the old run is put back. If the process is
  killed in between, the old run stays in ``.NAME.replaced`` and the next ``--overwrite`` of
  that name refuses to go on until the user has looked at it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .errors import UsageError

log = logging.getLogger(__name__)

MAX_NAME = 100  # well under every file system's 255-byte component limit, suffixes included
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]*")
CHECKPOINT = "checkpoint.pt"


def check_run_name(name: str, flag: str = "--run-name") -> str:
    """``name`` if it is a safe single path component, else a UsageError saying why."""
    if not isinstance(name, str) or not name:
        raise UsageError(f"{flag} must not be empty")
    if len(name) > MAX_NAME:
        raise UsageError(f"{flag} is {len(name)} characters long; at most {MAX_NAME} are allowed")
    if not _NAME.fullmatch(name):
        raise UsageError(f"{flag} {name!r} is not a plain name: use letters, digits and . _ + = @ - "
                         "(not starting with '.', no '/' or '..'); run directories always go inside --runs-dir")
    return name


def run_path(runs_dir: str | Path, name: str, flag: str = "--run-name") -> Path:
    """``runs_dir / name`` after checking the name; refuses a run directory that is a symlink."""
    path = Path(runs_dir) / check_run_name(name, flag)
    if path.is_symlink():
        raise UsageError(f"run directory {path} is a symbolic link; refusing to use it")
    return path


def _aside(path: Path) -> Path:
    return path.with_name(f".{path.name}.replaced")


@dataclass
class RunClaim:
    """A claimed run directory: the lock is held until ``release`` (or the process ends)."""

    path: Path
    lock_file: IO[str] | None = None
    replaced: Path | None = None  # the old run moved aside by --overwrite, until settled
    _settled: bool = field(default=False, repr=False)

    def settle(self) -> None:
        """Drop the old run once the new one has a checkpoint; otherwise put the old one back.

        Called when training ends, normally or not. Idempotent.
        """
        if self._settled or self.replaced is None:
            self._settled = True
            return
        self._settled = True
        if (self.path / CHECKPOINT).is_file():
            shutil.rmtree(self.replaced, ignore_errors=True)
            log.info("replaced the previous run in %s", self.path)
        elif self.replaced.exists():
            if self.path.exists():
                shutil.rmtree(self.path)
            self.replaced.rename(self.path)
            log.warning("the new run stopped before its first checkpoint; the previous run in %s is restored",
                        self.path)

    def release(self) -> None:
        if self.lock_file is not None:
            self.lock_file.close()  # closing the descriptor drops the flock
            self.lock_file = None


def _lock(runs_dir: Path, name: str) -> IO[str]:
    locks = runs_dir / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    handle = open(locks / f"{name}.lock", "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise UsageError(f"run {runs_dir / name} is in use by another process (pid {holder}); "
                         "wait for it to finish or choose another --run-name") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def claim(runs_dir: str | Path, name: str, *, resume: bool = False, overwrite: bool = False) -> RunClaim:
    """Claim ``runs_dir/name`` for one training process.

    - ``resume``: the directory must hold a checkpoint; it is locked and used as it is.
    - otherwise the directory is created; if it exists, ``overwrite`` moves it aside (see the
      module docstring) and without ``overwrite`` it is an error.
    """
    runs_dir = Path(runs_dir)
    path = run_path(runs_dir, name)
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other; pick one")
    if resume and not (path / CHECKPOINT).is_file():
        raise UsageError(f"--resume: {path}/{CHECKPOINT} does not exist; nothing to resume")
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} exists and is not a directory")
    if not resume and path.exists() and not overwrite:
        raise UsageError(f"run directory {path} already exists; use --resume to continue it, "
                         "--overwrite to replace it, or another --run-name")
    runs_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(runs_dir, name)
    result = RunClaim(path, lock)
    try:
        if resume:
            return result
        if path.exists():  # overwrite: move the old run aside, atomically
            aside = _aside(path)
            if aside.exists():
                raise UsageError(f"an earlier --overwrite of {path} was interrupted and the run it replaced is "
                                 f"kept in {aside}; move or delete that directory first")
            path.rename(aside)
            result.replaced = aside
            log.info("moved the previous run aside to %s until the new run has a checkpoint", aside)
        try:
            path.mkdir()
        except FileExistsError:
            raise UsageError(f"run directory {path} was just created by another process; "
                             "use another --run-name") from None
        return result
    except BaseException:
        if result.replaced is not None and not path.exists():
            result.replaced.rename(path)
        result.release()
        raise


def claim_new(runs_dir: str | Path, base: str) -> RunClaim:
    """A fresh run directory ``base``, ``base-2``, ... (the first free one), claimed atomically."""
    runs_dir = Path(runs_dir)
    check_run_name(base, "run name")
    runs_dir.mkdir(parents=True, exist_ok=True)
    i = 1
    while True:
        name = base if i == 1 else f"{base}-{i}"
        i += 1
        path = runs_dir / name
        if path.exists() or path.is_symlink():
            continue
        try:
            path.mkdir()
        except FileExistsError:  # another process took the name meanwhile: try the next one
            continue
        return RunClaim(path, _lock(runs_dir, name))
