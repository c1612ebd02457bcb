"""Chemistry constraint for grammar decoding of SMILES: valence, bond orders and ring bonds.

The SMILES grammar guarantees syntax, :mod:`discrete_rae.grammar.ring` pairs the ring digits;
this module adds the attributes that make RDKit reject the rest (SD-VAE's attribute grammar idea,
Dai et al. 2018, written for the compact grammar's derivation order):

- an element only if its valence covers the bonds already committed to the atom;
- a bond order only if both ends can take it; a ring closure only if it duplicates no bond (two
  ring bonds between one pair of atoms, a ring bond to the atom's chain neighbour: ``C12CCC12``,
  ``C1C1``), exceeds no valence and does not contradict the order written at the ring's opening;
- a further ring bond, branch or chain continuation only where valence remains;
- no two-digit ring labels (``%nn``: not tracked), no charges beyond +-1, and, for Kekule data,
  no aromatic atoms (aromaticity cannot be checked atom by atom, docs/REFERENCE.md §6; Kekule SMILES
  need none). Finishing with a ring open is already blocked by the ring mask.

What is known when (compact grammar, verified on its rules): the rule that expands
``chain``/``chain_tail``/``branched_atom`` fixes whether the chain goes on after the new atom, the
bond symbol in front of it and whether the atom has ring bonds (``RB``) and branches (``BB``)
*before* the element is chosen (``atom -> 'C'``); the number of further ring bonds (``RB_tail``)
and branches (``BB_tail``) and their bond orders come after it. So the state keeps, per atom, a
lower bound ``used`` on its bond-order sum: realised bonds plus one for every pending symbol that
will add a bond to it (``chain_tail``, ``RB``/``RB_tail``/``ringbond``, ``BB``/``BB_tail``/
``branch``). Every rule is allowed only if the ``used`` it leaves on each atom it touches stays
within that atom's capacity (before the element is known: the largest capacity of any element,
so a choice never leaves the element step without an option). Implicit hydrogens fill the rest,
so upper bounds suffice.

Capacities (maximum bond-order sum; from RDKit 2026.03 by probing ``X(C)(C)...`` and
``[XHhq](C)...`` for the largest number of single bonds that still sanitizes, checked by
``tests/test_chem_constraint.py``): organic subset B 3, C 4, N 3, O 2, S 6, P 5, F/Cl/Br 1, I 5;
bracket atoms: allowed valence of the charged element minus the explicit H count
(:data:`BRACKET_VALENCE`, e.g. ``[N+]`` 4, ``[NH+]`` 3, ``[O-]`` 1, ``[S+]`` 5; ``[H]`` 1).
Aromatic atoms, when allowed (aromatic data), get neighbour budgets c 3, n 3, o 2, s 3 and
their bracket forms those of the capital element: no guarantee, as kekulisation is global.

Everything is held in per-sample tensors; every step is a fixed number of batched ops (no
per-sample Python loop). The rule tables are read from the grammar by symbol names; grammars
of another shape (e.g. the left-recursive paper grammar, whose chain length is fixed before its
atoms are written) get ``None`` from :func:`chem_tables` and keep the ring mask only.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from nltk.grammar import Nonterminal
from torch import Tensor

from .ring import DIGITS, RingClosureState, scatter_rules

__all__ = ["ORGANIC_CAP", "AROMATIC_CAP", "BRACKET_VALENCE", "ELEMENTS", "chem_tables", "chem_tables_cached",
           "uses_aromatic_atoms", "ChemState"]

#: organic-subset atoms written without brackets: largest bond-order sum RDKit accepts
ORGANIC_CAP = {"B": 3, "C": 4, "N": 3, "O": 2, "S": 6, "P": 5, "F": 1, "Cl": 1, "Br": 1, "I": 5}
#: aromatic atoms (only when aromatic atoms are allowed): neighbour budgets, not a guarantee
AROMATIC_CAP = {"c": 3, "n": 3, "o": 2, "s": 3}
#: bracket atoms: allowed valence for charge -1, 0, +1 (capacity = it minus the H count)
BRACKET_VALENCE = {"B": (4, 3, 2), "C": (3, 4, 3), "N": (2, 3, 4), "O": (1, 2, 3), "S": (5, 6, 5),
                   "P": (6, 5, 4), "F": (0, 1, 2), "I": (6, 5, 6), "Cl": (0, 1, 6), "Br": (0, 1, 6),
                   "H": (-1, 1, -1)}
ELEMENTS = ("B", "C", "N", "O", "S", "P", "F", "I", "Cl", "Br", "H", "c", "n", "o", "s")
N_H = 10  # explicit H counts 0..9 in the bracket grid
CHARGES = (-1, 0, 1)
GRID = N_H * len(CHARGES)  # cell g = h * 3 + (q + 1)
BOND_ORDER = {"-": 1, "=": 2, "#": 3, "$": 4, "/": 1, "\\": 1}

RING_NTS = frozenset({"ringbond", "RB", "RB_tail"})
BRANCH_NTS = frozenset({"BB", "BB_tail", "branch"})
CHAIN_TAIL = "chain_tail"
COMMIT_NTS = RING_NTS | BRANCH_NTS | {CHAIN_TAIL}  # each pending one adds >= 1 bond to its owner
ATOM_NTS = frozenset({"branched_atom", "atom"})  # expanding one creates the next atom
BRACKET_NTS = frozenset({"BAI", "BAC", "BAH", "BACH", "symbol", "isotope", "chiral", "hcount", "charge"})
ELEMENT_NTS = frozenset({"BAI", "symbol"})  # their rules choose a bracket atom's element
HQ_NTS = ("BAC", "BAH", "BACH", "hcount", "charge", "chiral", "DIGIT")  # spell H count / charge
BIG = 1 << 20  # capacity of the "no atom" slot
# DIGIT contexts: 0 ring / isotope (no valence meaning), 1 H count, 2 positive charge, 3 negative,
# 4 first digit of a multi-digit isotope (RDKit rejects a leading zero: [08Cl], [00C])
CTX_NONE, CTX_H, CTX_PLUS, CTX_MINUS, CTX_ISO = 0, 1, 2, 3, 4


def bracket_score(aromatic: bool) -> Tensor:
    """[E + 1, GRID] capacity of each element in each (H count, charge) cell (-1: forbidden);
    the last row ("element not chosen yet") is the maximum over the elements."""
    score = torch.full((len(ELEMENTS) + 1, GRID), -1, dtype=torch.long)
    for e, el in enumerate(ELEMENTS):
        if el.islower() and not aromatic:
            continue
        val = BRACKET_VALENCE[el.upper() if el.islower() else el]
        for h in range(N_H):
            for qi in range(len(CHARGES)):
                if el == "H" and h > 0:
                    continue  # RDKit: [HH] etc. are not monotone in the bond count
                cap = val[qi] - h
                score[e, h * 3 + qi] = cap if val[qi] >= 0 and cap >= 0 else -1
    score[-1] = score[:-1].max(0).values
    return score


# what the rules of each bracket symbol spell: "hq" the H count and the charge (unspelled: 0),
# "h" / "q" one of them (the other is free), "" neither
SPELLS = {"BAI": "hq", "BAC": "hq", "BAH": "hq", "BACH": "q", "charge": "q", "hcount": "h", "chiral": ""}


def _cells(tokens: tuple, spells: str) -> list[int]:
    """Grid cells consistent with the H count / charge spelled by ``tokens``. A charge needs at most
    one digit (RDKit rejects ``[F+00]``); values outside the grid give no cell."""
    h: int | None = 0 if "h" in spells else None
    q: int | None = 0 if "q" in spells else None
    i = 0
    while i < len(tokens):
        t = tokens[i]
        j = i + 1
        while j < len(tokens) and tokens[j] in DIGITS:
            j += 1
        digits = "".join(tokens[i + 1:j])
        if t == "H":
            h = int(digits) if digits else 1
        elif t in ("+", "-"):
            if len(digits) > 1:
                return []
            q = (int(digits) if digits else 1) * (1 if t == "+" else -1)
        i = j if t in ("H", "+", "-") else i + 1
    hs = range(N_H) if h is None else [h]
    qs = CHARGES if q is None else [q]
    return [hh * 3 + (qq + 1) for hh in hs for qq in qs if 0 <= hh < N_H and qq in CHARGES]


def _permits(grammar: Any) -> Tensor:
    """[R, GRID]: the (H count, charge) cells each bracket rule's subtree can still spell."""
    by_nt: dict[str, list[tuple]] = {}
    for p in grammar.productions:
        by_nt.setdefault(p.lhs().symbol(), []).append(tuple(p.rhs()))
    memo: dict[str, set[tuple]] = {}

    def lang(nt: str) -> set[tuple]:
        if nt not in HQ_NTS:  # isotope, symbol: no H count or charge
            return {()}
        if nt not in memo:
            memo[nt] = set().union(*(seq(rhs) for rhs in by_nt.get(nt, [])))
        return memo[nt]

    def seq(rhs: tuple) -> set[tuple]:
        parts = [lang(s.symbol()) if isinstance(s, Nonterminal) else {(s,)} for s in rhs]
        return {sum(combo, ()) for combo in itertools.product(*parts)}

    permit = torch.ones(grammar.n_rules, GRID, dtype=torch.bool)
    for r, p in enumerate(grammar.productions):
        lhs = p.lhs().symbol()
        if lhs not in SPELLS:
            continue
        rhs = tuple(s for s in p.rhs() if isinstance(s, Nonterminal)) if lhs in ELEMENT_NTS else tuple(p.rhs())
        cells = {c for t in seq(rhs) for c in _cells(t, SPELLS[lhs])}
        permit[r] = False
        if cells:
            permit[r, sorted(cells)] = True
    return permit


