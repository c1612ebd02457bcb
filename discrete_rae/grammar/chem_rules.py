"""Rule tables of the SMILES chemistry constraint: capacities, bracket-atom grids and per-rule attributes.

The constraint itself (what the tables mean, and the batched state that applies them) is described
in :mod:`discrete_rae.grammar.chem`; this module reads the grammar once and builds the tables.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from nltk.grammar import Nonterminal
from torch import Tensor

from .ring import DIGITS

__all__ = ["ORGANIC_CAP", "AROMATIC_CAP", "BRACKET_VALENCE", "ELEMENTS", "H_EL", "chem_tables", "chem_tables_cached",
           "uses_aromatic_atoms"]

#: organic-subset atoms written without brackets: largest bond-order sum RDKit accepts
ORGANIC_CAP = {"B": 3, "C": 4, "N": 3, "O": 2, "S": 6, "P": 5, "F": 1, "Cl": 1, "Br": 1, "I": 5}
#: aromatic atoms (only when aromatic atoms are allowed): neighbour budgets, not a guarantee
AROMATIC_CAP = {"c": 3, "n": 3, "o": 2, "s": 3}
#: bracket atoms: allowed valence for charge -1, 0, +1 (capacity = it minus the H count)
BRACKET_VALENCE = {"B": (4, 3, 2), "C": (3, 4, 3), "N": (2, 3, 4), "O": (1, 2, 3), "S": (5, 6, 5),
                   "P": (6, 5, 4), "F": (0, 1, 2), "I": (6, 5, 6), "Cl": (0, 1, 6), "Br": (0, 1, 6),
                   "H": (-1, 1, -1)}
ELEMENTS = ("B", "C", "N", "O", "S", "P", "F", "I", "Cl", "Br", "H", "c", "n", "o", "s")
H_EL = ELEMENTS.index("H")  # RDKit rejects a chirality tag on a bracket hydrogen ([H@], [H@@H0]C)
CHIRAL_SYMBOLS = frozenset({"chiral", "@", "@@"})  # a rule writing one of them writes a chirality tag
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
    it chooses for a bracket atom; ``chiral`` [R] it writes a chirality tag (forbidden on H);
    ``permit`` [R, GRID]; ``forbidden`` [R].
    """
    nts = {p.lhs().symbol() for p in grammar.productions}
    if not {CHAIN_TAIL, "bond", "RB", "BB"} <= nts:
        return None
    R = grammar.n_rules
    K = max(1, max(sum(isinstance(s, Nonterminal) for s in p.rhs()) for p in grammar.productions))
    maxcap = max(list(ORGANIC_CAP.values()) + ([*AROMATIC_CAP.values()] if aromatic else []))
    t: dict[str, Any] = {k: torch.zeros(R, dtype=torch.long) for k in ("add_o", "add_n", "bond_k", "new_cap")}
    for k in ("parent", "creates", "opens_bracket", "bracket", "chiral", "forbidden"):
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
        t["chiral"][r] = lhs in BRACKET_NTS and any(
            (s.symbol() if isinstance(s, Nonterminal) else s) in CHIRAL_SYMBOLS for s in rhs)
        t["forbidden"][r] |= bool(t["chiral"][r]) and int(t["el"][r]) == H_EL  # H and its tag in one rule
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
