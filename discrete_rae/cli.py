"""Command line: ``python train.py ...`` and ``python -m discrete_rae {train,sample,evaluate,...}``.

The commands live in :mod:`discrete_rae.commands` (one module each); this module parses the
command name, dispatches and turns user mistakes (bad flags, data, checkpoints) into a one-line
``error:`` and exit code 2, never a traceback. Only the command line configures logging.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from .catalog import load_all
from .commands import COMMANDS
from .commands.common import EXIT_NONFINITE, EXIT_USAGE, format_metrics, setup_logging
from .commands.train import check_train_flags, run_config_from_args, run_dir_for, train_parser
from .errors import USER_ERRORS, UsageError
from .runconfig import default_model, validate
from .runtime import choose_device, choose_precision, set_threads

__all__ = ["EXIT_NONFINITE", "EXIT_USAGE", "UsageError", "build_main_parser", "check_train_flags", "choose_device",
           "choose_precision", "default_model", "format_metrics", "main", "resolve_run_config", "run_dir_for",
           "set_threads", "setup_logging", "train_main", "train_parser", "user_errors", "validate"]

BY_NAME = {module.NAME: module for module in COMMANDS}


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's mistake (one line, exit 2, no traceback)."""
    return USER_ERRORS


def resolve_run_config(args: argparse.Namespace) -> Any:
    """The RunConfig of parsed ``train`` flags (kept for callers of the old name; library code
    calls :func:`discrete_rae.runconfig.resolve_run_config` with plain data)."""
    return run_config_from_args(args)


def build_main_parser() -> argparse.ArgumentParser:
    """``python -m discrete_rae COMMAND ...``: one sub-parser per command module."""
    p = argparse.ArgumentParser(prog="python -m discrete_rae",
                                description="discrete_rae: regularized autoencoders for discrete and structured data.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        if hasattr(module, "parse_args"):  # parses its own argv (its flags depend on it)
            sub.add_parser(module.NAME, help=module.HELP, add_help=False)
        else:
            module.add_arguments(sub.add_parser(module.NAME, help=module.HELP))
    return p


def _dispatch(argv: list[str]) -> int:
    module = BY_NAME.get(argv[0]) if argv else None
    if module is not None and hasattr(module, "parse_args"):
        return module.run(module.parse_args(argv[1:]))
    load_all()
    args = build_main_parser().parse_args(argv)
    if args.command is None:
        build_main_parser().print_help()
        return EXIT_USAGE
    setup_logging(-1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0))
    return BY_NAME[args.command].run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m discrete_rae``; returns the exit code."""
    from .trainer import NonFiniteLossError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_NONFINITE
    except OSError as err:  # full disk, a file where a folder should be, a name too long, ...
        print(f"error: {f'{err.filename}: ' if err.filename else ''}{err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; continue with --resume --run-name NAME", file=sys.stderr)
        return 130


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``train.py``: the ``train`` subcommand."""
    return main(["train", *(sys.argv[1:] if argv is None else argv)])
