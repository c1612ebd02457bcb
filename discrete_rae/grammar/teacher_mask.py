"""Decoding constraints as a training mask: replay the true derivations through the decode state.

Today's training loss normalises each step over the rules of the true step's non-terminal
(:func:`discrete_rae.grammar.decode.lhs_masks`). Decoding applies more: the length mask, the ring
mask (:mod:`discrete_rae.grammar.ring`) and the chemistry mask (:mod:`discrete_rae.grammar.chem`).
With teacher forcing those can be applied to the loss too: drive the same batched decode state
with the TRUE rules and record, before each push, which rules it allows. The log-softmax then
runs only over those,

    nll[b] = -sum_t log softmax_{A(b,t)}(logits[b, t])[y_bt],   A(b,t) = constraints(y_b,<t),

so the model spends no probability on rules the decoder would never pick (SD-VAE's idea, Dai
et al. 2018, for the training side). Since A(b,t) is a subset of the grammar mask and contains
y_bt, the loss per example can only go down for the same logits.

The true rule must always be allowed; if a constraint ever forbids it, that is a bug in the
constraint: it is logged (with the first offending row and step) and the rule is allowed anyway,
so the loss stays finite.

Masks are stored per step over the candidate slots of the true step's non-terminal (``C`` bits,
a tenth of the rule count), and :class:`ConstraintMasks` caches them per example (packed bits,
keyed by the example's rule ids), so each training example is replayed once per run.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .chem import ChemState
from .ring import RingClosureState

log = logging.getLogger(__name__)

__all__ = ["constraint_slots", "slots_to_rules", "constraint_masks", "ConstraintMasks", "warm_training_masks"]


def _slot_of_rule(g: Any, device: torch.device) -> Tensor:
    """[R] position of each rule among the candidate rules of its left-hand side."""
    tens = g._decode_tensors(device)
    cand, valid = tens["cand"], tens["cand_valid"]  # [n_nt, C]
    slot = torch.zeros(g.n_rules, dtype=torch.long, device=device)
    cols = torch.arange(cand.shape[1], device=device).expand_as(cand)
    slot[cand[valid]] = cols[valid]
    return slot


def _strict_slots(state: Any, cand: Tensor, valid: Tensor) -> Tensor:
    """[B, C] what the decode ``state`` allows now among ``cand`` (the top symbol's rules), WITHOUT
    the fallbacks of ``allowed()`` (which would hide a constraint that forbids everything)."""
    if isinstance(state, (ChemState, RingClosureState)):  # grammar + length + ring (+ chemistry)
        return state.strict_c()[1]
    return state.allowed().gather(1, cand) & valid  # DecodeState: grammar (+ length)


@torch.no_grad()
def constraint_slots(codec: Any, ids: Tensor) -> tuple[Tensor, int]:
    """Replay the true derivations ``ids`` [B, L] through ``codec.new_state`` (teacher forcing).

    Returns ``(slots, n_forbidden)``: ``slots`` BoolTensor [B, L, C], True where candidate rule
    ``c`` of the true step's non-terminal is allowed (padding positions: slot 0, the pad rule);
    ``n_forbidden`` the number of steps whose true rule the constraints forbade (0 unless a
    constraint is wrong; those rules are allowed in ``slots`` anyway).
    Every step is a fixed number of batched tensor ops (no per-sample loop).
    """
    g = codec.grammar
    ids = ids.long()
    B, L = ids.shape
    dev = ids.device
    tens = g._decode_tensors(dev)
    C = tens["cand"].shape[1]
    slots = torch.zeros(B, L, C, dtype=torch.bool, device=dev)
    slots[:, :, 0] = True  # padding positions: the pad rule only
    if B == 0:
        return slots, 0
    true_slot = _slot_of_rule(g, dev).index_select(0, ids.reshape(-1)).view(B, L)
    used = int((ids != g.pad_index).sum(1).max())  # the batch's longest derivation
    state = codec.new_state(B, dev)
    n_bad = 0
    for t in range(used):
        rule = ids[:, t]
        top = state.top()
        cand, valid = tens["cand"].index_select(0, top), tens["cand_valid"].index_select(0, top)
        ok = _strict_slots(state, cand, valid)
        hit = ok.gather(1, true_slot[:, t:t + 1]).squeeze(1)
        bad = ~hit
        if bool(bad.any()):  # one host sync per step: cheap next to the step's own ops
            n_bad += int(bad.sum())
            row = int(bad.nonzero()[0, 0])
            log.warning("constraint forbids the true rule %d (%s) of row %d at step %d; allowed anyway",
                        int(rule[row]), g.productions[int(rule[row])], row, t)
            ok = ok.scatter(1, true_slot[:, t:t + 1], True)
        slots[:, t] = ok
        state.push(rule, check=False)
    return slots, n_bad


def slots_to_rules(codec: Any, ids: Tensor, slots: Tensor) -> Tensor:
    """[B, L, R] rule mask from candidate-slot masks ``slots`` [B, L, C] of the true derivation
    ``ids`` [B, L] (candidates: the rules of each true rule's left-hand side)."""
    g = codec.grammar
    tens = g._decode_tensors(ids.device)
    lhs = tens["lhs"].index_select(0, ids.reshape(-1).long())
    cand = tens["cand"].index_select(0, lhs).view(*ids.shape, -1)  # [B, L, C]
    out = torch.zeros(*ids.shape, g.n_rules, dtype=torch.uint8, device=ids.device)
    # padding slots repeat the pad rule: sum (any True wins) instead of overwriting
    return out.scatter_add_(2, cand, (slots & tens["cand_valid"].index_select(0, lhs).view(slots.shape)).to(torch.uint8)) > 0


def constraint_masks(codec: Any, ids: Tensor) -> Tensor:
    """BoolTensor [B, L, R]: the rules the decoding constraints allow at each step of the true
    derivations ``ids`` [B, L] (a subset of ``codec.step_mask(ids)`` that holds the true rule)."""
    slots, _ = constraint_slots(codec, ids)
    return slots_to_rules(codec, ids, slots)


class ConstraintMasks:
    """``step_mask`` for the training loss: :func:`constraint_masks`, cached per example.

    Each row's mask is computed the first time the row is seen (the rows missing from the cache
    are replayed together, in one batch) and kept as packed bits over the candidate slots
    (``ceil(L * C / 8)`` bytes per example), keyed by the row's rule ids. The replay runs on the
    CPU; the mask is moved to the ids' device. ``forbidden`` counts true rules a constraint forbade.
    """

    def __init__(self, codec: Any) -> None:
        self.codec = codec
        self._cache: dict[bytes, np.ndarray] = {}
        self.forbidden = 0

    def __len__(self) -> int:
        return len(self._cache)

    def __call__(self, ids: Tensor) -> Tensor:
        cpu = ids.detach().to("cpu", torch.long)
        B, L = cpu.shape
        keys = self._keys(cpu)
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            self._add(cpu[missing], [keys[i] for i in missing])
        C = self.codec.grammar._decode_tensors(cpu.device)["cand"].shape[1]
        bits = np.stack([self._cache[k] for k in keys])
        slots = torch.from_numpy(np.unpackbits(bits, axis=1, count=L * C).astype(bool)).view(B, L, C)
        return slots_to_rules(self.codec, cpu, slots).to(ids.device)

    def warm(self, ids: Tensor, chunk: int = 2048) -> None:
        """Compute the masks of every row of ``ids`` [N, L] now, ``chunk`` rows per replay (larger
        batches amortise the per-step op overhead: a few ms per example instead of ~20 ms at 64)."""
        cpu = ids.detach().to("cpu", torch.long)
        keys = self._keys(cpu)
        todo: dict[bytes, int] = {}
        for i, k in enumerate(keys):  # distinct rows not cached yet
            if k not in self._cache:
                todo.setdefault(k, i)
        rows = list(todo.values())
        t0 = time.monotonic()
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            self._add(cpu[part], [keys[i] for i in part])
        if rows:
            log.info("constraint masks of %d examples in %.1fs (%d true rules forbidden)", len(rows),
                     time.monotonic() - t0, self.forbidden)

    @staticmethod
    def _keys(cpu: Tensor) -> list[bytes]:
        # dict keys only: the per-row loop does look-ups, the replay itself is batched
        return [r.tobytes() for r in cpu.to(torch.int16).numpy()]

    def _add(self, cpu: Tensor, keys: list[bytes]) -> None:
        new, bad = constraint_slots(self.codec, cpu)
        self.forbidden += bad
        packed = np.packbits(new.reshape(len(keys), -1).numpy(), axis=1)
        for j, k in enumerate(keys):
            self._cache[k] = packed[j]


def warm_training_masks(model: Any, *splits: Tensor) -> None:
    """Precompute the cached constraint masks of ``splits`` (e.g. train and validation ids) when
    ``model`` trains with ``train_mask = constraints``; a no-op otherwise."""
    masks = getattr(getattr(model, "likelihood", None), "step_mask", None)
    if isinstance(masks, ConstraintMasks):
        for ids in splits:
            masks.warm(ids)
