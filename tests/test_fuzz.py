"""Property-based fuzzing of the input surfaces (10,000 generated inputs in all).

Each target may only succeed or raise its own one-line error type:
``Grammar.parse`` -> GrammarError, ``load_molecules`` -> DataError (otherwise every record is
counted as kept, duplicate or rejected), ``expr_eval.evaluate`` -> ExpressionError.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from discrete_rae.data.errors import DataError
from discrete_rae.data.molecules import load_molecules
from discrete_rae.expr_eval import ExpressionError, evaluate
from discrete_rae.grammar import Grammar, GrammarError

SMILES_GRAMMAR = Grammar.builtin("smiles")
SEEDS = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "C[C@@H](N)C(=O)O", "[Na+].[Cl-]", "C1CC2CCC1C2",
         "O=C(O)c1ccc(Br)cc1", "N#Cc1ccccc1", "C/C=C/C", "[2H]C([2H])([2H])O", "c1ccc2[nH]ccc2c1"]
SMILES_CHARS = "CNOSPFIBrcnosp()[]=#@+-\\/%.0123456789Hl*:~$ \t\n\x00é"
EXPR_TOKENS = ["x", "1", "2", "3", "+", "*", "/", "(", ")", "sin(", "exp(", "-", " ", "9", "?", "sin", ""]

FAST = settings(deadline=None, derandomize=False, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _mutations(seeds: list[str], chars: str) -> st.SearchStrategy[str]:
    """A seed with random characters inserted, deleted or replaced (near-miss inputs)."""

    @st.composite
    def mutate(draw):
        text = list(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(0, len(text)))
            op = draw(st.sampled_from(["insert", "delete", "replace"]))
            char = draw(st.sampled_from(chars))
            if op == "insert":
                text.insert(pos, char)
            elif text:
                text[min(pos, len(text) - 1): min(pos, len(text) - 1) + 1] = [] if op == "delete" else [char]
        return "".join(text)

    return mutate()


SMILES_TEXT = st.one_of(
    _mutations(SEEDS, SMILES_CHARS),
    st.text(alphabet=SMILES_CHARS, max_size=60),
    st.text(max_size=40),
    st.sampled_from(SEEDS).map(lambda s: s * 8),
)


@settings(FAST, max_examples=4500)
@given(SMILES_TEXT)
def test_smiles_grammar_parser_only_raises_grammar_error(text):
    try:
        rules = SMILES_GRAMMAR.parse(text)
    except GrammarError as err:
        assert str(err).strip() and "\n" not in str(err)
        return
    assert rules and all(0 <= r < SMILES_GRAMMAR.n_rules for r in rules)
    assert len(rules) <= SMILES_GRAMMAR.max_length
    assert SMILES_GRAMMAR.parse(SMILES_GRAMMAR.unparse(rules)) == rules  # round trip


EXPRESSIONS = st.one_of(
    st.lists(st.sampled_from(EXPR_TOKENS), max_size=40).map("".join),
    st.lists(st.sampled_from(EXPR_TOKENS), max_size=40).map(" ".join),
    st.text(max_size=30),
    st.integers(0, 400).map(lambda d: "sin(" * d + "x" + ")" * d),
    st.integers(0, 400).map(lambda d: "(" * d + "x"),
)
GRID = np.linspace(-10, 10, 7)


@settings(FAST, max_examples=4000)
@given(EXPRESSIONS)
def test_expression_evaluator_only_raises_expression_error(text):
    try:
        values = evaluate(text, GRID)
    except ExpressionError as err:
        assert str(err).strip() and "\n" not in str(err)
        return
    assert isinstance(values, np.ndarray) and values.shape == GRID.shape and values.dtype == np.float64


LINES = st.lists(st.one_of(SMILES_TEXT, st.just(""), st.sampled_from(SEEDS), st.just("smiles,score")), max_size=12)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(FAST, max_examples=1500)
@given(lines=LINES, suffix=st.sampled_from([".smi", ".csv", ".txt"]), latin1=st.booleans())
def test_smiles_loader_only_raises_data_error(fuzz_dir, lines, suffix, latin1):
    path = fuzz_dir / f"mols{suffix}"
    raw = "\n".join(lines).encode("latin-1" if latin1 else "utf-8", "replace")  # latin-1: not valid UTF-8
    path.write_bytes(raw)
    try:
        data = load_molecules(str(path), progress=False, workers=1)
    except DataError as err:
        assert str(err).strip() and "\n" not in str(err)
        return
    report = data.report
    assert len(data.smiles) == report.kept > 0
    assert report.kept + report.duplicates + report.n_rejected == report.records  # every record counted
    assert report.examined <= report.records
    assert len(set(data.smiles)) == len(data.smiles)


@pytest.mark.parametrize("text", ["(" * 100_000, "sin(" * 5_000 + "x" + ")" * 5_000, "x+" * 50_000 + "x"])
def test_expression_evaluator_survives_huge_inputs(text):
    try:
        evaluate(text, GRID)
    except ExpressionError:
        pass
