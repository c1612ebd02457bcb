"""PyTorch DDP set-up for ``torchrun --nproc_per_node=N train.py ...``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT); we then join the
process group (NCCL on CUDA, gloo on the CPU). Without those variables everything runs in one
process and every method here is a no-op.

Division of labour (see docs/SCALING.md): all ranks load the data and train (batches sharded by
rank, gradients all-reduced by DDP); rank 0 alone creates the run directory (its name is
broadcast to the others), writes checkpoints, metrics and logs, fits the ex-post samplers and
evaluates. The other ranks leave as soon as training ends.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from .config import ConfigError
from .trainer import DistInfo

log = logging.getLogger(__name__)


@dataclass
class Distributed:
    """The process group of this run (or a stand-in for a single process)."""

    info: DistInfo
    local_rank: int = 0
    initialised: bool = False

    @property
    def world_size(self) -> int:
        return self.info.world_size

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; for small control data such as a run path)."""
        if not self.initialised:
            return obj
        import torch.distributed as tdist

        box = [obj if self.is_main else None]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Leave the process group.

        No barrier: rank 0 may still be evaluating for a long time after training, and a barrier
        there would run into the collective timeout on the other ranks. All collectives of the
        run have completed when training returns, so each rank can leave on its own.
        """
        if self.initialised:
            import torch.distributed as tdist

            if tdist.is_initialized():
                tdist.destroy_process_group()
            self.initialised = False


def setup_distributed(device: torch.device) -> Distributed:
    """Join the process group when launched by torchrun; a no-op otherwise.

    Raises:
        ConfigError: more processes per node than GPUs, or torch.distributed unavailable.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(DistInfo())
    import torch.distributed as tdist

    if not tdist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) on this node; "
                              "use --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(local)
    tdist.init_process_group(backend=backend)
    log.debug("joined the %s process group as rank %d of %d (local rank %d)", backend, rank, world, local)
    return Distributed(DistInfo(rank, world), local, True)
