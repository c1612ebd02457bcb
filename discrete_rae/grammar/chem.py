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
per-sample Python loop) on the candidate rules of the top symbols, ``[B, C]``, whose attributes
come from one gather of packed per-symbol tables (:mod:`discrete_rae.grammar.packs`); sets of ring
digits are bit masks. Parts that no row needs this step (closing every ring when no atom is to
come, a ring-bond symbol's order, bracket interiors) are skipped after one ``any()``. With the
length mask, a rule must also leave room for the ring digits and closing atoms the open rings
still need (:mod:`discrete_rae.grammar.chem_room`), so that near ``max_length`` the constraints
still leave every row a rule. The rule
tables (:mod:`discrete_rae.grammar.chem_rules`) are read from the grammar by symbol names; grammars
of another shape (e.g. the left-recursive paper grammar, whose chain length is fixed before its
atoms are written) get ``None`` from :func:`chem_tables` and keep the ring mask only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .chem_rules import (AROMATIC_CAP, BIG, BRACKET_NTS, BRACKET_VALENCE, CTX_ISO, CTX_NONE, ELEMENTS, GRID,
                         H_EL, ORGANIC_CAP, chem_tables, chem_tables_cached, uses_aromatic_atoms)
from .chem_room import closer_candidate_columns, closer_columns, room_c, w_sets
from .packs import Pack, Taken, base_columns, cached, merge_pack, per_candidate
from .ring import DIGITS, RingClosureState, _rule_columns, ring_columns, scatter_rules

__all__ = ["ORGANIC_CAP", "AROMATIC_CAP", "BRACKET_VALENCE", "ELEMENTS", "chem_tables", "chem_tables_cached",
           "uses_aromatic_atoms", "ChemState"]

FORBID = 1 << 40  # added to a forbidden rule's bond count: exceeds every capacity (BIG included)
N_DIGITS = len(DIGITS)


def chem_columns(grammar: Any, tab: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per-candidate columns ``[n_nt, C]`` of the chemistry masks: ``k1`` bond order above single,
    ``add_ok1`` bonds added to the owner (``FORBID`` for forbidden rules), ``add_o`` / ``add_n`` /
    ``new_cap`` as in :func:`chem_tables`, ``sel`` which atoms close the rings when the next atom
    owes them (2: the rule makes the owner its parent, else 1), ``kidx`` bond order - 1 (clamped
    to 0..2); bool ``fixcap`` (the rule writes an organic atom: its capacity is known),
    ``next_ring``, ``bondk`` (a bond-symbol rule), ``chiral`` (it writes a chirality tag)."""
    cand = grammar._decode_tensors(torch.device("cpu"))["cand"]
    k1 = (tab["bond_k"] - 1).clamp(min=0)
    rule = {"k1": k1, "add_ok1": tab["add_o"] + k1 + FORBID * tab["forbidden"].long(), "add_o": tab["add_o"],
            "add_n": tab["add_n"], "new_cap": tab["new_cap"],
            "sel": 1 + (tab["next_ring"] & tab["parent"]).long(), "kidx": tab["bond_k"].clamp(1, 3) - 1,
            "pbits": _grid_bits(tab["permit"]), "el": tab["el"], "digit": tab["digit"]}
    flags = {"fixcap": tab["creates"] & ~tab["opens_bracket"], "next_ring": tab["next_ring"],
             "bondk": tab["bond_k"] > 0, "bracket": tab["bracket"], "chiral": tab["chiral"]}
    return ({k: per_candidate(cand, v) for k, v in rule.items()},
            {k: per_candidate(cand, v) for k, v in flags.items()})


def _grid_bits(cells: Tensor) -> Tensor:
    """[...] bit masks of boolean (H count, charge) grids ``cells`` [..., GRID] (bit g: cell g)."""
    return (cells.long() << torch.arange(GRID)).sum(-1)


def bracket_bits(tab: dict[str, Any], device: torch.device) -> dict[str, Tensor]:
    """Bracket-atom tables on (H count, charge) cell sets held as GRID-bit masks: ``fit`` [(E + 1) * S]
    cells where element e's capacity is at least s (index ``e * S + s + 1``, levels s = -1 .. max + 1,
    nested), ``fit0`` [E + 1, max + 1] the levels s >= 0 (the capacity of a cell set is the number
    of them it meets, minus one), ``digit`` [5 * 10] cells a DIGIT rule d allows in context c
    (index ``c * 10 + d``)."""
    score = tab["score"].cpu()  # [E + 1, GRID], -1: forbidden
    top = int(score.max())
    levels = torch.arange(-1, top + 2)  # S = top + 3 levels
    fit = _grid_bits(score.unsqueeze(1) >= levels.view(1, -1, 1))  # [E + 1, S]
    return {"fit": fit.reshape(-1).to(device), "fit0": fit[:, 1:top + 2].contiguous().to(device),
            "digit": _grid_bits(tab["dperm"].cpu()).reshape(-1).to(device),
            "levels": torch.tensor(int(levels.numel())), "all": torch.tensor((1 << GRID) - 1)}


def chem_rule_pack(grammar: Any, ring: dict[str, Any], tab: dict[str, Any], device: torch.device) -> Pack:
    """Per-rule ``[R, F]`` pack read by :meth:`ChemState.push` (ring columns included)."""
    k1 = (tab["bond_k"] - 1).clamp(min=0)
    longs = {**_rule_columns(ring), **closer_columns(grammar, ring, tab), "bond_k": tab["bond_k"],
             "add_ok1": tab["add_o"] + k1, "add_n": tab["add_n"], "add_nk1": tab["add_n"] + k1, "new_cap": tab["new_cap"], "bond_ctx": tab["bond_ctx"],
             "dctx": tab["dctx"], "digit": tab["digit"], "el": tab["el"], "pbits": _grid_bits(tab["permit"])}
    bools = {"arms": ring["arms"], "new_atom": ring["new_atom"], "parent": tab["parent"], "creates": tab["creates"],
             "opens_bracket": tab["opens_bracket"], "next_ring": tab["next_ring"], "bracket": tab["bracket"]}
    return Pack(longs, bools, device)


def _to(tables: dict[str, Any], dev: torch.device) -> dict[str, Any]:
    return {k: v.to(dev) if isinstance(v, Tensor) else v for k, v in tables.items()}


class ChemState:
    """Wraps a :class:`~discrete_rae.grammar.ring.RingClosureState` (which wraps the grammar's
    :class:`~discrete_rae.grammar.DecodeState`); same interface, with the chemistry masks added.

    Per-sample tensors (B rows; A = max_length + 2 atom slots, the last one "no atom"):
    ``own`` [B, S] atom owning each stack entry (aligned with the grammar stack); ``used`` /
    ``vcap`` / ``parent`` [B, A]; ``n_atoms`` [B, 1]; bracket atom being written: ``cells`` [B, 1]
    (bit mask of the H count / charge cells still possible), ``br_el`` [B, 1]; ``dctx`` [B, 1];
    ``bond_ring`` [B, 1] (the pending ``bond`` is a ring bond); ``pend_order`` / ``pend_explicit``
    [B, 1] (ring-bond symbol
    written before the digit); per ring digit ``ring_atom`` / ``ring_order`` / ``ring_explicit``
    [B, 10]; ``partner`` [B, A] atoms the current atom has closed rings to. ``fallback_rows``
    [B] marks rows that were once left no rule by the constraints (they fell back to the ring,
    then the grammar mask, and may come out invalid).
    """

    def __init__(self, ring: RingClosureState, tables: dict[str, Any]) -> None:
        self.ring = ring
        base = ring.state
        g = base.grammar
        dev = base.device
        key = (g.hash, bool(tables["aromatic"]), str(dev))
        self.tab = cached(("chem_tab",) + key, lambda: _to(tables, dev))
        self._cands = cached(("chem_cand",) + key, lambda: merge_pack(
            dev, base_columns(g), ring_columns(g, ring._tables), chem_columns(g, tables),
            closer_candidate_columns(g, ring._tables, tables)))
        self._rules = cached(("chem_rule",) + key, lambda: chem_rule_pack(g, ring._tables, tables, dev))
        self._nt_close = cached(("nt_close",) + key, lambda: ring._tables["nt_close"].to(dev))
        self._grid = cached(("chem_grid",) + key, lambda: bracket_bits(tables, dev))
        self._levels = int(self._grid["levels"])
        self._bracket_cols = self.tab["bracket"].nonzero().view(-1)
        bracket_nts = {g._nt_index[nt] for nt in BRACKET_NTS if nt in g._nt_index}
        self._bracket_nt = torch.tensor([a in bracket_nts for a in range(g.n_nonterminals)], dtype=torch.bool,
                                        device=dev)
        self._earlier = torch.ones(N_DIGITS, N_DIGITS, dtype=torch.bool, device=dev).tril(-1)  # d' < d
        self._orders = torch.arange(1, 4, device=dev)
        B, S = base.stack.shape
        K = base._rhs.shape[1]
        if self.tab["own_next"].shape[1] != K:
            raise ValueError("chem tables and decode state disagree on the right-hand-side width")
        self._slots = torch.arange(1, K + 1, device=dev)
        A = base.max_length + 2
        self.none_atom = A - 1
        self.own = torch.full((B, S), A - 1, dtype=torch.long, device=dev)
        self.used = torch.zeros(B, A, dtype=torch.long, device=dev)
        self.vcap = torch.full((B, A), int(tables["maxcap"]), dtype=torch.long, device=dev)
        self.vcap[:, A - 1] = BIG
        self.parent = torch.full((B, A), -1, dtype=torch.long, device=dev)
        self.n_atoms = torch.zeros(B, 1, dtype=torch.long, device=dev)
        self.cells = torch.full((B, 1), int(self._grid["all"]), dtype=torch.long, device=dev)
        self.br_el = torch.full((B, 1), len(ELEMENTS), dtype=torch.long, device=dev)
        self.dctx = torch.zeros(B, 1, dtype=torch.long, device=dev)
        self.bond_ring = torch.zeros(B, 1, dtype=torch.bool, device=dev)
        self.pend_order = torch.ones(B, 1, dtype=torch.long, device=dev)
        self.pend_explicit = torch.zeros(B, 1, dtype=torch.bool, device=dev)
        self.ring_atom = torch.full((B, N_DIGITS), A - 1, dtype=torch.long, device=dev)
        self.ring_order = torch.ones(B, N_DIGITS, dtype=torch.long, device=dev)
        self.ring_explicit = torch.zeros(B, N_DIGITS, dtype=torch.bool, device=dev)
        self.partner = torch.zeros(B, A, dtype=torch.bool, device=dev)
        self.fallback_rows = torch.zeros(B, dtype=torch.bool, device=dev)
        self.owed_next = torch.zeros(B, 1, dtype=torch.bool, device=dev)  # ring bonds promised to the next atom
        # pending closer symbols (chem_room) owned by each atom; the start symbol has no owner
        self.pc = torch.zeros(B, A, dtype=torch.long, device=dev)
        self.pc[:, A - 1] = self._nt_close[g._start_nt]
        self._o: Tensor | None = None  # owner of the top symbol this step (reset by push / reorder)

    _ROW_TENSORS = ("own", "used", "vcap", "parent", "n_atoms", "cells", "br_el", "dctx", "bond_ring",
                    "pend_order", "pend_explicit", "ring_atom", "ring_order", "ring_explicit", "partner",
                    "fallback_rows", "owed_next", "pc")

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
        self._o = None
        self.ring.reorder(index)

    def _owner(self) -> Tensor:
        """[B, 1] atom owning the symbol on top of the stack (the "no atom" slot when none)."""
        if self._o is None:
            self._o = self.own.gather(1, self.state.ptr.unsqueeze(1))
        return self._o

    # ------------------------------------------------------------------ masks

    def _masks(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(cand, base, ring_ok, ok)`` [B, C]: the top symbols' candidate rules, the grammar
        (+ length) mask, it AND the ring masks, and that AND the chemistry masks."""
        T = self.ring.take(self._cands)
        base = self.state.base_c(T)
        ctx: dict[str, Tensor] = {}
        ring_ok = self.ring.ring_c(T, base, ctx)
        return T.l("cand"), base, ring_ok, ring_ok & self._chem_c(T, ctx)

    def strict_c(self) -> tuple[Tensor, Tensor]:
        """``(cand, ok)`` [B, C]: what all the constraints allow among the candidate rules, without
        the fallbacks of :meth:`allowed_c`."""
        cand, _, _, ok = self._masks()
        return cand, ok

    def allowed_c(self) -> tuple[Tensor, Tensor]:
        """``(cand, ok)`` [B, C]: :meth:`allowed` on the top symbols' candidate rules: grammar
        (+ length) mask AND ring masks AND chemistry masks; a row the constraints leave no rule
        falls back to the ring masks, then to the grammar mask (and is marked in ``fallback_rows``)."""
        cand, base, ring_ok, ok = self._masks()
        has = ok.any(1)
        self.fallback_rows |= ~has
        return cand, torch.where(has.unsqueeze(1), ok, torch.where(ring_ok.any(1, keepdim=True), ring_ok, base))

    def allowed(self) -> Tensor:
        """BoolTensor [B, R]: :meth:`allowed_c` scattered over all rules."""
        cand, ok = self.allowed_c()
        return scatter_rules(ok, cand, self.state.grammar.n_rules)

    def _chem_c(self, T: Taken, ctx: dict[str, Tensor]) -> Tensor:
        """[B, C] the chemistry masks on the candidate rules (``T``: the step's packed columns,
        ``ctx``: what :meth:`RingClosureState.ring_c` computed). Each block that no row needs
        this step is skipped after one ``any()``."""
        o, n = self._owner(), self.n_atoms
        last = (n - 1).clamp(min=0)
        at = torch.cat([o, n, last], 1)  # [B, 3] the owner, the next atom, the latest atom
        used, cap, par = self.used.gather(1, at), self.vcap.gather(1, at), self.parent.gather(1, at)
        used_o, used_n0, _ = used.split(1, 1)
        cap_o, cap_n, _ = cap.split(1, 1)
        kn = T.l("k1").masked_fill(self.bond_ring, 0)  # order above single added to the next atom
        cap_new = torch.where(T.b("fixcap"), T.l("new_cap"), cap_n)
        used_n = used_n0 + T.l("add_n") + kn
        ok = (used_o + T.l("add_ok1") <= cap_o) & (used_n <= cap_new)
        st, ring = self.state, self.ring
        any_open = bool((ring.open != 0).any())
        to_close = not bool(ctx["later"].all())  # some rule leaves no atom to come
        near = st.length_mask and self._near(ctx)
        if any_open or to_close or near:
            p = self.ring_atom  # [B, 10] atom that opened each ring
            is_open = (ring.open & ring._bits) != 0
            joined = self.partner.gather(1, p)
            used_p, cap_p = self.used.gather(1, p), self.vcap.gather(1, p)
            eq = p.unsqueeze(2) == p.unsqueeze(1)  # [B, 10, 10] two rings opened at one atom
            W = w_sets(self, T, ctx, o, par, is_open, joined, eq) if to_close or near else {}
            if bool(ctx["closing"].any()):
                # ring digits: a closure must not duplicate a bond, exceed a valence or contradict
                # the bond symbol written at the opening (the bad open digits as a bit mask)
                pe = self.pend_explicit
                clash = pe & self.ring_explicit & (self.ring_order != self.pend_order)
                extra_o = (self.ring_order - 1).masked_fill(pe, 0)
                extra_p = (self.pend_order - 1) * (pe & ~self.ring_explicit)
                fits = (used_o + extra_o <= cap_o) & (used_p + extra_p <= cap_p)
                bad = is_open & ((p == par[:, :1]) | joined | clash | ~fits)
                ok &= (ctx["bit"] & (bad * ring._bits).sum(1, keepdim=True)) == 0
            if to_close:
                d = torch.where(ring.pending, T.l("d1"), T.l("d0"))
                ok &= ctx["later"] | self._closable(T, ctx, d, o, last, used, cap, is_open, W, used_p, cap_p, kn,
                                                    cap_new, used_n)
            if near:  # room for the digits and atoms the rings still need (chem_room)
                ok &= room_c(self, T, ctx, o, n, last, is_open, eq, W)
        else:
            is_open = torch.zeros_like(self.ring_explicit)
        # bracket interiors (skipped when no row writes one)
        top = st.top()
        inside = self._bracket_nt.index_select(0, top) | ((top == ring._digit_nt) & (self.dctx.squeeze(1) != CTX_NONE))
        if bool(inside.any()):
            ok &= self._bracket_ok(T, ctx, used[:, 2:3], is_open)
        return ok

    def _near(self, ctx: dict[str, Tensor]) -> bool:
        """Whether the rings' length test can forbid any rule this step: it adds at most
        ``2 * 2 * (open rings + digits owed)`` after a rule (chem_room's bounds: extra digits and
        extra atoms each at most that count), so with that much room left for every rule the length
        mask of the ring state passes, the test is skipped (one host sync instead of its ~60 ops)."""
        st, after = self.state, ctx["after"]
        room = st.max_length - st.t - 1
        return bool(((after <= room) & (after + 4 * (ctx["open_after"] + ctx["ob_after"]) > room)).any())

    def _closable(self, T: Taken, ctx: dict[str, Tensor], d: Tensor, o: Tensor, last: Tensor, used: Tensor,
                  cap: Tensor, is_open: Tensor, W: dict[str, Tensor], used_p: Tensor, cap_p: Tensor, kn: Tensor,
                  cap_new: Tensor, used_n: Tensor) -> Tensor:
        """[B, C] when no atom is to come after the ring bonds still owed (not the ring mask's
        ``later``), every open ring must be closable by the atom A that owes them: distinct
        openers, none A's chain neighbour, already joined to A or opened by A, and A's capacity
        must cover the bond orders of all those closures. A is the next atom while its ring bonds
        are promised but it is not written yet, else the latest atom. (``used`` / ``cap``
        [B, 3]: of the owner, the next and the latest atom; ``*_p`` [B, 10]: of the ring openers;
        ``W``: :func:`~discrete_rae.grammar.chem_room.w_sets`, the rings A may close.)"""
        cand_l, owed, closing = W["cand_l"], W["owed"], ctx["closing"]
        ok = W["cnt"] >= ctx["open_after"]
        # capacity of A for closing every open ring (cost: the order written at the opening, else 1)
        cost = torch.where(self.ring_explicit, self.ring_order, 1) * is_open
        cost_d = cost.gather(1, d)
        s_after = cost.sum(1, keepdim=True) - cost_d * closing
        # (a ring-bond symbol's order is part of the cost of the ring it will close)
        used_l = (used[:, 2:3] + (T.l("add_o") + kn) * (o == last)
                  + (cost_d - 1) * (closing & ~self.pend_explicit))
        used_a = torch.where(owed, used_n, used_l)
        cap_a = torch.where(owed, cap_new, cap[:, 2:3])
        ok &= used_a + s_after - ctx["ob_after"] <= cap_a
        # a ring-bond symbol with nothing to come: some open ring must take that order
        rb = T.b("bondk") & self.bond_ring
        if bool(rb.any()):
            fits_p = used_p.unsqueeze(2) + (self._orders - 1) <= cap_p.unsqueeze(2)  # [B, 10, 3]
            same = self.ring_order.unsqueeze(2) == self._orders
            takes = (cand_l.unsqueeze(2) & torch.where(self.ring_explicit.unsqueeze(2), same, fits_p)).any(1)
            ok &= ~rb | takes.gather(1, T.l("kidx"))
        return ok

    def _bracket_ok(self, T: Taken, ctx: dict[str, Tensor], used_l: Tensor, is_open: Tensor) -> Tensor:
        """[B, C] inside a bracket atom, a rule only if some H count / charge it leaves possible gives
        the atom room for the bonds already committed to it (``used_l`` [B, 1]) plus the orders of
        the ring closures it will have to make when no atom is to come (as seen from the first
        bracket rule). Cell sets are GRID-bit masks (:func:`bracket_bits`); rows writing no bracket
        interior get all True (their candidates are no bracket, element or H-count / charge rules).
        On a hydrogen (element chosen before the tags), the rules writing a chirality tag are out."""
        grid = self._grid
        cost = (torch.where(self.ring_explicit, self.ring_order, 1) * is_open).sum(1, keepdim=True)
        if self._bracket_cols.numel():
            r0_cap, r0_ob = self._r0()
            cap_after = ctx["cap_left"] - T.l("nt_cap")[:, :1] + r0_cap
            ob_after = ctx["ob_left"] - T.l("nt_ob")[:, :1] + r0_ob
            ring_need = (cost - ob_after).clamp(min=0) * (cap_after <= ob_after)
        else:
            ring_need = torch.zeros_like(cost)
        level = (used_l + ring_need + 1).clamp(0, self._levels - 1)  # [B, 1] index of the level "need"
        fit = self.cells & grid["fit"].index_select(0, (self.br_el * self._levels + level).view(-1)).view(level.shape)
        pbits = T.l("pbits")
        ok = ~T.b("bracket") | ((fit & pbits) != 0)
        el = T.l("el")
        el_fit = grid["fit"].index_select(0, (el.clamp(min=0) * self._levels + level).view(-1)).view(el.shape)
        ok &= (el < 0) | ((self.cells & el_fit & pbits) != 0)
        digit = T.l("digit")
        dcells = grid["digit"].index_select(0, (self.dctx * 10 + digit.clamp(min=0)).view(-1)).view(digit.shape)
        ok &= (digit < 0) | (self.dctx == CTX_NONE) | ((fit & dcells) != 0)
        # RDKit rejects a chirality tag on a bracket hydrogen ([H@], [H@@H0]); real molecules have none
        ok &= ~T.b("chiral") | (self.br_el != H_EL)
        return ok

    def _r0(self) -> tuple[int, int]:
        """Ring capability / obligations the first bracket rule pushes (right-hand side + armed DIGIT)."""
        if "_r0_counts" not in self.__dict__:
            cols = _rule_columns(self.ring._tables)
            r0 = int(self._bracket_cols[0])
            self.__dict__["_r0_counts"] = (int(cols["rhs_cap"][r0]), int(cols["rhs_ob"][r0]))
        return self.__dict__["_r0_counts"]

    # ------------------------------------------------------------------ push

    def push(self, rule_ids: Tensor, check: bool = True) -> None:
        """Apply one rule per sample (see :meth:`DecodeState.push`) and update the chemistry state."""
        rule = rule_ids.to(device=self.used.device, dtype=torch.long).reshape(-1)
        R = self._rules.take(rule, rows=True)  # [B, 1] per attribute of the chosen rules
        ring = self.ring
        bit, d = ring.digit_bits(R)
        o, n = self._owner(), self.n_atoms
        # bond orders: a bond symbol's order goes to the owner, and to the next atom for a chain
        # bond (a rule writing a ring digit is never a bond rule, so the pending ring-bond symbol
        # read below for the digit is the one written before it)
        k = R.l("bond_k")
        ring_bond = (k > 0) & self.bond_ring
        self.pend_order = torch.where(ring_bond, k, self.pend_order)
        self.pend_explicit = self.pend_explicit | ring_bond
        add_o = R.l("add_ok1")
        has = bit != 0
        if bool(has.any()):
            add_o = add_o + self._push_ring_digit(has, (ring.open & bit) != 0, d, o)
        self.used.scatter_add_(1, o, add_o)
        self.used.scatter_add_(1, n, torch.where(self.bond_ring, R.l("add_n"), R.l("add_nk1")))
        self.parent.scatter_(1, n, torch.where(R.b("parent"), o, self.parent.gather(1, n)))
        self._push_bracket(R, rule)
        # a new atom: its capacity, a fresh bracket state, no ring partners yet
        creates = R.b("creates")
        self.vcap.scatter_(1, n, torch.where(creates, R.l("new_cap"), self.vcap.gather(1, n)))
        opens = R.b("opens_bracket")
        self.cells = self.cells.masked_fill(opens, int(self._grid["all"]))
        self.br_el = self.br_el.masked_fill(opens, len(ELEMENTS))
        self.partner.masked_fill_(creates, False)
        self.n_atoms = n + creates
        self.owed_next = (self.owed_next | R.b("next_ring")) & ~creates
        # contexts for the symbols the rule pushes (expanded next)
        ctx = R.l("bond_ctx")
        self.bond_ring = torch.where(ctx >= 0, ctx == 1, self.bond_ring)
        dctx = R.l("dctx")
        lead_done = (self.dctx == CTX_ISO) & (R.l("digit") >= 0)
        self.dctx = torch.where(dctx >= 0, dctx, self.dctx.masked_fill(lead_done, 0))
        # owners of the pushed symbols, at the slots DecodeState.push writes
        top = self.state.top().unsqueeze(1)
        self.pc.scatter_add_(1, o, R.l("close_o") - self._nt_close.index_select(0, top.view(-1)).view(top.shape))
        self.pc.scatter_add_(1, n, R.l("close_n"))
        own_next = self.tab["own_next"].index_select(0, rule)  # [B, K]
        slots = (self.state.ptr.unsqueeze(1) - 1).clamp(min=0) + self._slots
        self.own.scatter_(1, slots, torch.where(own_next, n, o))
        self._o = None
        ring.push_taken(rule, R, bit, check=check)

    def _push_ring_digit(self, has: Tensor, closing: Tensor, d: Tensor, o: Tensor) -> Tensor:
        """Open or close the ring whose digit each rule writes (``has``, ``closing``, digit index
        ``d``, owner ``o``: [B, 1]; before the ring state flips it). Returns the extra bond order
        the owner takes ([B, 1]): closing, the end without a bond symbol takes the order written
        at the other end."""
        opening = has & ~closing
        p = self.ring_atom.gather(1, d)
        r_order = self.ring_order.gather(1, d)
        r_expl = self.ring_explicit.gather(1, d)
        extra_o = (r_order - 1) * (closing & ~self.pend_explicit)
        self.used.scatter_add_(1, p, (self.pend_order - 1) * (closing & self.pend_explicit & ~r_expl))
        self.partner.scatter_(1, p, self.partner.gather(1, p) | closing)
        # opening: remember the atom and the bond symbol
        self.ring_atom.scatter_(1, d, torch.where(opening, o, p))
        self.ring_order.scatter_(1, d, torch.where(opening, self.pend_order, r_order))
        self.ring_explicit.scatter_(1, d, torch.where(opening, self.pend_explicit, r_expl))
        self.pend_order = self.pend_order.masked_fill(has, 1)
        self.pend_explicit = self.pend_explicit & ~has
        return extra_o

    def _push_bracket(self, R: Taken, rule: Tensor) -> None:
        """Narrow the bracket atom's (H count, charge) cells and update its capacity (rows writing
        a bracket interior only; skipped when there are none)."""
        digit = R.l("digit")
        is_digit = digit >= 0
        in_br = R.b("bracket") | (is_digit & (self.dctx > 0))  # [B, 1]
        if not bool(in_br.any()):
            return
        grid = self._grid
        digit_cells = grid["digit"].index_select(0, (self.dctx * 10 + digit.clamp(min=0)).view(-1)).view(digit.shape)
        self.cells = torch.where(in_br, self.cells & torch.where(is_digit, digit_cells, R.l("pbits")), self.cells)
        el = R.l("el")
        self.br_el = torch.where(el >= 0, el, self.br_el)
        # capacity: the largest capacity of a cell left (-1: none)
        cap = ((grid["fit0"].index_select(0, self.br_el.view(-1)) & self.cells) != 0).sum(1, keepdim=True) - 1
        a = (self.n_atoms - 1).clamp(min=0)
        self.vcap.scatter_(1, a, torch.where(in_br, cap, self.vcap.gather(1, a)))
