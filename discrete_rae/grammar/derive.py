"""Random derivations and the minimal-length tables they (and decoding) use.

The functions take a :class:`~discrete_rae.grammar.Grammar` ``g``; the class's methods of the
same name delegate here.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from .common import _INF


def minimal_lengths(g: Any) -> list[int]:
    """Fewest rules a complete derivation from each non-terminal needs (huge if none).

    Fixpoint of ``best[A] = min over rules A -> alpha of 1 + sum(best[B] for B in alpha)``.
    """
    best = [_INF] * len(g.nonterminals)
    changed = True
    while changed:
        changed = False
        for i in range(g.n_rules):
            if i == g.pad_index or any(a < 0 for a in g._rhs_nts[i]):
                continue
            cost = 1 + sum(best[a] for a in g._rhs_nts[i])
            a = int(g.lhs[i])
            if cost < best[a]:
                best[a] = cost
                changed = True
    best[g._nothing_nt] = 0
    return best


def rules_by_nt(g: Any) -> list[list[int]]:
    """Usable rules of each non-terminal, in rule order (the padding rule excluded)."""
    out: list[list[int]] = [[] for _ in g.nonterminals]
    for r in range(g.n_rules):
        if r != g.pad_index and g._usable[r]:
            out[int(g.lhs[r])].append(r)
    return out


def rule_min_len(g: Any) -> list[int]:
    """Fewest rules a derivation starting with each rule needs: 1 + the minimal lengths of its RHS."""
    return [1 + sum(g._min_len[a] for a in kids) for kids in g._rhs_nts]


def random_derivation(
    g: Any,
    rng: random.Random | np.random.Generator,
    max_length: int | None = None,
    fit: bool = False,
) -> list[int] | None:
    """Random leftmost derivation, each rule drawn uniformly among those of the current symbol.

    Args:
        rng: ``random.Random`` or ``numpy.random.Generator``.
        max_length: length limit (default :attr:`max_length`).
        fit: if True, only rules that still allow finishing within ``max_length``
            are drawn (never returns None unless no derivation fits at all).

    Returns:
        rule indices, or ``None`` when the derivation exceeded ``max_length``.
    """
    limit = g.max_length if max_length is None else int(max_length)
    if isinstance(rng, np.random.Generator):
        pick = lambda n: int(rng.integers(n))  # noqa: E731
    else:
        pick = rng.randrange
    options = g._rules_by_nt
    rule_cost = g._rule_min_len
    min_len = g._min_len
    if fit and min_len[g._start_nt] > limit:
        return None
    stack = [g._start_nt]
    pending = min_len[g._start_nt]  # minimal rules still needed for the stack
    out: list[int] = []
    while stack:
        if len(out) >= limit:
            return None
        a = stack.pop()
        choices = options[a]
        if fit:
            slack = limit - len(out) - pending
            choices = [r for r in choices if rule_cost[r] - min_len[a] <= slack]
        r = choices[pick(len(choices))]
        out.append(r)
        pending += rule_cost[r] - 1 - min_len[a]
        stack.extend(reversed(g._rhs_nts[r]))
    return out

