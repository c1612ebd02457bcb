"""Tests of discrete_rae.grammar: grammar files, parsing (exact vs nltk), unparsing, decoding."""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import random
import sysconfig
from pathlib import Path

import nltk
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nltk.grammar import Nonterminal

from discrete_rae.grammar import DecodeResult, Grammar, GrammarError, ParseResult, select


def _shared_dir() -> Path:
    env = os.environ.get("DISCRETE_RAE_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


ZINC = _shared_dir() / "data" / "zinc" / "valid.txt"
EQUATIONS = _shared_dir() / "data" / "grammarvae" / "equation2_15_dataset.txt"
MOSES = Path(sysconfig.get_paths()["purelib"]) / "moses" / "dataset" / "data" / "train.csv.gz"

needs_zinc = pytest.mark.skipif(not ZINC.is_file(), reason=f"{ZINC} not available")
needs_equations = pytest.mark.skipif(not EQUATIONS.is_file(), reason=f"{EQUATIONS} not available")
needs_moses = pytest.mark.skipif(not MOSES.is_file(), reason=f"{MOSES} not available (pip install --no-deps molsets)")

# hand-picked SMILES covering every extension of the grammar (no data files needed)
EDGE_SMILES = [
    "CCO",
    "Clc1ccc(Br)cc1I",
    "C/C=C\\C",  # backslash bond
    "F/C=C(\\F)/Cl",
    "C1CC2CC3CC4CC5CC6CC7CC8CC9CCCCC9C8C7C6C5C4C3C2C1",  # ring closure 9
    "C%10CC%10",  # two-digit ring closure
    "C=%11CC%11",  # bond + two-digit ring closure
    "[H]N=c1cc[nH]cc1",  # explicit hydrogen atom
    "[13CH3]C[2H]",  # isotopes
    "[10B]C",  # isotope with digit 0
    "C[C@@H](N)C(=O)[O-]",
    "C[C@H]1CC[NH2+]CC1",
    "[NH3+]CC[S@@](=O)c1ccccc1",
    "O=[N+]([O-])c1cccs1",
    "C#N",
    "c1cc[o+]cc1",
    "[P@@](C)(C)(C)C",
    "C[N-]S(=O)(=O)C",
    "CC(C)(C)C(=O)C(Oc1ccc(Cl)cc1)n1ccnc1",
]


def _read(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        lines = [line.strip() for line in fh]
    return [s for s in lines if s and s != "SMILES"]


def _nltk_ids(g: Grammar, text: str, parser: nltk.ChartParser | None = None) -> list[int] | None:
    parser = parser or nltk.ChartParser(g.cfg)
    tree = next(parser.parse(g.tokenize(text)), None)
    return None if tree is None else [g.productions.index(p) for p in tree.productions()]


@pytest.fixture(scope="module")
def smiles() -> Grammar:
    return Grammar.builtin("smiles")


@pytest.fixture(scope="module")
def expr() -> Grammar:
    return Grammar.builtin("expressions")


@pytest.fixture(scope="module")
def zinc() -> list[str]:
    if not ZINC.is_file():
        pytest.skip(f"{ZINC} not available")
    return _read(ZINC)


# ----------------------------------------------------------------------------- grammar files


def test_smiles_grammar_structure(smiles: Grammar) -> None:
    assert smiles.n_rules == len(smiles.productions) == 79
    assert len(smiles.nonterminals) == 23
    assert smiles.start == "smiles"
    assert smiles.max_length == 300
    assert smiles.joiner == ""
    assert smiles.pad_index == smiles.n_rules - 1
    pad = smiles.productions[-1]
    assert pad.lhs() == Nonterminal("Nothing") and pad.rhs() == (Nonterminal("None"),)
    for name in ["chain", "branched_atom", "bracket_atom", "BAI", "BAC", "BAH", "BACH", "ringbond", "RB", "BB"]:
        assert name in smiles.nonterminals
    # the backslash bond is ONE character (the classic escaping bug makes it two)
    assert "\\" in smiles.terminals and "\\\\" not in smiles.terminals
    assert "%" in smiles.terminals and "9" in smiles.terminals and "0" in smiles.terminals
    # productions are in nltk's order
    cfg = nltk.CFG.fromstring(smiles.text)
    assert list(cfg.productions()) == smiles.productions


def test_expression_grammar_structure(expr: Grammar) -> None:
    assert expr.n_rules == 12
    assert expr.nonterminals == ["S", "T", "Nothing"]
    assert expr.start == "S"
    assert expr.max_length == 15
    assert expr.joiner == " "
    assert expr.pad_index == 11
    assert "sin(" in expr.terminals and "exp(" in expr.terminals


def test_builtin_equals_file_and_hash_ignores_comments(smiles: Grammar) -> None:
    text = smiles.text
    stripped = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    g2 = Grammar.from_string("# a different comment\n" + stripped, max_length=300)
    assert g2.hash == smiles.hash
    changed = Grammar.from_string(stripped.replace("'Br'", "'Br' | 'Si'"), max_length=300)
    assert changed.hash != smiles.hash


def test_from_file_and_unknown_builtin(tmp_path: Path) -> None:
    path = tmp_path / "tiny.cfg"
    path.write_text("# max_length: 9\n# joiner: \" \"\nS -> 'a' S | 'b'\nNothing -> None\n")
    g = Grammar.from_file(path)
    assert g.name == "tiny" and g.max_length == 9 and g.skip_whitespace
    assert g.parse(" a a  b ") == [0, 0, 1] and g.unparse([0, 0, 1]) == "a a b"
    with pytest.raises(GrammarError, match="no builtin grammar"):
        Grammar.builtin("nope")


def test_max_length_header_and_override() -> None:
    g = Grammar.builtin("smiles", max_length=50)
    assert g.max_length == 50
    with pytest.raises(GrammarError, match="max_length"):
        Grammar.from_string("S -> 'a'\nNothing -> None")
    g = Grammar.from_string("# max_length: 7\n# joiner: \"-\"\nS -> 'a' S | 'b'\nNothing -> None")
    assert g.max_length == 7 and g.joiner == "-"
    assert g.unparse(g.parse("aab")) == "a-a-b"


def test_state_dict_and_pickle_roundtrip(smiles: Grammar) -> None:
    g2 = Grammar.from_state_dict(smiles.state_dict())
    assert g2.hash == smiles.hash and g2.max_length == smiles.max_length
    g3 = pickle.loads(pickle.dumps(smiles))
    assert g3.parse("c1ccccc1O") == smiles.parse("c1ccccc1O")
    bad = dict(smiles.state_dict(), hash="0" * 64)
    with pytest.raises(GrammarError, match="hash"):
        Grammar.from_state_dict(bad)


def test_masks_and_lhs(smiles: Grammar, expr: Grammar) -> None:
    for g in (smiles, expr):
        R, A = g.n_rules, len(g.nonterminals)
        assert g.masks.shape == (A, R) and g.masks.dtype == torch.bool
        assert g.lhs.shape == (R,) and g.lhs.dtype == torch.long
        for r, p in enumerate(g.productions):
            a = g.nonterminals.index(p.lhs().symbol())
            assert int(g.lhs[r]) == a
            assert g.masks[a, r]
        assert torch.equal(g.masks.sum(0), torch.ones(R, dtype=torch.long))  # one LHS per rule
        nothing = g.nonterminals.index("Nothing")
        assert g.masks[nothing].nonzero().flatten().tolist() == [g.pad_index]
    # hand-checked row: the ring-bond rules
    ring = smiles.nonterminals.index("ringbond")
    rows = [str(smiles.productions[r]) for r in smiles.masks[ring].nonzero().flatten().tolist()]
    assert rows == [
        "ringbond -> DIGIT",
        "ringbond -> bond DIGIT",
        "ringbond -> '%' DIGIT DIGIT",
        "ringbond -> bond '%' DIGIT DIGIT",
    ]


def test_lhs_masks(smiles: Grammar) -> None:
    ids = torch.full((2, 40), smiles.pad_index, dtype=torch.long)
    seq = smiles.parse("CC(=O)O")
    ids[0, : len(seq)] = torch.tensor(seq)
    m = smiles.lhs_masks(ids)
    assert m.shape == (2, 40, smiles.n_rules)
    for t, r in enumerate(seq):
        assert m[0, t, r]  # the true rule is allowed by its own LHS row
        assert torch.equal(m[0, t], smiles.masks[smiles.lhs[r]])
    assert m[1].sum(-1).eq(1).all() and m[1, :, smiles.pad_index].all()


def test_undefined_symbol_rules_never_allowed(caplog: pytest.LogCaptureFixture) -> None:
    text = "S -> A | A klass\nA -> 'a'\nNothing -> None\n"
    with caplog.at_level(logging.WARNING, logger="discrete_rae.grammar"):
        g = Grammar.from_string(text, max_length=10)
    assert not g.masks[:, 1].any()
    assert "never allowed" in caplog.text
    assert g.parse("a") == [0, 2]


def test_padding_rule_appended_when_missing() -> None:
    g = Grammar.from_string("S -> 'a' S | 'b'", max_length=5)
    assert g.n_rules == 3 and g.pad_index == 2
    assert g.productions[2].lhs().symbol() == "Nothing"


# ----------------------------------------------------------------------------- tokenizing


def test_tokenize(smiles: Grammar, expr: Grammar) -> None:
    assert smiles.tokenize("Clc1ccc(Br)cc1") == ["Cl", "c", "1", "c", "c", "c", "(", "Br", ")", "c", "c", "1"]
    assert smiles.tokenize("[C@@H]") == ["[", "C", "@@", "H", "]"]
    assert smiles.tokenize("C\\C") == ["C", "\\", "C"]
    assert expr.tokenize("sin(x)+1") == ["sin(", "x", ")", "+", "1"]
    assert expr.tokenize("  sin( x )  +  1 ") == ["sin(", "x", ")", "+", "1"]
    with pytest.raises(GrammarError, match=r"'\?' at position 4"):
        smiles.tokenize("C1CC?C1")
    with pytest.raises(GrammarError, match="position 1"):
        smiles.tokenize("C C")  # no whitespace in SMILES
    with pytest.raises(GrammarError, match=r"'y' at position 6"):
        expr.tokenize("  x + y")


# ----------------------------------------------------------------------------- parsing


def test_edge_smiles_match_nltk_and_roundtrip(smiles: Grammar) -> None:
    parser = nltk.ChartParser(smiles.cfg)
    for s in EDGE_SMILES:
        ids = smiles.parse(s)
        assert ids == _nltk_ids(smiles, s, parser), s
        assert smiles.unparse(ids) == s


def test_lr_table_info(smiles: Grammar, expr: Grammar) -> None:
    # the expression grammar is LALR(1); the SMILES grammar has the bond conflicts
    assert expr.lr_info["n_conflicts"] == 0
    assert smiles.lr_info["n_conflicts"] > 0 and not smiles.lr_info["cyclic"]


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("C(", "no parse"),
        ("(C)", "no parse"),
        ("C)", "no parse"),
        ("", "empty"),
        ("C=", "no parse"),
        ("[C", "no parse"),
        ("C1CC!", "not a token"),
    ],
)
def test_parse_errors(smiles: Grammar, bad: str, reason: str) -> None:
    with pytest.raises(GrammarError, match=reason) as info:
        smiles.parse(bad)
    assert isinstance(info.value, ValueError)
    assert repr(bad) in str(info.value)


