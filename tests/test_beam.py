"""Beam search: K = 1 is greedy, K > 1 is never less probable, every beam obeys every mask."""

from __future__ import annotations

import pytest
import torch

from discrete_rae.beam import beam_search, constrained_log_probs, sequence_log_prob
from discrete_rae.codecs import CharCodec, GrammarCodec
from discrete_rae.grammar import Grammar, select
from discrete_rae.models.build import build_model as build_sequence_model
from discrete_rae.models.sequence import SequenceModelConfig

SMOKE = dict(enc_hidden=32, latent_dim=6, dec_hidden=32, embed_dim=8, conv_channels=(3,), conv_kernels=(3,))


def _model(codec, decoder: str = "gru", seed: int = 0):
    """``decoder`` "gru" / "repeat", or "lstm": the autoregressive decoder with the LSTM cell
    (its state is the pair (h, c), which the beam must reorder as one)."""
    torch.manual_seed(seed)
    cell = {"lstm": {"decoder": "gru", "decoder_cell": "lstm"}}.get(decoder, {"decoder": decoder})
    cfg = SequenceModelConfig(codec=codec.kind, latent="deterministic", **cell, **SMOKE)
    return build_sequence_model(cfg, codec).eval()


def _grammar_codec(name: str, max_length: int, **options) -> GrammarCodec:
    return GrammarCodec(Grammar.builtin(name), max_length=max_length, **options)


def _selfies_codec():
    pytest.importorskip("selfies")
    from discrete_rae.selfies_codec import SelfiesCodec

    return SelfiesCodec.fit(["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(Cl)cc1", "C#N", "CS(=O)(=O)N"], max_length=24)


# (codec factory, decoder): the grammar with every mask, the paper's protocol (no length or ring
# mask: rows can be cut), the non-autoregressive decoder, the expression grammar, characters, SELFIES
CASES = {
    "smiles-masks-gru": (lambda: _grammar_codec("smiles", 60), "gru"),
    "smiles-nomask-gru": (lambda: _grammar_codec("smiles", 40, length_mask=False, ring_mask=False), "gru"),
    "compact-repeat": (lambda: _grammar_codec("smiles_compact", 50), "repeat"),
    "compact-lstm": (lambda: _grammar_codec("smiles_compact", 50), "lstm"),
    "expressions-gru": (lambda: _grammar_codec("expressions", 15), "gru"),
    "char-gru": (lambda: CharCodec.fit(["CCO", "c1ccccc1", "CC(=O)N"], max_length=20), "gru"),
    "selfies-gru": (_selfies_codec, "gru"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_width_one_is_greedy(case):
    make_codec, decoder = CASES[case]
    model = _model(make_codec(), decoder)
    z = torch.randn(200, 6, generator=torch.Generator().manual_seed(1)) * 3
    ids, finished = model.generate(z)
    res = beam_search(model, z, 1)
    assert torch.equal(res.ids, ids)
    assert torch.equal(res.finished, finished)
    assert res.beams.shape == (200, 1, ids.shape[1])


@pytest.mark.parametrize("case", sorted(CASES))
def test_wider_beam_is_never_less_probable_and_scores_are_exact(case):
    make_codec, decoder = CASES[case]
    model = _model(make_codec(), decoder, seed=2)
    z = torch.randn(60, 6, generator=torch.Generator().manual_seed(3)) * 3
    greedy = beam_search(model, z, 1)
    wide = beam_search(model, z, 4)
    both = greedy.finished & wide.finished
    assert both.any()
    assert bool((wide.log_prob[both] >= greedy.log_prob[both] - 1e-9).all())
    assert bool((wide.finished | ~greedy.finished).all())  # never trades a finished greedy for nothing
    # the reported score is the constrained log-probability of the returned sequence,
    # recomputed by teacher forcing through fresh states (which reject a masked token)
    rescored = sequence_log_prob(model, z, wide.ids)
    assert torch.allclose(rescored, wide.log_prob, atol=1e-6)
    # and every finished beam, not only the best, is a sequence the masks allow (the search
    # stops early, so beams that could not beat the best are left unfinished)
    live = wide.beam_finished
    all_ids = wide.beams[live]
    z_rep = z.repeat_interleave(wide.beams.shape[1], 0)[live.reshape(-1)]
    assert torch.allclose(sequence_log_prob(model, z_rep, all_ids), wide.beam_log_prob[live], atol=1e-6)


def test_beam_finds_more_probable_sequences_somewhere():
    """On random codes of an untrained model, K = 5 strictly beats greedy on some codes (the
    search does something), and the K beams of a code are distinct and sorted by score."""
    model = _model(_grammar_codec("smiles_compact", 50), "gru", seed=4)
    z = torch.randn(100, 6, generator=torch.Generator().manual_seed(5)) * 3
    greedy, wide = beam_search(model, z, 1), beam_search(model, z, 5, keep_greedy=False)
    assert bool((wide.log_prob > greedy.log_prob + 1e-6).any())
    beams = wide.beam_log_prob
    assert bool((beams[:, :-1] >= beams[:, 1:]).all())
    for row in wide.beams[:10]:
        assert len({tuple(r.tolist()) for r in row}) == row.shape[0]


def test_grammar_beams_unparse_to_grammar_strings():
    grammar = Grammar.builtin("expressions")
    codec = GrammarCodec(grammar, max_length=15)
    model = _model(codec, "gru", seed=6)
    z = torch.randn(50, 6, generator=torch.Generator().manual_seed(7)) * 3
    res = beam_search(model, z, 3)
    assert bool(res.finished.all())  # the length mask lets every derivation finish
    assert int(res.beam_finished.sum()) > 50
    for row in res.beams[res.beam_finished]:
        text = grammar.unparse(row.tolist())
        assert grammar.unparse(grammar.parse(text)) == text


def test_decode_state_reorder_matches_replayed_rows():
    """reorder(index) then push == building the selected rows' histories from scratch."""
    codec = _grammar_codec("smiles", 40)
    g = torch.Generator().manual_seed(8)
    state = codec.new_state(4)
    history = []
    for _ in range(6):
        rule = select(torch.randn(4, codec.vocab_size, generator=g), state.allowed())
        state.push(rule)
        history.append(rule)
    index = torch.tensor([2, 0, 2])
    state.reorder(index)
    fresh = codec.new_state(3)
    for rule in history:
        fresh.push(rule[index])
    assert torch.equal(state.ids, fresh.ids)
    assert torch.equal(state.allowed(), fresh.allowed())
    for name in ("open", "here", "cap", "pending"):
        assert torch.equal(getattr(state, name), getattr(fresh, name))
    for name in ("stack", "ptr", "cut", "need"):
        assert torch.equal(getattr(state.state, name), getattr(fresh.state, name))


def test_constrained_log_probs_normalise_over_allowed_only():
    logits = torch.tensor([[1.0, 2.0, 3.0], [float("nan"), 0.0, 5.0]])
    allowed = torch.tensor([[True, False, True], [True, True, False]])
    lp = constrained_log_probs(logits, allowed)
    assert torch.isneginf(lp[0, 1]) and torch.isneginf(lp[1, 2]) and torch.isneginf(lp[1, 0])
    assert torch.allclose(lp.exp().sum(1), torch.ones(2, dtype=torch.float64))
    assert torch.equal(lp.argmax(1), select(logits, allowed))


def test_width_must_be_positive():
    model = _model(_grammar_codec("expressions", 15))
    with pytest.raises(ValueError, match="beam width"):
        beam_search(model, torch.zeros(2, 6), 0)
