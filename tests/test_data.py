"""Tests of the data loaders (molecules, expressions) and the encoding cache."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import logging
import os
import random
import urllib.error
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from discrete_rae.data import molecule_sources as src_mod  # the download seams (_urlopen, ZINC250K_MD5)
from discrete_rae.data import molecules as mol_mod
from discrete_rae.data.cache import encode_cached, pad_sequences, texts_sha256
from discrete_rae.data.errors import DataError, LoadReport
from discrete_rae.data.expressions import (
    PAPER_LENGTH_PROFILE,
    DerivationSampler,
    load_expressions,
)
from discrete_rae.data.molecules import (
    MAX_LINE_CHARS,
    default_data_dir,
    load_molecules,
    moses_path,
    moses_split,
)
from discrete_rae.grammar import Grammar


def _shared() -> Path | None:
    env = os.environ.get("DISCRETE_RAE_SHARED")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    return path if path.is_dir() else None


def _moses_available() -> bool:
    try:
        moses_path("test")
        return True
    except DataError:
        return False


needs_moses = pytest.mark.skipif(not _moses_available(), reason="molsets data files not installed")


@pytest.fixture(scope="module")
def smiles_grammar() -> Grammar:
    return Grammar.builtin("smiles")


@pytest.fixture(scope="module")
def expr_grammar() -> Grammar:
    return Grammar.builtin("expressions")


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    """Never write into the checkout's datasets/ folder."""
    monkeypatch.setenv("DISCRETE_RAE_DATA", str(tmp_path / "data"))


def _canon(smiles: str) -> str:
    from rdkit import Chem

    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


