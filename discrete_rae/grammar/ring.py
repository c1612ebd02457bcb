"""Ring-closure bookkeeping for grammar decoding of SMILES (a semantic mask on top of the grammar).

The SMILES grammar guarantees syntax but not that ring-bond digits pair up: on the quick
preset, 30% of the GMM samples of the Grammar RAE failed RDKit only because a ring was left
open or closed with the wrong digit. This module tracks, per sample, which ring digits are open
while the leftmost derivation writes the string left to right, and masks two kinds of rules:

- a ring digit that is neither open nor the lowest free digit (RDKit's canonical SMILES, the
  training data, opens rings with the lowest free digit, so this keeps the data's convention
  and makes a mistyped closing digit impossible);
- a rule after which no pending symbol could write a ring digit while a ring is still open
  (in particular, finishing the derivation with a ring open);
- closing a ring on the atom that opened it (``C1-1``: RDKit rejects it).

Which rules write ring digits is read from the grammar, by symbol names: rules of the ring
non-terminals (``ringbond``, ``RB``, ``RB_tail``) whose right-hand side is one digit, and a
``DIGIT -> d`` rule that expands the ``DIGIT`` of a ring rule (``ringbond -> bond DIGIT``).
Two-digit labels (``%nn``) are not tracked. If the constraints leave a row no rule at all
(e.g. the length limit forces an end), the row falls back to the grammar (and length) mask, so
decoding never dead-ends; such a row may still come out invalid.

It is the SD-VAE idea (Dai et al. 2018) for the one attribute that matters most here; valence
and aromaticity are not checked.
"""

from __future__ import annotations

from typing import Any

import torch
from nltk.grammar import Nonterminal
from torch import Tensor

from .packs import Pack, base_columns, cached, merge_pack, per_candidate

RING_SYMBOLS = ("ringbond", "RB", "RB_tail")
DIGITS = "1234567890"  # the order in which RDKit's canonical SMILES reuses ring labels
# terminals that begin a new atom (inside brackets the symbol repeats the reset harmlessly)
ATOM_STARTS = frozenset({"[", "B", "C", "N", "O", "S", "P", "F", "I", "Cl", "Br", "c", "n", "o", "s"})


def _take(table: Tensor, rules: Tensor) -> Tensor:
    """``table[rules]`` for a per-rule table [R] and rule ids [B, C] (index_select: fast on CPU)."""
    return table.index_select(0, rules.reshape(-1)).view(rules.shape)


def scatter_rules(ok: Tensor, cand: Tensor, n_rules: int) -> Tensor:
    """[B, R] mask from a candidate mask ``ok`` [B, C] over rule ids ``cand`` [B, C]; padding
    slots repeat the pad rule, so the values are summed (any True wins), not overwritten."""
    out = torch.zeros(ok.shape[0], n_rules, dtype=torch.uint8, device=ok.device)
    return out.scatter_add_(1, cand, ok.to(torch.uint8)) > 0


