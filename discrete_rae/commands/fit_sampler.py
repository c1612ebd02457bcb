"""``fit-sampler``: fit an ex-post sampler (e.g. two_stage, flow, wgan) to a finished run's codes."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UsageError
from ..runtime import choose_device, set_threads
from .common import add_common

NAME = "fit-sampler"
HELP = "fit an ex-post sampler (e.g. two_stage, flow, wgan) to a finished run's training codes and store it"


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["steps=500", "kind=maf"]`` -> {"steps": 500, "kind": "maf"} (Python literals, else strings)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set steps=500")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # a bare word such as maf
    return out


def check_option_names(sampler: str, options: dict[str, Any]) -> None:
    """Refuse option names the sampler's constructor does not take, listing the ones it does."""
    import inspect

    from ..registry import SAMPLERS

    params = inspect.signature(SAMPLERS.get(sampler).__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # takes any keyword: its own checks decide
    known = [name for name in params if name != "self"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"sampler {sampler!r}: unknown option {', '.join(unknown)}; "
                          f"choose from: {', '.join(known) or '(none)'}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..samplers_wgan import option_help

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = ("wgan sampler options (--set KEY=VALUE; each checked before the run is loaded):\n"
                + option_help() + "\nexample: --set steps=3000 --set ema=0 --set select=energy --set lr_decay=False")
    p.add_argument("--run", required=True, help="run directory (with checkpoint.pt)")
    p.add_argument("--sampler", required=True, help="sampler to fit, e.g. two_stage, flow, wgan")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="sampler option, e.g. --set steps=500 --set kind=maf (repeatable; wgan: see below)")
    p.add_argument("--seed", type=int, default=None, help="fitting seed (default: the run's training seed)")
    add_common(p)


def run(args: argparse.Namespace) -> int:
    from ..samplers import build_sampler
    from ..samplers_fit import fit_sampler

    set_threads(args.threads)
    options = parse_options(args.set)
    check_option_names(args.sampler, options)
    try:  # a bad option value: one line, before the run is loaded
        build_sampler(args.sampler, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"sampler {args.sampler!r}: {err}") from None
    sampler = fit_sampler(Path(args.run), args.sampler, choose_device(args.device), seed=args.seed,
                          options=options, progress=not args.quiet)
    print(f"fitted sampler {sampler.name} on run {args.run}; use --sampler {sampler.name} with sample / evaluate")
    return 0