def _one_line_error(exc: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


# ------------------------------------------------------------------------------ locations


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DISCRETE_RAE_DATA", str(tmp_path / "elsewhere"))
    assert default_data_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("DISCRETE_RAE_DATA")
    monkeypatch.chdir(tmp_path)
    assert default_data_dir() == tmp_path / "datasets"


def test_moses_located_without_importing_moses():
    import sys

    if not _moses_available():
        pytest.skip("molsets data files not installed")
    assert moses_path("train").name == "train.csv.gz"
    assert "moses" not in sys.modules  # located with find_spec / sys.path only


# ------------------------------------------------------------------------------ nci5k / moses


def test_nci5k_loads_canonical_distinct():
    data = load_molecules("nci5k", progress=False)
    rep = data.report
    assert rep.records == 4999
    assert rep.kept == len(data.smiles) == len(set(data.smiles))
    # RDKit rejects a few (hypervalent metals); the rest collapse to ~4.9k distinct structures
    assert 4800 <= len(data.smiles) <= 4999
    assert rep.kept + rep.duplicates + rep.n_rejected == rep.records
    assert set(rep.rejected) <= {"valence", "aromaticity", "sanitization", "invalid_smiles"}
    for s in random.Random(0).sample(data.smiles, 50):
        assert _canon(s) == s
    assert "nci5k" in rep.summary()


@needs_moses
def test_moses_subset_is_seeded_random_not_head():
    a = load_molecules("moses:test", n=300, seed=0, progress=False, cache=False)
    b = moses_split("test", n=300, seed=0, progress=False, cache=False)
    c = load_molecules("moses:test", n=300, seed=1, progress=False, cache=False)
    assert a.smiles == b.smiles  # reproducible
    assert len(a.smiles) == 300 == len(set(a.smiles))
    assert len(set(a.smiles) & set(c.smiles)) < 30  # another seed, another sample
    with gzip.open(moses_path("test"), "rt") as fh:
        lines = [line.strip() for line in itertools.islice(fh, 1, None)]
    head = {_canon(s) for s in lines[:300]}
    assert len(set(a.smiles) & head) < 10  # not the head of the (unshuffled) file
    # a sample of the split, canonicalised
    pool = set(lines)
    assert sum(s in pool for s in a.smiles) >= 290  # almost all MOSES strings are already canonical
    assert a.report.records == len(lines) and a.report.examined >= 300


@pytest.mark.slow
@needs_moses
def test_moses_train_subset_and_split_helper():
    data = moses_split("train", n=40, seed=3, progress=False, cache=False)
    assert len(data) == 40
    with gzip.open(moses_path("train"), "rt") as fh:
        head = {line.strip() for line in itertools.islice(fh, 1, 5001)}
    assert len(set(data.smiles) & head) <= 2
    assert data.report.records == 1_584_663


def test_moses_unknown_split():
    with pytest.raises(DataError) as exc:
        moses_split("validation")
    _one_line_error(exc, "validation", "test_scaffolds")
    with pytest.raises(DataError):
        load_molecules("moses:valid", progress=False)


# ------------------------------------------------------------------------------ files


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_file_with_bad_lines_reports_counts(tmp_path):
    long_line = "C" * (MAX_LINE_CHARS + 1)
    lines = [
        "CCO ethanol",
        "OCC",  # duplicate of ethanol after canonicalisation
        "",
        "C1CC",  # unclosed ring: syntax
        "C(C)(C)(C)(C)C",  # five-valent carbon
        "c1cccc1",  # cannot be kekulised
        "not_a_smiles",
        long_line,
        "c1ccccc1 benzene",
        "[Na+].[Cl-]",
    ]
    f = _write(tmp_path / "mols.smi", "\n".join(lines) + "\n")
    data = load_molecules(str(f), progress=False)
    rep = data.report
    assert data.smiles == ["CCO", "c1ccccc1", "[Cl-].[Na+]"]
    assert rep.records == 9 and rep.blank == 1
    assert rep.duplicates == 1
    assert rep.changed == 1  # [Na+].[Cl-] -> [Cl-].[Na+]; CCO and c1ccccc1 were canonical already
    assert rep.rejected == Counter(invalid_smiles=2, valence=1, aromaticity=1, too_long=1)
    assert rep.examples["too_long"][0].startswith("line 8:")
    assert "10,001 chars" in rep.examples["too_long"][0]
    assert rep.examples["valence"] == ["line 5: 'C(C)(C)(C)(C)C'"]
    summary = rep.summary()
    assert "5 rejected" in summary and "invalid_smiles" in summary and "line 4: 'C1CC'" in summary


def test_examples_are_capped(tmp_path):
    f = _write(tmp_path / "bad.txt", "CC\n" + "\n".join(f"X{i}" for i in range(20)) + "\n")
    rep = load_molecules(str(f), progress=False).report
    assert rep.rejected["invalid_smiles"] == 20
    assert len(rep.examples["invalid_smiles"]) == 5


def test_csv_with_quoted_newlines_and_smiles_header(tmp_path):
    # the layout of ZINC-250k's CSV: a newline inside the quoted SMILES field
    text = (
        "smiles,logP,qed,SAS\n"
        '"CC(C)(C)c1ccc2occ(CC(=O)Nc3ccccc3F)c2c1\n",5.05,0.70,2.08\n'
        '"C[C@@H]1CC(Nc2cncc(-c3nncn3C)c2)C[C@@H](C)C1\n",3.11,0.93,3.43\n'
    )
    f = _write(tmp_path / "zinc_like.csv", text)
    data = load_molecules(str(f), progress=False)
    assert data.smiles == [
        "CC(C)(C)c1ccc2occ(CC(=O)Nc3ccccc3F)c2c1",
        "C[C@@H]1CC(Nc2cncc(-c3nncn3C)c2)C[C@@H](C)C1",
    ]
    assert data.report.records == 2


def test_column_selection_and_wrong_column(tmp_path):
    f = _write(tmp_path / "table.csv", "id,mol,score\n1,CCO,0.5\n2,c1ccccc1,0.7\n")
    assert load_molecules(str(f), column="mol", progress=False).smiles == ["CCO", "c1ccccc1"]
    assert load_molecules(str(f), column=1, progress=False).smiles == ["CCO", "c1ccccc1"]
    with pytest.raises(DataError) as exc:
        load_molecules(str(f), column="SMILES", progress=False)
    _one_line_error(exc, str(f), "'SMILES'", "'id', 'mol', 'score'")
    # no smiles header: the first column is used and the error says how to pick another
    with pytest.raises(DataError) as exc:
        load_molecules(str(f), progress=False)
    _one_line_error(exc, "no line is a valid molecule", "column")
    g = _write(tmp_path / "plain.smi", "CCO\nCCN\n")
    with pytest.raises(DataError) as exc:
        load_molecules(str(g), column="smiles", progress=False)
    _one_line_error(exc, "no header")
    with pytest.raises(DataError) as exc:
        load_molecules(str(g), column=2, progress=False)
    _one_line_error(exc, "out of range")


def test_smi_header_and_gzip_detection(tmp_path):
    f = tmp_path / "x.smi.gz"
    with gzip.open(f, "wt") as fh:
        fh.write("SMILES\tname\nOCC\tethanol\nC1=CC=CC=C1\tbenzene\n")
    data = load_molecules(str(f), progress=False)
    assert data.smiles == ["CCO", "c1ccccc1"]
    # gzip content under a plain name is detected too
    g = tmp_path / "y.txt"
    g.write_bytes(gzip.compress(b"CCO\n"))
    assert load_molecules(str(g), progress=False).smiles == ["CCO"]
    h = _write(tmp_path / "fake.csv.gz", "smiles\nCCO\n")
    with pytest.raises(DataError) as exc:
        load_molecules(str(h), progress=False)
    _one_line_error(exc, "fake.csv.gz", "gzip")


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("empty.smi", b"", "empty"),
        ("blank.smi", b"\n   \n\n", "empty"),
        ("header_only.csv", b"smiles,name\n", "empty"),
        ("binary.smi", b"\x00\x01\x02\x89PNG\x00" * 10, "binary"),
        ("garbage.txt", "\n".join(f"word{i}" for i in range(10)).encode(), "no line is a valid molecule"),
        ("only_long.smi", b"C" * (MAX_LINE_CHARS + 5) + b"\n", "no line is a valid molecule"),
    ],
)
def test_unusable_files_raise_one_line_data_error(tmp_path, name, content, needle):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(DataError) as exc:
        load_molecules(str(f), progress=False)
    _one_line_error(exc, str(f), needle)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError) as exc:
        load_molecules(str(tmp_path / "nope.smi"), progress=False)
    _one_line_error(exc, "nope.smi", "no such file", "moses")
    with pytest.raises(DataError) as exc:
        load_molecules(str(tmp_path), progress=False)
    _one_line_error(exc, "directory")
    assert isinstance(exc.value, ValueError)