def chem_tables(grammar: Any, aromatic: bool = False) -> dict[str, Any] | None:
    """Per-rule tables of the chemistry constraint, or None when the grammar's shape is not
    supported (see the module docstring). ``aromatic``: allow aromatic atoms (c, n, o, s).

    Per rule r: ``add_o``/``add_n`` [R] bond-order units the rule adds to the atom owning the
    expanded symbol / to the next atom; ``parent`` [R] it starts a bond from the owner to the next
    atom; ``creates`` [R] it writes the next atom (``new_cap`` its capacity, ``opens_bracket``);
    ``own_next`` [R, K] which pushed symbols belong to the next atom (push order as the stack);
    ``bond_k`` [R] order of a bond symbol (0: not a bond rule); ``bond_ctx`` [R] 1/0: it pushes a
    ring / chain ``bond``, -1 none; ``dctx`` [R] DIGIT context it sets (-1: keeps it); ``digit``
    [R] value of a ``DIGIT`` rule; ``bracket`` [R] bracket-interior rule; ``el`` [R] element index
    it chooses for a bracket atom; ``permit`` [R, GRID]; ``forbidden`` [R].
    """
    nts = {p.lhs().symbol() for p in grammar.productions}
    if not {CHAIN_TAIL, "bond", "RB", "BB"} <= nts:
        return None
    R = grammar.n_rules
    K = max(1, max(sum(isinstance(s, Nonterminal) for s in p.rhs()) for p in grammar.productions))
    maxcap = max(list(ORGANIC_CAP.values()) + ([*AROMATIC_CAP.values()] if aromatic else []))
    t: dict[str, Any] = {k: torch.zeros(R, dtype=torch.long) for k in ("add_o", "add_n", "bond_k", "new_cap")}
    for k in ("parent", "creates", "opens_bracket", "bracket", "forbidden"):
        t[k] = torch.zeros(R, dtype=torch.bool)
    for k in ("bond_ctx", "dctx", "digit", "el"):
        t[k] = torch.full((R,), -1, dtype=torch.long)
    own_next = torch.zeros(R, K, dtype=torch.bool)
    next_ring = torch.zeros(R, dtype=torch.bool)  # the rule gives the next atom ring bonds
    atom_terms = set(ELEMENTS) | {"["}
    for r, p in enumerate(grammar.productions):
        lhs, rhs = p.lhs().symbol(), tuple(p.rhs())
        names = [s.symbol() if isinstance(s, Nonterminal) else None for s in rhs]
        if lhs in ("smiles", "chain", CHAIN_TAIL) and names and names[0] in ("chain", "smiles", CHAIN_TAIL):
            return None  # left recursion: the chain's atoms are not written in derivation order
        if "bond" in names and names.index("bond") != next(i for i, n in enumerate(names) if n is not None):
            return None  # the bookkeeping relies on a bond being expanded right after its rule
        terms = [s for s in rhs if not isinstance(s, Nonterminal)]
        t["forbidden"][r] = "%" in terms or (not aromatic and any(s in AROMATIC_CAP for s in terms))
        creates = lhs not in BRACKET_NTS and bool(rhs) and not isinstance(rhs[0], Nonterminal) and rhs[0] in atom_terms
        t["creates"][r] = creates
        if creates:
            t["opens_bracket"][r] = rhs[0] == "["
            t["new_cap"][r] = maxcap if rhs[0] == "[" else {**ORGANIC_CAP, **AROMATIC_CAP}[rhs[0]]
        writes_ring_bond = lhs in RING_NTS and ("DIGIT" in names or any(s in DIGITS or s == "%" for s in terms))
        branch_bond = lhs in BRANCH_NTS and "(" in terms
        incoming = branch_bond or lhs == CHAIN_TAIL
        t["parent"][r] = incoming
        add_o = int(writes_ring_bond or incoming) - int(lhs in COMMIT_NTS)
        add_n = int(incoming)
        seen_atom = creates
        pushed = []  # (is_next) for each RHS non-terminal, left to right
        for s, name in zip(rhs, names):
            if name is None:
                continue
            if name in ATOM_NTS:
                seen_atom = True
            pushed.append(seen_atom and name in COMMIT_NTS)
            next_ring[r] |= seen_atom and name in RING_NTS
            if name in COMMIT_NTS:
                if seen_atom:
                    add_n += 1
                else:
                    add_o += 1
        for j, is_next in enumerate(reversed(pushed)):  # the stack receives the RHS reversed
            own_next[r, j] = is_next
        t["add_o"][r], t["add_n"][r] = add_o, add_n
        if "bond" in names:
            t["bond_ctx"][r] = int(lhs in RING_NTS)
        if lhs == "bond":
            t["bond_k"][r] = BOND_ORDER.get(terms[0], 1) if terms else 1
        if "DIGIT" in names:
            before = rhs[names.index("DIGIT") - 1] if names.index("DIGIT") > 0 else None
            t["dctx"][r] = {"H": CTX_H, "+": CTX_PLUS, "-": CTX_MINUS}.get(before, CTX_NONE) \
                if isinstance(before, str) else CTX_NONE
            if lhs == "isotope" and names[0] == "DIGIT" and names.count("DIGIT") > 1:
                t["dctx"][r] = CTX_ISO
        if lhs == "DIGIT" and terms and terms[0] in DIGITS:
            t["digit"][r] = int(terms[0])
        t["bracket"][r] = lhs in BRACKET_NTS
        if lhs in ELEMENT_NTS and terms and terms[0] in ELEMENTS and not isinstance(rhs[0], Nonterminal):
            t["el"][r] = ELEMENTS.index(terms[0])
    dperm = torch.ones(5, 10, GRID, dtype=torch.bool)  # DIGIT d in each context -> allowed cells
    dperm[CTX_ISO, 0] = False
    for d in range(10):
        for g in range(GRID):
            h, q = divmod(g, 3)
            dperm[CTX_H, d, g] = h == d
            dperm[CTX_PLUS, d, g] = q - 1 == d
            dperm[CTX_MINUS, d, g] = q - 1 == -d
    t.update(own_next=own_next, next_ring=next_ring, permit=_permits(grammar), dperm=dperm, score=bracket_score(aromatic),
             maxcap=maxcap, aromatic=aromatic)
    return t


