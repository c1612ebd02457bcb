"""``encode``: a file of strings (SMILES or expressions, one a line) -> codes as a ``.npy`` array.

Row i of the array is the code of line i; a line that cannot be encoded (not a valid string,
not derivable by the run's codec, too long) gets a row of NaN and is counted and reported,
not fatal. Only a file with no encodable line is an error.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..io import atomic_write
from ..runtime import set_threads
from .common import add_run_arg

NAME = "encode"
HELP = "encode a file of strings (one a line) to latent codes (.npy; bad lines reported, NaN rows)"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arg(p, sampler=False)
    p.add_argument("--input", required=True, help="text file: one SMILES string / expression per line")
    p.add_argument("--out", default=None, help="output .npy (default: RUN/codes-INPUTNAME.npy)")


def read_lines(path: str | Path) -> list[str]:
    """The lines of a text file (no line endings); a missing, unreadable or empty file is a usage error."""
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        raise UsageError(f"--input {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--input {path}: cannot read it ({err})") from None
    if not lines:
        raise UsageError(f"--input {path}: the file is empty")
    return lines


def report_failures(failures: list, total: int, what: str) -> None:
    """One summary line on stdout naming the first bad line; each bad line at INFO (-v shows them)."""
    if not failures:
        return
    first = failures[0]
    print(f"{len(failures)} of {total} lines could not be {what}; the first, line {first.index + 1}: "
          f"{first.text[:80]!r}: {first.reason}")
    for f in failures:
        log.info("line %d: %r: %s", f.index + 1, f.text[:80], f.reason)


def load_and_encode(args: argparse.Namespace) -> tuple[list[str], Any, Any, list[int], list[Any]]:
    """Read ``--input``, load ``--run`` and encode every line that can be encoded.

    Returns (lines, model, codes [n_ok, D], indices of the encoded lines, failures); a file with
    no encodable line is a UsageError. Shared by ``encode`` and ``reconstruct``.
    """
    from ..api import load

    lines = read_lines(args.input)
    set_threads(args.threads)
    model = load(args.run, args.device)
    codes, ok, failures = model.try_encode(lines)
    if not ok:
        first = failures[0]
        raise UsageError(f"--input {args.input}: none of its {len(lines)} lines can be encoded (line "
                         f"{first.index + 1}: {first.text[:80]!r}: {first.reason})")
    return lines, model, codes, ok, failures


def run(args: argparse.Namespace) -> int:
    lines, model, codes, ok, failures = load_and_encode(args)
    out_array = np.full((len(lines), model.latent_dim), np.nan, dtype=np.float32)
    out_array[ok] = codes.numpy()
    out = Path(args.out) if args.out else model.run_dir / f"codes-{Path(args.input).stem}.npy"
    atomic_write(out, lambda fh: np.save(fh, out_array))
    report_failures(failures, len(lines), "encoded")
    print(f"encoded {len(ok)} of {len(lines)} lines to {out} (shape {list(out_array.shape)}, NaN rows = bad lines)")
    return 0
