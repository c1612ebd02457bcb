"""PyTorch DDP set-up for ``torchrun --nproc_per_node=N train.py ...``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; we then join the process group (NCCL on CUDA,
gloo on the CPU). Without those variables everything runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .trainer import DistInfo


@dataclass
class Distributed:
    info: DistInfo
    local_rank: int = 0
    initialised: bool = False

    @property
    def world_size(self) -> int:
        return self.info.world_size

    def close(self) -> None:
        if self.initialised:
            import torch.distributed as tdist

            tdist.barrier()
            tdist.destroy_process_group()


def setup_distributed(device: torch.device) -> Distributed:
    """Join the process group when launched by torchrun; a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(DistInfo())
    import torch.distributed as tdist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local)
    tdist.init_process_group(backend=backend)
    return Distributed(DistInfo(rank, world), local, True)
