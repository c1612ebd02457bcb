"""Batched masked decoding in torch: :func:`select`, :class:`DecodeState`, :func:`decode_logits`.

One stack of pending non-terminals per sample, held in tensors, every step a handful of tensor
ops over the whole batch. Length limit and cutting of samples that can no longer finish: see
:mod:`discrete_rae.grammar`. The functions taking ``g`` are the bodies of the
:class:`~discrete_rae.grammar.Grammar` methods of the same name.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from .common import _INF

_FIRST_TIER = 4  # greedy CPU decoding: candidates read for every row before the rest


@dataclass
class DecodeResult:
    """Outcome of :meth:`Grammar.decode_logits`.

    Attributes:
        ids: LongTensor ``[B, L]`` of chosen rules, padded with the pad rule.
        lengths: LongTensor ``[B]``, number of non-padding rules chosen.
        finished: BoolTensor ``[B]``, True where the derivation completed (stack
            emptied) within ``L`` steps. Unfinished rows are not valid strings.
    """

    ids: torch.Tensor
    lengths: torch.Tensor
    finished: torch.Tensor



def select(
    logits: torch.Tensor,
    allowed: torch.Tensor,
    greedy: bool = True,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one rule per row among the allowed ones.

    Computation is in float32 and never yields NaN or a forbidden rule: ``+inf``
    becomes the largest and ``-inf`` the lowest finite float32, NaN ranks below
    every number. Greedy ties go to the first (lowest-index) allowed rule; a row
    whose allowed logits are all NaN picks its first allowed rule (greedy) or
    uniformly among its allowed rules (sampling).

    Args:
        logits: ``[B, R]`` scores.
        allowed: ``[B, R]`` bool, at least one True per row.
        greedy: argmax if True, else a categorical sample of ``softmax(logits / T)``.
        temperature: ``T > 0``, used only when sampling.
        generator: optional torch generator for sampling.

    Returns:
        LongTensor ``[B]`` of rule indices (always allowed ones).
    """
    if logits.shape != allowed.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and allowed {tuple(allowed.shape)} differ")
    x = torch.nan_to_num(logits.float(), nan=float("-inf"), posinf=torch.finfo(torch.float32).max)
    x = x.masked_fill(~allowed, float("-inf"))
    row_max = x.amax(dim=-1, keepdim=True)
    hopeless = torch.isneginf(row_max)  # every allowed logit is NaN (no host sync here)
    x = torch.where(hopeless & allowed, torch.zeros_like(x), x)
    row_max = row_max.masked_fill(hopeless, 0.0)
    if greedy:
        return x.argmax(dim=-1)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    probs = torch.softmax((x - row_max) / float(temperature), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class DecodeState:
    """Stacks of pending non-terminals for a batch, held in tensors.

    Usage for an autoregressive decoder::

        state = grammar.decoder_state(B)
        while not state.complete:
            logits = model_step(...)                  # [B, R]
            rule = select(logits, state.allowed())    # [B]
            state.push(rule)
        strings = grammar.unparse_many(state.ids, state.lengths)

    Tensors: ``stack`` int16 tensor ``[B, S]`` of non-terminal indices whose slot 0
    permanently holds ``Nothing`` (so an empty stack shows ``Nothing`` on top);
    ``ptr`` LongTensor ``[B]``, position of the top element (0: empty); ``cut``
    BoolTensor ``[B]``, the sample was stopped because it could no longer finish
    (its stack is then cleared, see the module docstring). Every step is a fixed
    number of tensor ops over the whole batch, with no per-sample Python loop.
    """

    def __init__(
        self,
        grammar: Any,  # a Grammar (not imported here: grammar.core imports this module)
        batch_size: int,
        device: torch.device | str | None = None,
        max_length: int | None = None,
        length_mask: bool = False,
    ) -> None:
        self.grammar = grammar
        self.length_mask = bool(length_mask)
        self.max_length = int(grammar.max_length if max_length is None else max_length)
        if self.max_length < 1:
            raise ValueError("max_length must be >= 1")
        device = torch.device(device) if device is not None else torch.device("cpu")
        self.device = device
        B = int(batch_size)
        self.batch_size = B
        t = grammar._decode_tensors(device)
        self._masks = t["masks"]
        self._rhs = t["rhs16"]  # [R, K] RHS non-terminals in push order (reversed), padded
        self._rhs_len = t["rhs_len"]  # [R]
        K = self._rhs.shape[1]
        # unfinished-but-alive samples keep ptr <= remaining steps <= max_length, and a
        # push writes K slots above the popped top: max_length + K + 1 slots suffice
        self.stack = torch.full((B, self.max_length + K + 2), grammar._nothing_nt, dtype=torch.int16, device=device)
        self.stack[:, 1] = grammar._start_nt
        self.ptr = torch.ones(B, dtype=torch.long, device=device)
        self.cut = torch.zeros(B, dtype=torch.bool, device=device)
        self._ids = torch.full((B, self.max_length), grammar.pad_index, dtype=torch.long, device=device)
        self._offsets = torch.arange(1, K + 1, device=device).unsqueeze(0)  # [1, K]
        self.t = 0
        # length mask: `need` = fewest rules that finish every pending non-terminal
        self._nt_min, self._rhs_min = t["nt_min"], t["rhs_min"]
        self.need = torch.full((B,), int(self._nt_min[grammar._start_nt]), dtype=torch.long, device=device)
        self._top: torch.Tensor | None = None  # top() of the current step (reset by push / reorder)

    @property
    def done(self) -> torch.Tensor:
        """BoolTensor ``[B]``: the derivation is complete (stack emptied within the limit)."""
        return (self.ptr == 0) & ~self.cut

    @property
    def finished(self) -> torch.Tensor:
        """BoolTensor ``[B]``: same as :attr:`done`."""
        return self.done

    @property
    def active(self) -> torch.Tensor:
        """BoolTensor ``[B]``: the sample still has pending non-terminals (neither done nor cut)."""
        return self.ptr > 0

    @property
    def complete(self) -> bool:
        """True when no sample can change any more (all done or cut, or no steps left)."""
        return self.t >= self.max_length or not bool((self.ptr > 0).any())

    @property
    def ids(self) -> torch.Tensor:
        """LongTensor ``[B, t]`` of the rules chosen so far (pad rule once done or cut)."""
        return self._ids[:, : self.t]

    @property
    def lengths(self) -> torch.Tensor:
        """LongTensor ``[B]``: number of non-padding rules chosen so far."""
        return (self.ids != self.grammar.pad_index).count_nonzero(dim=1)

    def top(self) -> torch.Tensor:
        """LongTensor ``[B]``: non-terminal on top of each stack (``Nothing`` when done or cut)."""
        if self._top is None:  # read by several masks per step: gathered once
            self._top = self.stack.gather(1, self.ptr.unsqueeze(1)).squeeze(1).long()
        return self._top

    def allowed_c(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cand, ok)`` ``[B, C]``: the top symbols' candidate rules (padded with the pad rule) and
        which of them :meth:`allowed` permits (``[B, R]`` is that scattered over the rules)."""
        from .packs import base_columns, cached, merge_pack

        g, dev = self.grammar, self.device
        pack = cached(("base_cand", g.hash, str(dev)), lambda: merge_pack(dev, base_columns(g)))
        T = pack.take(self.top())
        return T.l("cand"), self.base_c(T)

    def base_c(self, taken: Any) -> torch.Tensor:
        """BoolTensor ``[B, C]``: :meth:`allowed` on the top symbols' candidate rules, from the packed
        columns ``taken`` (:mod:`discrete_rae.grammar.packs`, ``base_columns``) of :meth:`top`."""
        if not self.length_mask:
            return taken.b("valid")
        return self.need.unsqueeze(1) + taken.l("dmin") <= self.max_length - self.t - 1

    def allowed(self) -> torch.Tensor:
        """BoolTensor ``[B, R]``: rules allowed at this step (only the pad rule when done or cut).

        With ``length_mask`` a rule is allowed only if the derivation can still finish in the
        steps left after it: need - min_len(top) + sum(min_len(rhs)) <= max_length - t - 1.
        The cheapest rule of the top symbol always passes (need only shrinks by one per step),
        so every decode finishes; without it (the Grammar VAE's protocol) decodes that run out
        of steps are cut and count as invalid.
        """
        # index_select, not advanced indexing: the latter is far slower on CPU here
        top = self.top()
        masks = self._masks.index_select(0, top)
        if not self.length_mask:
            return masks
        after = (self.need - self._nt_min.index_select(0, top)).unsqueeze(1) + self._rhs_min.unsqueeze(0)
        fits = after <= self.max_length - self.t - 1
        return masks & (fits | (top == self.grammar._nothing_nt).unsqueeze(1))

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (LongTensor ``[B']``, repeats allowed) in that order: every per-sample
        tensor (stack, ptr, cut, chosen rules, length bookkeeping) is gathered (beam search)."""
        index = index.to(device=self.device, dtype=torch.long).reshape(-1)
        self.stack = self.stack.index_select(0, index)
        self.ptr = self.ptr.index_select(0, index)
        self.cut = self.cut.index_select(0, index)
        self._ids = self._ids.index_select(0, index)
        self.need = self.need.index_select(0, index)
        self.batch_size = int(index.numel())
        self._top = None

    def push(self, rule_ids: torch.Tensor, check: bool = True) -> None:
        """Apply one rule per sample: pop the top non-terminal, push the rule's RHS non-terminals.

        Args:
            rule_ids: LongTensor ``[B]``; for done or cut samples it must be the pad rule.
            check: verify that every rule is allowed (raises ``ValueError``; one host sync).
        """
        if self.t >= self.max_length:
            raise ValueError(f"decoding already used all {self.max_length} steps")
        rule = rule_ids.to(device=self.device, dtype=torch.long).reshape(-1)
        if rule.shape[0] != self.batch_size:
            raise ValueError(f"expected {self.batch_size} rules, got {rule.shape[0]}")
        top = self.top()
        if check:
            ok = self._masks.index_select(0, top).gather(1, rule.unsqueeze(1)).squeeze(1)
            if not bool(ok.all()):
                bad = int((~ok).nonzero()[0, 0])
                raise ValueError(f"rule {int(rule[bad])} is not allowed for sample {bad} at step {self.t}")
        if self.length_mask:  # only the length mask reads `need`
            self.need += self._rhs_min.index_select(0, rule) - self._nt_min.index_select(0, top)
        # pop (empty stacks stay empty: the pad rule pushes nothing)
        ptr = (self.ptr - 1).clamp_(min=0)
        # write all K slots above the new top; slots past the rule's RHS are never read
        self.stack.scatter_(1, ptr.unsqueeze(1) + self._offsets, self._rhs.index_select(0, rule))
        ptr += self._rhs_len.index_select(0, rule)
        self._ids[:, self.t] = rule
        self.t += 1
        # a sample with more pending non-terminals than steps left can never finish
        newly_cut = ptr > (self.max_length - self.t)
        self.cut |= newly_cut
        self.ptr = ptr.masked_fill_(newly_cut, 0)
        self._top = None



def decode_tensors(g: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """Decoding tables of grammar ``g`` on ``device``, built once per device (cached on ``g``).

    ``cand`` ``[n_nt, C]``: the rules of each non-terminal (padded with the pad rule), ``rhs16`` /
    ``rhs32`` ``[R, K]``: each rule's right-hand-side non-terminals, reversed (push order),
    ``nt_min`` / ``rhs_min``: minimal rules to finish a symbol / a rule's right-hand side.
    """
    key = str(device)
    cached = g._tensor_cache.get(key)
    if cached is None:
        K = max((len(k) for k in g._rhs_nts), default=0)
        rhs = torch.full((g.n_rules, max(K, 1)), g._nothing_nt, dtype=torch.long)
        rhs_len = torch.zeros(g.n_rules, dtype=torch.long)
        for r, kids in enumerate(g._rhs_nts):
            rhs_len[r] = len(kids)
            for j, a in enumerate(reversed(kids)):
                rhs[r, j] = a
        # candidate rules of each non-terminal, in rule order, padded with the pad rule
        per_nt = [g.masks[a].nonzero().flatten().tolist() or [g.pad_index] for a in range(g.n_nonterminals)]
        C = max(len(c) for c in per_nt)
        cand = torch.full((g.n_nonterminals, C), g.pad_index, dtype=torch.long)
        cand_valid = torch.zeros(g.n_nonterminals, C, dtype=torch.bool)
        for a, c in enumerate(per_nt):
            cand[a, : len(c)] = torch.tensor(c, dtype=torch.long)
            cand_valid[a, : len(c)] = True
        cand_dup = torch.where(cand_valid, cand, cand[:, :1])
        cached = {
            "cand_dup": cand_dup.to(device),
            "cand": cand.to(device),
            "cand_valid": cand_valid.to(device),
            "masks": g.masks.to(device),
            "lhs": g.lhs.to(device),
            "rhs_len": rhs_len.to(device),
            # minimal number of rules to finish each non-terminal (Nothing: 0), and the
            # sum of those over each rule's right-hand side (unusable rules: never fit)
            "nt_min": torch.tensor([0 if a == g._nothing_nt else min(g._min_len[a], _INF)
                                    for a in range(g.n_nonterminals)], dtype=torch.long).to(device),
            "rhs_min": torch.tensor([0 if r == g.pad_index else
                                     (sum(g._min_len[a] for a in kids) if g._usable[r] else _INF)
                                     for r, kids in enumerate(g._rhs_nts)], dtype=torch.long).to(device),
            "rhs16": (rhs[:, :K] if K else rhs[:, :0]).to(torch.int16).to(device),
            "rhs32": (rhs[:, :K] if K else rhs[:, :0]).to(torch.int32).to(device),
        }
        g._tensor_cache[key] = cached
    return cached


def decode_logits(
    g: Any,
    logits: torch.Tensor,
    greedy: bool = True,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> DecodeResult:
    """Masked decoding of per-step logits from a non-autoregressive decoder.

    Step ``t`` pops the top non-terminal of each sample's stack, picks among that
    symbol's rules using ``logits[:, t]`` (greedy: first maximum, as :func:`select`;
    else a categorical sample at ``temperature``) and pushes the rule's
    right-hand-side non-terminals. Greedy results equal those of driving
    :class:`DecodeState` with :func:`select` (sampling draws from the same
    distribution, not the same random stream), but faster: only the logits of the
    top symbol's rules are read,
    and rows that are done or cut are dropped from the work every few steps. On CPU
    the loop runs with one intra-op thread (see ``_cpu_single_thread``).

    Args:
        logits: ``[B, L, R]`` (any float dtype); ``L`` is the number of steps
            (usually ``max_length``).
        greedy, temperature, generator: see :func:`select`.

    Returns:
        :class:`DecodeResult`: ``ids`` LongTensor ``[B, L]`` (pad rule after the end),
        ``lengths`` ``[B]``, ``finished`` ``[B]`` (False: cut, see the module docstring;
        ``unparse_many`` gives ``None`` for such rows).
    """
    if logits.dim() != 3 or logits.shape[2] != g.n_rules:
        raise ValueError(f"expected logits [B, L, {g.n_rules}], got {tuple(logits.shape)}")
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    B, L, R = logits.shape
    dev = logits.device
    tens = decode_tensors(g, dev)
    cand, valid, cand_dup = tens["cand"], tens["cand_valid"], tens["cand_dup"]  # [n_nt, C]
    rhs, rhs_len = tens["rhs32"], tens["rhs_len"]  # [R, K] int32, [R]
    C, K = cand.shape[1], rhs.shape[1]
    # Greedy on CPU reads the logits in two tiers: the first C1 candidates of every row,
    # then the rest only for rows whose top non-terminal has more than C1 rules (the
    # random reads into the logits dominate the cost; the second tier needs a host sync,
    # so other devices read all C candidates at once).
    C1 = min(C, _FIRST_TIER) if (greedy and dev.type == "cpu") else C
    C2 = C - C1
    cand1 = cand_dup[:, :C1].contiguous()
    has_more = valid.sum(dim=1) > C1  # [n_nt]: non-terminals with more than C1 rules
    fmax = torch.finfo(torch.float32).max
    with torch.no_grad(), _cpu_single_thread(dev):
        flat = logits.detach().contiguous().view(-1)
        # Stacks as in DecodeState (slot 0 holds Nothing, ptr = position of the top),
        # but only for the rows still running: every few steps the finished and cut
        # rows are dropped, so later steps work on fewer rows.
        rows = torch.arange(B, device=dev)
        stack = torch.full((B, L + K + 2), g._nothing_nt, dtype=torch.int32, device=dev)
        stack[:, 1] = g._start_nt
        ptr = torch.ones(B, dtype=torch.long, device=dev)
        cut_rows = torch.zeros(B, dtype=torch.bool, device=dev)
        cut = torch.zeros(B, dtype=torch.bool, device=dev)
        ids = torch.full((B, L), g.pad_index, dtype=torch.long, device=dev)
        offsets = torch.arange(1, K + 1, device=dev).unsqueeze(0)
        row_base = rows * (L * R)  # flat offset of each row's logits
        slot_base = rows * C1
        full_slots = rows * C
        upcast = flat.dtype != torch.float32
        for t in range(L):
            if t % 8 == 0:
                keep = ptr > 0
                n_keep = int(keep.sum())
                if n_keep == 0:
                    break
                if n_keep < 0.85 * rows.numel():
                    cut.index_copy_(0, rows, cut_rows)
                    sel = keep.nonzero().squeeze(1)
                    rows, stack = rows.index_select(0, sel), stack.index_select(0, sel)
                    ptr, cut_rows = ptr.index_select(0, sel), cut_rows.index_select(0, sel)
                    row_base = rows * (L * R)
                    slot_base = slot_base[: rows.numel()]
            # Only the rules of the top non-terminal matter: read their logits
            # ([n, C], C = most rules of one non-terminal) instead of masking all R.
            top = stack.gather(1, ptr.unsqueeze(1)).view(-1)  # int32 [n]
            base = (row_base + t * R).unsqueeze(1)  # [n, 1]
            if greedy:
                idx = cand1.index_select(0, top)
                vals = flat.index_select(0, (idx + base).view(-1)).view(-1, C1)
                if upcast:
                    vals = vals.float()
                # first maximum (padding slots repeat slot 0, so they never change the
                # rule); max().indices is much faster than argmax() for short rows on CPU
                choice = vals.nan_to_num_(nan=float("-inf"), posinf=fmax).max(dim=1).indices
                rule = torch.take(idx, slot_base + choice)
                if C2:
                    # rows whose symbol has more than C1 rules: redo them over all C
                    more = has_more.index_select(0, top).nonzero().view(-1)
                    m = more.numel()
                    if m:
                        idx_m = cand_dup.index_select(0, top.index_select(0, more))
                        vals_m = flat.index_select(0, (idx_m + base.index_select(0, more)).view(-1)).view(m, C)
                        if upcast:
                            vals_m = vals_m.float()
                        choice_m = vals_m.nan_to_num_(nan=float("-inf"), posinf=fmax).max(dim=1).indices
                        rule.index_copy_(0, more, torch.take(idx_m, full_slots[:m] + choice_m))
            else:
                idx = cand.index_select(0, top)
                vals = flat.index_select(0, (idx + base).view(-1)).view(-1, C)
                choice = select(
                    vals, valid.index_select(0, top), greedy=False, temperature=temperature, generator=generator
                )
                rule = torch.take(idx, slot_base + choice)
            ids.select(1, t).index_copy_(0, rows, rule)
            ptr = (ptr - 1).clamp_(min=0)
            stack.scatter_(1, ptr.unsqueeze(1) + offsets, rhs.index_select(0, rule))
            ptr += rhs_len.index_select(0, rule)
            # a row with more pending non-terminals than steps left can never finish
            newly_cut = ptr > (L - t - 1)
            cut_rows |= newly_cut
            ptr.masked_fill_(newly_cut, 0)
        cut.index_copy_(0, rows, cut_rows | (ptr > 0))
        lengths = (ids != g.pad_index).count_nonzero(dim=1)
    return DecodeResult(ids=ids, lengths=lengths, finished=~cut)


def lhs_masks(g: Any, ids: torch.Tensor) -> torch.Tensor:
    """Masks of the true rules' left-hand sides for the training loss.

    Args:
        ids: LongTensor ``[B, L]`` of rule indices (pad positions use the pad rule).

    Returns:
        BoolTensor ``[B, L, R]`` = ``masks[lhs[ids]]`` (pad positions allow only the pad rule).
    """
    tens = decode_tensors(g, ids.device)
    flat = ids.reshape(-1).long()
    rows = tens["lhs"].index_select(0, flat)
    return tens["masks"].index_select(0, rows).view(*ids.shape, g.n_rules)


@contextlib.contextmanager
def _cpu_single_thread(device: torch.device) -> Iterator[None]:
    """Run torch CPU ops single-threaded inside the block (restored afterwards).

    The decoding loop is hundreds of tiny, latency-bound ops; intra-op threads add
    synchronisation to each and, when the cores are shared with other processes,
    make the loop many times slower (measured: 0.6 s single-threaded vs 16 s with 2
    threads on an oversubscribed 2-core machine). Note that ``torch.set_num_threads``
    is process-wide.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