def test_relative_name_resolved_in_data_dir(tmp_path):
    d = tmp_path / "mydata"
    d.mkdir()
    _write(d / "set.smi", "CCO\n")
    assert load_molecules("set.smi", data_dir=d, progress=False).smiles == ["CCO"]


def test_subset_of_file_and_workers_do_not_change_results(tmp_path):
    rng = random.Random(0)
    atoms = ["C", "N", "O", "c1ccccc1", "C(=O)", "S", "Cl"]
    lines = ["".join(rng.choice(atoms) for _ in range(rng.randint(1, 8))) for _ in range(600)]
    lines[::37] = ["bad((("] * len(lines[::37])
    f = _write(tmp_path / "many.smi", "\n".join(lines) + "\n")
    one = load_molecules(str(f), workers=1, progress=False)
    two = load_molecules(str(f), workers=2, progress=False)
    assert one.smiles == two.smiles and one.report.to_dict() == two.report.to_dict()
    sub1 = load_molecules(str(f), n=50, seed=5, workers=1, progress=False)
    sub2 = load_molecules(str(f), n=50, seed=5, workers=2, progress=False)
    assert sub1.smiles == sub2.smiles and len(sub1) == 50
    assert sub1.smiles != one.smiles[:50]
    assert set(sub1.smiles) <= set(one.smiles)
    # asking for more than the file holds: all of it, in file order
    assert load_molecules(str(f), n=10_000, progress=False).smiles == one.smiles


def test_canonicalize_false_keeps_strings(tmp_path):
    f = _write(tmp_path / "raw.smi", "OCC\nOCC\nC1=CC=CC=C1\n")
    data = load_molecules(str(f), canonicalize=False, progress=False)
    assert data.smiles == ["OCC", "C1=CC=CC=C1"]
    assert data.report.changed == 0
    assert load_molecules(str(f), progress=False).smiles == ["CCO", "c1ccccc1"]


