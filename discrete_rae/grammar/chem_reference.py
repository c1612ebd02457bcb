"""Per-sample pure-Python reference of constrained SMILES grammar decoding (a test oracle).

:class:`ReferenceDecoder` follows one sample with Python lists and integers: the grammar stack
and length mask (:class:`~discrete_rae.grammar.DecodeState`), the ring mask
(:class:`~discrete_rae.grammar.ring.RingClosureState`) and the chemistry mask
(:class:`~discrete_rae.grammar.chem.ChemState`), rule by rule, written from the rules in those
modules' docstrings rather than from their tensor code. The batched classes must give the same
masks on every step; ``benchmarks/decode_speed.py`` times the two.
"""

from __future__ import annotations

from typing import Any

from .chem import CTX_ISO, CTX_NONE, ELEMENTS
from .chem_rules import H_EL
from .ring import DIGITS


def _lists(tables: dict[str, Any]) -> dict[str, Any]:
    return {k: v.tolist() if hasattr(v, "tolist") else v for k, v in tables.items()}


class ReferenceDecoder:
    """One sample. ``allowed()`` -> list[bool] over the rules; ``push(rule)``."""

    def __init__(self, grammar: Any, ring: dict[str, Any], chem: dict[str, Any] | None, max_length: int,
                 length_mask: bool = True) -> None:
        self.g = grammar
        tens = grammar._decode_tensors(__import__("torch").device("cpu"))
        self.masks = grammar.masks.tolist()
        self.nt_min, self.rhs_min = tens["nt_min"].tolist(), tens["rhs_min"].tolist()
        self.rhs = [list(reversed(k)) for k in grammar._rhs_nts]  # push order (top last)
        self.ring, self.chem = _lists(ring), (_lists(chem) if chem is not None else None)
        self.max_length, self.length_mask = max_length, length_mask
        self.NONE = max_length + 1
        self.nothing, self.digit_nt = grammar._nothing_nt, self.ring["digit_nt"]
        self.stack = [(grammar._start_nt, self.NONE)]  # (non-terminal, owner atom)
        self.t, self.need, self.cut, self.ids = 0, self.nt_min[grammar._start_nt], False, []
        self.open: set[int] = set()
        self.here: set[int] = set()
        self.shut: set[int] = set()
        self.pending = False
        top = self.top()
        self.cap, self.ob, self.ext = self.ring["nt_ring"][top], self.ring["nt_ob"][top], self.ring["nt_ext"][top]
        self.closers = self.ring["nt_close"][top]
        A = max_length + 2
        self.used, self.parent = [0] * A, [-1] * A
        self.vcap = [chem["maxcap"] if chem is not None else 0] * A
        self.vcap[self.NONE] = 1 << 20
        self.n_atoms, self.cells, self.br_el, self.dctx = 0, set(range(30)), len(ELEMENTS), CTX_NONE
        self.bond_ring, self.pend_order, self.pend_explicit, self.owed_next = False, 1, False, False
        self.ring_atom, self.ring_order, self.ring_explicit = [self.NONE] * 10, [1] * 10, [False] * 10
        self.partners: list[int] = []
        self.fell_back = False

    def top(self) -> int:
        return self.stack[-1][0] if self.stack else self.nothing

    # ------------------------------------------------------------------ masks

    def base(self) -> list[bool]:
        top, R = self.top(), self.g.n_rules
        ok = [bool(x) for x in self.masks[top]]
        if self.length_mask and top != self.nothing:
            room = self.max_length - self.t - 1
            ok = [ok[r] and self.need - self.nt_min[top] + self.rhs_min[r] <= room for r in range(R)]
        return ok

    def digit(self, r: int) -> int:
        d = self.ring["direct"][r]
        return d if d >= 0 else (self.ring["via_digit"][r] if self.pending else -1)

    def ring_after(self, r: int) -> tuple[int, int, int, int]:
        """(open_after, cap_after, ob_after, ext_after) if rule r were applied."""
        top, tb = self.top(), self.ring
        d = self.digit(r)
        open_after = len(self.open) + ((-1 if d in self.open else 1) if d >= 0 else 0)
        used_pending = int(self.pending and top == self.digit_nt)
        cap_after = self.cap - tb["nt_ring"][top] - used_pending + tb["rhs_ring"][r] + int(tb["arms"][r])
        ob_after = self.ob - tb["nt_ob"][top] - used_pending + tb["rhs_ob"][r] + int(tb["arms"][r])
        return open_after, cap_after, ob_after, self.ext - tb["nt_ext"][top] + tb["rhs_ext"][r]

    def ring_ok(self, r: int) -> bool:
        d = self.digit(r)
        free = [i for i in range(len(DIGITS)) if i not in self.open and i not in self.shut]
        lowest = free[0] if free else -1
        if d >= 0 and not ((d in self.open and d not in self.here) or d == lowest):
            return False
        open_after, cap_after, ob_after, ext_after = self.ring_after(r)
        if not (open_after == 0 or cap_after > 0):
            return False
        opening = d >= 0 and d not in self.open
        if cap_after <= ob_after and not (open_after >= ob_after and (ext_after > 0 or open_after <= ob_after)
                                          and not opening):
            return False
        if self.length_mask and self.top() != self.nothing:
            diff = open_after - ob_after
            extra = 2 * (diff if diff >= 0 else diff % 2)  # an odd surplus of owed digits opens a ring
            after = self.need - self.nt_min[self.top()] + self.rhs_min[r]
            return after + extra <= self.max_length - self.t - 1
        return True

    def _cand(self, atom: int, last_atom: bool, excluded: int) -> list[int]:
        """Open ring digits the atom could close: not opened by it, not joined to it, not from ``excluded``."""
        out = []
        for d in sorted(self.open):
            p = self.ring_atom[d]
            if p == excluded or (last_atom and (d in self.here or p in self.partners)):
                continue
            out.append(d)
        return out

    def chem_ok(self, r: int) -> bool:
        c = self.chem
        o, n = self.stack[-1][1] if self.stack else self.NONE, self.n_atoms
        k1 = max(c["bond_k"][r] - 1, 0)
        kn = 0 if self.bond_ring else k1
        cap_new = c["new_cap"][r] if c["creates"][r] and not c["opens_bracket"][r] else self.vcap[n]
        if c["forbidden"][r] or self.used[o] + c["add_o"][r] + k1 > self.vcap[o]:
            return False
        if self.used[n] + c["add_n"][r] + kn > cap_new:
            return False
        d = self.digit(r)
        closes = d >= 0 and d in self.open
        if closes:
            p = self.ring_atom[d]
            if p == self.parent[o] or p in self.partners:
                return False
            if self.pend_explicit and self.ring_explicit[d] and self.ring_order[d] != self.pend_order:
                return False
            extra_o = 0 if self.pend_explicit else self.ring_order[d] - 1
            extra_p = self.pend_order - 1 if self.pend_explicit and not self.ring_explicit[d] else 0
            if self.used[o] + extra_o > self.vcap[o] or self.used[p] + extra_p > self.vcap[p]:
                return False
        open_after, cap_after, ob_after, _ = self.ring_after(r)
        last = max(n - 1, 0)
        if cap_after <= ob_after:  # no atom to come: the owing atom closes every open ring
            owed = bool(c["next_ring"][r]) or self.owed_next
            if owed:
                excl = o if (c["next_ring"][r] and c["parent"][r]) else self.parent[n]
                cand = self._cand(n, False, excl)
            else:
                cand = self._cand(last, True, self.parent[last])
            cnt = len({self.ring_atom[x] for x in cand}) - int(closes and d in self._cand(last, True, self.parent[last]))
            if cnt < open_after:
                return False
            cost = {x: (self.ring_order[x] if self.ring_explicit[x] else 1) for x in self.open}
            s_after = sum(cost.values()) - (cost[d] if closes else 0)
            if owed:
                used_a, cap_a = self.used[n] + c["add_n"][r] + kn, cap_new
            else:
                used_a = (self.used[last] + (c["add_o"][r] + kn if o == last else 0)
                          + (cost[d] - 1 if closes and not self.pend_explicit else 0))
                cap_a = self.vcap[last]
            if used_a + s_after - ob_after > cap_a:
                return False
            if c["bond_k"][r] > 0 and self.bond_ring:
                k = min(max(c["bond_k"][r], 1), 3)
                cands = self._cand(last, True, self.parent[last])
                if not any((self.ring_order[x] == k) if self.ring_explicit[x]
                           else self.used[self.ring_atom[x]] + k - 1 <= self.vcap[self.ring_atom[x]] for x in cands):
                    return False
        if self.length_mask and self.top() != self.nothing:
            extra, more = self._ring_costs(r, o, n, d, closes, ob_after)
            after = self.need - self.nt_min[self.top()] + self.rhs_min[r]
            if after + 2 * extra + 2 * more > self.max_length - self.t - 1:
                return False
        return self._bracket_ok(r)

    def _ring_costs(self, r: int, o: int, n: int, d: int, closes: bool, ob_after: int) -> tuple[int, int]:
        """(extra ring digits, extra atoms) the open rings need after rule r (chem_room's bounds),
        from the pending stack after r with its owners."""
        c = self.chem
        last = max(n - 1, 0)
        owed = bool(c["next_ring"][r]) or self.owed_next
        w_atom = n if owed else last
        if owed:
            wset = self._cand(n, False, o if (c["next_ring"][r] and c["parent"][r]) else self.parent[n])
        else:
            wset = self._cand(last, True, self.parent[last])
        latest = self._cand(last, True, self.parent[last])
        k_w = len({self.ring_atom[x] for x in wset}) - int(closes and d in latest)
        if closes:  # W is now joined to the closed ring's opener
            wset = [x for x in wset if self.ring_atom[x] != self.ring_atom[d]]
        open_after = (self.open - {d}) if closes else (self.open | {d}) if d >= 0 else set(self.open)
        opener = {x: self.ring_atom[x] if x in self.open else o for x in open_after}
        extra = len(open_after) + ob_after - 2 * min(ob_after, k_w)
        own_next = c["own_next"][r]
        stack = self.stack[:-1] + [(nt, n if own_next[j] else o) for j, nt in enumerate(self.rhs[r])]
        owners = [ow for nt, ow in stack if self.ring["nt_close"][nt]]
        shortfalls = [0]
        for P in set(opener.values()) - {w_atom}:
            w = ob_after > 0 and any(self.ring_atom[y] == P for y in wset)
            shortfalls.append(sum(v == P for v in opener.values()) - int(w) - sum(ow != P for ow in owners))
        n_w = sum(v == w_atom for v in opener.values()) + max(0, ob_after - k_w)
        shortfalls.append(n_w - sum(ow != w_atom for ow in owners))
        return extra, max(shortfalls)

    def _ring_need(self) -> int:
        cols = [r for r in range(self.g.n_rules) if self.chem["bracket"][r]]
        if not cols:
            return 0
        _, cap_after, ob_after, _ = self.ring_after(cols[0])
        if cap_after > ob_after:
            return 0
        cost = sum(self.ring_order[x] if self.ring_explicit[x] else 1 for x in self.open)
        return max(0, cost - ob_after)

    def _bracket_ok(self, r: int) -> bool:
        c = self.chem
        is_el, is_digit = c["el"][r] >= 0, c["digit"][r] >= 0
        if not (c["bracket"][r] or is_el or is_digit):
            return True
        if c["chiral"][r] and self.br_el == H_EL:  # no chirality tag on a bracket hydrogen
            return False
        need = self.used[max(self.n_atoms - 1, 0)] + self._ring_need()
        score = c["score"]
        fit = [g in self.cells and score[self.br_el][g] >= need for g in range(30)]
        if c["bracket"][r] and not any(f and pm for f, pm in zip(fit, c["permit"][r])):
            return False
        if is_el and not any(g in self.cells and score[c["el"][r]][g] >= need and c["permit"][r][g]
                             for g in range(30)):
            return False
        if is_digit and self.dctx != CTX_NONE:
            return any(f and pm for f, pm in zip(fit, c["dperm"][self.dctx][c["digit"][r]]))
        return True

    def allowed(self) -> list[bool]:
        base = self.base()
        ring = [b and self.ring_ok(r) for r, b in enumerate(base)]
        if self.chem is None:
            return ring if any(ring) else base
        ok = [x and self.chem_ok(r) for r, x in enumerate(ring)]
        if any(ok):
            return ok
        self.fell_back = True
        return ring if any(ring) else base

    # ------------------------------------------------------------------ push

    def push(self, r: int) -> None:
        top = self.top()
        o, n = self.stack[-1][1] if self.stack else self.NONE, self.n_atoms
        if self.chem is not None:
            self._push_chem(r, o, n)
        self._push_ring(r, top)
        if self.length_mask:
            self.need += self.rhs_min[r] - self.nt_min[top]
        if self.stack:
            self.stack.pop()
        c = self.chem
        own_next = c["own_next"][r] if c is not None else [False] * len(self.rhs[r])
        pushed = self.rhs[r]  # push order; own_next is indexed the same way
        self.stack += [(nt, n if own_next[j] else o) for j, nt in enumerate(pushed)]
        self.ids.append(r)
        self.t += 1
        if len(self.stack) > self.max_length - self.t:
            self.cut, self.stack = True, []

    def _push_ring(self, r: int, top: int) -> None:
        tb = self.ring
        d = self.digit(r)
        used_pending = int(self.pending and top == self.digit_nt)
        self.ob += tb["rhs_ob"][r] + int(tb["arms"][r]) - tb["nt_ob"][top] - used_pending
        self.ext += tb["rhs_ext"][r] - tb["nt_ext"][top]
        self.closers += tb["rhs_close"][r] - tb["nt_close"][top]
        self.cap += tb["rhs_ring"][r] + int(tb["arms"][r]) - tb["nt_ring"][top] - used_pending
        if tb["new_atom"][r]:
            self.here, self.shut = set(), set()
        if d >= 0:
            if d in self.open:
                self.open.discard(d)
                self.shut.add(d)
            else:
                self.open.add(d)
                self.here.add(d)
        self.pending = (self.pending and d < 0) or bool(tb["arms"][r])

    def _push_chem(self, r: int, o: int, n: int) -> None:
        c = self.chem
        k = c["bond_k"][r]
        k1 = max(k - 1, 0)
        self.used[o] += c["add_o"][r] + k1
        self.used[n] += c["add_n"][r] + (0 if self.bond_ring else k1)
        if k > 0 and self.bond_ring:
            self.pend_order, self.pend_explicit = k, True
        if c["parent"][r]:
            self.parent[n] = o
        d = self.digit(r)
        if d >= 0:
            if d in self.open:
                p = self.ring_atom[d]
                if not self.pend_explicit:
                    self.used[o] += self.ring_order[d] - 1
                elif not self.ring_explicit[d]:
                    self.used[p] += self.pend_order - 1
                if len(self.partners) < 10:
                    self.partners.append(p)
            else:
                self.ring_atom[d], self.ring_order[d], self.ring_explicit[d] = o, self.pend_order, self.pend_explicit
            self.pend_order, self.pend_explicit = 1, False
        in_br = c["bracket"][r] or (c["digit"][r] >= 0 and self.dctx > 0)
        if in_br:
            permit = c["dperm"][self.dctx][c["digit"][r]] if c["digit"][r] >= 0 else c["permit"][r]
            self.cells = {g for g in self.cells if permit[g]}
        if c["el"][r] >= 0:
            self.br_el = c["el"][r]
        if in_br:
            caps = [c["score"][self.br_el][g] for g in self.cells]
            self.vcap[max(self.n_atoms - 1, 0)] = max(caps, default=-1)
        if c["creates"][r]:
            self.vcap[n] = c["new_cap"][r]
            self.partners = []
            self.n_atoms += 1
        if c["opens_bracket"][r]:
            self.cells, self.br_el = set(range(30)), len(ELEMENTS)
        self.owed_next = (self.owed_next or bool(c["next_ring"][r])) and not c["creates"][r]
        if c["bond_ctx"][r] >= 0:
            self.bond_ring = c["bond_ctx"][r] == 1
        if c["dctx"][r] >= 0:
            self.dctx = c["dctx"][r]
        elif self.dctx == CTX_ISO and c["digit"][r] >= 0:
            self.dctx = CTX_NONE

    @property
    def done(self) -> bool:
        return not self.stack and not self.cut
