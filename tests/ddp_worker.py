"""Worker of tests/test_ddp.py (not a test module).

``torchrun --standalone --nproc_per_node=N tests/ddp_worker.py OUT DATA_DIR BATCH [MODEL]`` trains
the expressions smoke model (default ``grammar_rae``; e.g. ``aae`` for a model with several
phases and optimizers) for two epochs on every rank (gloo, CPU) and saves each rank's final
weights and epoch history to ``OUT/rank{r}.pt``. :func:`train_once` is also called in-process
by the test for the single-process reference.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from discrete_rae.config import RunConfig
from discrete_rae.pipeline import build_model
from discrete_rae.registry import DOMAINS
from discrete_rae.runconfig import resolve_run_config
from discrete_rae.trainer import DistInfo, Trainer

EPOCHS = 2
N_TRAIN = 360  # divisible by the world size, so DDP and one process see the same global batches


def smoke_config(data_dir: str, batch_size: int, model: str = "grammar_rae") -> RunConfig:
    """The expressions smoke run of ``model`` (GRU encoder) with ``batch_size`` per process."""
    # the GRU encoder has no BatchNorm: gloo has no SyncBatchNorm, so a BatchNorm would see the
    # per-process batch and the run could not equal one process with the global batch
    return resolve_run_config("expressions", model, "smoke", None,
                              {"train": {"epochs": EPOCHS, "batch_size": batch_size}, "model": {"encoder": "gru"},
                               "data": {"data_dir": data_dir}})


def train_once(data_dir: str, batch_size: int, dist: DistInfo | None = None,
               model_name: str = "grammar_rae") -> dict[str, Any]:
    """Train on the first N_TRAIN training examples; the final weights, the epoch history and the
    initial weights (to tell which parameters training changed)."""
    run = smoke_config(data_dir, batch_size, model_name)
    prepared = DOMAINS.get("expressions").prepare(run, progress=False)
    torch.manual_seed(run.train.seed)
    model = build_model(run, prepared.codec)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, run.train, None, torch.device("cpu"), dist=dist, progress=False)
    state = trainer.fit(prepared.train[:N_TRAIN], prepared.val)
    return {"model_state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "history": state.history, "initial_state": initial}


def main(out: str, data_dir: str, batch_size: int, model_name: str = "grammar_rae") -> int:
    from discrete_rae.distributed import setup_distributed

    torch.set_num_threads(1)
    dist = setup_distributed(torch.device("cpu"))
    try:
        result = train_once(data_dir, batch_size, dist.info, model_name)
        result["world_size"] = dist.world_size
        torch.save(result, Path(out) / f"rank{dist.info.rank}.pt")
    finally:
        dist.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:5]))
