"""DDP over NCCL with the trainer, under ``torchrun`` (a stage of the GPU check).

    torchrun --standalone --nproc_per_node=N scripts/gpu_nccl.py OUT DATA DATA_DIR [--device cuda]

Why this exists: with one process, ``train.py`` never joins a process group (there is nothing
to all-reduce), so ``torchrun --nproc_per_node=1 train.py`` alone does not touch NCCL on a
one-GPU machine. Here every rank joins the group (NCCL on CUDA, gloo on the CPU), checks an
all-reduce, and trains the molecules smoke model (conv encoder, so BatchNorm becomes
SyncBatchNorm on CUDA) for one epoch through the trainer's DDP wrapper, whatever the world
size; rank 0 writes and re-loads the checkpoint. Prints ONE JSON line (rank 0) with ``ok``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from discrete_rae.checkpoint import load_checkpoint  # noqa: E402
from discrete_rae.config import DataConfig, EvalConfig, RunConfig, TrainConfig, replace  # noqa: E402
from discrete_rae.pipeline import build_model, checkpoint_payload  # noqa: E402
from discrete_rae.presets import get_preset  # noqa: E402
from discrete_rae.catalog import load_all  # noqa: E402
from discrete_rae.registry import DOMAINS, MODELS  # noqa: E402
from discrete_rae.trainer import DistInfo, Trainer  # noqa: E402


def smoke_run(data: str, data_dir: str, n_train: int) -> RunConfig:
    """The molecules smoke configuration of grammar_rae on ``data``, one epoch."""
    load_all()
    spec, preset = MODELS.get("grammar_rae"), get_preset("molecules", "smoke")
    sections = {"model": spec.config_for("molecules"), "train": TrainConfig(), "data": DataConfig(),
                "eval": EvalConfig()}
    for name in sections:
        sections[name] = replace(sections[name], preset.get(name, {}))
    sections["train"] = replace(sections["train"], {"epochs": 1})
    sections["data"] = replace(sections["data"], {"dataset": data, "n_train": n_train, "data_dir": data_dir})
    return RunConfig(domain="molecules", model_name="grammar_rae", preset="smoke", **sections)


def main(argv: list[str] | None = None) -> int:
    import torch.distributed as tdist

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("data")
    p.add_argument("data_dir")
    p.add_argument("--device", default="cuda")
    p.add_argument("--n-train", type=int, default=2000, help="molecules loaded (default 2000)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per process (default 0: cores / processes)")
    args = p.parse_args(argv)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if args.device.startswith("cuda"):
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // max(world, 1)))
    tdist.init_process_group(backend=backend)
    try:
        probe = torch.full((4,), float(rank + 1), device=device)
        tdist.all_reduce(probe)
        reduce_ok = bool(torch.all(probe == world * (world + 1) / 2))

        run = smoke_run(args.data, args.data_dir, args.n_train)
        prepared = DOMAINS.get("molecules").prepare(run, progress=False)
        torch.manual_seed(run.train.seed)
        model = build_model(run, prepared.codec)
        run_dir = Path(args.out) / "run"
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
        amp = torch.bfloat16 if device.type == "cuda" else None
        trainer = Trainer(model, run.train, run_dir if rank == 0 else None, device, amp,
                          checkpoint_extra=lambda: checkpoint_payload(run, prepared.codec, {}),
                          dist=DistInfo(rank, world), progress=False)
        # the trainer wraps the loss in DDP only for world > 1; wrap it here for any world size
        if world == 1:
            trainer.step_fn = trainer._wrap_ddp(model, device)
        state = trainer.fit(prepared.train, prepared.val)
        sync_bn = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
        if rank == 0:
            ckpt = load_checkpoint(run_dir / "checkpoint.pt")
            losses = [h["train"]["loss"] for h in state.history] + [h["val"]["loss"] for h in state.history]
            result = {"backend": backend, "world_size": world, "all_reduce_ok": reduce_ok,
                      "ddp": type(trainer.step_fn).__name__, "sync_batchnorm_layers": sync_bn,
                      "epochs": state.epoch, "steps": state.step, "checkpoint_epoch": ckpt["trainer"]["epoch"],
                      "losses_finite": all(math.isfinite(v) for v in losses), "seconds": round(state.seconds, 2)}
            result["ok"] = (reduce_ok and result["ddp"] == "DistributedDataParallel" and state.epoch == 1
                            and result["checkpoint_epoch"] == 1 and result["losses_finite"]
                            and (sync_bn > 0 or device.type != "cuda"))
            print(json.dumps(result))
            return 0 if result["ok"] else 1
        return 0
    finally:
        tdist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
