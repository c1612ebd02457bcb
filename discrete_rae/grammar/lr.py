"""LALR(1) table construction and the generalised LR parse over those tables.

At first use an LALR(1) automaton is built from the grammar (any CFG, no grammar-specific
code). Where the table has conflicts (e.g. the SMILES grammar needs two tokens of look-ahead
after an atom followed by a bond symbol) the parser forks the stack for each action and keeps
the forks that survive (a generalised LR parse); see :mod:`discrete_rae.grammar`.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Iterable, Sequence

from nltk.grammar import Nonterminal

logger = logging.getLogger(__name__)

_EOF = None  # end-of-input token key in the LR action table
_EMPTY: tuple = ()  # value of a shifted terminal on the LR value stack
_MAX_STACKS = 64  # generalised LR: more live stacks than this -> chart parser
_MAX_FORKS = 20_000  # generalised LR: more forks than this for one input -> chart parser
_MAX_FORKS_PER_TOKEN = 256  # ... or more than this while reading one token


class _Rules:
    """The grammar's rules as plain tuples, plus the augmented start rule S' -> start (index R).

    rhs[r]: the right-hand side symbols (terminals are str, non-terminals nltk Nonterminal);
    by_lhs: non-terminal -> its rule indices (the padding rule left out).
    """

    def __init__(self, g: Any) -> None:
        prods = g.productions
        self.aug = g.n_rules
        self.rhs: list[tuple] = [tuple(p.rhs()) for p in prods] + [(Nonterminal(g.start),)]
        self.lhs: list[Any] = [p.lhs() for p in prods] + [Nonterminal("$accept")]
        self.by_lhs: dict[Any, list[int]] = {}
        for i in range(g.n_rules):
            if i != g.pad_index:
                self.by_lhs.setdefault(self.lhs[i], []).append(i)


def _nullable_and_first(rules: _Rules) -> tuple[set, dict[Any, set]]:
    """Nullable non-terminals and FIRST sets, by fixpoint iteration."""
    nullable: set = set()
    first: dict[Any, set] = {nt: set() for nt in rules.by_lhs}
    changed = True
    while changed:
        changed = False
        for nt, rule_ids in rules.by_lhs.items():
            for r in rule_ids:
                grew, all_null = _absorb_first(rules.rhs[r], first[nt], first, nullable)
                changed |= grew
                if all_null and nt not in nullable:
                    nullable.add(nt)
                    changed = True
    return nullable, first


def _absorb_first(seq: Sequence, into: set, first: dict[Any, set], nullable: set) -> tuple[bool, bool]:
    """Add FIRST(seq) to ``into``; returns (whether it grew, whether seq is nullable)."""
    grew = False
    for s in seq:
        if isinstance(s, str):
            if s not in into:
                into.add(s)
                grew = True
            return grew, False
        if s not in first:  # undefined non-terminal: derives nothing
            return grew, False
        if not first[s] <= into:
            into |= first[s]
            grew = True
        if s not in nullable:
            return grew, False
    return grew, True


def _first_seq(seq: Sequence, first: dict[Any, set], nullable: set) -> tuple[set, bool]:
    """FIRST of a symbol sequence and whether the whole sequence is nullable."""
    out: set = set()
    _, null = _absorb_first(seq, out, first, nullable)
    return out, null


def _is_cyclic(rules: _Rules, nullable: set) -> bool:
    """True when some A =>+ A (unit derivations through nullable context), which makes LR loop."""
    unit: dict[Any, set] = {nt: set() for nt in rules.by_lhs}
    for nt, rule_ids in rules.by_lhs.items():
        for r in rule_ids:
            seq = rules.rhs[r]
            for j, s in enumerate(seq):
                if isinstance(s, Nonterminal) and s in rules.by_lhs:
                    rest = seq[:j] + seq[j + 1:]
                    if all(isinstance(x, Nonterminal) and x in nullable for x in rest):
                        unit[nt].add(s)
    for nt in rules.by_lhs:
        seen, todo = set(), list(unit[nt])
        while todo:
            x = todo.pop()
            if x == nt:
                return True
            if x not in seen:
                seen.add(x)
                todo.extend(unit[x])
    return False


def _closure0(rules: _Rules, kernel: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    """LR(0) closure of a set of items (rule, dot)."""
    items = set(kernel)
    todo = list(items)
    while todo:
        r, d = todo.pop()
        if d < len(rules.rhs[r]):
            s = rules.rhs[r][d]
            if isinstance(s, Nonterminal):
                for r2 in rules.by_lhs.get(s, ()):
                    if (r2, 0) not in items:
                        items.add((r2, 0))
                        todo.append((r2, 0))
    return items


def _lr0_automaton(rules: _Rules) -> tuple[list[frozenset], list[dict[Any, int]]]:
    """Kernels of the LR(0) states (state 0: S' -> . start) and their transitions."""
    k0 = frozenset([(rules.aug, 0)])
    kernels: list[frozenset] = [k0]
    index = {k0: 0}
    trans: list[dict[Any, int]] = []
    i = 0
    while i < len(kernels):
        moves: dict[Any, set] = {}
        for r, d in _closure0(rules, kernels[i]):
            if d < len(rules.rhs[r]):
                moves.setdefault(rules.rhs[r][d], set()).add((r, d + 1))
        tr: dict[Any, int] = {}
        for sym, kern in moves.items():
            fk = frozenset(kern)
            if fk not in index:
                index[fk] = len(kernels)
                kernels.append(fk)
            tr[sym] = index[fk]
        trans.append(tr)
        i += 1
    return kernels, trans


class _Lookaheads:
    """LALR(1) look-aheads of the kernel items, by fixpoint propagation over the LR(0) automaton."""

    def __init__(self, rules: _Rules, kernels: list[frozenset], trans: list[dict[Any, int]],
                 first: dict[Any, set], nullable: set) -> None:
        self.rules, self.first, self.nullable = rules, first, nullable
        self.la: list[dict[tuple[int, int], set]] = [{it: set() for it in k} for k in kernels]
        self.la[0][(rules.aug, 0)].add(_EOF)
        changed = True
        while changed:
            changed = False
            for s in range(len(kernels)):
                for (r, d), look in self.closure1(s).items():
                    if d < len(rules.rhs[r]) and look:
                        target = self.la[trans[s][rules.rhs[r][d]]][(r, d + 1)]
                        if not look <= target:
                            target |= look
                            changed = True

    def closure1(self, state: int) -> dict[tuple[int, int], set]:
        """LR(1) closure of ``state``'s kernel: item -> its look-ahead tokens."""
        rhs, by_lhs = self.rules.rhs, self.rules.by_lhs
        items = {it: set(v) for it, v in self.la[state].items()}
        todo = list(items)
        while todo:
            it = todo.pop()
            r, d = it
            if d >= len(rhs[r]):
                continue
            s = rhs[r][d]
            if not isinstance(s, Nonterminal) or s not in by_lhs:
                continue
            f, null = _first_seq(rhs[r][d + 1:], self.first, self.nullable)
            new = f | items[it] if null else f
            for r2 in by_lhs[s]:
                it2 = (r2, 0)
                cur = items.get(it2)
                if cur is None:
                    items[it2] = set(new)
                    todo.append(it2)
                elif not new <= cur:
                    cur |= new
                    todo.append(it2)
        return items


def _state_row(s: int, trans: dict[Any, int], closure: dict[tuple[int, int], set], rules: _Rules,
               nt_key: dict[Any, int]) -> tuple[dict[Any, list[int]], dict[int, int]]:
    """Actions (token -> shifts (state >= 0) and reductions (-rule - 1)) and gotos of one state."""
    acts: dict[Any, list[int]] = {}
    gt: dict[int, int] = {}
    for sym, tgt in trans.items():
        if isinstance(sym, str):
            acts.setdefault(sym, []).append(tgt)
        elif sym in nt_key:
            gt[nt_key[sym]] = tgt
    for (r, d), look in closure.items():
        if d == len(rules.rhs[r]):
            for tok in look:
                acts.setdefault(tok, []).append(-r - 1)
    return acts, gt


def build_tables(g: Any) -> dict[str, Any]:
    """LALR(1) action/goto tables of grammar ``g`` (conflicts kept as tuples of actions).

    Returns ``{"cyclic": True}`` for a cyclic grammar (A =>+ A), which the chart parser handles.
    """
    rules = _Rules(g)
    nullable, first = _nullable_and_first(rules)
    if _is_cyclic(rules, nullable):  # cyclic grammars make LR parsing loop: use the chart parser
        logger.warning("grammar %s is cyclic (A =>+ A); parsing uses nltk's chart parser (slow)", g.name)
        return {"cyclic": True}
    kernels, trans = _lr0_automaton(rules)
    look = _Lookaheads(rules, kernels, trans, first, nullable)
    nt_key = {Nonterminal(s): i for i, s in enumerate(g.nonterminals)}
    action: list[dict[Any, Any]] = []
    goto: list[dict[int, int]] = []
    conflicts: list[str] = []
    for s in range(len(kernels)):
        acts, gt = _state_row(s, trans[s], look.closure1(s), rules, nt_key)
        row: dict[Any, Any] = {}
        for tok, lst in acts.items():
            if len(lst) == 1:
                row[tok] = lst[0]
            else:
                lst.sort(reverse=True)  # shifts first, then reductions
                row[tok] = tuple(lst)
                conflicts.append(f"state {s} on {tok!r}: {len(lst)} actions")
        action.append(row)
        goto.append(gt)
    if conflicts:
        logger.info("grammar %s: LALR(1) table has %d conflicting cells (%s); resolved by forking (generalised LR)",
                    g.name, len(conflicts), "; ".join(conflicts[:5]))
    return {"cyclic": False, "action": action, "goto": goto, "rule_len": [len(r) for r in rules.rhs],
            "rule_lhs": [nt_key.get(lhs, -1) for lhs in rules.lhs], "accept": -rules.aug - 1,
            "n_states": len(kernels), "n_conflicts": len(conflicts)}


def glr(tab: dict[str, Any], tokens: list[str]) -> list[int] | str:
    """Generalised LR parse of ``tokens`` over the tables ``tab`` of :func:`build_tables`. Returns the derivation, or a reason string:
    ``"fail:<i>"`` (no parse, dead at token i), ``"ambiguous"`` or ``"overflow"``."""
    action = tab["action"]
    goto = tab["goto"]
    rule_len = tab["rule_len"]
    rule_lhs = tab["rule_lhs"]
    accept = tab["accept"]
    stacks: list[tuple[list[int], list]] = [([0], [])]
    results: list[list[int]] = []
    forks = 0
    pos = 0
    for tok in itertools.chain(tokens, (_EOF,)):
        forks_here = 0
        survivors: list[tuple[list[int], list]] = []
        work: list[tuple[list[int], list, Any]] = [(st, vs, None) for st, vs in stacks]
        while work:
            st, vs, forced = work.pop()
            while True:
                if forced is None:
                    a = action[st[-1]].get(tok)
                    if a is None:
                        break
                    if a.__class__ is tuple:
                        # bounded: hidden left recursion (A -> B A ..., B =>* empty)
                        # would otherwise fork forever on one token
                        forks += len(a) - 1
                        forks_here += len(a) - 1
                        if forks > _MAX_FORKS or forks_here > _MAX_FORKS_PER_TOKEN:
                            return "overflow"
                        for alt in a[1:]:
                            work.append((st.copy(), vs.copy(), alt))
                        a = a[0]
                else:
                    a, forced = forced, None
                if a >= 0:
                    st.append(a)
                    vs.append(_EMPTY)
                    survivors.append((st, vs))
                    break
                if a == accept:
                    results.append(vs[-1])
                    break
                r = -a - 1
                n = rule_len[r]
                seq = [r]
                if n:
                    for v in vs[-n:]:
                        seq += v
                    del st[-n:]
                    del vs[-n:]
                st.append(goto[st[-1]][rule_lhs[r]])
                vs.append(seq)
        if tok is _EOF:
            break
        if not survivors:
            return f"fail:{pos}"
        if len(survivors) > _MAX_STACKS:
            return "overflow"
        stacks = survivors
        pos += 1
    if not results:
        return f"fail:{len(tokens)}"
    if len(results) > 1:
        return "ambiguous"
    return results[0]
