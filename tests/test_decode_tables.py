"""Fast constrained decoding (discrete_rae.grammar.constrained, .packs): same outputs as the plain loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from discrete_rae.codecs import GrammarCodec
from discrete_rae.grammar import Grammar, select
from discrete_rae.grammar.chem import ChemState
from discrete_rae.grammar.constrained import decode_states
from discrete_rae.grammar.ring import POPCOUNT, RingClosureState, scatter_rules


def _codec(kind: str, max_length: int = 60) -> GrammarCodec:
    if kind == "expr":
        return GrammarCodec(Grammar.builtin("expressions"), max_length=max_length)
    codec = GrammarCodec(Grammar.builtin("smiles_compact"), max_length=max_length,
                         ring_mask=kind != "length", chem_mask=kind in ("kekule", "aromatic"))
    codec.aromatic = kind == "aromatic"
    return codec


def _plain(codec: GrammarCodec, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The straightforward loop over [B, R] masks that decode_states must reproduce."""
    state = codec.new_state(logits.shape[0])
    for t in range(min(logits.shape[1], codec.max_length)):
        state.push(select(logits[:, t].float(), state.allowed()))
        if state.complete:
            break
    return F.pad(state.ids, (0, logits.shape[1] - state.ids.shape[1]), value=codec.pad_index), state.done


@pytest.mark.parametrize("kind", ["kekule", "aromatic", "ring", "length", "expr"])
def test_greedy_equals_the_plain_loop(kind: str) -> None:
    """Rows are dropped as they finish and only candidates are read: outputs must not change."""
    codec = _codec(kind)
    B, L = 300, 64  # L > max_length: the tail stays padding
    logits = torch.randn(B, L, codec.vocab_size, generator=torch.Generator().manual_seed(5))
    logits[3, :10] = float("nan")  # NaN ranks lowest; all-NaN rows pick their first allowed rule
    logits[4, 2] = float("inf")
    ids, done = decode_states(codec.new_state, logits, codec.max_length, codec.pad_index)
    ref_ids, ref_done = _plain(codec, logits)
    assert torch.equal(ids, ref_ids) and torch.equal(done, ref_done)
    assert done.float().mean() > 0.5  # not a vacuous comparison of unfinished rows
    half_ids, _ = decode_states(codec.new_state, logits.half(), codec.max_length, codec.pad_index)
    assert torch.equal(half_ids, _plain(codec, logits.half())[0])


def test_codec_decode_logits_uses_the_fast_path_and_keeps_the_padding() -> None:
    codec = _codec("kekule", 40)
    logits = torch.randn(50, 45, codec.vocab_size, generator=torch.Generator().manual_seed(1))
    ids, done = codec.decode_logits(logits)
    assert ids.shape == (50, 45) and not ids.is_inference() and not done.is_inference()
    assert torch.equal(ids, _plain(codec, logits)[0])
    empty_ids, empty_done = codec.decode_logits(logits[:0])
    assert empty_ids.shape == (0, 45) and empty_done.shape == (0,)


def test_sampled_sequences_are_allowed_and_reproducible() -> None:
    """Sampling draws among the allowed candidates only: replaying the sample through a fresh state
    with ``check=True`` never raises; the same generator seed gives the same sample."""
    codec = _codec("kekule", 50)
    logits = torch.randn(200, 50, codec.vocab_size, generator=torch.Generator().manual_seed(2))

    def sample(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return decode_states(codec.new_state, logits, codec.max_length, codec.pad_index, greedy=False,
                             temperature=0.8, generator=torch.Generator().manual_seed(seed))

    ids, done = sample(7)
    assert torch.equal(ids, sample(7)[0])
    state = codec.new_state(ids.shape[0])
    for t in range(ids.shape[1]):
        cand, ok = state.allowed_c()
        assert bool(scatter_rules(ok, cand, codec.vocab_size).gather(1, ids[:, t:t + 1]).all()), t
        state.push(ids[:, t], check=True)
    assert torch.equal(state.done, done)
    assert not torch.equal(ids, decode_states(codec.new_state, logits, codec.max_length, codec.pad_index)[0])


@pytest.mark.parametrize("kind", ["kekule", "ring", "length"])
def test_candidate_masks_scatter_to_the_rule_masks(kind: str) -> None:
    """``allowed_c`` (candidates) and ``allowed`` ([B, R]) agree at every step, and ``strict_c`` is
    contained in the grammar mask."""
    codec = _codec(kind, 50)
    g = codec.grammar
    logits = torch.randn(64, 50, g.n_rules, generator=torch.Generator().manual_seed(3))
    state = codec.new_state(64)
    for t in range(50):
        cand, ok = state.allowed_c()
        allowed = state.allowed()
        assert torch.equal(scatter_rules(ok, cand, g.n_rules), allowed)
        assert bool(allowed.any(1).all())
        if isinstance(state, (ChemState, RingClosureState)):
            cand_s, strict = state.strict_c()
            grammar_mask = g.masks.index_select(0, state.top()).gather(1, cand_s)
            assert not bool((strict & ~grammar_mask).any())
        state.push(select(logits[:, t], allowed))
        if state.complete:
            break


def test_packed_columns_are_the_rule_tables_at_the_candidates() -> None:
    codec = _codec("kekule")
    g = codec.grammar
    state = codec.new_state(4)
    tens = g._decode_tensors(torch.device("cpu"))
    pack = state._cands
    li = pack.li
    cand = pack.longs[:, li["cand"]]
    assert torch.equal(cand, tens["cand"])
    valid = tens["cand_valid"]
    dmin = pack.longs[:, li["dmin"]]
    expect = tens["rhs_min"][cand] - tens["nt_min"].unsqueeze(1)
    assert torch.equal(dmin[valid & (cand != g.pad_index)], expect[valid & (cand != g.pad_index)])
    assert bool((dmin[~valid] > 10**12).all())  # padding slots never fit the length test
    assert POPCOUNT[0b1011000001] == 4 and POPCOUNT[1023] == 10
