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
    nt_atom = torch.tensor([makes[nt] for nt in nts], dtype=torch.long)
    rhs_atom = torch.tensor([sum(isinstance(x, Nonterminal) and makes.get(x.symbol(), False) for x in p.rhs())
                             for p in grammar.productions], dtype=torch.long)
    return {"direct": direct, "via_digit": via_digit, "arms": arms, "new_atom": new_atom,
            "nt_atom": nt_atom, "rhs_atom": rhs_atom,
            "nt_ring": nt_ring, "rhs_ring": rhs_ring, "nt_ob": nt_ob, "rhs_ob": rhs_ob,
            "nt_ext": nt_ext, "rhs_ext": rhs_ext,
            "digit_nt": grammar._nt_index.get("DIGIT", -1)}


class RingClosureState:
    """Wraps a :class:`~discrete_rae.grammar.DecodeState`; same interface (allowed / push /
    done / ids / ...), with the ring masks added to :meth:`allowed`.

    State per row: ``open`` bit mask [B] over ``DIGITS``, ``here`` [B] (those opened at the
    current atom), ``pending`` [B] (a ring rule pushed a ``DIGIT`` whose expansion is a ring digit).
    """

    def __init__(self, state: Any, tables: dict[str, Any]) -> None:
        self.state = state
        dev = state.device
        self._direct = tables["direct"].to(dev)
        self._via = tables["via_digit"].to(dev)
        self._arms = tables["arms"].to(dev)
        self._new_atom = tables["new_atom"].to(dev)
        self._nt_ring, self._rhs_ring = tables["nt_ring"].to(dev), tables["rhs_ring"].to(dev)
        self._nt_ob, self._rhs_ob = tables["nt_ob"].to(dev), tables["rhs_ob"].to(dev)
        self._nt_ext, self._rhs_ext = tables["nt_ext"].to(dev), tables["rhs_ext"].to(dev)
        self._nt_atom, self._rhs_atom = tables["nt_atom"].to(dev), tables["rhs_atom"].to(dev)
        self._digit_nt = int(tables["digit_nt"])
        self._rhs_len = state._rhs_len
        B = state.batch_size
        self.open = torch.zeros(B, dtype=torch.long, device=dev)
        self.here = torch.zeros(B, dtype=torch.long, device=dev)
        self.shut = torch.zeros(B, dtype=torch.long, device=dev)  # digits closed at the current atom
        # pending symbols (stack entries, plus a pending ring DIGIT) that can still write a ring digit
        self.cap = self._nt_ring[state.top()].clone()
        # pending obligations: ring symbols (and a pending ring DIGIT), each writes >= 1 ring digit
        self.ob = self._nt_ob[state.top()].clone()
        self.ext = self._nt_ext[state.top()].clone()  # of which can write more than one digit
        self.atoms = self._nt_atom[state.top()].clone()  # pending symbols sure to write an atom
        self.pending = torch.zeros(B, dtype=torch.bool, device=dev)
        self._bits = 2 ** torch.arange(len(DIGITS), device=dev)  # [10]

    def __getattr__(self, name: str) -> Any:  # done, ids, complete, lengths, ... of the wrapped state
        return getattr(self.state, name)

    def _digits(self) -> Tensor:
        """[B, R] ring digit each rule would write now (-1: none)."""
        via = torch.where(self.pending.unsqueeze(1), self._via.unsqueeze(0), torch.full_like(self._via, -1))
        return torch.where(self._direct >= 0, self._direct.unsqueeze(0), via)

    def digit_of(self, rules: Tensor) -> Tensor:
        """Ring digit (-1: none) each of ``rules`` ([B, C] rule ids) would write now."""
        via = torch.where(self.pending.unsqueeze(1), _take(self._via, rules), torch.full_like(rules, -1))
        direct = _take(self._direct, rules)
        return torch.where(direct >= 0, direct, via)

    def candidates(self) -> tuple[Tensor, Tensor]:
        """``(cand, valid)`` [B, C]: the rules of each row's top symbol (padded with the pad rule).
        The masks are computed for these only (C is a tenth of the rule count)."""
        tens = self.state.grammar._decode_tensors(self.open.device)
        top = self.state.top()
        return tens["cand"].index_select(0, top), tens["cand_valid"].index_select(0, top)

    def allowed(self) -> Tensor:
        base, ok = self.masks()
        return torch.where(ok.any(1, keepdim=True), ok, base)  # never leave a row without a rule

    def masks(self) -> tuple[Tensor, Tensor]:
        """``(base, ok)``, both [B, R]: the grammar (+ length) mask, and it with the ring masks
        (which may leave a row no rule; :meth:`allowed` then falls back to ``base``). The ring
        masks are computed on the top symbol's candidate rules (kept in ``self.cand``,
        ``self.ok_c`` and the ``*_after`` tensors, all [B, C], for the chemistry constraint)."""
        base = self.state.allowed()  # [B, R] grammar (+ length) mask
        cand, valid = self.candidates()
        self.cand = cand
        digit = self.digit_of(cand)  # [B, C]
        has = digit >= 0
        bit = torch.where(has, self._bits[digit.clamp(min=0)], torch.zeros_like(digit))
        is_open = (self.open.unsqueeze(1) & bit) != 0
        # RDKit does not reuse a digit at the atom that just closed it (``C23``: 2 closed, 3 opened)
        free = ((self.open | self.shut).unsqueeze(1) & self._bits.unsqueeze(0)) == 0  # [B, 10]
        lowest_free = torch.where(free.any(1), free.long().argmax(1), torch.full_like(self.open, -1))
        opened_here = (self.here.unsqueeze(1) & bit) != 0
        digit_ok = ~has | (is_open & ~opened_here) | (digit == lowest_free.unsqueeze(1))
        n_open = ((self.open.unsqueeze(1) & self._bits.unsqueeze(0)) != 0).sum(1, keepdim=True)
        open_after = n_open + has.long() * (1 - 2 * is_open.long())
        top = self.state.top()
        arms = _take(self._arms, cand).long()
        cap_after = self._cap_left(top).unsqueeze(1) + _take(self._rhs_ring, cand) + arms
        ob_after = self._ob_left(top).unsqueeze(1) + _take(self._rhs_ob, cand) + arms
        ext_after = (self.ext - self._nt_ext[top]).unsqueeze(1) + _take(self._rhs_ext, cand)
        # with no pending symbol but the obligations able to write a digit (no atom to come that
        # could close a ring), every digit left must close an open ring: none may open ...
        no_later = cap_after <= ob_after
        opening = has & ~is_open
        # ... and exactly the open rings must get closed (fewer digits only if a list can grow)
        closable = (open_after >= ob_after) & ((ext_after > 0) | (open_after <= ob_after)) & ~opening
        ok = valid & base.gather(1, cand) & digit_ok & ((open_after == 0) | (cap_after > 0)) & (~no_later | closable)
        st = self.state
        if st.length_mask:
            # each ring open beyond the digits already owed needs a digit no pending symbol owes
            # yet, which costs at least two more rules than the cheapest derivation (a ring list
            # grows by ringbond + tail; an atom gets ``atom RB`` + a digit instead of one rule):
            # room for them within max_length
            extra = 2 * (open_after - ob_after).clamp(min=0)
            after = (st.need - st._nt_min.index_select(0, top)).unsqueeze(1) + _take(st._rhs_min, cand)
            ok &= (after + extra <= st.max_length - st.t - 1) | (top == st.grammar._nothing_nt).unsqueeze(1)
        # kept for the chemistry constraint, which refines "closable" by the atoms involved
        self.ok_c, self.digit_c, self.no_later, self.ob_after = ok, digit, no_later, ob_after
        self.atoms_after = (self.atoms - self._nt_atom[top]).unsqueeze(1) + _take(self._rhs_atom, cand)
        self.open_after = open_after
        return base, scatter_rules(ok, cand, base.shape[1])

    def _ob_left(self, top: Tensor) -> Tensor:
        """[B] obligations left once the top symbol is expanded."""
        return self.ob - self._nt_ob[top] - (self.pending & (top == self._digit_nt)).long()

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` (LongTensor [B']) of every per-sample tensor, in that order (beam search)."""
        index = index.to(self.open.device)
        self.open, self.here = self.open.index_select(0, index), self.here.index_select(0, index)
        self.shut, self.ob = self.shut.index_select(0, index), self.ob.index_select(0, index)
        self.ext, self.atoms = self.ext.index_select(0, index), self.atoms.index_select(0, index)
        self.cap, self.pending = self.cap.index_select(0, index), self.pending.index_select(0, index)
        self.state.reorder(index)

    def _cap_left(self, top: Tensor) -> Tensor:
        """[B] capability left once the top symbol is expanded (it, or the pending DIGIT, is used up)."""
        used = self._nt_ring[top] + (self.pending & (top == self._digit_nt)).long()
        return self.cap - used

    def push(self, rule_ids: Tensor, check: bool = True) -> None:
        rule = rule_ids.to(device=self.open.device, dtype=torch.long).reshape(-1)
        top = self.state.top()
        self.ob = self._ob_left(top) + self._rhs_ob[rule] + self._arms[rule].long()
        self.ext = self.ext - self._nt_ext[top] + self._rhs_ext[rule]
        self.atoms = self.atoms - self._nt_atom[top] + self._rhs_atom[rule]
        self.cap = self._cap_left(top) + self._rhs_ring[rule] + self._arms[rule].long()
        digit = self.digit_of(rule.unsqueeze(1)).squeeze(1)
        has = digit >= 0
        bit = torch.where(has, self._bits[digit.clamp(min=0)], torch.zeros_like(digit))
        opening = has & ((self.open & bit) == 0)
        self.here = torch.where(self._new_atom[rule], torch.zeros_like(self.here), self.here)
        self.shut = torch.where(self._new_atom[rule], torch.zeros_like(self.shut), self.shut)
        self.here |= torch.where(opening, bit, torch.zeros_like(bit))
        self.shut |= torch.where(has & ~opening, bit, torch.zeros_like(bit))
        self.open ^= bit
        self.pending = (self.pending & ~has) | self._arms[rule]
        self.state.push(rule, check=check)
