"""Decoding a full tensor of logits through a constrained decoding state, rows dropped as they finish.

:func:`decode_states` is the fast equivalent of the plain loop

    state = new_state(B)
    for t in range(min(L, max_length)):
        state.push(select(logits[:, t], state.allowed()))

for the grammar codec's states (:class:`~discrete_rae.grammar.DecodeState`,
:class:`~discrete_rae.grammar.ring.RingClosureState`, :class:`~discrete_rae.grammar.chem.ChemState`).
Greedy outputs are identical; two things make it faster:

- rows that are done or cut (stack empty: only the pad rule is left for them) are written out and
  dropped from the state (``state.reorder``) once they make up a fifth of the rows, so later steps
  work on the rows still running. With random or untrained logits most derivations end within a
  few steps while a few run to the limit, so this removes most of the work;
- each step reads the logits and picks among the top symbol's candidate rules only
  (``state.allowed_c()``: ``[B, C]``, C a tenth of the rule count), never forming a ``[B, R]`` mask.
  Candidates are in rule order, so the first maximum is the lowest rule index, as in
  :func:`~discrete_rae.grammar.select`. Sampling draws from the same distribution as the plain
  loop, not the same random stream.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .decode import _cpu_single_thread, select

#: drop finished rows once fewer than this fraction of the state's rows are still running
KEEP_FRACTION = 0.8


def decode_states(
    new_state: Callable[[int, torch.device], Any],
    logits: Tensor,
    max_length: int,
    pad_index: int,
    greedy: bool = True,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Constrained decoding of ``logits`` [B, L, R] -> ``(ids [B, L], done [B])``.

    ``new_state(B, device)`` gives a fresh decoding state with ``allowed()``, ``push(rules, check)``,
    ``reorder(index)``, ``active``, ``done`` and ``ids`` (and, for the fast path, ``allowed_c()`` ->
    ``(cand, ok)`` [B, C]). At most ``min(L, max_length)`` steps are taken; positions after a row's
    end hold ``pad_index``. ``greedy``, ``temperature``, ``generator``: see :func:`select`.
    """
    if logits.dim() != 3:
        raise ValueError(f"expected logits [B, L, R], got {tuple(logits.shape)}")
    B, L, R = logits.shape
    dev = logits.device
    with torch.no_grad():  # the state and its cached tables are built as ordinary tensors
        state = new_state(B, dev)
    # inference mode trims the dispatch cost of the hundreds of small ops per step; the outputs are
    # cloned outside it, so callers get ordinary tensors
    with torch.inference_mode(), _cpu_single_thread(dev):
        ids = torch.full((B, L), pad_index, dtype=torch.long, device=dev)
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        flat = logits.detach().contiguous().view(-1)
        rows = torch.arange(B, device=dev)  # row of the output held by each state row
        candidates = hasattr(state, "allowed_c")
        for t in range(min(L, max_length)):
            active = state.active
            n_active = int(active.sum())
            if n_active == 0:
                break
            if n_active < KEEP_FRACTION * rows.numel():
                _write(ids, done, rows, state, (~active).nonzero().view(-1))
                keep = active.nonzero().view(-1)
                state.reorder(keep)
                rows = rows.index_select(0, keep)
            base = (rows * (L * R) + t * R).unsqueeze(1)  # flat offset of each row's step-t logits
            if candidates:
                cand, ok = state.allowed_c()  # [n, C]
                vals = flat.index_select(0, (base + cand).view(-1)).view(cand.shape)
                choice = select(vals, ok, greedy, temperature, generator)
                rule = cand.gather(1, choice.unsqueeze(1)).squeeze(1)
            else:
                vals = flat.index_select(0, (base + torch.arange(R, device=dev)).view(-1)).view(-1, R)
                rule = select(vals, state.allowed(), greedy, temperature, generator)
            state.push(rule, check=False)
        _write(ids, done, rows, state, torch.arange(rows.numel(), device=dev))
    return ids.clone(), done.clone()


def _write(ids: Tensor, done: Tensor, rows: Tensor, state: Any, which: Tensor) -> None:
    """Copy the state rows ``which`` (their rules so far and ``done``) to the output rows they hold."""
    if not which.numel():
        return
    out = rows.index_select(0, which)
    so_far = state.ids.index_select(0, which)
    ids[:, : so_far.shape[1]].index_copy_(0, out, so_far)
    done.index_copy_(0, out, state.done.index_select(0, which))
