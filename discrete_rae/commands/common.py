"""What every command shares: the common flags, logging set-up and the metrics table.

Only the command layer configures logging (library code just logs).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

EXIT_USAGE = 2
EXIT_NONFINITE = 3


def add_common(p: argparse.ArgumentParser) -> None:
    """--device, -v/--verbose, -q/--quiet and --threads."""
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: auto)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bars")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch and BLAS (default 0: all cores, divided among local torchrun "
                        "processes; use 1 when other jobs share the machine)")


def add_run_arg(p: argparse.ArgumentParser, sampler: bool = True) -> None:
    """--run (a finished run directory), optionally --sampler, and the common flags."""
    p.add_argument("--run", required=True, help="run directory (e.g. runs/grammar_rae-molecules)")
    if sampler:
        p.add_argument("--sampler", default=None,
                       help="ex-post sampler (default: the model's; see the run's checkpoint)")
    add_common(p)


def setup_logging(verbosity: int, log_file: Path | None = None) -> None:
    """Console at WARNING (-q), INFO or DEBUG (-v); ``log_file`` gets INFO or more in any case.

    Replaces the root handlers of an earlier call (closing its log file), so it can be called again.
    """
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if isinstance(handler, logging.FileHandler):
            handler.close()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level)
    console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root.addHandler(console)
    root.setLevel(level)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setLevel(min(level, logging.INFO))
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)
        root.setLevel(min(level, logging.INFO))
    for noisy in ("matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def close_log_files() -> None:
    """Close the log files of :func:`setup_logging` (before a run directory is removed)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()


def format_metrics(metrics: dict[str, Any]) -> str:
    """A two-column table of the scalar metrics."""
    rows = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in metrics.items()
            if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    width = max((len(k) for k, _ in rows), default=10)
    line = "-" * (width + 24)
    return "\n".join([line] + [f"{k:<{width}}  {v}" for k, v in rows] + [line])