def test_parse_too_long() -> None:
    g = Grammar.builtin("smiles", max_length=20)
    assert len(g.parse("CCC")) <= 20
    with pytest.raises(GrammarError, match="longer than max_length 20"):
        g.parse("CCCCCCCCCC")


def test_ambiguous_grammar_falls_back_to_nltk(caplog: pytest.LogCaptureFixture) -> None:
    g = Grammar.from_string("S -> S '+' S | 'x'\nNothing -> None", max_length=50)
    with caplog.at_level(logging.WARNING, logger="discrete_rae.grammar"):
        for s in ["x", "x+x", "x+x+x", "x+x+x+x"]:
            assert g.parse(s) == _nltk_ids(g, s)
    assert "chart parser" in caplog.text


def test_cyclic_and_epsilon_grammars_match_nltk() -> None:
    cases = {
        "S -> A | 'x'\nA -> S | 'y'\nNothing -> None": ["x", "y"],
        "S -> B S 'x' | 'y'\nB -> \nNothing -> None": ["y", "yx", "yxx"],
        "S -> 'a' S 'b' | \nNothing -> None": ["ab", "aabb"],
        "S -> A 'c' | B 'd'\nA -> 'a' 'a'\nB -> 'a' 'a'\nNothing -> None": ["aac", "aad"],
    }
    for text, inputs in cases.items():
        g = Grammar.from_string(text, max_length=50)
        for s in inputs:
            assert g.parse(s) == _nltk_ids(g, s), (text, s)


