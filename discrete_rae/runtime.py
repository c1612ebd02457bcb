"""Where a computation runs: CPU threads, device and precision.

Shared by the commands and by library callers (the API); the command line adds only logging.
"""

from __future__ import annotations

import os

import torch

from .errors import UsageError


def set_threads(n: int) -> None:
    """Fix torch's intra-op threads and the BLAS/OpenMP pools of numpy and sklearn.

    ``0`` (the default) means all cores shared among the local torchrun processes
    (``os.cpu_count() // LOCAL_WORLD_SIZE``, at least 1). Why a fixed count: on a 2-core
    machine the quick molecules preset trains 1.44x faster with 2 threads than with 1 when
    it has the machine to itself (benchmarks/train_speed.py), but two processes with two
    threads each fight for the cores; and the BLAS pools too: the ex-post GMM (sklearn EM)
    took 65 s with OpenBLAS's default threads beside another process, and 6.5 s on one thread.
    """
    if n < 0:
        raise UsageError("--threads must be >= 0")
    if n == 0:
        n = max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # sklearn's dependency; absent only in unusual installs
        return
    threadpool_limits(n)


def choose_device(name: str | torch.device) -> torch.device:
    """``auto``: CUDA when available, else CPU. Chosen once by the caller; models never name a device."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UsageError(f"--device {name!r}: choose auto, cpu or cuda[:N]")
    return torch.device(name)


def choose_precision(name: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA by default; fp32 on the CPU (CPU bf16 is slower for these nets, and the
    trainer autocasts on CUDA only, so an explicit bf16 on the CPU is an error, not a silent fp32)."""
    if name == "fp32" or (name == "auto" and device.type != "cuda"):
        return None
    if name == "bf16" and device.type != "cuda":  # the trainer autocasts on CUDA only
        raise UsageError(f"--precision bf16 needs a CUDA device, not {device.type}: use --precision auto or fp32")
    if name in ("auto", "bf16"):
        return torch.bfloat16
    raise UsageError(f"--precision {name!r}: choose auto, fp32 or bf16")
