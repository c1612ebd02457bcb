"""Chemistry constraint in SMILES grammar decoding (discrete_rae.grammar.chem)."""

from __future__ import annotations

import gzip
import random
import sysconfig
from pathlib import Path

import pytest
import torch
from rdkit import Chem, RDLogger

from discrete_rae.grammar.chem import BRACKET_VALENCE, ORGANIC_CAP, ChemState, chem_tables
from discrete_rae.codecs import GrammarCodec
from discrete_rae.data.molecules import kekulize_smiles
from discrete_rae.grammar import Grammar, select

RDLogger.DisableLog("rdApp.*")

ZINC = Path(__file__).resolve().parents[3] / "shared" / "data" / "zinc" / "valid.txt"


def _valid(s: str | None) -> bool:
    return s is not None and Chem.MolFromSmiles(s) is not None


def _codec(max_length: int = 120, chem: bool = True) -> GrammarCodec:
    codec = GrammarCodec(Grammar.builtin("smiles_compact"), max_length=max_length, chem_mask=chem)
    codec.aromatic = False  # Kekule data
    return codec


def _moses_train() -> list[str]:
    path = Path(sysconfig.get_paths()["purelib"]) / "moses" / "dataset" / "data" / "train.csv.gz"
    if not path.is_file():
        pytest.skip("molsets data not installed")
    with gzip.open(path, "rt") as fh:
        return [line.split(",")[0] for line in fh.read().split("\n")[1:] if line]


def first_blocked(codec: GrammarCodec, smiles: str) -> int | None:
    """Teacher forcing: the first step at which the constrained state forbids the true rule."""
    ids = codec.grammar.parse(smiles)
    state = codec.new_state(1)
    for t, r in enumerate(ids):
        if not bool(state.allowed()[0, r]):
            return t
        state.push(torch.tensor([r]), check=False)
    return None if bool(state.done[0]) else len(ids)


def blocked_rows(codec: GrammarCodec, smiles: list[str]) -> list[tuple[str, int]]:
    """Batched teacher forcing: molecules some of whose true rules the constraints forbid."""
    g = codec.grammar
    seqs = [g.parse(s) for s in smiles]
    L = max(map(len, seqs))
    ids = torch.full((len(seqs), L), g.pad_index)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    state = codec.new_state(len(seqs))
    blocked: dict[int, int] = {}
    for t in range(L):
        ok = state.allowed().gather(1, ids[:, t : t + 1]).squeeze(1)
        for i in (~ok).nonzero().view(-1).tolist():
            blocked.setdefault(i, t)
        state.push(ids[:, t], check=False)
    assert bool(state.done.all())
    return [(smiles[i], t) for i, t in blocked.items()]


# --------------------------------------------------------------------------------- tables


def _largest(smiles_of_k) -> int:
    k = -1
    while k < 9 and Chem.MolFromSmiles(smiles_of_k(k + 1)) is not None:
        k += 1
    return k


def test_capacities_are_rdkits() -> None:
    """The capacity tables are the largest number of single bonds RDKit accepts."""
    for el, cap in ORGANIC_CAP.items():
        assert _largest(lambda k: el + "(C)" * k) == cap, el
    for el, vals in BRACKET_VALENCE.items():
        if el == "H":
            assert _largest(lambda k: "[H]" + "(C)" * k) == 1
            continue
        for q, val in zip(("-", "", "+"), vals):
            for h in range(3):
                hs = "" if h == 0 else "H" + (str(h) if h > 1 else "")
                assert _largest(lambda k: f"[{el}{hs}{q}]" + "(C)" * k) == max(val - h, -1), (el, h, q)


def test_paper_grammar_is_not_supported_and_falls_back_to_the_ring_mask() -> None:
    assert chem_tables(Grammar.builtin("smiles")) is None
    codec = GrammarCodec(Grammar.builtin("smiles"), max_length=50)
    assert not isinstance(codec.new_state(2), ChemState)
    assert isinstance(_codec().new_state(2), ChemState)


# --------------------------------------------------------------------------------- hand-written cases