def test_load_cache_reuses_result_and_report(tmp_path, monkeypatch):
    f = _write(tmp_path / "c.smi", "OCC\nC1CC\nc1ccccc1\nCCO\n[Na+].[Cl-]\n")
    data_dir = tmp_path / "dd"
    first = load_molecules(str(f), data_dir=data_dir, cache=True, progress=False)
    cached = sorted(p.name for p in (data_dir / "cache").iterdir())
    assert len(cached) == 2 and cached[0].endswith(".json") and cached[1].endswith(".txt.gz")

    def boom(*args, **kwargs):
        raise AssertionError("the source was processed again")

    monkeypatch.setattr(mol_mod, "_process", boom)
    second = load_molecules(str(f), data_dir=data_dir, cache=True, progress=False)
    assert second.smiles == first.smiles
    a, b = first.report.to_dict(), second.report.to_dict()
    assert b["notes"][-1].startswith("loaded from cache")
    b["notes"] = b["notes"][:-1]
    assert a == b
    # another seed / n, or a changed file: not the same entry
    with pytest.raises(AssertionError, match="processed again"):
        load_molecules(str(f), n=2, seed=1, data_dir=data_dir, cache=True, progress=False)
    _write(f, "CCN\n")
    with pytest.raises(AssertionError, match="processed again"):
        load_molecules(str(f), data_dir=data_dir, cache=True, progress=False)
    # damaged entry: read again
    monkeypatch.undo()
    _write(f, "OCC\nC1CC\nc1ccccc1\nCCO\n[Na+].[Cl-]\n")
    gz = next((data_dir / "cache").glob("*.txt.gz"))
    gz.write_bytes(b"not gzip")
    assert load_molecules(str(f), data_dir=data_dir, cache=True, progress=False).smiles == first.smiles
    # small files are not cached by default
    other = tmp_path / "dd2"
    load_molecules(str(f), data_dir=other, progress=False)
    assert not (other / "cache").exists()


def test_rdkit_messages_are_silenced(tmp_path, capfd):
    f = _write(tmp_path / "noisy.smi", "CCO\nC(C)(C)(C)(C)C\nC1CC\n")
    load_molecules(str(f), progress=False)
    err = capfd.readouterr().err
    assert "Explicit valence" not in err and "SMILES Parse Error" not in err


# ------------------------------------------------------------------------------ zinc250k


def test_zinc250k_offline_says_how_to_supply(monkeypatch, tmp_path):
    calls = []

    def offline(url, timeout):
        calls.append(url)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(src_mod, "_urlopen", offline)
    with pytest.raises(DataError) as exc:
        load_molecules("zinc250k", data_dir=tmp_path, progress=False)
    _one_line_error(exc, "zinc250k", "--dataset", mol_mod.ZINC250K_FILENAME, "unreachable")
    assert calls and not (tmp_path / "zinc250k" / mol_mod.ZINC250K_FILENAME).exists()
    assert not [p for p in (tmp_path / "zinc250k").iterdir()]  # no partial download left


def test_zinc250k_download_cut_mid_stream_keeps_the_network_error_and_no_partial_file(monkeypatch, tmp_path):
    class Cut(io.BytesIO):
        def read(self, size: int = -1) -> bytes:
            if self.tell():
                raise TimeoutError("the read timed out")
            return super().read(8)

    monkeypatch.setattr(src_mod, "_urlopen", lambda url, timeout: Cut(b"smiles\nCCO\n" * 10))
    with pytest.raises(TimeoutError, match="^the read timed out$"):  # not relabelled as a file error
        src_mod._download("https://example.invalid/x.csv", tmp_path / "x.csv")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError) as exc:
        load_molecules("zinc250k", data_dir=tmp_path, progress=False)
    _one_line_error(exc, "zinc250k", "the read timed out")
    assert list((tmp_path / "zinc250k").iterdir()) == []


def test_zinc250k_download_records_and_verifies_sha256(monkeypatch, tmp_path):
    payload = b'smiles,logP,qed,SAS\n"CCO\n",0.1,0.4,1.0\n"c1ccccc1\n",1.7,0.4,1.0\n'
    monkeypatch.setattr(src_mod, "_urlopen", lambda url, timeout: io.BytesIO(payload))
    # a download whose md5 is not the published one is refused and not kept
    with pytest.raises(DataError) as exc:
        load_molecules("zinc250k", data_dir=tmp_path, progress=False)
    _one_line_error(exc, "md5")
    target = tmp_path / "zinc250k" / mol_mod.ZINC250K_FILENAME
    assert not target.exists()
    monkeypatch.setattr(src_mod, "ZINC250K_MD5", hashlib.md5(payload).hexdigest())
    data = load_molecules("zinc250k", data_dir=tmp_path, progress=False)
    assert data.smiles == ["CCO", "c1ccccc1"]
    record = target.with_name(target.name + ".sha256")
    assert record.read_text().split()[0] == hashlib.sha256(payload).hexdigest()
    # later uses read the local copy (no network) and verify it
    monkeypatch.setattr(src_mod, "_urlopen", lambda url, timeout: pytest.fail("downloaded again"))
    assert load_molecules("zinc250k", data_dir=tmp_path, progress=False).smiles == data.smiles
    target.write_bytes(payload.replace(b"CCO", b"CCN"))
    with pytest.raises(DataError) as exc:
        load_molecules("zinc250k", data_dir=tmp_path, progress=False)
    _one_line_error(exc, "sha256", "changed")