def test_expression_sample_matches_nltk(expr: Grammar) -> None:
    rng = random.Random(3)
    parser = nltk.ChartParser(expr.cfg)
    n = 0
    while n < 100:
        ids = expr.random_derivation(rng)
        if ids is None:
            continue
        s = expr.unparse(ids)
        assert expr.parse(s) == _nltk_ids(expr, s, parser) == ids
        n += 1


@needs_zinc
def test_zinc_sample_matches_nltk(smiles: Grammar, zinc: list[str]) -> None:
    rng = random.Random(0)
    sample = rng.sample(zinc, 25) + [s for s in zinc if "\\" in s][:5]
    parser = nltk.ChartParser(smiles.cfg)
    for s in sample:
        assert smiles.parse(s) == _nltk_ids(smiles, s, parser), s


@needs_zinc
def test_zinc_sample_roundtrip(smiles: Grammar, zinc: list[str]) -> None:
    sample = random.Random(1).sample(zinc, 3000)
    res = smiles.parse_many(sample, progress=False)
    assert not res.failures
    for k, i in enumerate(res.ok_index):
        assert smiles.unparse(res.sequence(k)) == sample[i]


@needs_zinc
@pytest.mark.slow
def test_zinc_all_parse_and_roundtrip(smiles: Grammar, zinc: list[str]) -> None:
    assert len(zinc) == 24445
    res = smiles.parse_many(zinc, workers=2, progress=False)
    assert res.failures == []
    assert len(res) == len(zinc)
    assert int(res.lengths.max()) <= smiles.max_length
    out = smiles.unparse_many(res.padded(smiles.max_length), res.lengths)
    assert out == zinc