@pytest.mark.parametrize("bad,why", [
    ("CC(C)(C)(C)C", "carbon with five bonds"),
    ("C12CCC12", "two ring bonds between the same atoms"),
    ("C1C1", "ring bond to the chain neighbour"),
    ("C1CC(C1)C1", "ring left open at the end"),
    ("CC#N=C", "bond order over the valence of N"),
    ("O=C=O=C", "bond order over the valence of O"),
    ("C=1CCCCC#1", "ring closure contradicting the opening's bond (RDKit guesses; blocked as ambiguous)"),
    ("FC(F)(F)(F)F", "element chosen when five bonds are committed"),
    ("[NH2+](C)(C)C", "bracket H count over the valence"),
    ("[08C]", "isotope with a leading zero"),
    ("c1ccccc1", "aromatic atom in Kekule mode"),
])
def test_each_invalidity_class_is_blocked(bad: str, why: str) -> None:
    assert Chem.MolFromSmiles(bad) is None or bad in ("c1ccccc1", "C=1CCCCC#1")
    assert first_blocked(_codec(), bad) is not None, why
    assert first_blocked(_codec(chem=False), bad) is None or bad == "C1CC(C1)C1"


@pytest.mark.parametrize("good", ["CC(C)(C)C", "C1CC2CCC12", "C1=CC=CC=C1", "O=[N+]([O-])C", "C#N",
                                  "CS(=O)(=O)C", "C=1CCCCC=1", "[NH3+]CC", "C1CC1C1CC1", "[2H]C"])
def test_valid_molecules_pass(good: str) -> None:
    assert first_blocked(_codec(), good) is None


def test_steering_a_decoder_that_would_write_an_invalid_molecule() -> None:
    """Logits that spell `CC(C)(C)(C)C` decode to it without the chem mask, to a valid molecule with it."""
    g = Grammar.builtin("smiles_compact")
    ids = g.parse("CC(C)(C)(C)C")
    logits = -torch.arange(g.n_rules, dtype=torch.float).repeat(1, 60, 1) / g.n_rules  # ties by index
    for t, r in enumerate(ids):
        logits[0, t, r] = 10.0
    plain = _codec(60, chem=False)
    assert plain.to_text(*plain.decode_logits(logits)) == ["CC(C)(C)(C)C"]
    out = _codec(60).to_text(*_codec(60).decode_logits(logits))[0]
    assert out != "CC(C)(C)(C)C" and _valid(out)


# --------------------------------------------------------------------------------- reorder


def test_reorder_gathers_every_row_state() -> None:
    """Reordering mid-decode equals decoding the reordered batch from the start."""
    codec = _codec(60)
    B, L, R = 64, 60, codec.vocab_size
    logits = torch.randn(B, L, R, generator=torch.Generator().manual_seed(3))
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(4))
    a, b = codec.new_state(B), codec.new_state(B)
    for t in range(L):
        if t == 17:
            a.reorder(perm)
            b.reorder(torch.arange(B))  # identity keeps everything
        la = logits[:, t] if t < 17 else logits[perm, t]
        a.push(select(la, a.allowed()))
        b.push(select(logits[:, t], b.allowed()))
    assert torch.equal(a.ids, b.ids[perm]) and torch.equal(a.done, b.done[perm])
    assert torch.equal(a.used, b.used[perm]) and torch.equal(a.ring.open, b.ring.open[perm])


# --------------------------------------------------------------------------------- validity by construction


def _random_decodes(n: int, seed: int, max_length: int = 120) -> tuple[list[str | None], torch.Tensor]:
    codec = _codec(max_length)
    logits = torch.randn(n, max_length, codec.vocab_size, generator=torch.Generator().manual_seed(seed))
    state = codec.new_state(n)
    for t in range(max_length):
        state.push(select(logits[:, t], state.allowed()))
        if state.complete:
            break
    return codec.to_text(state.ids, state.done), state.fallback_rows


def _check_random(n: int, seeds: tuple[int, ...]) -> None:
    for seed in seeds:
        texts, fallback = _random_decodes(n, seed)
        bad = [t for t, fb in zip(texts, fallback.tolist()) if not fb and not _valid(t)]
        assert bad == [], bad[:5]  # every row the constraints carried to the end is valid
        assert float(fallback.float().mean()) < 0.02, float(fallback.float().mean())


def _allowed_after(codec: GrammarCodec, prefix: list[str]) -> dict[str, bool]:
    """Allowed-ness of each rule (by its text) after pushing the rules written as ``prefix``."""
    g = codec.grammar
    index = {str(p): r for r, p in enumerate(g.productions)}
    state = codec.new_state(1)
    for text in prefix:
        assert bool(state.allowed()[0, index[text]]), text
        state.push(torch.tensor([index[text]]))
    allowed = state.allowed()[0]
    return {text: bool(allowed[r]) for text, r in index.items()}


