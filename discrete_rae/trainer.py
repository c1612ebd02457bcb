"""A generic trainer: it knows ``model.configure_optimizers(lr)``, ``model.phases()`` and
``model.loss(x, step)``, nothing about any model.

Phases: one training step runs the model's phases in order (objectives.Phase: a loss, the name
of the optimizer that minimises it, how many repeats per batch); most models have one phase
and one optimizer ("main"). Adversarial models add e.g. a discriminator phase with its own
optimizer. Every optimizer has its learning-rate schedule and is checkpointed and restored;
the NaN guard checks every phase's loss; validation and early stopping use ``model.loss``
(the first phase's terms).

Features: AdamW from the model, ReduceLROnPlateau on the validation loss or a linear warm-up /
decay schedule over a step budget, gradient clipping, bf16 autocast on CUDA, early stopping (best
weights restored), a fixed number of steps (``max_steps``) and/or a wall-clock budget,
length-bucketed batches for sequences, data as one tensor or a tuple of aligned tensors, tqdm
with the loss terms, ``metrics.jsonl`` (one line per epoch), an atomic checkpoint every epoch,
exact resume (optimizer, scheduler, RNG states, epoch, step), a non-finite loss guard, and DDP
when ``torch.distributed`` is initialised.

Data: ``fit(train, val)`` takes one tensor of examples, or a tuple of aligned tensors (e.g.
images and their labels, for models whose loss reads labels). A tuple is batched row by row
like one tensor (:func:`take`) and the phases receive the tuple of batches; the trainer never
looks inside it. One tensor takes exactly the code path it always took.

Crash safety: each epoch ends by writing the checkpoint atomically and only then appending the
epoch's line to ``metrics.jsonl``; a resumed run rewrites ``metrics.jsonl`` from the history in
the checkpoint, so a crash never loses or duplicates an epoch.

DDP: every rank sees the same shuffled order, drops ``n % world_size`` examples of it (so all
ranks take the same number of steps) and takes every ``world_size``-th example; the global batch
is ``batch_size * world_size``. The model noise of rank ``r`` is reseeded from (seed, epoch, r)
at every epoch (different noise per rank; resume stays exact). Per step, one all-reduce of two
flags makes every rank stop together on a non-finite loss or an expired time budget. Epoch
losses are averaged over ranks; only rank 0 writes files. Length bucketing sorts within each
rank's shard, so every rank still takes the same number of steps.

Reproducibility: with ``max_steps`` the run ends after exactly that many optimiser steps, so the
same seed gives the same weights however busy the machine is; ``max_minutes`` is then only a
safety cap, and a run it stops records ``stopped: "time cap"``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .checkpoint import remove_stale_temporaries, save_atomic
from .config import ConfigError, TrainConfig
from .io import write_text
from .objectives import Phase

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is left intact."""


@dataclass
class DistInfo:
    """Rank and world size; world_size 1 means no DDP."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class _LossModule(nn.Module):
    """Wraps the phases' losses as ``forward`` so DDP's gradient hooks see the call."""

    def __init__(self, model: nn.Module, phases: list[Any]) -> None:
        super().__init__()
        self.model = model
        self._phases = phases

    def forward(self, x: Any, step: int, phase: int = 0) -> dict[str, Tensor]:
        return self._phases[phase].loss(x, step)


#: Training data: one tensor of examples [N, ...] or a tuple of tensors aligned on dim 0.
Data = Tensor | tuple[Tensor, ...]


def n_examples(data: Data) -> int:
    """N, the number of examples (rows) of ``data``."""
    return len(data[0]) if isinstance(data, tuple) else len(data)


def take(data: Data, idx: Tensor) -> Data:
    """Rows ``idx`` of ``data``: ``data[idx]``, or the same rows of every tensor of a tuple."""
    if isinstance(data, tuple):
        return tuple(t[idx] for t in data)
    return data[idx]


def check_aligned(data: Data, name: str) -> None:
    """A tuple's tensors must have one row per example each."""
    if isinstance(data, tuple):
        sizes = [len(t) for t in data]
        if not data or len(set(sizes)) != 1:
            raise ValueError(f"{name} data: the tensors of a tuple must have the same number of rows, got {sizes}")