@needs_zinc
@pytest.mark.slow
def test_zinc_larger_sample_matches_nltk(smiles: Grammar, zinc: list[str]) -> None:
    parser = nltk.ChartParser(smiles.cfg)
    for s in random.Random(7).sample(zinc, 500):
        assert smiles.parse(s) == _nltk_ids(smiles, s, parser), s


@needs_moses
@pytest.mark.slow
def test_moses_random_20k(smiles: Grammar) -> None:
    lines = _read(MOSES)
    assert len(lines) > 1_000_000
    sample = random.Random(0).sample(lines, 20_000)  # never the file head: it is not shuffled
    res = smiles.parse_many(sample, workers=2, progress=False)
    assert res.failures == []
    for k in range(0, len(res), 97):
        assert smiles.unparse(res.sequence(k)) == sample[res.ok_index[k]]
    explicit_h = [s for s in lines if "[H]" in s][:20]
    assert explicit_h and not smiles.parse_many(explicit_h, progress=False).failures


@needs_equations
def test_expression_dataset_sample(expr: Grammar) -> None:
    lines = _read(EQUATIONS)
    sample = random.Random(0).sample(lines, 5000)
    res = expr.parse_many(sample, progress=False)
    assert not res.failures
    assert int(res.lengths.max()) <= 15
    assert expr.unparse_many(res.padded(15), res.lengths) == sample