@pytest.mark.parametrize("element, tag_ok", [("H", False), ("C", True)])
def test_no_chirality_tag_on_bracket_hydrogen(element: str, tag_ok: bool) -> None:
    """After ``C[H`` the rules writing ``@`` / ``@@`` are masked (RDKit rejects ``C[H@]``); after
    ``C[C`` they are not. Other ways to finish the bracket stay open."""
    codec = _codec(40)
    rules = [str(codec.grammar.productions[r]) for r in codec.grammar.parse(f"C[{element}H0]")]
    prefix = rules[: rules.index(f"symbol -> '{element}'") + 1]  # ... '[' BAI ']', BAI -> symbol BAC, symbol
    ok = _allowed_after(codec, prefix)
    for rule in ("BAC -> chiral BAH", "BAC -> '@'", "BAC -> '@@'"):
        assert ok[rule] is tag_ok, rule
    assert ok["BAC -> 'H' DIGIT"]  # [HH0] / [CH3] remain possible
    assert not Chem.MolFromSmiles("C[H@]") and Chem.MolFromSmiles("C[C@H](F)Cl")


def test_random_logits_decode_to_valid_molecules() -> None:
    _check_random(1000, (0,))


@pytest.mark.slow
def test_random_logits_decode_to_valid_molecules_10k() -> None:
    _check_random(10_000, (0, 1, 2))


# --------------------------------------------------------------------------------- real molecules never blocked


def _kekule(smiles: list[str]) -> list[str]:
    return [k for k in (kekulize_smiles(s)[0] for s in smiles) if k is not None]


def test_real_molecules_are_never_blocked() -> None:
    sample = random.Random(0).sample(_moses_train(), 300)
    assert blocked_rows(_codec(), _kekule(sample)) == []
    if ZINC.is_file():
        zinc = [s for s in ZINC.read_text().split() if s]
        assert blocked_rows(_codec(200), _kekule(random.Random(0).sample(zinc, 300))) == []


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_real_molecules_are_never_blocked_full() -> None:
    """20,000 random MOSES training molecules and all of the ZINC validation file (minutes)."""
    sample = _kekule(random.Random(1).sample(_moses_train(), 20_000))
    for i in range(0, len(sample), 5000):
        assert blocked_rows(_codec(), sample[i : i + 5000]) == []
    if ZINC.is_file():
        zinc = _kekule([s for s in ZINC.read_text().split() if s])
        for i in range(0, len(zinc), 5000):
            assert blocked_rows(_codec(300), zinc[i : i + 5000]) == []


# --------------------------------------------------------------------------------- oracle


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_masks_equal_the_per_sample_reference(seed: int) -> None:
    """Every step's mask of the batched states equals the pure-Python reference's, row by row."""
    _compare_with_reference(seed)


def test_batched_masks_equal_the_reference_on_bracket_hydrogens() -> None:
    """Same, with logits pushed towards bracket atoms, bracket H and chirality tags (the H / tag rule)."""
    texts = _compare_with_reference(5, ("'[' BAI ']'", "symbol -> 'H'", "BAI -> symbol BAC", "'@'", "chiral"))
    assert any("[H" in (t or "") for t in texts)  # the case under test was reached


def _compare_with_reference(seed: int, favour: tuple[str, ...] = ()) -> list[str | None]:
    from discrete_rae.grammar.chem_reference import ReferenceDecoder

    B, L = 24, 70
    codec = _codec(L)
    g = codec.grammar
    chem = chem_tables(g, aromatic=False)
    logits = torch.randn(B, L, g.n_rules, generator=torch.Generator().manual_seed(seed))
    for r, p in enumerate(g.productions):
        if any(f in str(p) for f in favour):
            logits[:, :, r] += 3.0
    state = codec.new_state(B)
    refs = [ReferenceDecoder(g, codec._ring_tables, chem, L) for _ in range(B)]
    for t in range(L):
        allowed = state.allowed()
        for i, ref in enumerate(refs):
            assert ref.allowed() == allowed[i].tolist(), (seed, t, i)
        rule = select(logits[:, t], allowed)
        state.push(rule)
        for i, ref in enumerate(refs):
            ref.push(int(rule[i]))
        if state.complete:
            break
    assert [ref.fell_back for ref in refs] == state.fallback_rows.tolist()
    assert [ref.done for ref in refs] == state.done.tolist()
    return codec.to_text(state.ids, state.done)


# --------------------------------------------------------------------------------- Kekule data