def ring_tables(grammar: Any) -> dict[str, Any] | None:
    """Per-rule tables, or None when the grammar has no ring symbols.

    Returns ``direct`` [R] (digit written by a ring rule, else -1), ``via_digit`` [R] (digit of
    a ``DIGIT -> d`` rule, else -1), ``arms`` [R] (the rule is a ring rule that pushes a
    ``DIGIT`` to be expanded later; digits index ``DIGITS``) and ``new_atom`` [R] (the rule
    writes the first terminal of an atom).
    """
    ring_nts = {s for s in RING_SYMBOLS if s in grammar._nt_index}
    if not ring_nts:
        return None
    R = grammar.n_rules
    direct = torch.full((R,), -1, dtype=torch.long)
    via_digit = torch.full((R,), -1, dtype=torch.long)
    arms = torch.zeros(R, dtype=torch.bool)
    new_atom = torch.zeros(R, dtype=torch.bool)
    for r, prod in enumerate(grammar.productions):
        lhs, rhs = prod.lhs().symbol(), prod.rhs()
        new_atom[r] = bool(rhs) and isinstance(rhs[0], str) and rhs[0] in ATOM_STARTS
        one_digit = len(rhs) == 1 and isinstance(rhs[0], str) and rhs[0] in DIGITS
        if lhs in ring_nts and one_digit:
            direct[r] = DIGITS.index(rhs[0])
        elif lhs == "DIGIT" and one_digit:
            via_digit[r] = DIGITS.index(rhs[0])
        elif lhs in ring_nts and "%" not in rhs and Nonterminal("DIGIT") in rhs:
            arms[r] = True
    # non-terminals that can still write a ring digit (fixpoint over the rules)
    nts = grammar.nonterminals
    can = {nt: nt in ring_nts for nt in nts}
    changed = True
    while changed:
        changed = False
        for prod in grammar.productions:
            lhs = prod.lhs().symbol()
            if not can.get(lhs, False) and any(isinstance(x, Nonterminal) and can.get(x.symbol(), False)
                                               for x in prod.rhs()):
                can[lhs] = changed = True
    nt_ring = torch.tensor([can[nt] for nt in nts], dtype=torch.long)
    rhs_ring = torch.tensor([sum(can.get(x.symbol(), False) for x in p.rhs() if isinstance(x, Nonterminal))
                             for p in grammar.productions], dtype=torch.long)
    # ring symbols are obligations: each writes at least one ring digit
    nt_ob = torch.tensor([nt in ring_nts for nt in nts], dtype=torch.long)
    rhs_ob = torch.tensor([sum(isinstance(x, Nonterminal) and x.symbol() in ring_nts for x in p.rhs())
                           for p in grammar.productions], dtype=torch.long)
    # obligations that can write more than one digit (RB, RB_tail: a list of ring bonds)
    ext = {nt for nt in ring_nts if any(p.lhs().symbol() == nt and len(p.rhs()) > 1
                                        and any(isinstance(x, Nonterminal) and x.symbol() in ring_nts for x in p.rhs())
                                        for p in grammar.productions)}
    nt_ext = torch.tensor([nt in ext for nt in nts], dtype=torch.long)
    rhs_ext = torch.tensor([sum(isinstance(x, Nonterminal) and x.symbol() in ext for x in p.rhs())
                            for p in grammar.productions], dtype=torch.long)
    # non-terminals every derivation of which writes at least one atom (fixpoint)
    makes = {nt: False for nt in nts}
    changed = True
    while changed:
        changed = False
        for nt in nts:
            alts = [p.rhs() for p in grammar.productions if p.lhs().symbol() == nt]
            ok = bool(alts) and all(any((isinstance(x, str) and x in ATOM_STARTS)
                                        or (isinstance(x, Nonterminal) and makes.get(x.symbol(), False)) for x in rhs)
                                    for rhs in alts)
            if ok and not makes[nt]:
                makes[nt] = changed = True
    # closers: symbols sure to write an atom (``makes``) that can still get a ring bond (not ``atom``:
    # its ring bonds, if any, were pushed beside it as an obligation); each closes at most one ring
    # of a given opener
    closer = {nt: makes[nt] and can[nt] for nt in nts}
    nt_close = torch.tensor([closer[nt] for nt in nts], dtype=torch.long)
    rhs_close = torch.tensor([sum(isinstance(x, Nonterminal) and closer.get(x.symbol(), False) for x in p.rhs())
                              for p in grammar.productions], dtype=torch.long)
    return {"direct": direct, "via_digit": via_digit, "arms": arms, "new_atom": new_atom,
            "nt_close": nt_close, "rhs_close": rhs_close,
            "nt_ring": nt_ring, "rhs_ring": rhs_ring, "nt_ob": nt_ob, "rhs_ob": rhs_ob,
            "nt_ext": nt_ext, "rhs_ext": rhs_ext,
            "digit_nt": grammar._nt_index.get("DIGIT", -1)}


