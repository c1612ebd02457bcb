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


def build_tables(g: Any) -> dict[str, Any]:
    """LALR(1) action/goto tables of grammar ``g`` (conflicts kept as tuples of actions).

    Returns ``{"cyclic": True}`` for a cyclic grammar (A =>+ A), which the chart parser handles.
    """
    prods = g.productions
    R = g.n_rules
    aug = R  # augmented rule S' -> start
    start_nt = Nonterminal(g.start)
    rhs: list[tuple] = [tuple(p.rhs()) for p in prods] + [(start_nt,)]
    lhs_sym: list[Any] = [p.lhs() for p in prods] + [Nonterminal("$accept")]
    by_lhs: dict[Any, list[int]] = {}
    for i in range(R):
        if i == g.pad_index:
            continue
        by_lhs.setdefault(lhs_sym[i], []).append(i)

    # nullable and FIRST
    nullable: set = set()
    first: dict[Any, set] = {nt: set() for nt in by_lhs}
    changed = True
    while changed:
        changed = False
        for nt, rules in by_lhs.items():
            for r in rules:
                all_null = True
                for s in rhs[r]:
                    if isinstance(s, str):
                        if s not in first[nt]:
                            first[nt].add(s)
                            changed = True
                        all_null = False
                        break
                    if s not in first:  # undefined non-terminal: derives nothing
                        all_null = False
                        break
                    if not first[s] <= first[nt]:
                        first[nt] |= first[s]
                        changed = True
                    if s not in nullable:
                        all_null = False
                        break
                if all_null and nt not in nullable:
                    nullable.add(nt)
                    changed = True

    def first_seq(seq: Sequence) -> tuple[set, bool]:
        out: set = set()
        for s in seq:
            if isinstance(s, str):
                out.add(s)
                return out, False
            if s not in first:
                return out, False
            out |= first[s]
            if s not in nullable:
                return out, False
        return out, True

    # cyclic grammars (A =>+ A) make LR parsing loop: use the chart parser
    unit: dict[Any, set] = {nt: set() for nt in by_lhs}
    for nt, rules in by_lhs.items():
        for r in rules:
            seq = rhs[r]
            for j, s in enumerate(seq):
                if isinstance(s, Nonterminal) and s in by_lhs:
                    rest = seq[:j] + seq[j + 1 :]
                    if all(isinstance(x, Nonterminal) and x in nullable for x in rest):
                        unit[nt].add(s)
    cyclic = False
    for nt in by_lhs:
        seen, todo = set(), list(unit[nt])
        while todo:
            x = todo.pop()
            if x == nt:
                cyclic = True
                break
            if x not in seen:
                seen.add(x)
                todo.extend(unit[x])
        if cyclic:
            break
    if cyclic:
        logger.warning("grammar %s is cyclic (A =>+ A); parsing uses nltk's chart parser (slow)", g.name)
        return {"cyclic": True}

    # LR(0) automaton
    def closure0(kernel: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
        items = set(kernel)
        todo = list(items)
        while todo:
            r, d = todo.pop()
            if d < len(rhs[r]):
                s = rhs[r][d]
                if isinstance(s, Nonterminal):
                    for r2 in by_lhs.get(s, ()):
                        if (r2, 0) not in items:
                            items.add((r2, 0))
                            todo.append((r2, 0))
        return items

    k0 = frozenset([(aug, 0)])
    kernels: list[frozenset] = [k0]
    index = {k0: 0}
    trans: list[dict[Any, int]] = []
    i = 0
    while i < len(kernels):
        items = closure0(kernels[i])
        moves: dict[Any, set] = {}
        for r, d in items:
            if d < len(rhs[r]):
                moves.setdefault(rhs[r][d], set()).add((r, d + 1))
        tr: dict[Any, int] = {}
        for sym, kern in moves.items():
            fk = frozenset(kern)
            if fk not in index:
                index[fk] = len(kernels)
                kernels.append(fk)
            tr[sym] = index[fk]
        trans.append(tr)
        i += 1
    n_states = len(kernels)

    # LALR(1) look-aheads by fixpoint propagation over the LR(0) automaton
    la: list[dict[tuple[int, int], set]] = [{it: set() for it in k} for k in kernels]
    la[0][(aug, 0)].add(_EOF)

    def closure1(state: int) -> dict[tuple[int, int], set]:
        items = {it: set(v) for it, v in la[state].items()}
        todo = list(items)
        while todo:
            it = todo.pop()
            r, d = it
            if d >= len(rhs[r]):
                continue
            s = rhs[r][d]
            if not isinstance(s, Nonterminal) or s not in by_lhs:
                continue
            f, null = first_seq(rhs[r][d + 1 :])
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

    changed = True
    while changed:
        changed = False
        for s in range(n_states):
            for (r, d), look in closure1(s).items():
                if d < len(rhs[r]) and look:
                    target = la[trans[s][rhs[r][d]]][(r, d + 1)]
                    if not look <= target:
                        target |= look
                        changed = True

    # action / goto tables
    nt_key = {Nonterminal(s): i for i, s in enumerate(g.nonterminals)}
    action: list[dict[Any, Any]] = []
    goto: list[dict[int, int]] = []
    n_conflicts = 0
    conflict_examples: list[str] = []
    for s in range(n_states):
        acts: dict[Any, list[int]] = {}
        gt: dict[int, int] = {}
        for sym, tgt in trans[s].items():
            if isinstance(sym, str):
                acts.setdefault(sym, []).append(tgt)
            elif sym in nt_key:
                gt[nt_key[sym]] = tgt
        for (r, d), look in closure1(s).items():
            if d == len(rhs[r]):
                for tok in look:
                    acts.setdefault(tok, []).append(-r - 1)
        row: dict[Any, Any] = {}
        for tok, lst in acts.items():
            if len(lst) == 1:
                row[tok] = lst[0]
            else:
                lst.sort(reverse=True)  # shifts first, then reductions
                row[tok] = tuple(lst)
                n_conflicts += 1
                if len(conflict_examples) < 5:
                    conflict_examples.append(f"state {s} on {tok!r}: {len(lst)} actions")
        action.append(row)
        goto.append(gt)
    if n_conflicts:
        logger.info(
            "grammar %s: LALR(1) table has %d conflicting cells (%s); resolved by forking (generalised LR)",
            g.name, n_conflicts, "; ".join(conflict_examples),
        )
    rule_len = [len(r) for r in rhs]
    rule_lhs = [nt_key.get(l, -1) for l in lhs_sym]
    return {
        "cyclic": False,
        "action": action,
        "goto": goto,
        "rule_len": rule_len,
        "rule_lhs": rule_lhs,
        "accept": -aug - 1,
        "n_states": n_states,
        "n_conflicts": n_conflicts,
    }



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
