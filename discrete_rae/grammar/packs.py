"""Packed per-rule tables for the constrained decoding states (one gather per step instead of dozens).

A decoding step of :class:`~discrete_rae.grammar.ring.RingClosureState` or
:class:`~discrete_rae.grammar.chem.ChemState` reads many attributes of the candidate rules (the rules
of each row's top non-terminal, ``C`` of them, a tenth of the rule count) and of the chosen rule.
The candidates depend on the top symbol only, so every per-rule attribute at the candidates is a
function of the top symbol: it is precomputed once per grammar as a table ``[n_nt, F, C]`` (``F``
attributes stacked), and one ``index_select`` by the top symbols gives all of them, ``[B, F, C]``;
attribute ``f`` is the view ``[:, f]``. Attributes of the left-hand side are folded in (e.g.
``rhs_min[r] - nt_min[lhs(r)]``), since a candidate's left-hand side is the top symbol. The chosen
rules' attributes are packed the same way per rule, ``[R, F]``.

:class:`Pack` holds one such table for long and one for bool attributes; :class:`Taken` is one
step's gathered view.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

#: "never fits" / "always fits" offsets for the length test (far above any derivation length)
FAR = 1 << 50


class Taken:
    """Attributes gathered for a batch: ``l(name)`` long, ``b(name)`` bool, each [B, C] (or [B, 1]).

    The gathered tables are split into per-attribute views once (``unbind``: one op, instead of
    one indexing op per read)."""

    __slots__ = ("_l", "_b", "_li", "_bi")

    def __init__(self, longs: Tensor, bools: Tensor, li: dict[str, int], bi: dict[str, int], rows: bool) -> None:
        if rows:  # one value per row: [B, 1] views, which broadcast against [B, C]
            self._l, self._b = longs.split(1, 1), bools.split(1, 1)
        else:
            self._l, self._b = longs.unbind(1), bools.unbind(1)
        self._li, self._bi = li, bi

    def l(self, name: str) -> Tensor:  # noqa: E743 (short accessor name on purpose: hot path)
        return self._l[self._li[name]]

    def b(self, name: str) -> Tensor:
        return self._b[self._bi[name]]


class Pack:
    """Long and bool attribute tables ``[N, F, ...]`` on one device; :meth:`take` gathers rows."""

    def __init__(self, longs: dict[str, Tensor], bools: dict[str, Tensor], device: torch.device) -> None:
        self.li = {k: i for i, k in enumerate(longs)}
        self.bi = {k: i for i, k in enumerate(bools)}
        self.longs = torch.stack([v.long() for v in longs.values()], 1).to(device)
        self.bools = torch.stack([v.bool() for v in bools.values()], 1).to(device)

    def take(self, index: Tensor, rows: bool = False) -> Taken:
        """Attributes of rows ``index`` (LongTensor [B]): views [B, C] per name for a per-symbol
        candidate table ``[N, F, C]``; [B, 1] with ``rows`` for a per-rule table ``[N, F]``."""
        return Taken(self.longs.index_select(0, index), self.bools.index_select(0, index), self.li, self.bi, rows)


def per_candidate(cand: Tensor, per_rule: Tensor) -> Tensor:
    """[n_nt, C] table of a per-rule attribute ``per_rule`` [R] at each symbol's candidates ``cand``."""
    return per_rule.index_select(0, cand.reshape(-1)).view(cand.shape)


def merge_pack(device: torch.device, *parts: tuple[dict[str, Tensor], dict[str, Tensor]]) -> Pack:
    """One :class:`Pack` of the (long, bool) column dicts ``parts`` (later names win)."""
    longs: dict[str, Tensor] = {}
    bools: dict[str, Tensor] = {}
    for lo, bo in parts:
        longs.update(lo)
        bools.update(bo)
    if not bools:
        bools["_"] = torch.zeros_like(next(iter(longs.values())), dtype=torch.bool)
    return Pack(longs, bools, device)


_CACHE: dict[tuple, Any] = {}


def cached(key: tuple, build: Any) -> Any:
    """``build()`` once per ``key`` (grammar hash, options, device)."""
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def base_columns(grammar: Any) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per-candidate ``[n_nt, C]`` columns of the grammar (+ length) mask: ``cand`` (rule ids) and
    ``dmin`` = ``rhs_min[r] - nt_min[top]`` (the change of the length bound ``need``; ``FAR`` on
    padding slots, ``-FAR`` for the pad rule under ``Nothing``, which always fits), ``valid``."""
    t = grammar._decode_tensors(torch.device("cpu"))
    cand, valid = t["cand"], t["cand_valid"]
    dmin = per_candidate(cand, t["rhs_min"]) - t["nt_min"].unsqueeze(1)
    dmin = torch.where(valid, dmin, torch.full_like(dmin, FAR))
    dmin[grammar._nothing_nt, 0] = -FAR
    return {"cand": cand, "dmin": dmin}, {"valid": valid}