def model_phases(model: nn.Module) -> list[Any]:
    """The model's training phases; a model without ``phases`` has one: its loss, "main"."""
    if hasattr(model, "phases"):
        return list(model.phases())
    return [Phase("main", "main", model.loss)]


def model_optimizers(model: nn.Module, lr: float) -> dict[str, torch.optim.Optimizer]:
    """{name: optimizer}; "main" first. Models with one optimizer give ``configure_optimizer``."""
    if hasattr(model, "configure_optimizers"):
        return dict(model.configure_optimizers(lr))
    return {"main": model.configure_optimizer(lr)}


def rng_state() -> dict[str, Any]:
    """All global RNG states as plain data (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                  shuffle: bool = True, lengths: Tensor | None = None, bucket: int = 0) -> list[Tensor]:
    """Index batches of ``rank`` for one epoch.

    The order depends only on (seed, epoch), so resume is exact. With several processes the
    last ``n % world_size`` examples of the order are dropped, so that every rank takes the same
    number of steps (a rank with an extra step would wait forever in DDP's all-reduce), and rank
    ``r`` takes every ``world_size``-th example from ``r``: the k-th batches of all ranks together
    are the k-th batch of one process with ``batch_size * world_size``.

    ``lengths`` [n] and ``bucket`` > 0 (shuffled epochs only): this rank's shuffled order is cut
    into chunks of ``bucket * batch_size`` examples, each chunk is sorted by length (stable, so
    ties keep the random order) and cut into batches, and the batches are shuffled. Batches then
    hold similar lengths (less padding) but still differ from epoch to epoch. The number of
    batches is unchanged, so ranks stay in step; the global-batch property above no longer holds.
    """
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    else:
        order = torch.arange(n)
    order = order[: n - n % world_size][rank::world_size]  # identity for one process
    if not len(order):
        return []
    if shuffle and lengths is not None and bucket > 0:
        return _bucketed(order, lengths, batch_size, bucket, seed * 100_003 + epoch)
    return list(order.split(batch_size))


def _bucketed(order: Tensor, lengths: Tensor, batch_size: int, bucket: int, seed: int) -> list[Tensor]:
    """Sort ``order`` by ``lengths`` within chunks of ``bucket`` batches; batches in shuffled order."""
    sorted_chunks = []
    for chunk in order.split(bucket * batch_size):
        sorted_chunks.append(chunk[torch.sort(lengths[chunk], stable=True).indices])
    batches = list(torch.cat(sorted_chunks).split(batch_size))
    # the same permutation on every rank (same seed, same number of batches)
    perm = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed + 7_919))
    return [batches[i] for i in perm.tolist()]


def sequence_lengths(data: Tensor, pad_index: int) -> Tensor:
    """Used length of each row of padded ids [N, L]: 1 + position of the last non-pad token."""
    positions = torch.arange(1, data.shape[1] + 1)
    return ((data != pad_index).long() * positions).amax(dim=1)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear schedule factor for the update at ``step`` (0-based) of ``total`` steps.

    (step + 1) / warmup during the warm-up, then (total - step) / (total - warmup): the last
    update uses 1 / (total - warmup) and the rate reaches zero at ``total`` (budgeted training,
    Li et al. 2020).
    """
    if step < warmup:
        return (step + 1) / warmup
    return max(total - step, 0) / max(total - warmup, 1)


@dataclass
class TrainState:
    """Progress of a fit; saved in the checkpoint (``history`` = the metrics.jsonl records)."""

    epoch: int = 0
    step: int = 0
    best_val: float = math.inf
    bad_epochs: int = 0
    seconds: float = 0.0
    stopped: str = ""
    history: list[dict] = field(default_factory=list)


class Trainer:
    """Fits ``model`` on tensors of examples (token ids [N, L] or images [N, C, H, W])."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, run_dir: Path | None, device: torch.device,
                 amp_dtype: torch.dtype | None = None, checkpoint_extra: Callable[[], dict] | None = None,
                 dist: DistInfo | None = None, progress: bool = True) -> None:
        self.model, self.cfg, self.run_dir, self.device = model.to(device), cfg, run_dir, device
        self.amp_dtype = amp_dtype
        self.checkpoint_extra = checkpoint_extra or dict
        self.dist = dist or DistInfo()
        self.progress = progress and self.dist.is_main
        _check_config(cfg)
        self.optimizers = model_optimizers(model, cfg.lr)
        self.phases = model_phases(model)
        unknown = {p.optimizer for p in self.phases} - set(self.optimizers)
        if unknown:
            raise ConfigError(f"training phases name optimizer(s) {sorted(unknown)} that the model does not "
                              f"configure (it has: {', '.join(self.optimizers)})")
        # plateau: stepped per epoch; linear: the rate is a function of the step (see _set_lr),
        # so resume is exact without scheduler state. The plateau state is checkpointed either way.
        self.schedulers = {name: torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=cfg.lr_factor, patience=cfg.lr_patience) for name, opt in self.optimizers.items()}
        self._base_lrs = {name: [group["lr"] for group in opt.param_groups] for name, opt in self.optimizers.items()}
        self._total_steps = 0  # linear schedule: set by fit from max_steps or epochs
        self._lengths: Tensor | None = None  # sequence lengths of the training set (bucketing)
        self.state = TrainState()
        self._best_weights: dict[str, Tensor] | None = None
        self.step_fn = _LossModule(model, self.phases)
        if self.dist.world_size > 1:
            self.step_fn = self._wrap_ddp(model, device)
        if cfg.compile:
            self.step_fn = torch.compile(self.step_fn)

    def _wrap_ddp(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DDP around the loss. On CUDA, BatchNorm becomes SyncBatchNorm (statistics of the
        global batch, as in one process); gloo has no SyncBatchNorm, so on the CPU each process
        normalises with the statistics of its own ``batch_size`` examples."""
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":
            nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place below the root; same parameters
        ids = [device.index] if device.type == "cuda" and device.index is not None else None
        # several phases touch different parameters: DDP must not wait for unused ones
        return DistributedDataParallel(_LossModule(model, self.phases), device_ids=ids,
                                       find_unused_parameters=len(self.phases) > 1)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The "main" optimizer (the only one of single-phase models)."""
        return self.optimizers["main"]

    # --- checkpointing ------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoint.pt"

    def state_dict(self) -> dict[str, Any]:
        s = self.state
        return {"optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
                "schedulers": {n: sch.state_dict() for n, sch in self.schedulers.items()},
                "epoch": s.epoch, "step": s.step, "best_val": s.best_val, "bad_epochs": s.bad_epochs,
                "seconds": s.seconds, "stopped": s.stopped, "history": s.history, "rng": rng_state(),
                "best_weights": self._best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # checkpoints before several optimizers existed hold one "optimizer" / "scheduler"
        optimizers = state.get("optimizers", {"main": state.get("optimizer")})
        schedulers = state.get("schedulers", {"main": state.get("scheduler")})
        missing = set(self.optimizers) - {n for n, v in optimizers.items() if v is not None}
        if missing:
            raise KeyError(f"the checkpoint holds no state for optimizer(s) {sorted(missing)}")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(optimizers[name])
            if schedulers.get(name) is not None:
                self.schedulers[name].load_state_dict(schedulers[name])
        self.state = TrainState(state["epoch"], state["step"], state["best_val"], state["bad_epochs"],
                                state["seconds"], state["stopped"], list(state["history"]))
        self._best_weights = state["best_weights"]
        set_rng_state(state["rng"])

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is None or not self.dist.is_main:
            return
        payload = {**self.checkpoint_extra(), "model_state": self.model.state_dict(), "trainer": self.state_dict()}
        save_atomic(payload, self.checkpoint_path)

    # --- loop ----------------------------------------------------------------------------------
    def _batches(self, n: int, epoch: int, shuffle: bool) -> list[Tensor]:
        """This rank's training batches of epoch ``epoch`` (see :func:`epoch_batches`)."""
        return epoch_batches(n, self.cfg.batch_size, self.cfg.seed, epoch, self.dist.rank, self.dist.world_size,
                             shuffle, self._lengths, self.cfg.bucket_batches)

    def _steps_per_epoch(self, n: int) -> int:
        per_rank = (n - n % self.dist.world_size) // self.dist.world_size
        return -(-per_rank // self.cfg.batch_size)

    def _set_lr(self) -> None:
        """Linear schedule: the rate of the coming update, from the step counter alone."""
        if self.cfg.lr_schedule != "linear":
            return
        warmup = int(round(self.cfg.warmup_fraction * self._total_steps))
        factor = lr_factor(self.state.step, self._total_steps, warmup)
        for name, opt in self.optimizers.items():
            for group, base in zip(opt.param_groups, self._base_lrs[name]):
                group["lr"] = base * factor

    def _training_lengths(self, data: Data) -> Tensor | None:
        """Lengths for bucketing: padded id sequences of a model with a codec, else None
        (for a tuple: of its first tensor)."""
        if self.cfg.bucket_batches <= 0:
            return None
        data = data[0] if isinstance(data, tuple) else data
        pad = getattr(getattr(self.model, "codec", None), "pad_index", None)
        if data.dim() != 2 or pad is None:
            log.warning("bucket_batches ignored: the training data are not padded token sequences")
            return None
        return sequence_lengths(data, int(pad))

    def _eval_batches(self, n: int) -> list[Tensor]:
        """Validation batches of this rank (every example once over all ranks; all when n < world)."""
        order = torch.arange(n)
        if n >= self.dist.world_size:
            order = order[self.dist.rank::self.dist.world_size]
        return list(order.split(self.cfg.batch_size)) if len(order) else []

    def _to_device(self, x: Data) -> Data:
        if isinstance(x, tuple):
            return tuple(self._to_device(t) for t in x)
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device)

    def _autocast(self) -> Any:
        enabled = self.amp_dtype is not None and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=enabled)

    def _all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        """Sum (or max) ``values`` over the ranks; identity for one process."""
        if self.dist.world_size == 1:
            return values
        import torch.distributed as tdist

        packed = torch.tensor(values, dtype=torch.float64, device=self.device)
        tdist.all_reduce(packed, op=tdist.ReduceOp.MAX if op == "max" else tdist.ReduceOp.SUM)
        return packed.tolist()

    def _check_step(self, terms: dict[str, Tensor], deadline: float) -> bool:
        """Raise on a non-finite loss on any rank; return True when the time budget is spent.

        With DDP both decisions are taken together (one all-reduce), before the backward pass,
        so that no rank is left waiting for a gradient all-reduce the others never start.
        """
        finite = bool(torch.isfinite(terms["loss"]))
        bad, over = self._all_reduce([0.0 if finite else 1.0, float(time.monotonic() > deadline)], "max")
        if bad > 0:
            shown = {k: float(v.detach()) for k, v in terms.items()}
            what = f"loss terms {shown}" if not finite else "the loss of another rank"
            raise NonFiniteLossError(
                f"non-finite loss at step {self.state.step} (epoch {self.state.epoch + 1}): {what}; "
                f"the last good checkpoint is {self.checkpoint_path or 'the one written by rank 0'}")
        return over > 0

    def _optimizer_step(self, terms: dict[str, Tensor], name: str = "main") -> None:
        """Backward, clip (a non-finite gradient norm stops training), step optimizer ``name``.

        Gradients of every model parameter are cleared first, so a phase never steps with
        gradients another phase left behind; clipping covers this optimizer's parameters.
        """
        optimizer = self.optimizers[name]
        self.model.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if self.cfg.grad_clip > 0:
            # in the model's parameter order: the norm's float sum then matches one-optimizer training
            mine = {id(p) for group in optimizer.param_groups for p in group["params"]}
            params = [p for p in self.model.parameters() if id(p) in mine]
            norm = nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
            if not torch.isfinite(norm):
                shown = {k: float(v.detach()) for k, v in terms.items()}
                raise NonFiniteLossError(
                    f"non-finite gradient norm at step {self.state.step} (epoch {self.state.epoch + 1}): "
                    f"loss terms {shown}; the last good checkpoint is "
                    f"{self.checkpoint_path or 'the one written by rank 0'}")
        optimizer.step()

    def _seed_rank(self) -> None:
        """DDP: reseed this rank's model noise from (seed, epoch, rank) at each epoch."""
        if self.dist.world_size > 1:
            torch.manual_seed((self.cfg.seed * 1_000_003 + self.state.epoch) * 1009 + self.dist.rank)

    def _train_epoch(self, data: Data, deadline: float) -> dict[str, float]:
        self.model.train()
        self._seed_rank()
        sums: dict[str, float] = {}
        batches = self._batches(n_examples(data), self.state.epoch, shuffle=True)
        bar = tqdm(batches, desc=f"epoch {self.state.epoch + 1}/{self.cfg.epochs}", leave=False,
                   disable=not self.progress, mininterval=1.0, dynamic_ncols=True)
        seen = 0
        for idx in bar:
            extra = self.model.on_step(self.state.step)
            self._set_lr()
            terms, over = self._train_step(self._to_device(take(data, idx)), deadline)
            self.state.step += 1
            seen += 1
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.set_postfix({k: f"{v / seen:.3g}" for k, v in sums.items()} | extra, refresh=False)
            if over:
                if self.cfg.max_steps > 0:
                    self.state.stopped = "time cap"
                    log.warning("time cap of %g minutes reached at step %d of %d: the run is not the "
                                "reproducible fixed-step one", self.cfg.max_minutes, self.state.step,
                                self.cfg.max_steps)
                else:
                    self.state.stopped = "time budget"
                break
            if 0 < self.cfg.max_steps <= self.state.step:
                self.state.stopped = f"max steps ({self.cfg.max_steps})"
                break
        keys = sorted(sums)
        totals = self._all_reduce([float(seen)] + [sums[k] for k in keys])
        return {k: v / max(totals[0], 1) for k, v in zip(keys, totals[1:])}

    def _train_step(self, x: Data, deadline: float) -> tuple[dict[str, Tensor], bool]:
        """Every phase on one batch. Returns the logged terms (later phases prefixed with their
        name) and whether the time budget is spent (checked once per step, in the first phase)."""
        logged: dict[str, Tensor] = {}
        over = False
        for i, phase in enumerate(self.phases):
            for _ in range(phase.repeats):
                with self._autocast():
                    terms = self.step_fn(x, self.state.step, i)
                if i == 0:
                    over = self._check_step(terms, deadline)
                else:
                    self._check_step(terms, math.inf)
                self._optimizer_step(terms, phase.optimizer)
            prefix = "" if i == 0 else f"{phase.name}/"
            logged.update({prefix + k: v for k, v in terms.items()})
        return logged, over

    @torch.no_grad()
    def evaluate(self, data: Data) -> dict[str, float]:
        """Mean loss terms over ``data`` in eval mode (no noise, no gradient penalty)."""
        self.model.eval()
        sums: dict[str, float] = {}
        n = 0
        batches = self._eval_batches(n_examples(data))
        for idx in batches:
            x = self._to_device(take(data, idx))
            with self._autocast():
                terms = self.model.loss(x, self.state.step)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
            n += len(idx)
        if self.dist.world_size > 1 and n_examples(data) >= self.dist.world_size:
            keys = sorted(sums)
            totals = self._all_reduce([float(n)] + [sums[k] for k in keys])
            n, sums = int(totals[0]), dict(zip(keys, totals[1:]))
        return {k: v / max(n, 1) for k, v in sums.items()}

    def fit(self, train: Data, val: Data) -> TrainState:
        """Train until epochs, max_steps, early stopping or the time budget; restores the best weights.

        ``train`` / ``val``: one tensor of examples or a tuple of aligned tensors (module docstring).
        """
        cfg, s = self.cfg, self.state
        check_aligned(train, "training")
        check_aligned(val, "validation")
        self._lengths = self._training_lengths(train)
        by_epochs = cfg.epochs * self._steps_per_epoch(n_examples(train))
        self._total_steps = min(cfg.max_steps, by_epochs) if cfg.max_steps > 0 else by_epochs
        start = time.monotonic() - s.seconds
        deadline = start + cfg.max_minutes * 60 if cfg.max_minutes > 0 else math.inf
        self._prepare_run_dir()
        while s.epoch < cfg.epochs and not s.stopped:
            train_terms = self._train_epoch(train, deadline)
            val_terms = self.evaluate(val)
            if not math.isfinite(val_terms["loss"]):
                raise NonFiniteLossError(
                    f"non-finite validation loss after step {s.step} (epoch {s.epoch + 1}): {val_terms}; "
                    f"the last good checkpoint is {self.checkpoint_path or 'the one written by rank 0'}")
            if cfg.lr_schedule == "plateau":
                for scheduler in self.schedulers.values():
                    scheduler.step(val_terms["loss"])
            s.epoch += 1
            s.seconds = time.monotonic() - start
            self._track_best(val_terms["loss"])
            record = {"epoch": s.epoch, "step": s.step, "seconds": round(s.seconds, 2),
                      "lr": self.optimizer.param_groups[0]["lr"], "train": train_terms, "val": val_terms}
            s.history.append(record)
            if s.bad_epochs >= cfg.early_stop > 0:
                s.stopped = f"early stopping (no validation improvement in {cfg.early_stop} epochs)"
            self.save_checkpoint()  # first the checkpoint, then the metrics line (see the module doc)
            self._log_epoch(record)
        if s.stopped:
            log.info("stopped: %s", s.stopped)
        if self._best_weights is not None:
            self.model.load_state_dict(self._best_weights)
        return s

    def _prepare_run_dir(self) -> None:
        """Rank 0: drop unfinished checkpoint files and make metrics.jsonl equal the history.

        After a crash the history (from the checkpoint) is the truth: epochs logged after the
        last checkpoint are removed, epochs checkpointed but not yet logged are restored.
        """
        if self.run_dir is None or not self.dist.is_main:
            return
        remove_stale_temporaries(self.run_dir / "checkpoint.pt")
        write_text(self.run_dir / "metrics.jsonl", "".join(json.dumps(record) + "\n" for record in self.state.history))

    def _track_best(self, val_loss: float) -> None:
        if val_loss < self.state.best_val - 1e-6:
            self.state.best_val, self.state.bad_epochs = val_loss, 0
            self._best_weights = copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        else:
            self.state.bad_epochs += 1

    def _log_epoch(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        tr, va = record["train"], record["val"]
        log.info("epoch %d  step %d  %.0fs  train loss %.4f (rec %.4f)  val loss %.4f (rec %.4f)  lr %.2g",
                 record["epoch"], record["step"], record["seconds"], tr.get("loss", float("nan")),
                 tr.get("rec", float("nan")), va["loss"], va["rec"], record["lr"])
        if self.run_dir is not None:
            with open(self.run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")


LR_SCHEDULES = ("plateau", "linear")


def _check_config(cfg: TrainConfig) -> None:
    """One clear error for training options the trainer cannot honour."""
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"lr_schedule {cfg.lr_schedule!r} is unknown; choose one of: {', '.join(LR_SCHEDULES)}")
    if cfg.max_steps < 0:
        raise ConfigError(f"max_steps {cfg.max_steps} is negative (0 = off)")
    if not 0.0 <= cfg.warmup_fraction < 1.0:
        raise ConfigError(f"warmup_fraction {cfg.warmup_fraction} is outside [0, 1)")
    if cfg.bucket_batches < 0:
        raise ConfigError(f"bucket_batches {cfg.bucket_batches} is negative (0 = off)")
