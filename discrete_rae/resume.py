"""``train --resume``: which settings may change when a run is continued, and how.

A resumed run continues from its checkpoint: the weights, the optimiser state, the data split
and the encoding all depend on the settings it was trained with. The policy chosen here:

* **Safe to change** (honoured, logged, and recorded in the checkpoint, ``config.toml`` and
  ``run.json`` under ``resumed``): ``epochs``, ``max_minutes``, ``early_stop`` and ``compile``
  (how long and how fast to train, not what), ``data.workers`` and ``data.data_dir`` (where the
  data and its cache live: the data itself is checked against the recorded data hash), and every
  ``[eval]`` option (they only affect the evaluation after training).
* **Refused** with one error naming the flag: everything else (model sizes, ``lr``,
  ``batch_size``, ``seed``, ``dataset``, ...), and ``--model`` / ``--domain`` / ``--preset``
  naming something other than the run's. Silently ignoring them (the earlier behaviour) trained
  something else than the user asked for; applying them would mix two configurations in one
  run. A value equal to the recorded one is accepted (so a resume command may repeat the
  original flags).
* **A stopped run continues when its stop no longer holds**: a run stopped by its time budget
  trains on when ``--max-minutes`` is raised above the minutes already trained (or set to 0 =
  no budget); a run stopped early trains on when ``--early-stop`` is raised above its count of
  epochs without improvement (or 0 = off). Asking for more ``--epochs`` while the stop still
  holds is an error that says which flag to raise, instead of a run that does nothing and
  exits 0. The time budget counts all training of the run, across resumes (the trainer
  measures it so), hence "raise", not "renew".
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from .checkpoint import load_run_checkpoint
from .config import ConfigError, RunConfig, collect_flags, load_toml, replace, to_dict
from .runconfig import run_config_from_checkpoint

log = logging.getLogger(__name__)

#: Settings a resumed run may change, per config section ("*" = every key of the section).
SAFE_TO_CHANGE: dict[str, set[str]] = {"train": {"epochs", "max_minutes", "early_stop", "compile"},
                                       "data": {"workers", "data_dir"}, "eval": {"*"}, "model": set()}
TIME_BUDGET = "time budget"
EARLY_STOP = "early stopping"


class ResumeError(ConfigError):
    """A flag that cannot be honoured when a run is resumed (one line, exit 2)."""


def resume_config(run_dir: Path, args: argparse.Namespace) -> RunConfig:
    """The RunConfig of the run in ``run_dir`` with the safe changes of ``args`` applied.

    Raises :class:`ResumeError` for a flag (or ``--config`` key) that would change anything else,
    and for ``--epochs`` beyond the epochs done when the run's stop (time budget, early stopping)
    still holds.
    """
    ckpt = load_run_checkpoint(Path(run_dir) / "checkpoint.pt")
    run = run_config_from_checkpoint(ckpt)
    _check_identity(run, args)
    file_cfg = load_toml(args.config) if getattr(args, "config", None) else {}
    for section in SAFE_TO_CHANGE:
        for source, overrides in ((f"--config {args.config}", file_cfg.get(section, {})),
                                  ("flag", collect_flags(args, section))):
            for key, value in overrides.items():
                _apply(run, section, key, value, source)
    _check_can_continue(run, ckpt["trainer"], args, Path(run_dir))
    return run


def _check_identity(run: RunConfig, args: argparse.Namespace) -> None:
    """--model / --domain / --preset must name the run's own (defaults are not user choices)."""
    given = {"--model": (getattr(args, "model", None), None, run.model_name),
             "--domain": (getattr(args, "domain", None), "molecules", run.domain),
             "--preset": (getattr(args, "preset", None), "quick", run.preset)}
    for flag, (value, default, recorded) in given.items():
        if value is not None and value != default and value != recorded:
            raise ResumeError(f"{flag} {value}: the run to resume is {run.model_name} on {run.domain} "
                              f"({run.preset} preset); drop {flag} or start a new run")