def ring_columns(grammar: Any, tables: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per-candidate columns ``[n_nt, C]`` of the ring masks (see :mod:`discrete_rae.grammar.packs`):
    the bit ``1 << digit`` each rule writes when no ring ``DIGIT`` is pending (``bit0``) and when one
    is (``bit1``; 0: none), the digit's index (``d0`` / ``d1``, 0 when none), and the changes of
    the pending-symbol counts once the rule replaces the top symbol (``dcap``, ``dob``, ``dext``,
    ``dclose``: right-hand side plus the armed ``DIGIT``, minus the top symbol)."""
    cand = grammar._decode_tensors(torch.device("cpu"))["cand"]
    rule, nt = _rule_columns(tables), _nt_columns(tables)
    cols = {k: per_candidate(cand, v) for k, v in rule.items()}
    for k in ("cap", "ob", "ext", "close"):
        cols["d" + k] = cols.pop("rhs_" + k) - nt["nt_" + k].unsqueeze(1)
    for k in ("cap", "ob"):  # of the top symbol itself (read by the chemistry masks)
        cols["nt_" + k] = nt["nt_" + k].unsqueeze(1).expand_as(cand)
    return cols, {}


def _rule_columns(tables: dict[str, Any]) -> dict[str, Tensor]:
    """[R] per-rule columns: digit bits / indices (see :func:`ring_columns`), right-hand-side counts."""
    direct, via = tables["direct"], tables["via_digit"]
    pend = torch.where(direct >= 0, direct, via)
    arms = tables["arms"].long()
    return {"bit0": torch.where(direct >= 0, 1 << direct.clamp(min=0), 0),
            "bit1": torch.where(pend >= 0, 1 << pend.clamp(min=0), 0),
            "d0": direct.clamp(min=0), "d1": pend.clamp(min=0),
            "rhs_cap": tables["rhs_ring"] + arms, "rhs_ob": tables["rhs_ob"] + arms,
            "rhs_ext": tables["rhs_ext"], "rhs_close": tables["rhs_close"]}


def _nt_columns(tables: dict[str, Any]) -> dict[str, Tensor]:
    """[n_nt] per-symbol counts (capability, obligations, extensible obligations, closers)."""
    return {"nt_cap": tables["nt_ring"], "nt_ob": tables["nt_ob"], "nt_ext": tables["nt_ext"],
            "nt_close": tables["nt_close"]}


def ring_rule_pack(tables: dict[str, Any], device: torch.device) -> tuple[Pack, Pack]:
    """Per-rule ``[R, F]`` and per-symbol ``[n_nt, F]`` packs read by :meth:`RingClosureState.push`."""
    rule = _rule_columns(tables)
    return (Pack(rule, {"arms": tables["arms"], "new_atom": tables["new_atom"]}, device),
            Pack(_nt_columns(tables), {"_": torch.zeros_like(tables["nt_ob"], dtype=torch.bool)}, device))


#: number of set bits of every 10-bit ring-digit set
POPCOUNT = torch.tensor([bin(i).count("1") for i in range(1 << len(DIGITS))], dtype=torch.long)


class RingClosureState:
    """Wraps a :class:`~discrete_rae.grammar.DecodeState`; same interface (allowed / push /
    done / ids / ...), with the ring masks added to :meth:`allowed`.

    State per row, each [B, 1] (so that it broadcasts against the candidates [B, C] without a
    reshape): ``open`` bit mask over ``DIGITS``, ``here`` (those opened at the current atom),
    ``shut`` (closed at the current atom), ``pending`` (a ring rule pushed a ``DIGIT`` whose
    expansion is a ring digit), and counts of the pending symbols: ``cap`` (can still write a
    ring digit), ``ob`` (ring obligations, each writes >= 1 digit), ``ext`` (of those, can write
    more than one), ``closers`` (sure to write an atom that can still get a ring bond).

    Every step is a fixed number of batched ops on the candidate rules of the top symbols
    (``[B, C]``), with the rule attributes read from packed tables (:mod:`discrete_rae.grammar.packs`)
    and digit sets held as bit masks (the lowest free digit is ``~x & (x + 1)``).
    """

    def __init__(self, state: Any, tables: dict[str, Any]) -> None:
        self.state = state
        dev = state.device
        g = state.grammar
        self._tables = tables
        self._digit_nt = int(tables["digit_nt"])
        key = (g.hash, str(dev))
        self._cands = cached(("ring_cand",) + key, lambda: merge_pack(dev, base_columns(g), ring_columns(g, tables)))
        self._rules, self._nts = cached(("ring_rule",) + key, lambda: ring_rule_pack(tables, dev))
        self._pop = cached(("popcount", str(dev)), lambda: POPCOUNT.to(dev))
        B = state.batch_size
        nt = self._nts.take(state.top(), rows=True)
        self.open = torch.zeros(B, 1, dtype=torch.long, device=dev)
        self.here = torch.zeros(B, 1, dtype=torch.long, device=dev)
        self.shut = torch.zeros(B, 1, dtype=torch.long, device=dev)  # digits closed at the current atom
        self.cap = nt.l("nt_cap").clone()
        self.ob = nt.l("nt_ob").clone()
        self.ext = nt.l("nt_ext").clone()
        self.closers = nt.l("nt_close").clone()
        self.pending = torch.zeros(B, 1, dtype=torch.bool, device=dev)
        self._bits = 2 ** torch.arange(len(DIGITS), device=dev)  # [10]

    _ROW_TENSORS = ("open", "here", "shut", "ob", "ext", "closers", "cap", "pending")

    def __getattr__(self, name: str) -> Any:  # done, ids, complete, lengths, ... of the wrapped state
        return getattr(self.state, name)

    # ------------------------------------------------------------------ masks

    def take(self, pack: Pack | None = None) -> Any:
        """The step's candidate columns (of ``pack``, default the ring's own) at the top symbols."""
        return (pack or self._cands).take(self.state.top())

    def ring_c(self, T: Any, base: Tensor, ctx: dict[str, Tensor]) -> Tensor:
        """[B, C] the grammar (+ length) mask ``base`` AND the ring masks on the candidate rules,
        from the step's columns ``T``. Fills ``ctx`` with what the chemistry masks reuse (all
        [B, C]): ``bit`` (digit written, 0: none), ``closing``, ``open_after``, ``ob_after``,
        ``later`` (some pending symbol other than the obligations can still write a digit),
        ``diff`` (open rings minus obligations), ``cap_left`` / ``ob_left`` ([B, 1]: counts of the
        pending symbols but the top one) and, with the length mask, ``after`` (the length
        bound after the rule) and ``extra`` (ring digits no pending symbol writes yet)."""
        st = self.state
        opened = self.open
        bit = torch.where(self.pending, T.l("bit1"), T.l("bit0"))
        closing = (opened & bit) != 0
        # a digit must be open and not opened at this atom, or the lowest digit neither open nor
        # closed at this atom (RDKit's reuse order; ``C23``: 2 closed, 3 opened)
        taken = opened | self.shut
        fine = (opened & ~self.here) | (~taken & (taken + 1))
        digit_ok = (bit & fine) == bit
        open_after = self._pop.index_select(0, (opened ^ bit).view(-1)).view(bit.shape)
        pend_digit = (self.pending & (st.top().unsqueeze(1) == self._digit_nt)).long()
        cap_left, ob_left = self.cap - pend_digit, self.ob - pend_digit  # [B, 1] before the top symbol's rule
        cap_after = cap_left + T.l("dcap")
        ob_after = ob_left + T.l("dob")
        # with no pending symbol but the obligations able to write a digit (no atom to come that
        # could close a ring: not ``later``), every digit left must close an open ring: none may
        # open, and exactly the open rings must get closed (fewer digits only if a list can grow)
        later = cap_after > ob_after
        diff = open_after - ob_after
        closable = ((diff == 0) | ((diff > 0) & (self.ext + T.l("dext") > 0))) & ((bit == 0) | closing)
        ok = base & digit_ok & ((open_after == 0) | (cap_after > 0)) & (later | closable)
        ctx.update(bit=bit, closing=closing, open_after=open_after, ob_after=ob_after, later=later, diff=diff,
                   cap_left=cap_left, ob_left=ob_left)
        if st.length_mask:
            # each ring open beyond the digits already owed needs a digit no pending symbol owes
            # yet, which costs at least two more rules than the cheapest derivation (a ring list
            # grows by ringbond + tail; an atom gets ``atom RB`` + a digit instead of one rule):
            # room for them within max_length (the pad rule under ``Nothing`` always fits).
            # Digits owed beyond the open rings open new rings that must close too: every ring
            # takes two digits, so the digits to come number open rings + 2 * openings; with an
            # odd surplus of owed digits one more digit is needed (``extra``: -diff's parity)
            after = st.need.unsqueeze(1) + T.l("dmin")
            extra = torch.where(diff >= 0, diff, diff & 1)
            ok &= torch.add(after, extra, alpha=2) <= st.max_length - st.t - 1
            ctx.update(after=after, extra=extra)
        return ok

    def strict_c(self) -> tuple[Tensor, Tensor]:
        """``(cand, ok)`` [B, C]: the top symbols' candidate rules and what the grammar (+ length)
        and ring masks allow among them, without the fallback of :meth:`allowed_c`."""
        T = self.take()
        return T.l("cand"), self.ring_c(T, self.state.base_c(T), {})

    def allowed_c(self) -> tuple[Tensor, Tensor]:
        """``(cand, ok)`` [B, C]: :meth:`allowed` on the candidate rules (a row the ring masks leave
        no rule falls back to the grammar (+ length) mask)."""
        T = self.take()
        base = self.state.base_c(T)
        ok = self.ring_c(T, base, {})
        return T.l("cand"), torch.where(ok.any(1, keepdim=True), ok, base)

    def allowed(self) -> Tensor:
        """BoolTensor [B, R]: grammar (+ length) mask AND ring masks (never leaves a row no rule)."""
        cand, ok = self.allowed_c()
        return scatter_rules(ok, cand, self.state.grammar.n_rules)

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` (LongTensor [B']) of every per-sample tensor, in that order (beam search)."""
        index = index.to(self.open.device)
        for name in self._ROW_TENSORS:
            setattr(self, name, getattr(self, name).index_select(0, index))
        self.state.reorder(index)

    # ------------------------------------------------------------------ push

    def digit_bits(self, R: Any) -> tuple[Tensor, Tensor]:
        """``(bit, d)`` [B, 1] for the chosen rules' packed attributes ``R``: the bit of the ring
        digit each writes now (0: none) and its index (0 when none)."""
        return torch.where(self.pending, R.l("bit1"), R.l("bit0")), torch.where(self.pending, R.l("d1"), R.l("d0"))

    def push(self, rule_ids: Tensor, check: bool = True) -> None:
        rule = rule_ids.to(device=self.open.device, dtype=torch.long).reshape(-1)
        R = self._rules.take(rule, rows=True)
        self.push_taken(rule, R, self.digit_bits(R)[0], check)

    def push_taken(self, rule: Tensor, R: Any, bit: Tensor, check: bool = True) -> None:
        """:meth:`push` with the rules' packed attributes ``R`` and digit bits ``bit`` ([B, 1]) read."""
        top = self.state.top()
        N = self._nts.take(top, rows=True)
        pend_digit = (self.pending & (top.unsqueeze(1) == self._digit_nt)).long()
        self.ob = self.ob - N.l("nt_ob") - pend_digit + R.l("rhs_ob")
        self.cap = self.cap - N.l("nt_cap") - pend_digit + R.l("rhs_cap")
        self.ext = self.ext - N.l("nt_ext") + R.l("rhs_ext")
        self.closers = self.closers - N.l("nt_close") + R.l("rhs_close")
        new_atom = R.b("new_atom")
        # a new atom starts with no digits opened or closed at it
        self.here = self.here.masked_fill(new_atom, 0) | (bit & ~self.open)
        self.shut = self.shut.masked_fill(new_atom, 0) | (bit & self.open)
        self.open = self.open ^ bit
        self.pending = (self.pending & (bit == 0)) | R.b("arms")
        self.state.push(rule, check=check)