@needs_equations
@pytest.mark.slow
def test_expression_dataset_all(expr: Grammar) -> None:
    lines = _read(EQUATIONS)
    res = expr.parse_many(lines, progress=False)
    assert not res.failures and len(res) == len(lines) == 100_000
    assert int(res.lengths.max()) <= 15


def test_parse_many_result(smiles: Grammar) -> None:
    texts = ["CCO", "C1CC", "c1ccccc1", "C(", "N#N"] * 3
    res = smiles.parse_many(texts, progress=False, chunk_size=4)
    assert isinstance(res, ParseResult)
    assert res.ids.dtype == np.uint8
    assert res.n_inputs == 15
    assert res.ok_index.tolist() == [i for i, s in enumerate(texts) if s not in ("C(",)]
    # "C1CC" parses (ring closure pairing is semantic, not syntactic)
    assert [f[0] for f in res.failures] == [3, 8, 13]
    assert all(f[1] == "C(" and "no parse" in f[2] for f in res.failures)
    for k, i in enumerate(res.ok_index):
        assert res.sequence(k).tolist() == smiles.parse(texts[i])
    pad = res.padded()
    assert pad.shape == (12, int(res.lengths.max())) and pad.dtype == np.uint8
    assert (pad[0, res.lengths[0] :] == smiles.pad_index).all()
    with pytest.raises(ValueError):
        res.padded(3)


def test_parse_many_workers_match(smiles: Grammar) -> None:
    texts = EDGE_SMILES * 20 + ["C(("]
    one = smiles.parse_many(texts, workers=1, progress=False, chunk_size=50)
    two = smiles.parse_many(texts, workers=2, progress=False, chunk_size=50)
    assert np.array_equal(one.ids, two.ids)
    assert np.array_equal(one.lengths, two.lengths)
    assert np.array_equal(one.ok_index, two.ok_index)
    assert one.failures == two.failures and len(one.failures) == 1


# ----------------------------------------------------------------------------- unparsing


def test_unparse_errors_and_padding(smiles: Grammar) -> None:
    ids = smiles.parse("CCO")
    assert smiles.unparse(ids + [smiles.pad_index] * 5) == "CCO"
    assert smiles.unparse(torch.tensor(ids)) == "CCO"
    with pytest.raises(GrammarError, match="incomplete"):
        smiles.unparse(ids[:-1])
    with pytest.raises(GrammarError, match="cannot expand"):
        smiles.unparse([ids[1]] + ids[1:])
    with pytest.raises(GrammarError, match="padding rule"):
        smiles.unparse(ids[:3] + [smiles.pad_index] + ids[3:])
    rows = np.full((3, 30), smiles.pad_index)
    rows[0, : len(ids)] = ids
    rows[1, : len(ids) - 2] = ids[:-2]
    assert smiles.unparse_many(rows) == ["CCO", None, None]  # all-pad row: no derivation
    assert smiles.unparse_many(torch.tensor(rows), lengths=[len(ids), 5, 0]) == ["CCO", None, None]


# ----------------------------------------------------------------------------- property tests

_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(seed=st.integers(0, 2**32 - 1), fit=st.booleans())
def test_random_expression_derivations_roundtrip(seed: int, fit: bool) -> None:
    g = Grammar.builtin("expressions")
    ids = g.random_derivation(random.Random(seed), fit=fit)
    if ids is None:
        assert not fit
        return
    assert len(ids) <= g.max_length
    s = g.unparse(ids)
    assert g.parse(s) == ids
    assert g.unparse(g.parse(s)) == s


@_SETTINGS
@given(seed=st.integers(0, 2**32 - 1), limit=st.integers(5, 300))
def test_random_smiles_derivations_roundtrip(seed: int, limit: int) -> None:
    g = Grammar.builtin("smiles")
    ids = g.random_derivation(np.random.default_rng(seed), max_length=limit, fit=True)
    assert ids is not None and len(ids) <= limit
    s = g.unparse(ids)
    assert g.parse(s) == ids  # unambiguous grammar + consistent tokenizer


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_smiles_derivations_match_nltk(seed: int) -> None:
    g = Grammar.builtin("smiles")
    ids = g.random_derivation(random.Random(seed), max_length=40, fit=True)
    assert ids is not None
    assert _nltk_ids(g, g.unparse(ids)) == ids