def _apply(run: RunConfig, section: str, key: str, value: Any, source: str) -> None:
    old_obj = getattr(run, section)
    new_obj = replace(old_obj, {key: value})
    old, new = getattr(old_obj, key), getattr(new_obj, key)
    if new == old:
        return
    allowed = SAFE_TO_CHANGE[section]
    if "*" not in allowed and key not in allowed:
        what = f"--{key.replace('_', '-')} {value}" if source == "flag" else f"{source}: [{section}] {key} = {value!r}"
        raise ResumeError(f"{what} cannot be changed when resuming: the run was trained with {key} = {old!r} "
                          "(its weights, optimiser state and data split depend on it); drop it, or start a new "
                          "run with another --run-name")
    setattr(run, section, new_obj)
    log.info("resume: %s.%s changed from %r to %r", section, key, old, new)


def _check_can_continue(run: RunConfig, state: dict[str, Any], args: argparse.Namespace, run_dir: Path) -> None:
    """Refuse --epochs / --max-minutes / --early-stop values that cannot let the run train on."""
    flags = collect_flags(args, "train")
    done, stopped = int(state.get("epoch", 0)), str(state.get("stopped", ""))
    cfg = run.train
    if "epochs" in flags and cfg.epochs < done:
        raise ResumeError(f"--epochs {cfg.epochs}: run {run_dir} has already trained {done} epochs")
    wants_more = "epochs" in flags and cfg.epochs > done
    minutes = float(state.get("seconds", 0.0)) / 60
    budget_given = "max_minutes" in flags
    if stopped == TIME_BUDGET and (wants_more or budget_given) and not budget_allows(cfg.max_minutes, minutes):
        raise ResumeError(f"run {run_dir} was stopped by its time budget after {minutes:.3g} minutes of training "
                          f"(max_minutes {cfg.max_minutes:g}); to train on, raise it: --max-minutes M with "
                          f"M > {minutes:.3g}, or --max-minutes 0 for no budget")
    bad = int(state.get("bad_epochs", 0))
    if stopped.startswith(EARLY_STOP) and (wants_more or "early_stop" in flags) and not (
            cfg.early_stop == 0 or bad < cfg.early_stop):
        raise ResumeError(f"run {run_dir} stopped early ({stopped}); to train on, raise --early-stop above {bad} "
                          "or set it to 0 (off)")


def budget_allows(max_minutes: float, minutes_trained: float) -> bool:
    """True when a time budget of ``max_minutes`` (0 = none) leaves time after ``minutes_trained``."""
    return max_minutes <= 0 or max_minutes > minutes_trained


def reopen(state: Any, cfg: Any) -> None:
    """Clear the stop of a resumed :class:`~discrete_rae.trainer.TrainState` that no longer holds
    under the (possibly raised) ``cfg`` limits, so that training continues."""
    if state.epoch >= cfg.epochs or not state.stopped:
        return
    if state.stopped == TIME_BUDGET and budget_allows(cfg.max_minutes, state.seconds / 60):
        log.info("resume: the time budget was raised to %g minutes (%.2f used); training on", cfg.max_minutes,
                 state.seconds / 60)
        state.stopped = ""
    elif state.stopped.startswith(EARLY_STOP) and (cfg.early_stop == 0 or state.bad_epochs < cfg.early_stop):
        log.info("resume: early stopping relaxed to %d epochs; training on", cfg.early_stop)
        state.stopped = ""


def resume_history(ckpt: dict[str, Any], run: RunConfig) -> list[dict[str, Any]]:
    """The checkpoint's record of earlier resumes plus this one's changed settings (if any)."""
    history = list((ckpt.get("meta") or {}).get("resumed", []))
    changes: dict[str, list[Any]] = {}
    for name, obj in run.sections().items():
        recorded = ckpt["config"].get(name, {})
        for key, value in to_dict(obj).items():
            if key in recorded and recorded[key] != value:
                changes[f"{name}.{key}"] = [recorded[key], value]
    if changes:
        history.append({"at_epoch": int(ckpt["trainer"].get("epoch", 0)), "changes": changes})
    return history
