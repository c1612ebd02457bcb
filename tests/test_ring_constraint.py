"""Ring-closure bookkeeping in SMILES grammar decoding (discrete_rae.grammar.ring)."""

from __future__ import annotations

import pytest
import torch
from rdkit import Chem

from discrete_rae.codecs import GrammarCodec
from discrete_rae.grammar import Grammar, select
from discrete_rae.grammar.ring import ring_tables

CANONICAL = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in (
    "CCO", "c1ccccc1", "C1CC2CCC1C2", "O=C(Nc1ccc2c(c1)OCO2)c1ccccc1", "C[C@H]1CC[NH2+]CC1",
    "C1CC2CC3CC4CC5CC6CC7CC8CC9CCCCC9C8C7C6C5C4C3C2C1", "CC(C)(C)C(=O)C(Oc1ccc(Cl)cc1)n1ccnc1",
    "C=C1CCC(=O)C1=O", "C1=CC=CC=C1", "c1ccc2c(c1)ccc1ccccc12")]


def _greedy(codec: GrammarCodec, ids: list[int]) -> str | None:
    """Greedy decoding of logits that put one rule first at each step (others by index)."""
    R, L = codec.vocab_size, codec.max_length
    logits = -torch.arange(R, dtype=torch.float).repeat(1, L, 1) / R  # [1, L, R] ties broken by index
    for t, r in enumerate(ids):
        logits[0, t, r] = 10.0
    state = codec.new_state(1)
    for t in range(L):
        state.push(select(logits[:, t], state.allowed()))
        if state.complete:
            break
    return codec.to_text(state.ids, state.done)[0]


@pytest.mark.parametrize("name", ["smiles", "smiles_compact"])
def test_canonical_molecules_are_never_blocked(name: str) -> None:
    """Every step of the derivation of a canonical SMILES is allowed by the ring mask."""
    g = Grammar.builtin(name)
    codec = GrammarCodec(g, max_length=200, ring_mask=True)
    for smiles in CANONICAL:
        state = codec.new_state(1)
        for r in g.parse(smiles):
            assert bool(state.allowed()[0, r]), (smiles, g.productions[r])
            state.push(torch.tensor([r]))
        assert bool(state.done[0]) and g.unparse(state.ids[0].tolist()) == smiles


@pytest.mark.parametrize("text,forbidden", [("C1CCCCC", "unclosed ring"), ("C1CCCCC2", "wrong digit"),
                                            ("C1CC1C2CC2C3CC3", "skipped the lowest free digit")])
def test_ring_mask_steers_away_from_the_mistake(text: str, forbidden: str) -> None:
    """A decoder that would write `text` (syntactically fine, chemically not) is steered to a
    string whose rings pair up; without the mask it writes `text` unchanged."""
    g = Grammar.builtin("smiles_compact")
    ids = g.parse(text)
    plain = _greedy(GrammarCodec(g, max_length=40, ring_mask=False), ids)
    assert plain == text
    fixed = _greedy(GrammarCodec(g, max_length=40, ring_mask=True), ids)
    assert fixed != text, forbidden
    if forbidden != "skipped the lowest free digit":
        assert Chem.MolFromSmiles(fixed) is not None, fixed


def test_expression_grammar_has_no_ring_tables() -> None:
    assert ring_tables(Grammar.builtin("expressions")) is None
    assert ring_tables(Grammar.builtin("smiles_compact")) is not None


def _first_blocked(codec: GrammarCodec, text: str) -> int | None:
    state = codec.new_state(1)
    for t, r in enumerate(codec.grammar.parse(text)):
        if not bool(state.allowed()[0, r]):
            return t
        state.push(torch.tensor([r]))
    return None


def test_a_digit_closed_at_an_atom_is_not_reused_there() -> None:
    """RDKit writes ``C23`` (close 2, open 3), not ``C22``: the lowest free digit skips digits
    closed at the current atom (Kekule MOSES molecule)."""
    g = Grammar.builtin("smiles_compact")
    codec = GrammarCodec(g, max_length=120, ring_mask=True, chem_mask=False)
    assert _first_blocked(codec, "O=C1N(CCO)C2=CCCCC23C2=C(CCN13)C1=CC=CC=C1N2") is None


@pytest.mark.parametrize("text", ["C1", "CC(C1)C", "C1CC1C(C2)C"])
def test_a_ring_digit_needs_a_later_partner(text: str) -> None:
    """A ring bond promised where no later atom could close it is blocked before its digit."""
    codec = GrammarCodec(Grammar.builtin("smiles_compact"), max_length=60, ring_mask=True, chem_mask=False)
    assert _first_blocked(codec, text) is not None
    assert _first_blocked(GrammarCodec(Grammar.builtin("smiles_compact"), max_length=60, ring_mask=False), text) is None