# ------------------------------------------------------------------------------ expressions


def test_generated_expressions_distinct_short_reproducible(expr_grammar):
    a = load_expressions("generated", n=2000, seed=0, grammar=expr_grammar)
    b = load_expressions("generated", n=2000, seed=0, grammar=expr_grammar)
    c = load_expressions("generated", n=2000, seed=1, grammar=expr_grammar)
    assert a.expressions == b.expressions
    assert len(a.expressions) == 2000 == len(set(a.expressions))
    assert len(set(a.expressions) & set(c.expressions)) < 100
    lengths = Counter()
    for e in a.expressions:
        ids = expr_grammar.parse(e)
        assert len(ids) <= 14
        assert expr_grammar.unparse(ids) == e  # canonical spelling
        lengths[len(ids)] += 1
    assert dict(lengths) == a.report.lengths
    assert a.report.kept == 2000


def test_generated_length_profile_matches_paper(expr_grammar):
    n = 10_000
    data = load_expressions("generated", n=n, seed=0, grammar=expr_grammar)
    total = sum(PAPER_LENGTH_PROFILE.values())
    got = data.report.lengths
    keys = set(got) | set(PAPER_LENGTH_PROFILE)
    tv = 0.5 * sum(abs(got.get(k, 0) / n - PAPER_LENGTH_PROFILE.get(k, 0) / total) for k in keys)
    assert tv < 0.02, got
    # uniform rule choices give a very different profile (the reason for the default)
    naive = load_expressions("generated", n=2000, seed=0, grammar=expr_grammar, profile="rules")
    frac14 = naive.report.lengths.get(14, 0) / 2000
    assert frac14 < 0.4 and naive.report.rejected["too_long"] > 0


def test_paper_profile_constant_matches_shared_file(expr_grammar):
    shared = _shared()
    f = shared / "data" / "grammarvae" / "equation2_15_dataset.txt" if shared else None
    if f is None or not f.is_file():
        pytest.skip("shared data not available")
    lines = f.read_text().splitlines()
    sample = random.Random(0).sample(lines, 5000)
    hist = Counter(len(expr_grammar.parse(line)) for line in sample)
    total = sum(PAPER_LENGTH_PROFILE.values())
    assert total == len(lines) == 100_000
    for k, v in PAPER_LENGTH_PROFILE.items():
        assert abs(hist[k] / 5000 - v / total) < 0.02, (k, hist)
    assert set(hist) <= set(PAPER_LENGTH_PROFILE)


def test_derivation_counts_match_enumeration(expr_grammar):
    sampler = DerivationSampler(expr_grammar, 8)
    rules_by_lhs: dict[str, list[int]] = {}
    for r, p in enumerate(expr_grammar.productions):
        if r != expr_grammar.pad_index:
            rules_by_lhs.setdefault(p.lhs().symbol(), []).append(r)

    def enumerate_all(stack: tuple, budget: int):
        """All complete leftmost derivations of the pending symbols within budget."""
        if not stack:
            yield []
            return
        if budget <= 0:
            return
        top, rest = stack[0], stack[1:]
        for r in rules_by_lhs[top]:
            kids = tuple(s.symbol() for s in expr_grammar.productions[r].rhs() if not isinstance(s, str))
            for tail in enumerate_all(kids + rest, budget - 1):
                yield [r] + tail

    brute = Counter(len(d) for d in enumerate_all((expr_grammar.start,), 8))
    assert sampler.counts() == dict(brute) == {2: 4, 4: 60, 6: 1044, 8: 19980}
    # sampling within a length is uniform: the 60 derivations of 4 rules, 6000 draws
    rng = random.Random(0)
    seen = Counter(tuple(sampler.sample(rng, 4)) for _ in range(6000))
    assert len(seen) == 60
    chi2 = sum((c - 100) ** 2 / 100 for c in seen.values())
    assert chi2 < 100  # 59 degrees of freedom: p < 1e-3 beyond ~95
    for d in seen:
        expr_grammar.unparse(list(d))


