"""Shared check of the multi-optimizer models' tests (not a test module): training 2 epochs at
once must equal 1 epoch, a checkpoint, then a resume to 2 epochs (weights, every optimizer's
moments and the logged losses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from discrete_rae.config import replace
from discrete_rae.trainer import Trainer


def fit_epochs(build: Callable[[], tuple[Any, Any, torch.nn.Module]], run_dir: Path, epochs: int,
               resume_from: dict | None = None) -> tuple[Trainer, torch.nn.Module]:
    """Build a fresh (run, prepared, model) and train it for ``epochs`` (seed 3, no early stop),
    first restoring ``resume_from`` (a checkpoint dict) when given."""
    run, prepared, model = build()
    cfg = replace(run.train, {"epochs": epochs, "early_stop": 0, "seed": 3})
    trainer = Trainer(model, cfg, run_dir, torch.device("cpu"), progress=False)
    if resume_from is not None:
        model.load_state_dict(resume_from["model_state"])
        trainer.load_state_dict(resume_from["trainer"])
    trainer.fit(prepared.train, prepared.val)
    return trainer, model


def resume_runs(build: Callable[[], tuple[Any, Any, torch.nn.Module]], tmp_path: Path) -> tuple[Any, ...]:
    """(ref_trainer, ref_model, checkpoint after 1 epoch, resumed_trainer, resumed_model)."""
    (tmp_path / "ref").mkdir()
    ref_trainer, ref = fit_epochs(build, tmp_path / "ref", 2)
    (tmp_path / "part").mkdir()
    fit_epochs(build, tmp_path / "part", 1)
    ckpt = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    resumed_trainer, resumed = fit_epochs(build, tmp_path / "part", 2, resume_from=ckpt)
    return ref_trainer, ref, ckpt, resumed_trainer, resumed


def assert_same_training(ref_trainer: Trainer, ref: torch.nn.Module, resumed_trainer: Trainer,
                         resumed: torch.nn.Module) -> None:
    """Identical weights, Adam first moments of every optimizer, and logged training losses."""
    for (k, a), (_, b) in zip(ref.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    for name, opt in ref_trainer.optimizers.items():
        a, b = opt.state_dict()["state"], resumed_trainer.optimizers[name].state_dict()["state"]
        assert all(torch.equal(a[i]["exp_avg"], b[i]["exp_avg"]) for i in a), name
    assert [r["train"] for r in ref_trainer.state.history] == [r["train"] for r in resumed_trainer.state.history]
