"""Batched beam search for the sequence decoders, under every mask the codec applies.

For each code z_b the search keeps K partial sequences (beams) y_{1:t} with scores

    s(y_{1:t}) = sum_{u <= t} log p(y_u | y_{<u}, z),
    p(. | y_{<u}, z) = softmax of the decoder's logits over the tokens that
                       ``state.allowed()`` permits at step u (zero elsewhere),

i.e. the same constrained distribution that greedy decoding takes the argmax of and
sampling draws from. ``allowed()`` is whatever the codec's decoding state applies: the
grammar stack mask, the length mask, the ring-closure mask, or a later constraint living
inside the state; beam search never looks inside, so every beam is as valid as a greedy
decode. At each step every beam is extended by every allowed token, and the K best of
the K x V candidates (per code) survive; the state's rows are then gathered for the
survivors with ``state.reorder(index)``. A finished beam (stack empty / end token) has only
the padding token allowed, whose constrained probability is 1: it keeps its score and
stays in the beam as a candidate. Scores are accumulated in float64, and candidates are
ranked with a stable sort, so K = 1 reproduces greedy decoding exactly (ties go to the
lowest token, as ``argmax`` does).

Beam search can lose the greedy path (K prefixes outscore it, then end worse), so by
default one extra row per code follows the greedy path and competes in the final choice:
the returned sequence is never less probable than the greedy one (``keep_greedy``).
The search stops as soon as no live row of any code can still beat that code's best
finished row (scores only fall), so it rarely runs to the length limit.

The network is stepped through the decoder itself: an autoregressive decoder's
``step(z, prev, h)``; a non-autoregressive decoder (code repeated at every step) gives all
logits at once and only the masks depend on the history. Cost: (K + 1) rows per code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .grammar import select

log = logging.getLogger(__name__)


@dataclass
class BeamResult:
    """Outcome of :func:`beam_search` for B codes and R rows per code.

    ids [B, L]: best finished sequence per code (the best-scoring row if none finished);
    finished [B]; log_prob [B] float64 its score; beams [B, R, L], beam_log_prob [B, R],
    beam_finished [B, R]: every row (K beams, then the greedy row when kept).
    """

    ids: Tensor
    finished: Tensor
    log_prob: Tensor
    beams: Tensor
    beam_log_prob: Tensor
    beam_finished: Tensor


def constrained_log_probs(logits: Tensor, allowed: Tensor) -> Tensor:
    """log softmax of ``logits`` [N, V] over the ``allowed`` [N, V] tokens, float64; -inf elsewhere.

    NaN/inf are handled as in :func:`~discrete_rae.grammar.select`: NaN ranks lowest,
    +inf becomes the largest float32, and a row whose allowed logits are all NaN is uniform
    over its allowed tokens (so the argmax of this equals ``select``'s greedy choice).
    """
    x = torch.nan_to_num(logits.float(), nan=float("-inf"), posinf=torch.finfo(torch.float32).max)
    x = x.masked_fill(~allowed, float("-inf"))
    hopeless = torch.isneginf(x.amax(dim=-1, keepdim=True))
    x = torch.where(hopeless & allowed, torch.zeros_like(x), x)
    return torch.log_softmax(x.double(), dim=-1)


class _Stepper:
    """Logits for N = B * R rows, one step at a time, from the model's own decoder."""

    def __init__(self, decoder: Any, z: Tensor, rows: int) -> None:
        self.rows = rows
        self.autoregressive = bool(getattr(decoder, "autoregressive", False)) and hasattr(decoder, "step")
        self.decoder = decoder
        if self.autoregressive:
            self.z = z.repeat_interleave(rows, 0)
            self.h = decoder._h0(self.z)
            self.prev = torch.full((self.z.shape[0],), decoder.vocab, dtype=torch.long, device=z.device)
            self.length = int(decoder.length)
        else:  # logits do not depend on the chosen tokens: compute them once, per code
            self.full = decoder(z, None).float()  # [B, L, V]
            self.length = int(self.full.shape[1])
        self.t = 0

    def logits(self) -> Tensor:
        """[N, V] logits of the current step (autoregressive: also advances the hidden state)."""
        if self.autoregressive:
            out, self._h_next = self.decoder.step(self.z, self.prev, self.h)
            return out.float()
        return self.full[:, self.t].repeat_interleave(self.rows, 0)

    def advance(self, tokens: Tensor, index: Tensor) -> None:
        """Rows ``index`` [N] survive and take ``tokens`` [N]."""
        if self.autoregressive:
            # GRU: h [layers, N, H]; LSTM: the pair (h, c), each [layers, N, H]
            h = self._h_next
            self.h = (tuple(part.index_select(1, index) for part in h) if isinstance(h, tuple)
                      else h.index_select(1, index))
            self.prev = tokens
        self.t += 1


@torch.no_grad()
def beam_search(model: Any, z: Tensor, width: int, keep_greedy: bool = True) -> BeamResult:
    """Beam search of width ``width`` (K >= 1) from codes z [B, D] through ``model.decoder``
    under ``model.codec``'s decoding state. See the module docstring for the maths."""
    K = int(width)
    if K < 1:
        raise ValueError(f"beam width must be >= 1, got {width}")
    codec, decoder = model.codec, model.decoder
    B = z.shape[0]
    greedy_row = keep_greedy and K > 1  # with K = 1 the single beam *is* the greedy path
    R = K + int(greedy_row)
    steps = _Stepper(decoder, z, R)
    state = codec.new_state(B * R, z.device)
    scores = torch.full((B, R), float("-inf"), dtype=torch.float64, device=z.device)
    scores[:, 0] = 0.0  # all beams start equal: only one may expand at the first step
    if greedy_row:
        scores[:, K] = 0.0
    base = (torch.arange(B, device=z.device) * R).unsqueeze(1)  # [B, 1] first row of each code
    for _ in range(steps.length):
        logits = steps.logits()  # [B*R, V]
        allowed = state.allowed()
        logp = constrained_log_probs(logits, allowed).view(B, R, -1)
        V = logp.shape[-1]
        cand = (scores[:, :K, None] + logp[:, :K]).reshape(B, K * V)
        # stable: equal scores keep the lower (beam, token) index, as argmax does
        top_scores, top_idx = torch.sort(cand, dim=1, descending=True, stable=True)
        top_scores, top_idx = top_scores[:, :K], top_idx[:, :K]
        src = base + top_idx // V  # [B, K] surviving rows
        tokens = top_idx % V
        # a dead candidate (-inf: fewer than K live extensions) still needs an allowed token
        first_allowed = allowed.long().argmax(-1).view(B, R)
        dead = torch.isneginf(top_scores)
        tokens = torch.where(dead, first_allowed.gather(1, top_idx // V), tokens)
        if greedy_row:
            g = select(logits.view(B, R, -1)[:, K], allowed.view(B, R, -1)[:, K])  # [B]
            g_score = scores[:, K] + logp[:, K].gather(1, g.unsqueeze(1)).squeeze(1)
            src = torch.cat([src, base + K], 1)
            tokens = torch.cat([tokens, g.unsqueeze(1)], 1)
            top_scores = torch.cat([top_scores, g_score.unsqueeze(1)], 1)
        index, tokens = src.reshape(-1), tokens.reshape(-1)
        state.reorder(index)
        state.push(tokens)
        steps.advance(tokens, index)
        scores = top_scores
        if _settled(state, scores) or bool(getattr(state, "complete", False)):
            break
    return _best(state, scores, codec.pad_index, steps.length, B, R)


def _settled(state: Any, scores: Tensor) -> bool:
    """True when no live row can still beat its code's best finished row.

    Step log-probabilities are <= 0, so a row's score never rises: once a code's best
    finished score is >= the score of each of its rows that can still finish, the answer for
    that code is fixed (exact early stopping, not a heuristic). Rows that can never finish
    (grammar rows cut at the length limit) do not count as live.
    """
    B, R = scores.shape
    done = state.done.view(B, R)
    live = getattr(state, "active", ~state.done).view(B, R) & ~done & torch.isfinite(scores)
    neg_inf = torch.full_like(scores, float("-inf"))
    best_done = torch.where(done, scores, neg_inf).amax(1)
    best_live = torch.where(live, scores, neg_inf).amax(1)
    return bool((best_live <= best_done).all())


def _best(state: Any, scores: Tensor, pad: int, length: int, B: int, R: int) -> BeamResult:
    """Pick per code the best finished row (by score), else the best row."""
    ids = state.ids
    ids = F.pad(ids, (0, length - ids.shape[1]), value=pad) if ids.shape[1] < length else ids
    beams = ids.view(B, R, -1)
    finished = state.done.view(B, R) & torch.isfinite(scores)
    key = torch.where(finished, scores, torch.full_like(scores, float("-inf")))
    best = torch.where(finished.any(1), key.argmax(1), scores.argmax(1))  # [B]
    pick = best.unsqueeze(1)
    return BeamResult(ids=beams.gather(1, pick.unsqueeze(2).expand(-1, 1, beams.shape[2])).squeeze(1),
                      finished=finished.gather(1, pick).squeeze(1), log_prob=scores.gather(1, pick).squeeze(1),
                      beams=beams, beam_log_prob=scores, beam_finished=finished)


@torch.no_grad()
def sequence_log_prob(model: Any, z: Tensor, ids: Tensor) -> Tensor:
    """Score [B] float64 of given sequences ids [B, L] under the constrained distribution of
    :func:`beam_search`, teacher-forced through the same states (a grammar state raises
    ``ValueError`` on a masked token; others give -inf)."""
    codec, B = model.codec, z.shape[0]
    steps = _Stepper(model.decoder, z, 1)
    state = codec.new_state(B, z.device)
    total = torch.zeros(B, dtype=torch.float64, device=z.device)
    index = torch.arange(B, device=z.device)
    for t in range(min(steps.length, ids.shape[1])):
        if bool(state.done.all()) or bool(getattr(state, "complete", False)):
            break
        allowed = state.allowed()
        tok = ids[:, t].long().to(z.device)
        total += constrained_log_probs(steps.logits(), allowed).gather(1, tok.unsqueeze(1)).squeeze(1)
        state.push(tok)
        steps.advance(tok, index)
    return total


def beam_decode_texts(model: Any, z: Tensor, width: int, device: torch.device,
                      batch: int = 500) -> list[str | None]:
    """Texts of the best beam per code (codes [N, D] decoded in chunks of ``batch``)."""
    model.eval()
    out: list[str | None] = []
    for chunk in z.split(batch):
        res = beam_search(model, chunk.to(device), width)
        out.extend(model.codec.to_text(res.ids.cpu(), res.finished.cpu()))
    return out