def test_too_many_distinct_requested(expr_grammar):
    with pytest.raises(DataError) as exc:
        load_expressions("generated", n=100, seed=0, grammar=expr_grammar, max_rules=4, profile="uniform")
    _one_line_error(exc, "64")


def test_expression_file_normalised_and_bad_lines_counted(tmp_path, expr_grammar):
    lines = [
        "sin(x)+3*x",
        "sin( x ) + 3 * x",  # same after normalisation
        "x + ( 2 )",
        "cos( x )",  # unknown token
        "x + + 1",  # no parse
        "",
        "exp( x ) / 1",
    ]
    f = _write(tmp_path / "expr.txt", "\n".join(lines) + "\n")
    data = load_expressions(str(f), n=None, grammar=expr_grammar)
    assert data.expressions == ["sin( x ) + 3 * x", "x + ( 2 )", "exp( x ) / 1"]
    rep = data.report
    assert rep.records == 6 and rep.blank == 1 and rep.duplicates == 1
    assert rep.rejected == Counter(unknown_token=1, no_parse=1)
    assert rep.examples["unknown_token"] == ["line 4: 'cos( x )'"]
    sub = load_expressions(str(f), n=2, seed=0, grammar=expr_grammar)
    assert len(sub) == 2 and set(sub.expressions) <= set(data.expressions)
    with pytest.raises(DataError) as exc:
        load_expressions(str(_write(tmp_path / "none.txt", "cos( x )\nfoo\n")), grammar=expr_grammar)
    _one_line_error(exc, "no line is an expression")
    with pytest.raises(DataError):
        load_expressions(str(tmp_path / "absent.txt"), grammar=expr_grammar)


# ------------------------------------------------------------------------------ cache


def test_pad_sequences():
    flat = np.array([1, 2, 3, 4, 5, 6], dtype=np.uint8)
    out = pad_sequences(flat, np.array([2, 0, 4]), 5, 9)
    assert out.tolist() == [[1, 2, 9, 9, 9], [9, 9, 9, 9, 9], [3, 4, 5, 6, 9]]
    with pytest.raises(ValueError):
        pad_sequences(flat, np.array([2, 0, 4]), 3, 9)


def test_texts_hash_is_unambiguous():
    assert texts_sha256(["ab", "c"]) != texts_sha256(["a", "bc"])
    assert texts_sha256(["a", "b"]) != texts_sha256(["b", "a"])
    assert texts_sha256([]) != texts_sha256([""])


def test_encode_cache_round_trip_and_reuse(tmp_path, smiles_grammar, monkeypatch, caplog):
    texts = ["CCO", "c1ccccc1", "CC.O", "CC(=O)Nc1ccc(O)cc1", "C[C@@H](N)C(=O)O", "C1CC"]
    cache_dir = tmp_path / "cache"
    calls = Counter()
    real = Grammar.parse_many

    def counting(self, *args, **kwargs):
        calls["parse_many"] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Grammar, "parse_many", counting)
    first = encode_cached(smiles_grammar, texts, cache_dir, progress=False)
    assert calls["parse_many"] == 1 and not first.from_cache
    assert first.ids.dtype == np.uint8 and first.lengths.dtype == np.int16
    assert first.ids.shape == (len(first.texts), smiles_grammar.max_length)
    # '.' is not in the grammar; 'C1CC' is still a valid string of the grammar (not a molecule)
    assert [i for i, _, _ in first.failures] == [2]
    assert first.failures[0][1] == "CC.O" and "'.'" in first.failures[0][2]
    assert first.texts == [t for i, t in enumerate(texts) if i != 2]
    assert first.ok_index.tolist() == [0, 1, 3, 4, 5]
    for row, n, text in zip(first.ids, first.lengths, first.texts):
        assert (row[n:] == smiles_grammar.pad_index).all()
        assert smiles_grammar.unparse(row.tolist()) == text
    files = sorted(p.name for p in cache_dir.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npz")
    assert not [p for p in cache_dir.iterdir() if p.name.endswith(".tmp")]
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in cache_dir.iterdir()} == {0o666 & ~umask}  # not mkstemp's 0600
    meta = json.loads(next(cache_dir.glob("*.json")).read_text())
    assert meta["n_ok"] == 5 and meta["n_failed"] == 1 and meta["grammar_hash"] == smiles_grammar.hash
    mtimes = {p.name: p.stat().st_mtime_ns for p in cache_dir.iterdir()}

    with caplog.at_level(logging.INFO, logger="discrete_rae.data.cache"):
        second = encode_cached(smiles_grammar, texts, cache_dir, progress=False)
    assert calls["parse_many"] == 1  # not parsed again
    assert second.from_cache and "loaded from cache" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in cache_dir.iterdir()} == mtimes
    assert np.array_equal(first.ids, second.ids) and np.array_equal(first.lengths, second.lengths)
    assert second.texts == first.texts and second.failures == first.failures
    assert np.array_equal(second.ok_index, first.ok_index)

    narrow = encode_cached(smiles_grammar, texts, cache_dir, progress=False, width="longest")
    assert narrow.ids.shape == (5, int(first.lengths.max()))
    assert np.array_equal(narrow.ids, first.ids[:, : narrow.ids.shape[1]])

    # other inputs -> other entry; no cache -> always parsed
    encode_cached(smiles_grammar, texts[::-1], cache_dir, progress=False)
    assert calls["parse_many"] == 2 and len(list(cache_dir.glob("*.npz"))) == 2
    encode_cached(smiles_grammar, texts, cache_dir, progress=False, use_cache=False)
    assert calls["parse_many"] == 3


