"""``optimize``: Bayesian optimisation in a run's latent space against random search (GVAE
protocol; see :mod:`discrete_rae.optimize`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError
from ..interpolate import load_sequence_run
from ..optimize import (OBJECTIVES, MissingExtraError, Settings, format_summary, optimize, require_botorch,
                        write_outputs)
from ..runtime import choose_device, set_threads
from .common import add_common

NAME = "optimize"
HELP = "Bayesian optimisation in a run's latent space vs random search (GVAE protocol)"

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory (e.g. runs/grammar_vae-molecules)")
    p.add_argument("--objective", required=True, choices=OBJECTIVES.names(),
                   help="; ".join(f"{n}: {o.description}, {o.domain}" for n, o in OBJECTIVES.items()))
    p.add_argument("--rounds", type=int, default=5, help="BO rounds (default 5)")
    p.add_argument("--batch", type=int, default=50, help="codes proposed per round (default 50)")
    p.add_argument("--seeds", type=int, default=10, help="independent repetitions, seeds 0..N-1 (default 10)")
    p.add_argument("--n-train", type=int, default=2000,
                   help="training strings per seed, 90%% for the GP and 10%% to test it (default 2000; exact GP)")
    p.add_argument("--decodes", type=int, default=10, help="sampled decodes per proposed code (default 10)")
    p.add_argument("--out", default=None, help="output folder (default: RUN/optimize-OBJECTIVE)")
    add_common(p)


def settings_from_args(args: argparse.Namespace) -> Settings:
    for flag in ("rounds", "batch", "seeds", "decodes"):
        if getattr(args, flag) <= 0:
            raise UsageError(f"--{flag} must be positive")
    if args.n_train < 10:
        raise UsageError("--n-train must be at least 10 (90/10 split for the GP)")
    return Settings(rounds=args.rounds, batch=args.batch, n_train=args.n_train, decodes=args.decodes)


def run(args: argparse.Namespace) -> int:
    """``optimize``: BO vs random search on a run; prints the table, writes summary.json + PNGs."""
    settings = settings_from_args(args)
    objective = OBJECTIVES.get(args.objective)
    try:
        require_botorch()
    except MissingExtraError as err:
        raise UsageError(str(err)) from None
    set_threads(args.threads)
    device = choose_device(args.device)
    loaded, domain = load_sequence_run(Path(args.run), device)
    if objective.domain != loaded.run.domain:
        fits = ", ".join(n for n, o in OBJECTIVES.items() if o.domain == loaded.run.domain) or "none"
        raise UsageError(f"objective {objective.name!r} is for {objective.domain} runs; {args.run} is a "
                             f"{loaded.run.domain} run (objectives for it: {fits})")
    prepared = domain.prepare(loaded.run, codec_state=loaded.checkpoint["codec"], progress=not args.quiet)
    summary = optimize(loaded.model, domain, prepared.train, prepared.train_texts, objective, settings,
                       list(range(args.seeds)), device, progress=not args.quiet)
    summary = {"run": str(loaded.run_dir), "model": loaded.run.model_name, **summary}
    out = Path(args.out) if args.out else loaded.run_dir / f"optimize-{objective.name}"
    write_outputs(summary, out)
    print(format_summary(summary))
    print(f"written to {out}  (summary.json, best_per_round.png, top3.png; {summary['timing']['total_s']:.0f} s)")
    return 0