def test_random_derivation_unfit_can_fail() -> None:
    g = Grammar.builtin("smiles")
    rng = random.Random(0)
    outs = [g.random_derivation(rng, max_length=12) for _ in range(200)]
    assert any(o is None for o in outs)
    assert all(o is None or len(o) <= 12 for o in outs)


_SMILES_CHARS = "CNOSPFIBrcnos()[]=#-+/\\@%H0123456789l. ?"


@_SETTINGS
@given(text=st.text(alphabet=_SMILES_CHARS, max_size=40))
def test_random_strings_raise_only_grammar_error(text: str) -> None:
    g = Grammar.builtin("smiles")
    try:
        ids = g.parse(text)
    except GrammarError:
        return
    assert g.unparse(ids) == text


@_SETTINGS
@given(text=st.lists(st.sampled_from(list("x123+*/() ") + ["sin(", "exp(", "s", "e"]), max_size=30).map("".join))
def test_random_expression_strings_raise_only_grammar_error(text: str) -> None:
    g = Grammar.builtin("expressions")
    try:
        ids = g.parse(text)
    except GrammarError:
        return
    assert g.parse(g.unparse(ids)) == ids


# ----------------------------------------------------------------------------- decoding


def _reference_decode(g: Grammar, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample greedy decoding with a Python list as the stack (independent reference)."""
    B, L, _ = logits.shape
    x = logits.double().numpy()
    masks = g.masks.numpy()
    index = {name: i for i, name in enumerate(g.nonterminals)}
    pushes = [
        [] if r == g.pad_index else [index[s.symbol()] for s in reversed(p.rhs()) if isinstance(s, Nonterminal)]
        for r, p in enumerate(g.productions)
    ]
    ids = np.full((B, L), g.pad_index)
    finished = np.zeros(B, dtype=bool)
    for b in range(B):
        stack = [index[g.start]]
        for t in range(L):
            r = int(np.where(masks[stack.pop()], x[b, t], -np.inf).argmax())
            ids[b, t] = r
            stack.extend(pushes[r])
            if not stack:
                finished[b] = True
                break
            if len(stack) > L - t - 1:  # can no longer finish: cut
                break
    return torch.from_numpy(ids), torch.from_numpy(finished)


def _drive_state(g: Grammar, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, L, _ = logits.shape
    state = g.decoder_state(B, max_length=L)
    for t in range(L):
        state.push(select(logits[:, t], state.allowed()))
    return state.ids, state.finished, state.lengths


@pytest.mark.parametrize("name, L", [("smiles", 300), ("smiles", 40), ("expressions", 15)])
def test_batched_greedy_decoding_equals_reference(name: str, L: int) -> None:
    g = Grammar.builtin(name)
    logits = torch.randn(64, L, g.n_rules, generator=torch.Generator().manual_seed(L))
    ref_ids, ref_fin = _reference_decode(g, logits)
    res = g.decode_logits(logits)
    assert isinstance(res, DecodeResult)
    assert res.ids.shape == (64, L) and res.ids.dtype == torch.long
    assert torch.equal(res.ids, ref_ids)
    assert torch.equal(res.finished, ref_fin)
    assert torch.equal(res.lengths, (ref_ids != g.pad_index).sum(1))
    ids, fin, lengths = _drive_state(g, logits)
    assert torch.equal(ids, ref_ids) and torch.equal(fin, ref_fin) and torch.equal(lengths, res.lengths)
    # finished rows are valid derivations that parse back to themselves
    strings = g.unparse_many(res.ids, res.lengths)
    for b in range(64):
        if res.finished[b]:
            assert strings[b] is not None
            assert g.parse(strings[b]) == res.ids[b, : res.lengths[b]].tolist()
        else:
            assert strings[b] is None


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), L=st.integers(1, 60), ties=st.booleans())
def test_batched_decoding_property(seed: int, L: int, ties: bool) -> None:
    g = Grammar.builtin("smiles")
    gen = torch.Generator().manual_seed(seed)
    if ties:  # many equal logits: both must take the first allowed maximum
        logits = torch.randint(0, 3, (16, L, g.n_rules), generator=gen).float()
    else:
        logits = torch.randn(16, L, g.n_rules, generator=gen)
    ref_ids, ref_fin = _reference_decode(g, logits)
    res = g.decode_logits(logits)
    assert torch.equal(res.ids, ref_ids) and torch.equal(res.finished, ref_fin)


def test_unfinished_samples_are_reported() -> None:
    g = Grammar.builtin("smiles")
    logits = torch.zeros(4, 6, g.n_rules)
    # favour "chain -> chain branched_atom" forever: can never finish
    grow = g.productions.index(nltk.grammar.Production(Nonterminal("chain"), [Nonterminal("chain"), Nonterminal("branched_atom")]))
    logits[:2, :, grow] = 10.0
    res = g.decode_logits(logits)
    assert not res.finished[:2].any()
    assert g.unparse_many(res.ids, res.lengths)[:2] == [None, None]
    # length limit below the minimal derivation (5 rules): nothing can finish, and rows
    # are cut as soon as the pending symbols outnumber the steps left
    res = g.decode_logits(torch.randn(3, 2, g.n_rules))
    assert not res.finished.any()
    chain_rules = g.masks[g.nonterminals.index("chain")]
    assert res.ids[:, 0].eq(0).all() and chain_rules[res.ids[:, 1]].all()
    assert res.lengths.tolist() == [2, 2, 2]
    res = g.decode_logits(torch.randn(3, 1, g.n_rules))
    assert not res.finished.any() and res.ids[:, 0].eq(0).all()


def test_decode_state_api(expr: Grammar) -> None:
    state = expr.decoder_state(3)
    assert state.ids.shape == (3, 0)
    allowed = state.allowed()
    assert allowed.shape == (3, expr.n_rules)
    assert torch.equal(allowed[0], expr.masks[expr.nonterminals.index("S")])
    # S -> T, T -> 'x' finishes in two steps
    s_to_t = expr.productions.index(nltk.grammar.Production(Nonterminal("S"), [Nonterminal("T")]))
    t_to_x = expr.productions.index(nltk.grammar.Production(Nonterminal("T"), ["x"]))
    state.push(torch.full((3,), s_to_t))
    state.push(torch.full((3,), t_to_x))
    assert state.done.all() and state.complete
    assert state.allowed().nonzero()[:, 1].eq(expr.pad_index).all()  # only pad once done
    assert expr.unparse_many(state.ids) == ["x", "x", "x"]
    with pytest.raises(ValueError, match="not allowed"):
        state.push(torch.full((3,), t_to_x))


def test_sampling_decoding_is_valid_and_reproducible(smiles: Grammar) -> None:
    logits = torch.randn(32, 120, smiles.n_rules, generator=torch.Generator().manual_seed(5))
    a = smiles.decode_logits(logits, greedy=False, temperature=0.7, generator=torch.Generator().manual_seed(1))
    b = smiles.decode_logits(logits, greedy=False, temperature=0.7, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.ids, b.ids)
    assert not torch.equal(a.ids, smiles.decode_logits(logits).ids)  # sampling differs from greedy
    strings = smiles.unparse_many(a.ids, a.lengths)
    for i in range(32):
        if a.finished[i]:
            assert smiles.parse(strings[i]) == a.ids[i, : a.lengths[i]].tolist()
        else:
            assert strings[i] is None
    assert a.finished.any()


def test_select_is_safe() -> None:
    allowed = torch.tensor(
        [[True, True, False], [False, True, True], [True, False, True], [False, False, True], [False, True, True]]
    )
    nan, inf = float("nan"), float("inf")
    logits = torch.tensor(
        [
            [1.0, 2.0, 9.0],  # best allowed is 1
            [nan, nan, 0.0],  # NaN never wins over a number
            [-inf, 5.0, -inf],  # all allowed -inf: first allowed
            [inf, 0.0, 1.0],  # forbidden +inf ignored
            [1.0, nan, nan],  # all allowed NaN: first allowed
        ]
    )
    assert select(logits, allowed).tolist() == [1, 2, 0, 2, 1]
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(40):
        pick = select(logits, allowed, greedy=False, temperature=0.5, generator=gen)
        assert allowed[torch.arange(5), pick].all()
        seen.add(int(pick[4]))
    assert seen == {1, 2}  # uniform among the allowed rules when all are NaN
    hot = select(torch.tensor([[0.0, 50.0, 0.0]]).repeat(100, 1), torch.ones(100, 3, dtype=torch.bool), greedy=False)
    assert (hot == 1).all()
    with pytest.raises(ValueError):
        select(logits, allowed, greedy=False, temperature=0.0)


# ----------------------------------------------------------------------------- compact grammars

@pytest.mark.parametrize("base", ["smiles", "expressions"])
def test_compact_grammar_has_no_unit_or_left_recursive_rules(base: str) -> None:
    g = Grammar.builtin(f"{base}_compact")
    for p in g.productions[: g.pad_index]:
        rhs = p.rhs()
        assert not (len(rhs) == 1 and isinstance(rhs[0], Nonterminal)), p  # no unit rule
        assert not (rhs and rhs[0] == p.lhs()), p  # no immediate left recursion
    assert g.pad_index == g.n_rules - 1 and g.start == Grammar.builtin(base).start
    assert g.max_length == Grammar.builtin(base).max_length


def test_compact_smiles_roundtrips_and_halves_the_derivations(smiles: Grammar) -> None:
    compact = Grammar.builtin("smiles_compact")
    for text in EDGE_SMILES:
        ids = compact.parse(text)
        assert compact.unparse(ids) == text
        assert len(ids) < 0.75 * len(smiles.parse(text)), text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), base=st.sampled_from(["smiles", "expressions"]),
       forward=st.booleans())
def test_compact_grammar_generates_the_same_language(seed: int, base: str, forward: bool) -> None:
    """A random string of either grammar parses in the other and unparses to itself."""
    a, b = Grammar.builtin(base, max_length=300), Grammar.builtin(f"{base}_compact", max_length=300)
    source, target = (a, b) if forward else (b, a)
    text = source.unparse(source.random_derivation(random.Random(seed), max_length=60, fit=True))
    assert target.unparse(target.parse(text)) == text


def test_compact_grammar_rejects_unit_cycles() -> None:
    from discrete_rae.grammar import compact_grammar_text

    with pytest.raises(GrammarError, match="cycle of unit rules"):
        compact_grammar_text("# max_length: 5\nS -> A | 'x'\nA -> S\nNothing -> None\n")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), name=st.sampled_from(["expressions", "expressions_compact", "smiles_compact"]))
def test_length_mask_always_finishes_and_changes_only_doomed_decodes(seed: int, name: str) -> None:
    """Greedy decoding of random logits: with the length mask every row finishes within
    max_length; rows that finish without it are decoded identically (the mask only removes
    rules after which the derivation could not finish)."""
    g = Grammar.builtin(name)
    L = 15 if name.startswith("expr") else 30
    logits = torch.randn(200, L, g.n_rules, generator=torch.Generator().manual_seed(seed))
    out = {}
    for masked in (False, True):
        state = g.decoder_state(200, max_length=L, length_mask=masked)
        for t in range(L):
            state.push(select(logits[:, t], state.allowed()))
        out[masked] = (state.ids, state.done)
    ids_masked, done_masked = out[True]
    assert bool(done_masked.all())
    for row in ids_masked:
        text = g.unparse(row.tolist())
        assert g.unparse(g.parse(text)) == text
    ids_plain, done_plain = out[False]
    assert torch.equal(ids_plain[done_plain], ids_masked[done_plain])