def test_encode_cache_damaged_entry_is_rebuilt(tmp_path, expr_grammar):
    texts = ["x + 1", "sin( x )", "x * x"]
    first = encode_cached(expr_grammar, texts, tmp_path, progress=False)
    assert first.ids.dtype == np.uint8 and first.ids.shape == (3, expr_grammar.max_length)
    npz = next(tmp_path.glob("*.npz"))
    npz.write_bytes(npz.read_bytes()[:50])  # truncated
    again = encode_cached(expr_grammar, texts, tmp_path, progress=False)
    assert not again.from_cache and np.array_equal(again.ids, first.ids)
    third = encode_cached(expr_grammar, texts, tmp_path, progress=False)
    assert third.from_cache


def test_encode_cache_default_dir_follows_env(tmp_path, monkeypatch, expr_grammar):
    monkeypatch.setenv("DISCRETE_RAE_DATA", str(tmp_path / "dd"))
    enc = encode_cached(expr_grammar, ["x"], None, progress=False)
    assert enc.path is not None and enc.path.parent == tmp_path / "dd" / "cache"


def test_report_to_dict_is_json():
    rep = LoadReport(source="s")
    rep.reject("x", "line 1", "y" * 200)
    json.dumps(rep.to_dict())
    assert "200 chars" in rep.examples["x"][0]


# ------------------------------------------------------------------------------ real data


def test_shared_zinc_sample_loads_and_encodes(tmp_path, smiles_grammar):
    shared = _shared()
    f = shared / "data" / "zinc" / "valid.txt" if shared else None
    if f is None or not f.is_file():
        pytest.skip("shared data not available")
    data = load_molecules(str(f), n=400, seed=0, progress=False, workers=1, cache=False)
    assert len(data) == 400 and data.report.records == 24_445
    enc = encode_cached(smiles_grammar, data.smiles, tmp_path, progress=False)
    assert len(enc.failures) == 0 and len(enc) == 400


@pytest.mark.slow
def test_full_zinc_valid_encodes(tmp_path, smiles_grammar):
    shared = _shared()
    f = shared / "data" / "zinc" / "valid.txt" if shared else None
    if f is None or not f.is_file():
        pytest.skip("shared data not available")
    data = load_molecules(str(f), progress=False, workers=2)
    assert len(data) == 24_445
    enc = encode_cached(smiles_grammar, data.smiles, tmp_path, workers=2, progress=False)
    assert not enc.failures


@pytest.mark.slow
def test_full_paper_profile_generation(expr_grammar):
    data = load_expressions("generated", n=100_000, seed=0, grammar=expr_grammar)
    assert len(set(data.expressions)) == 100_000
    total = sum(PAPER_LENGTH_PROFILE.values())
    for k, v in PAPER_LENGTH_PROFILE.items():
        assert abs(data.report.lengths.get(k, 0) / 100_000 - v / total) < 0.005


@pytest.mark.slow
@needs_moses
def test_moses_test_split_full():
    data = moses_split("test", progress=False, workers=2)
    assert data.report.records == 176_074
    assert len(data) > 175_000
