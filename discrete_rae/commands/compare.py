"""``compare``: two models (or two finished runs) side by side; the figures are in
:mod:`discrete_rae.compare`.

    python -m discrete_rae compare --domain digits --models gumbel_vae,discrete_rae --preset quick
    python -m discrete_rae compare --runs runs/grammar_vae-molecules,runs/grammar_rae-molecules
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch

from ..compare import (PRESET_EVAL, VIEWS, EvalSettings, Side, draw_pictures, evaluate_side, load_side,
                       train_or_reuse, verdict, write_report)
from ..errors import UsageError
from ..rundir import check_run_name
from ..runconfig import resolve_run_config
from ..runtime import choose_device
from .common import add_common

NAME = "compare"
HELP = "compare two models or runs: reconstruction, samples, codes (report.md + PNGs)"

log = logging.getLogger(__name__)

# --domain aliases: name -> (domain, dataset)
DOMAIN_ALIASES = {"digits": ("images", "digits")}

# compare's "quick" = the domain's quick preset plus these overrides, so that the pair trains
# and is evaluated within about 5 minutes on 2 CPU cores. Same overrides for both models: the
# budget is a number of epochs (equal work), with a wall-clock cap as a safety net.
QUICK_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "images": {"model": {"channels": (32, 64)}, "train": {"epochs": 40, "max_minutes": 2.0}},
    "expressions": {"train": {"max_minutes": 1.25}, "data": {"n_train": 20000, "n_test": 500}},
    # molecules: long SMILES derivations make a CPU step slow (about 3 s at one thread); a few
    # minutes per model give an undertrained pair, meant as a smoke-level comparison only.
    "molecules": {"train": {"max_minutes": 3.0}, "data": {"n_train": 10000, "n_test": 500}},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Train two models with the same budget and seed (or load two finished runs) and write "
                     "RUNS_DIR/compare-NAME/report.md with reconstruction, sample quality, code statistics "
                     "and pictures.")
    p.add_argument("--domain", default="digits", help="digits (= images + digits) | images | molecules | expressions")
    p.add_argument("--dataset", default="", help="data set of the domain (default: the preset's)")
    p.add_argument("--models", default=None, help="two registered models, A,B (default: gumbel_vae,discrete_rae)")
    p.add_argument("--runs", default="", help="two finished run directories A,B (instead of training)")
    p.add_argument("--preset", default="quick", help="smoke | quick (default) | paper")
    p.add_argument("--config", default=None, help="TOML file applied to both models ([model]/[train]/...)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override for both models, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="training seed of both models (default: the preset's)")
    p.add_argument("--name", default="", help="report directory RUNS_DIR/compare-NAME (default: A-vs-B-DATASET)")
    p.add_argument("--runs-dir", default="runs", help="where run and report directories go (default: runs)")
    p.add_argument("--overwrite", action="store_true", help="retrain runs that already exist in the report directory")
    p.add_argument("--iw-k", type=int, default=None, help="importance samples for the bound (quick 100, paper 1000)")
    p.add_argument("--n-eval", type=int, default=None, help="test examples to evaluate (0 = all)")
    p.add_argument("--n-samples", type=int, default=None, help="samples per ex-post sampler")
    add_common(p)


def _pair(text: str, flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if len(items) != 2:
        raise UsageError(f"{flag} needs exactly two comma-separated entries, got {text!r}")
    return items


def resolve_domain(name: str, dataset: str) -> tuple[str, str]:
    """``digits`` -> (images, digits); otherwise (name, dataset)."""
    domain, implied = DOMAIN_ALIASES.get(name, (name, ""))
    if implied and dataset and dataset != implied:
        raise UsageError(f"--domain {name} means dataset {implied!r}; drop --dataset {dataset!r}")
    return domain, dataset or implied


def overrides_for(args: argparse.Namespace, domain: str, dataset: str) -> dict[str, dict[str, Any]]:
    """quick-mode overrides < --dataset/--seed < --set items, per config section."""
    out: dict[str, dict[str, Any]] = {s: {} for s in ("model", "train", "data", "eval")}
    if args.preset == "quick":
        for section, values in QUICK_OVERRIDES.get(domain, {}).items():
            out[section].update(values)
    if dataset:
        out["data"]["dataset"] = dataset
    if args.seed is not None:
        out["train"]["seed"] = args.seed
    for item in args.set:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not (sep and dot) or section not in out:
            raise UsageError(f"--set {item!r}: use SECTION.KEY=VALUE with SECTION in model, train, data, eval")
        out[section][name.replace("-", "_")] = value
    return out


def obtain_sides(args: argparse.Namespace, device: torch.device) -> tuple[list[Side], Path, float]:
    """Train or load the two runs; returns the sides, the report directory and training seconds."""
    runs_dir = Path(args.runs_dir)
    t0 = time.monotonic()
    if args.runs and args.models:
        raise UsageError("--runs and --models contradict each other: --runs compares two finished runs, "
                         "--models trains two models; give one of them")
    if args.runs:
        dirs = [Path(d) for d in _pair(args.runs, "--runs")]
        for d in dirs:
            if not (d / "checkpoint.pt").is_file():
                raise UsageError(f"--runs: {d}/checkpoint.pt does not exist")
        labels = [d.name for d in dirs]
        name = args.name or "-vs-".join(labels)
        check_run_name(f"compare-{name}", "--name")
        sides = [load_side(lab, d, device) for lab, d in zip(labels, dirs)]
        if sides[0].run.domain != sides[1].run.domain:
            raise UsageError(f"--runs: {sides[0].run.domain} and {sides[1].run.domain} runs cannot be compared")
        return sides, runs_dir / f"compare-{name}", 0.0
    domain, dataset = resolve_domain(args.domain, args.dataset)
    models = _pair(args.models or "gumbel_vae,discrete_rae", "--models")
    if models[0] == models[1]:
        raise UsageError("--models: name two different models (or compare two runs with --runs)")
    out_dir = runs_dir / check_run_name(f"compare-{args.name or '-vs-'.join(models) + '-' + (dataset or domain)}",
                                        "--name")
    overrides = overrides_for(args, domain, dataset)
    runs = [resolve_run_config(domain, m, args.preset, args.config, overrides) for m in models]
    for run, model in zip(runs, models):
        train_or_reuse(run, out_dir / model, device, args.overwrite, progress=not args.quiet)
    train_s = time.monotonic() - t0
    return [load_side(m, out_dir / m, device) for m in models], out_dir, train_s


def eval_settings(args: argparse.Namespace) -> EvalSettings:
    settings = dataclasses.replace(PRESET_EVAL.get(args.preset, EvalSettings()))
    for flag, key in (("iw_k", "iw_k"), ("n_eval", "n_eval"), ("n_samples", "n_samples")):
        value = getattr(args, flag)
        if value is not None:
            if value < 0 or (key == "iw_k" and value < 1):
                raise UsageError(f"--{flag.replace('_', '-')} must be positive")
            setattr(settings, key, value)
    return settings


def run(args: argparse.Namespace) -> int:
    """The ``compare`` subcommand."""
    import shlex
    import sys

    start = time.monotonic()
    device = choose_device(args.device)
    settings = eval_settings(args)
    sides, out_dir, train_s = obtain_sides(args, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_eval = time.monotonic()
    for side in sides:
        log.info("evaluating %s", side.label)
        evaluate_side(side, settings)
    pictures = draw_pictures(sides, out_dir)
    meta = {"command": "python -m discrete_rae " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "device": str(device), "preset": args.preset, "iw_k": settings.iw_k, "train_s": train_s,
            "eval_s": time.monotonic() - t_eval, "wall_s": time.monotonic() - start,
            "settings": dataclasses.asdict(settings)}
    report = write_report(sides, out_dir, pictures, meta)
    view = VIEWS[sides[0].run.domain]
    print("\n".join(verdict(sides, view)))
    print(f"report: {report}  ({meta['wall_s']:.0f} s)")
    return 0