def test_kekulised_loading(tmp_path: Path) -> None:
    from discrete_rae.data.molecules import load_molecules

    src = tmp_path / "mols.smi"
    src.write_text("c1ccccc1O\nCC(=O)Nc1ccc(O)cc1\nc1ccc2[nH]ccc2c1\n")
    plain = load_molecules(str(src), progress=False, cache=False)
    kek = load_molecules(str(src), progress=False, cache=False, kekulize=True)
    assert any(c in "".join(plain.smiles) for c in "cn")
    assert not any(a.GetIsAromatic() for s in kek.smiles for a in Chem.MolFromSmiles(s, sanitize=False).GetAtoms())
    # the same molecules: canonical aromatic SMILES agree
    assert [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in kek.smiles] == list(plain.smiles)
    g = Grammar.builtin("smiles_compact")
    assert [g.unparse(g.parse(s)) for s in kek.smiles] == list(kek.smiles)


def test_kekule_cache_key_differs(tmp_path: Path) -> None:
    from discrete_rae.data.molecules import _load_cache_path

    args = (tmp_path, "0" * 64, None, 10, 0, True)
    assert _load_cache_path(*args) != _load_cache_path(*args, kekulize=True)
    assert _load_cache_path(*args) == _load_cache_path(*args, kekulize=False)


# --------------------------------------------------------------------------------- near the length limit


def _finish_near_the_limit(prefix: list[str], max_length: int, favour: tuple[str, ...]) -> tuple[int, list[str | None]]:
    """Push the rules ``prefix`` (by text) into 64 rows, then decode the rest greedily from random logits
    raised on the rules ``favour`` (towards ring bonds): (rows the constraints left no rule, texts)."""
    codec = _codec(max_length)
    g = codec.grammar
    index = {str(p): r for r, p in enumerate(g.productions)}
    B = 64
    state = codec.new_state(B)
    for text in prefix:
        assert bool(state.allowed()[:, index[text]].all()), text
        state.push(torch.full((B,), index[text]))
    logits = torch.randn(B, max_length, g.n_rules, generator=torch.Generator().manual_seed(0))
    for r, p in enumerate(g.productions):
        if any(f in str(p) for f in favour):
            logits[:, :, r] += 4.0
    for t in range(len(prefix), max_length):
        state.push(select(logits[:, t], state.allowed()))
        if state.complete:
            break
    return int(state.fallback_rows.sum()), codec.to_text(state.ids, state.done)


@pytest.mark.parametrize("max_length", [7, 8])
def test_a_ring_owed_with_no_ring_open_needs_room_to_close(max_length: int) -> None:
    """``CC`` with ``chain_tail -> branched_atom chain_tail`` pending: ``branched_atom -> atom RB``
    owes a ring digit that can only open a ring, which a later atom must close: two rules more than
    the grammar's minimum. The old length test (open rings minus owed digits, clamped at 0) let it
    through at these limits and the row ran out of rules; now it is masked and every row finishes."""
    prefix = ["smiles -> branched_atom chain_tail", "branched_atom -> 'C'", "chain_tail -> branched_atom chain_tail"]
    fell_back, texts = _finish_near_the_limit(prefix, max_length, ("atom RB", "RB ->", "ringbond ->"))
    assert fell_back == 0 and all(_valid(t) for t in texts), texts[:4]


def test_two_rings_from_one_atom_need_two_distinct_non_neighbour_closers() -> None:
    """``C12`` opens two rings at one atom: they must close at two distinct atoms, neither bonded to
    it, so the cheapest finished string (``C12NS2I1``, ``C12CC1C2``) takes 15 rules. The length test
    now counts those atoms (an ``atom`` pushed without ring bonds, or the first atom of a chain or
    branch of the opener itself, is no closer): at max_length 14 the second ring bond is masked
    (the old test let it through, and every row then ran out of rules); from 15 on, rows decoded
    from random logits raised on branches all finish valid without a fallback."""
    prefix = ["smiles -> branched_atom chain_tail", "branched_atom -> atom RB", "atom -> 'C'",
              "RB -> ringbond RB_tail", "ringbond -> '1'", "RB_tail -> '2'"]
    assert not _allowed_after(_codec(14), prefix[:3])["RB -> ringbond RB_tail"]
    assert _allowed_after(_codec(14), prefix[:3])["RB -> '1'"]  # one ring still fits
    for max_length in (15, 16, 17):
        fell_back, texts = _finish_near_the_limit(prefix, max_length, ("atom BB", "BB ->", "branch ->"))
        assert fell_back == 0 and all(_valid(t) for t in texts), (max_length, texts[:4])
    codec = _codec(15)
    assert len(codec.grammar.parse("C12NS2I1")) == 15 and first_blocked(codec, "C12NS2I1") is None
