"""Training and decoding throughput on a GPU (or the CPU), for the GPU check.

``train``: builds the model exactly as ``train.py`` would (same flags and preset), prepares the
data, and runs ``--warmup`` untimed then up to ``--steps`` timed optimiser steps (or until
``--max-seconds``), each as the trainer takes it: the batch copied from pinned memory, the loss
under autocast (``--precision``), a host sync on the loss (the trainer's non-finite guard),
backward, gradient clipping, AdamW. Prints steps/s, examples/s, and the projected time of one
epoch of ``--epoch-size`` examples (250,000: a ZINC-250k-sized epoch) at that rate.

``decode``: greedy decoding with every decoding mask of the codec on (pipeline.DECODING_OPTIONS),
(a) of random logits ``[N, L, V]`` by the codec alone, and (b) of codes z ~ N(0, I) by the
model (decoder + masks), in batches. The weights are those of a fresh model: decoding cost
depends on training only through when rows finish (the length mask finishes every row).

    python benchmarks/gpu_speed.py train --preset paper --dataset .whl/moses_sample.smi.gz \\
        --n-train 20000 --device cuda --precision bf16
    python benchmarks/gpu_speed.py decode --preset paper --dataset .whl/moses_sample.smi.gz \\
        --n-train 2000 --device cuda --n 10000
    python benchmarks/gpu_speed.py train --preset smoke --device cpu --steps 3   # CPU smoke run

Every option not listed by ``--help`` is a ``train.py`` option. Prints ONE JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from discrete_rae.commands.train import parse_args, run_config_from_args  # noqa: E402
from discrete_rae.pipeline import DECODING_OPTIONS, build_model  # noqa: E402
from discrete_rae.registry import DOMAINS  # noqa: E402
from discrete_rae.runtime import choose_device, choose_precision, set_threads  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def setup(train_argv: list[str]) -> tuple[Any, Any, torch.nn.Module, torch.device, torch.dtype | None]:
    """(run config, prepared data, model on the device, device, autocast dtype) from train.py flags."""
    args = parse_args(train_argv)
    set_threads(args.threads)
    run = run_config_from_args(args)
    device = choose_device(args.device)
    amp = choose_precision(args.precision, device)
    prepared = DOMAINS.get(run.domain).prepare(run, progress=False)
    torch.manual_seed(run.train.seed)
    model = build_model(run, prepared.codec).to(device)
    return run, prepared, model, device, amp


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "torch": str(torch.__version__)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return info


def train_throughput(train_argv: list[str], steps: int, warmup: int, max_seconds: float,
                     epoch_size: int) -> dict[str, Any]:
    """Time training steps of the configuration ``train_argv``; figures as a dict."""
    run, prepared, model, device, amp = setup(train_argv)
    model.train()
    opt = model.configure_optimizer(run.train.lr)
    data = prepared.train
    batch = min(run.train.batch_size, len(data))
    n_batches = len(data) // batch
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(run.train.seed))
    pin = device.type == "cuda"
    losses: list[float] = []

    def step(i: int) -> None:
        idx = order[(i % n_batches) * batch:][:batch]
        x = data[idx]
        x = x.pin_memory().to(device, non_blocking=True) if pin else x.to(device)
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            loss = model.loss(x, step=i)["loss"]
        losses.append(float(loss.detach()))  # the trainer syncs on the loss every step as well
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if run.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), run.train.grad_clip)
        opt.step()

    t_warm = time.perf_counter()
    for i in range(warmup):
        step(i)
    _sync(device)
    warm_s = time.perf_counter() - t_warm
    t0 = time.perf_counter()
    done = 0
    while done < steps and (done == 0 or time.perf_counter() - t0 < max_seconds):
        step(warmup + done)
        done += 1
    _sync(device)
    seconds = time.perf_counter() - t0
    per_s = done * batch / seconds
    return {
        "benchmark": "train", "model": run.model_name, "domain": run.domain, "preset": run.preset,
        "dataset": run.data.dataset, "batch_size": batch, "precision": str(amp).replace("torch.", "") if amp else "fp32",
        "max_length": getattr(prepared.codec, "max_length", None),
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "warmup_steps": warmup, "warmup_s": round(warm_s, 2), "timed_steps": done, "timed_s": round(seconds, 3),
        "steps_per_s": round(done / seconds, 2), "examples_per_s": round(per_s, 1),
        "epoch_size": epoch_size, "projected_epoch_s": round(epoch_size / per_s, 2),
        "first_loss": round(losses[0], 3), "last_loss": round(losses[-1], 3),
        "losses_finite": all(math.isfinite(v) for v in losses),
        "threads": torch.get_num_threads(), **device_info(device),
    }


def decode_throughput(train_argv: list[str], n: int, batch: int, n_logits: int) -> dict[str, Any]:
    """Time greedy decoding with every decoding mask on; figures as a dict."""
    run, prepared, model, device, _ = setup(train_argv)
    model.eval()
    codec = prepared.codec
    options = {key: True for key in DECODING_OPTIONS if hasattr(codec, key)}
    for key in options:
        setattr(codec, key, True)
    gen = torch.Generator().manual_seed(run.train.seed)
    out: dict[str, Any] = {"benchmark": "decode", "model": run.model_name, "domain": run.domain,
                           "preset": run.preset, "masks": sorted(options), "batch": batch,
                           "max_length": getattr(codec, "max_length", None)}
    if hasattr(codec, "decode_logits") and n_logits > 0:
        logits = torch.randn(n_logits, codec.max_length, codec.vocab_size, generator=gen).to(device)
        codec.decode_logits(logits[:8])  # warm-up: device tables, kernels
        _sync(device)
        t0 = time.perf_counter()
        ids, finished = codec.decode_logits(logits)
        _sync(device)
        seconds = time.perf_counter() - t0
        out.update({"logits_n": n_logits, "logits_s": round(seconds, 3),
                    "logits_samples_per_s": round(n_logits / seconds, 1),
                    "logits_finished": round(float(finished.float().mean()), 4)})
    z = torch.randn(n, _code_dim(model, prepared, device), generator=gen)
    model.generate(z[:8].to(device))  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    finished_n = 0
    for start in range(0, n, batch):
        result = model.generate(z[start:start + batch].to(device))
        if isinstance(result, tuple):
            finished_n += int(result[1].sum())
    _sync(device)
    seconds = time.perf_counter() - t0
    out.update({"codes_n": n, "codes_s": round(seconds, 3), "codes_samples_per_s": round(n / seconds, 1),
                "codes_finished": round(finished_n / n, 4) if finished_n else None,
                "threads": torch.get_num_threads(), **device_info(device)})
    return out


def _code_dim(model: torch.nn.Module, prepared: Any, device: torch.device) -> int:
    """Width of the model's codes, read from one encoded example."""
    with torch.no_grad():
        return int(model.encode(prepared.train[:1].to(device)).shape[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train", help="training steps/s and examples/s")
    t.add_argument("--steps", type=int, default=60, help="timed steps at most (default 60)")
    t.add_argument("--warmup", type=int, default=10, help="untimed steps first (default 10)")
    t.add_argument("--max-seconds", type=float, default=30.0, help="stop timing after this many seconds (default 30)")
    t.add_argument("--epoch-size", type=int, default=250_000, help="examples in the projected epoch (default 250,000)")
    d = sub.add_parser("decode", help="greedy masked decoding samples/s")
    d.add_argument("--n", type=int, default=10_000, help="codes decoded by the model (default 10,000)")
    d.add_argument("--batch", type=int, default=2_500, help="codes per generate call (default 2,500)")
    d.add_argument("--logits-n", type=int, default=10_000, help="random logit rows decoded by the codec (0: skip)")
    args, train_argv = p.parse_known_args(argv)
    if args.what == "train":
        if args.steps <= 0 or args.warmup < 0:
            p.error("--steps must be positive and --warmup >= 0")
        result = train_throughput(train_argv, args.steps, args.warmup, args.max_seconds, args.epoch_size)
    else:
        if args.n <= 0 or args.batch <= 0:
            p.error("--n and --batch must be positive")
        result = decode_throughput(train_argv, args.n, args.batch, args.logits_n)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
