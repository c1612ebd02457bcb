"""Length test of the chemistry constraint: the fewest extra rules the open rings still need.

The grammar's length bound ``need`` (fewest rules that finish every pending symbol) ignores ring
bonds. :func:`room_c` adds, per candidate rule, a lower bound on what closing the rings costs on
top of it, so that a rule is allowed only if the derivation can still finish, chemistry included,
within ``max_length``. With W the atom that writes the ring digits still owed (the next atom while
its ring bonds are promised but it is not written yet, else the latest atom; at most one atom owes
ring digits at a time, since a leftmost derivation expands an atom's ring bonds before anything
after it), ``ob`` the digits owed, ``O`` the rings open and ``k`` the number of distinct openers
of open rings W may close (not W itself, not its chain neighbour, not an atom it is joined to):

- extra digits ``O + ob - 2 min(ob, k)``: W closes at most ``min(ob, k)`` rings and opens the rest
  of its digits as new rings; every ring still open then needs a digit no pending symbol owes;
  each costs at least two rules (a ring list grows by ``ringbond RB_tail``; an atom gets ``atom RB``
  and a digit instead of one rule);
- extra atoms: a ring must close at an atom other than its opener, not bonded to it, and the rings
  of one opener at distinct atoms. Closers to come are W (one ring of each opener it may close) and
  one atom per pending symbol sure to write an atom that can still get ring bonds (its first atom
  is a child of the symbol's owner, so it cannot close the owner's rings). For each opener P the
  rings from P beyond those closers need that many further atoms, each at least two rules (a chain
  or branch grows by one atom); the largest shortfall over the openers counts (one new atom can
  close rings of several openers). The rings W opens count as rings of W.

Both are lower bounds (capacities are left to the other masks), so no molecule that fits is
blocked. Everything is batched over the rows and candidates ([B, C], per ring [B, C, 10]).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .packs import per_candidate


def closer_columns(grammar: Any, ring: dict[str, Any], chem: dict[str, Any]) -> dict[str, Tensor]:
    """[R] per rule: ``close_o`` / ``close_n`` the closer symbols (:func:`~discrete_rae.grammar.ring.ring_tables`
    ``nt_close``) its right-hand side gives to the owner of the expanded symbol / to the next atom."""
    rhs = grammar._decode_tensors(torch.device("cpu"))["rhs16"].long()  # [R, K] push order, Nothing-padded
    is_closer = ring["nt_close"].index_select(0, rhs.reshape(-1)).view(rhs.shape).bool()
    own_next = chem["own_next"]
    return {"close_o": (is_closer & ~own_next).sum(1), "close_n": (is_closer & own_next).sum(1)}


def w_sets(cs: Any, T: Any, ctx: dict[str, Tensor], o: Tensor, par: Tensor, is_open: Tensor, joined: Tensor,
           eq: Tensor) -> dict[str, Tensor]:
    """Open rings the atom W owing ring digits may close. ``M`` [B, 3, 10]: for the latest atom (not
    opened there, not joined to it, not from its parent), the next atom (not from its parent), the
    next atom when the rule makes ``o`` its parent; ``sel`` [B, C] which applies after each rule
    (0 unless the next atom owes them: ``owed``); ``cnt`` [B, C] distinct openers W may close after
    the rule (a ring closed by the rule joins W to its opener); ``l_bits`` [B, 1] the latest atom's
    set as a digit bit mask."""
    ring, p = cs.ring, cs.ring_atom
    here = (ring.here & ring._bits) != 0
    cand_l = is_open & ~here & ~joined & (p != par[:, 2:3])
    cand_n = is_open & (p != par[:, 1:2])
    cand_no = is_open & (p != o)
    M = torch.stack([cand_l, cand_n, cand_no], 1)  # [B, 3, 10]
    dup = ((eq & cs._earlier).unsqueeze(1) & M.unsqueeze(2)).any(3)  # an earlier candidate, same atom
    distinct = (M & ~dup).sum(2)
    owed = T.b("next_ring") | cs.owed_next  # [B, C] the next atom owes the closures
    sel = T.l("sel") * owed
    l_bits = (cand_l * ring._bits).sum(1, keepdim=True)
    cnt = distinct.gather(1, sel) - ((ctx["bit"] & l_bits) != 0).long()
    return {"cand_l": cand_l, "M": M, "owed": owed, "sel": sel, "cnt": cnt}


def room_c(cs: Any, T: Any, ctx: dict[str, Tensor], o: Tensor, n: Tensor, last: Tensor, is_open: Tensor,
           eq: Tensor, W: dict[str, Tensor]) -> Tensor:
    """[B, C] the candidate rules after which the derivation can still finish within max_length,
    counting the extra digits and atoms the rings need (module docstring). ``o`` / ``n`` / ``last``
    [B, 1]: owner of the top symbol, next atom, latest atom; ``is_open`` [B, 10]; ``eq`` [B, 10, 10]
    two rings from one opener; ``W``: :func:`w_sets`."""
    ring, st, p = cs.ring, cs.state, cs.ring_atom
    bits = ring._bits
    bit, closing, ob = ctx["bit"], ctx["closing"], ctx["ob_after"]
    B, C = bit.shape
    touched = (bit.unsqueeze(2) & bits) != 0  # [B, C, 10] the ring digit the rule writes
    open_ex = is_open.unsqueeze(1) & ~touched  # rings open before and after the rule
    w_atom = torch.where(W["owed"], n, last)  # [B, C]
    # rings W may close after the rule: a ring the rule closes joins W to that ring's opener
    d = torch.where(ring.pending, T.l("d1"), T.l("d0"))
    p_c = p.gather(1, d)  # [B, C] opener of the ring the rule writes a digit for
    joined_now = closing.unsqueeze(2) & (p.unsqueeze(1) == p_c.unsqueeze(2))
    wset = W["M"].gather(1, W["sel"].unsqueeze(2).expand(B, C, bits.numel())) & open_ex & ~joined_now
    eqf = eq.float()
    n_p = torch.bmm(open_ex.float(), eqf)  # [B, C, 10] open rings from each ring's opener
    w_p = (torch.bmm(wset.float(), eqf) > 0) & (ob > 0).unsqueeze(2)  # W may close one of them
    cnt = W["cnt"]
    n_new = (ob - cnt).clamp(min=0)  # digits W has to open as new rings
    extra = ctx["open_after"] + ob - 2 * torch.minimum(ob, cnt)
    # closers to come, and those owned by an opener (their first atom is its neighbour)
    closers = ring.closers + T.l("dclose")  # [B, C]
    dclose_o = T.l("dclose_o")
    own_p = cs.pc.gather(1, p).unsqueeze(1) + (p == o).unsqueeze(1) * dclose_o.unsqueeze(2)  # [B, C, 10]
    short_p = n_p - w_p.long() - (closers.unsqueeze(2) - own_p)
    at_w = p.unsqueeze(1) == w_atom.unsqueeze(2)
    short_p = short_p.masked_fill(~open_ex | at_w, 0).amax(2)  # [B, C]
    opening = (bit != 0) & ~closing
    n_w = (open_ex & at_w).sum(2) + (opening & (o == w_atom)).long() + n_new
    own_w = cs.pc.gather(1, w_atom) + (o == w_atom) * dclose_o + (n == w_atom) * T.l("close_n")
    short_w = n_w - (closers - own_w)
    more = torch.maximum(short_p, short_w).clamp(min=0)
    # the pad rule under ``Nothing`` always fits (its dmin is -FAR)
    return torch.add(ctx["after"], extra + more, alpha=2) <= st.max_length - st.t - 1


def closer_candidate_columns(grammar: Any, ring: dict[str, Any], chem: dict[str, Any]) -> tuple[dict, dict]:
    """Per-candidate ``[n_nt, C]`` columns (:mod:`discrete_rae.grammar.packs`): ``dclose_o`` closer
    symbols the owner gains (right-hand side minus the top symbol), ``close_n`` those of the next atom."""
    cand = grammar._decode_tensors(torch.device("cpu"))["cand"]
    cols = closer_columns(grammar, ring, chem)
    return ({"dclose_o": per_candidate(cand, cols["close_o"]) - ring["nt_close"].unsqueeze(1),
             "close_n": per_candidate(cand, cols["close_n"])}, {})