_TABLE_CACHE: dict[tuple[str, bool], dict[str, Any] | None] = {}


def chem_tables_cached(grammar: Any, aromatic: bool = False) -> dict[str, Any] | None:
    """:func:`chem_tables`, computed once per grammar (by hash) and ``aromatic``."""
    key = (grammar.hash, bool(aromatic))
    if key not in _TABLE_CACHE:
        _TABLE_CACHE[key] = chem_tables(grammar, aromatic)
    return _TABLE_CACHE[key]


def uses_aromatic_atoms(grammar: Any, ids: Any) -> bool:
    """True when any rule sequence in ``ids`` (array [N, L]) writes an aromatic atom (c, n, o, s)."""
    import numpy as np

    rules = [r for r, p in enumerate(grammar.productions)
             if any(not isinstance(s, Nonterminal) and s in AROMATIC_CAP for s in p.rhs())]
    return bool(np.isin(np.asarray(ids), rules).any()) if len(ids) else True


def _distinct(cand: Tensor, atoms: Tensor) -> Tensor:
    """[B, 1] number of distinct ``atoms`` [B, 10] among the candidates ``cand`` [B, 10]."""
    same = (atoms.unsqueeze(2) == atoms.unsqueeze(1)) & cand.unsqueeze(1)  # [B, d, d']: d' a candidate like d
    earlier = torch.ones(10, 10, dtype=torch.bool, device=cand.device).tril(-1)  # d' < d
    first = cand & ~(same & earlier).any(2)
    return first.sum(1, keepdim=True)


def _to(tables: dict[str, Any], dev: torch.device) -> dict[str, Any]:
    return {k: v.to(dev) if isinstance(v, Tensor) else v for k, v in tables.items()}


class ChemState:
    """Wraps a :class:`~discrete_rae.grammar.ring.RingClosureState` (which wraps the grammar's
    :class:`~discrete_rae.grammar.DecodeState`); same interface, with the chemistry masks added.

    Per-sample tensors (B rows; A = max_length + 2 atom slots, the last one "no atom"):
    ``own`` [B, S] atom owning each stack entry (aligned with the grammar stack); ``used`` /
    ``vcap`` / ``parent`` [B, A]; ``n_atoms`` [B]; bracket atom being written: ``cells`` [B, GRID]
    (H count / charge cells still possible), ``br_el`` [B]; ``dctx`` [B]; ``bond_ring`` [B] (the
    pending ``bond`` is a ring bond); ``pend_order`` / ``pend_explicit`` [B] (ring-bond symbol
    written before the digit); per ring digit ``ring_atom`` / ``ring_order`` / ``ring_explicit``
    [B, 10]; ``partners`` [B, 10] atoms the current atom has closed rings to. ``fallback_rows``
    [B] marks rows that were once left no rule by the constraints (they fell back to the ring,
    then the grammar mask, and may come out invalid).
    """

    def __init__(self, ring: RingClosureState, tables: dict[str, Any]) -> None:
        self.ring = ring
        base = ring.state
        dev = base.device
        self.tab = _to(tables, dev)
        self._bracket_cols = self.tab["bracket"].nonzero().view(-1)
        bracket_nts = {base.grammar._nt_index[nt] for nt in BRACKET_NTS if nt in base.grammar._nt_index}
        self._bracket_nt = torch.tensor([a in bracket_nts for a in range(base.grammar.n_nonterminals)],
                                        dtype=torch.bool, device=dev)
        B, S = base.stack.shape
        if self.tab["own_next"].shape[1] != base._rhs.shape[1]:
            raise ValueError("chem tables and decode state disagree on the right-hand-side width")
        A = base.max_length + 2
        self.none_atom = A - 1
        self.own = torch.full((B, S), A - 1, dtype=torch.long, device=dev)
        self.used = torch.zeros(B, A, dtype=torch.long, device=dev)
        self.vcap = torch.full((B, A), int(tables["maxcap"]), dtype=torch.long, device=dev)
        self.vcap[:, A - 1] = BIG
        self.parent = torch.full((B, A), -1, dtype=torch.long, device=dev)
        self.n_atoms = torch.zeros(B, dtype=torch.long, device=dev)
        self.cells = torch.ones(B, GRID, dtype=torch.bool, device=dev)
        self.br_el = torch.full((B,), len(ELEMENTS), dtype=torch.long, device=dev)
        self.dctx = torch.zeros(B, dtype=torch.long, device=dev)
        self.bond_ring = torch.zeros(B, dtype=torch.bool, device=dev)
        self.pend_order = torch.ones(B, dtype=torch.long, device=dev)
        self.pend_explicit = torch.zeros(B, dtype=torch.bool, device=dev)
        self.ring_atom = torch.full((B, 10), A - 1, dtype=torch.long, device=dev)
        self.ring_order = torch.ones(B, 10, dtype=torch.long, device=dev)
        self.ring_explicit = torch.zeros(B, 10, dtype=torch.bool, device=dev)
        self.partners = torch.full((B, 10), -1, dtype=torch.long, device=dev)
        self.fallback_rows = torch.zeros(B, dtype=torch.bool, device=dev)
        self.owed_next = torch.zeros(B, dtype=torch.bool, device=dev)  # ring bonds promised to the next atom

    _ROW_TENSORS = ("own", "used", "vcap", "parent", "n_atoms", "cells", "br_el", "dctx", "bond_ring",
                    "pend_order", "pend_explicit", "ring_atom", "ring_order", "ring_explicit", "partners",
                    "fallback_rows", "owed_next")

    def __getattr__(self, name: str) -> Any:  # done, ids, complete, lengths, ... of the wrapped states
        return getattr(self.ring, name)

    @property
    def state(self) -> Any:
        return self.ring.state

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` (LongTensor [B']) of every per-sample tensor, in that order (beam search)."""
        index = index.to(self.used.device)
        for name in self._ROW_TENSORS:
            setattr(self, name, getattr(self, name).index_select(0, index))
        self.ring.reorder(index)

    # ------------------------------------------------------------------ masks

    def _owner(self) -> Tensor:
        """[B] atom owning the symbol on top of the stack (the "no atom" slot when none)."""
        return self.own.gather(1, self.state.ptr.unsqueeze(1)).squeeze(1)

    def _t(self, name: str, rows: Tensor | None = None) -> Tensor:
        """Per-rule table ``name`` at the candidate rules: [B, C] (or [B, C, ...]); only ``rows``."""
        table, cand = self.tab[name], self.ring.cand
        if rows is not None:
            cand = cand.index_select(0, rows)
        return table.index_select(0, cand.reshape(-1)).view(*cand.shape, *table.shape[1:])

    def chem_mask(self) -> Tensor:
        """[B, R] rules the chemistry constraint allows now (read together with the grammar and
        ring masks; computes the ring masks first)."""
        self.ring.masks()
        return scatter_rules(self._chem_c(), self.ring.cand, self.tab["bond_k"].shape[0])

    def _chem_c(self) -> Tensor:
        """[B, C] the chemistry masks on the candidate rules of :meth:`RingClosureState.masks`
        (which must have run this step)."""
        o, n = self._owner(), self.n_atoms
        used_o, cap_o = self.used.gather(1, o[:, None]), self.vcap.gather(1, o[:, None])  # [B, 1]
        used_n, cap_n = self.used.gather(1, n[:, None]), self.vcap.gather(1, n[:, None])
        k1 = (self._t("bond_k") - 1).clamp(min=0)  # [B, C] order above single
        kn = k1 * (~self.bond_ring).long().unsqueeze(1)  # ... added to the next atom (chain bonds)
        creates = self._t("creates")
        cap_new = torch.where(creates & ~self._t("opens_bracket"), self._t("new_cap"), cap_n)
        ok = (used_o + self._t("add_o") + k1 <= cap_o) & ~self._t("forbidden")
        ok &= used_n + self._t("add_n") + kn <= cap_new
        ok &= self._ring_ok(o, used_o, cap_o)
        ok &= self._closable(o, n, k1, kn, cap_new)
        if self.state.length_mask:
            ok &= self._room()
        # bracket interiors: only the rows writing one (a handful per step)
        top = self.state.top()
        inside = self._bracket_nt.index_select(0, top) | ((top == self.ring._digit_nt) & (self.dctx != CTX_NONE))
        rows = inside.nonzero().view(-1)
        if rows.numel():
            ok[rows] &= self._bracket_ok(rows)
        return ok

    def _closable(self, o: Tensor, n: Tensor, k1: Tensor, kn: Tensor, cap_new: Tensor) -> Tensor:
        """[B, C] when no atom is to come after the ring bonds still owed (the ring mask's
        ``no_later``), every open ring must be closable by the atom A that owes them: distinct
        openers, none A's chain neighbour, already joined to A or opened by A, and A's capacity
        must cover the bond orders of all those closures. A is the next atom while its ring bonds
        are promised but it is not written yet, else the latest atom."""
        ring = self.ring
        bits = ring._bits.unsqueeze(0)
        is_open = (ring.open.unsqueeze(1) & bits) != 0  # [B, 10]
        here = (ring.here.unsqueeze(1) & bits) != 0
        p = self.ring_atom
        last = (n - 1).clamp(min=0).unsqueeze(1)  # [B, 1]
        joined = (p.unsqueeze(2) == self.partners.unsqueeze(1)).any(2)
        cand_l = is_open & ~here & ~joined & (p != self.parent.gather(1, last))
        cand_n = is_open & (p != self.parent.gather(1, n[:, None]))  # the next atom, parent known
        cand_no = is_open & (p != o.unsqueeze(1))  # the next atom, this rule makes o its parent
        next_ring = self._t("next_ring")
        owed_next = next_ring | self.owed_next.unsqueeze(1)  # [B, C]
        cnt = torch.where(owed_next,
                          torch.where(next_ring & self._t("parent"), _distinct(cand_no, p), _distinct(cand_n, p)),
                          _distinct(cand_l, p))
        digit = ring.digit_c
        d = digit.clamp(min=0)
        closes = (digit >= 0) & is_open.gather(1, d)
        cnt = cnt - (closes & cand_l.gather(1, d)).long()
        ok = cnt >= ring.open_after
        # capacity of A for closing every open ring (cost: the order written at the opening, else 1)
        cost = torch.where(self.ring_explicit, self.ring_order, torch.ones_like(p)) * is_open.long()
        cost_d = cost.gather(1, d)
        s_after = cost.sum(1, keepdim=True) - closes.long() * cost_d
        used_n = self.used.gather(1, n[:, None]) + self._t("add_n") + kn
        # (a ring-bond symbol's order is part of the cost of the ring it will close)
        used_l = (self.used.gather(1, last) + (o.unsqueeze(1) == last).long() * (self._t("add_o") + kn)
                  + (closes & ~self.pend_explicit.unsqueeze(1)).long() * (cost_d - 1))
        used_a = torch.where(owed_next, used_n, used_l)
        cap_a = torch.where(owed_next, cap_new, self.vcap.gather(1, last))
        ok &= used_a + s_after - ring.ob_after <= cap_a
        # a ring-bond symbol with nothing to come: some open ring must take that order
        orders = torch.arange(1, 4, device=p.device)
        fits_p = self.used.gather(1, p).unsqueeze(2) + (orders - 1) <= self.vcap.gather(1, p).unsqueeze(2)
        same = self.ring_order.unsqueeze(2) == orders  # [B, 10, 3]
        takes = (cand_l.unsqueeze(2) & torch.where(self.ring_explicit.unsqueeze(2), same, fits_p)).sum(1)  # [B, 3]
        k = self._t("bond_k")
        ring_bond = (k > 0) & self.bond_ring.unsqueeze(1)
        ok &= ~ring_bond | (takes.gather(1, k.clamp(1, 3) - 1) > 0)
        # what a bracket atom still being written needs for those closures (for _bracket_ok)
        self._ring_need = self._bracket_ring_need(cost.sum(1))
        return ~ring.no_later | ok

    def _bracket_ring_need(self, cost: Tensor) -> Tensor:
        """[B] bond orders a bracket atom being written will need for closing every open ring
        when no atom is to come (as seen from the first bracket rule)."""
        if not self._bracket_cols.numel():
            return torch.zeros_like(cost)
        ring, r0 = self.ring, int(self._bracket_cols[0])
        top = self.state.top()
        arms = int(ring._arms[r0])
        cap_after = ring._cap_left(top) + int(ring._rhs_ring[r0]) + arms
        ob_after = ring._ob_left(top) + int(ring._rhs_ob[r0]) + arms
        return torch.where(cap_after <= ob_after, (cost - ob_after).clamp(min=0), torch.zeros_like(cost))

    def _room(self) -> Tensor:
        """[B, C] rings opened at one atom must close at distinct atoms: beyond the atoms that
        pending symbols will write anyway (and the one owing ring bonds), each costs at least two
        more rules (a chain or branch grows by one atom), on top of the ring mask's two per digit."""
        st, ring = self.state, self.ring
        is_open = (ring.open.unsqueeze(1) & ring._bits.unsqueeze(0)) != 0  # [B, 10]
        p = self.ring_atom
        shared = ((p.unsqueeze(2) == p.unsqueeze(1)) & is_open.unsqueeze(1) & is_open.unsqueeze(2)).sum(2)
        mult = shared.amax(1, keepdim=True)  # [B, 1] most open rings from one atom
        digit = ring.digit_c
        closes = (digit >= 0) & is_open.gather(1, digit.clamp(min=0))
        more_atoms = (mult - closes.long() - ring.atoms_after - (ring.ob_after > 0).long()).clamp(min=0)
        digits = (ring.open_after - ring.ob_after).clamp(min=0)
        top = st.top()
        after = (st.need - st._nt_min.index_select(0, top)).unsqueeze(1) + self._take_min()
        fits = after + 2 * digits + 2 * more_atoms <= st.max_length - st.t - 1
        return fits | (top == st.grammar._nothing_nt).unsqueeze(1)

    def _take_min(self) -> Tensor:
        cand = self.ring.cand
        return self.state._rhs_min.index_select(0, cand.reshape(-1)).view(cand.shape)

    def _ring_ok(self, o: Tensor, used_o: Tensor, cap_o: Tensor) -> Tensor:
        """[B, C] ring digits: a closure must not duplicate a bond, exceed a valence or contradict
        the bond symbol written at the opening."""
        digit = self.ring.digit_c  # [B, C] ring digit each rule writes (-1: none)
        is_open = (self.ring.open.unsqueeze(1) & self.ring._bits.unsqueeze(0)) != 0  # [B, 10]
        p = self.ring_atom
        dup = (p == self.parent.gather(1, o[:, None])) | (p.unsqueeze(2) == self.partners.unsqueeze(1)).any(2)
        pe = self.pend_explicit.unsqueeze(1)
        clash = pe & self.ring_explicit & (self.ring_order != self.pend_order.unsqueeze(1))
        extra_o = torch.where(pe, torch.zeros_like(p), self.ring_order - 1)
        extra_p = torch.where(pe & ~self.ring_explicit, (self.pend_order - 1).unsqueeze(1), torch.zeros_like(p))
        fits = (used_o + extra_o <= cap_o) & (self.used.gather(1, p) + extra_p <= self.vcap.gather(1, p))
        digit_ok = ~is_open | (~dup & ~clash & fits)  # [B, 10]
        return (digit < 0) | digit_ok.gather(1, digit.clamp(min=0))

    def _bracket_ok(self, rows: Tensor) -> Tensor:
        """[b, C] for ``rows`` [b]: inside a bracket atom, a rule only if some H count / charge it
        leaves possible gives the atom room for the bonds already committed to it (plus the
        orders of ring closures it will have to make)."""
        tab = self.tab
        a = (self.n_atoms.index_select(0, rows) - 1).clamp(min=0)
        need = (self.used.index_select(0, rows).gather(1, a[:, None])
                + self._ring_need.index_select(0, rows).unsqueeze(1))  # [b, 1]
        score = tab["score"]
        cells, dctx = self.cells.index_select(0, rows), self.dctx.index_select(0, rows)
        fit = cells & (score.index_select(0, self.br_el.index_select(0, rows)) >= need)  # [b, GRID]
        permit = self._t("permit", rows)  # [b, C, GRID]
        ok = ~self._t("bracket", rows) | (fit.unsqueeze(1) & permit).any(2)
        el = self._t("el", rows)
        el_score = score.index_select(0, el.clamp(min=0).reshape(-1)).view(*el.shape, -1)  # [b, C, GRID]
        el_fit = (cells.unsqueeze(1) & (el_score >= need.unsqueeze(2)) & permit).any(2)
        ok &= (el < 0) | el_fit
        digit = self._t("digit", rows)
        dperm = tab["dperm"].index_select(0, dctx)  # [b, 10, GRID]
        sel = dperm.gather(1, digit.clamp(min=0).unsqueeze(2).expand(-1, -1, GRID))  # [b, C, GRID]
        in_ctx = (digit >= 0) & (dctx != CTX_NONE).unsqueeze(1)
        ok &= ~in_ctx | (fit.unsqueeze(1) & sel).any(2)
        return ok

    def allowed(self) -> Tensor:
        """BoolTensor [B, R]: grammar (+ length) mask AND ring masks AND chemistry masks; a row the
        constraints leave no rule falls back to the ring masks, then to the grammar mask."""
        base, ring_ok = self.ring.masks()
        ok_c = self.ring.ok_c & self._chem_c()
        has = ok_c.any(1)
        self.fallback_rows |= ~has
        ok = scatter_rules(ok_c, self.ring.cand, base.shape[1])
        return torch.where(has.unsqueeze(1), ok, torch.where(ring_ok.any(1, keepdim=True), ring_ok, base))

    # ------------------------------------------------------------------ push

    def push(self, rule_ids: Tensor, check: bool = True) -> None:
        """Apply one rule per sample (see :meth:`DecodeState.push`) and update the chemistry state."""
        tab = self.tab
        rule = rule_ids.to(device=self.used.device, dtype=torch.long).reshape(-1)
        base = self.state
        ptr = base.ptr
        o, n = self._owner(), self.n_atoms
        rows = torch.arange(rule.shape[0], device=rule.device)
        k = tab["bond_k"].index_select(0, rule)
        k1 = (k - 1).clamp(min=0)
        # bond orders and committed bonds
        add_o = tab["add_o"].index_select(0, rule) + k1
        add_n = tab["add_n"].index_select(0, rule) + k1 * (~self.bond_ring).long()
        self.used.scatter_add_(1, o[:, None], add_o[:, None])
        self.used.scatter_add_(1, n[:, None], add_n[:, None])
        is_bond = k > 0
        ring_bond = is_bond & self.bond_ring
        self.pend_order = torch.where(ring_bond, k, self.pend_order)
        self.pend_explicit |= ring_bond
        self.parent[rows, n] = torch.where(tab["parent"].index_select(0, rule), o, self.parent[rows, n])
        self._push_ring_digit(rule, o)
        self._push_bracket(rule)
        # a new atom: its capacity, a fresh bracket state, no ring partners yet
        creates = tab["creates"].index_select(0, rule)
        new_cap = tab["new_cap"].index_select(0, rule)
        self.vcap[rows, n] = torch.where(creates, new_cap, self.vcap[rows, n])
        opens = tab["opens_bracket"].index_select(0, rule)
        self.cells |= opens.unsqueeze(1)
        self.br_el = torch.where(opens, torch.full_like(self.br_el, len(ELEMENTS)), self.br_el)
        self.partners.masked_fill_(creates.unsqueeze(1), -1)
        self.n_atoms = n + creates.long()
        self.owed_next = (self.owed_next | tab["next_ring"].index_select(0, rule)) & ~creates
        # contexts for the symbols the rule pushes (expanded next)
        ctx = tab["bond_ctx"].index_select(0, rule)
        self.bond_ring = torch.where(ctx >= 0, ctx == 1, self.bond_ring)
        dctx = tab["dctx"].index_select(0, rule)
        lead_done = (self.dctx == CTX_ISO) & (tab["digit"].index_select(0, rule) >= 0)
        self.dctx = torch.where(dctx >= 0, dctx, torch.where(lead_done, torch.zeros_like(dctx), self.dctx))
        # owners of the pushed symbols, at the slots DecodeState.push writes
        own_next = tab["own_next"].index_select(0, rule)  # [B, K]
        vals = torch.where(own_next, n.unsqueeze(1), o.unsqueeze(1))
        slots = (ptr - 1).clamp(min=0).unsqueeze(1) + torch.arange(1, own_next.shape[1] + 1, device=rule.device)
        self.own.scatter_(1, slots, vals)
        self.ring.push(rule, check=check)

    def _push_ring_digit(self, rule: Tensor, o: Tensor) -> None:
        """Open or close the ring whose digit the rule writes (before the ring state flips it)."""
        digit = self.ring.digit_of(rule[:, None]).squeeze(1)
        has = digit >= 0
        d = digit.clamp(min=0)[:, None]
        is_open = ((self.ring.open & self.ring._bits[d.squeeze(1)]) != 0) & has
        closing, opening = is_open, has & ~is_open
        p = self.ring_atom.gather(1, d).squeeze(1)
        r_order = self.ring_order.gather(1, d).squeeze(1)
        r_expl = self.ring_explicit.gather(1, d).squeeze(1)
        # closing: the end without a bond symbol takes the order written at the other end
        extra_o = torch.where(closing & ~self.pend_explicit, r_order - 1, torch.zeros_like(r_order))
        extra_p = torch.where(closing & self.pend_explicit & ~r_expl, self.pend_order - 1, torch.zeros_like(r_order))
        self.used.scatter_add_(1, o[:, None], extra_o[:, None])
        self.used.scatter_add_(1, p[:, None], extra_p[:, None])
        slot = (self.partners >= 0).sum(1, keepdim=True).clamp(max=9)
        cur = self.partners.gather(1, slot)
        self.partners.scatter_(1, slot, torch.where(closing[:, None], p[:, None], cur))
        # opening: remember the atom and the bond symbol
        self.ring_atom.scatter_(1, d, torch.where(opening, o, p)[:, None])
        self.ring_order.scatter_(1, d, torch.where(opening, self.pend_order, r_order)[:, None])
        self.ring_explicit.scatter_(1, d, torch.where(opening, self.pend_explicit, r_expl)[:, None])
        self.pend_order = torch.where(has, torch.ones_like(self.pend_order), self.pend_order)
        self.pend_explicit &= ~has

    def _push_bracket(self, rule: Tensor) -> None:
        """Narrow the bracket atom's (H count, charge) cells and update its capacity."""
        tab = self.tab
        is_digit = tab["digit"].index_select(0, rule) >= 0
        in_br = tab["bracket"].index_select(0, rule) | (is_digit & (self.dctx > 0))
        d = tab["digit"].index_select(0, rule).clamp(min=0)
        digit_cells = tab["dperm"][self.dctx, d]  # [B, GRID]
        permit = torch.where(is_digit.unsqueeze(1), digit_cells, tab["permit"].index_select(0, rule))
        self.cells &= permit | ~in_br.unsqueeze(1)
        el = tab["el"].index_select(0, rule)
        self.br_el = torch.where(el >= 0, el, self.br_el)
        a = (self.n_atoms - 1).clamp(min=0)
        score = tab["score"].index_select(0, self.br_el)
        cap = torch.where(self.cells, score, torch.full_like(score, -1)).amax(1)
        rows = torch.arange(rule.shape[0], device=rule.device)
        self.vcap[rows, a] = torch.where(in_br, cap, self.vcap[rows, a])
