"""Decoding constraints in the training likelihood (discrete_rae.grammar.teacher_mask, train_mask)."""

from __future__ import annotations

import gzip
import itertools
import logging
import random
import sysconfig
from pathlib import Path

import pytest
import torch
from rdkit import RDConfig, RDLogger

import discrete_rae.grammar.teacher_mask as tm
from conftest import shared_dir
from discrete_rae.cli import main
from discrete_rae.codecs import GrammarCodec
from discrete_rae.data.molecules import kekulize_smiles
from discrete_rae.errors import GrammarError
from discrete_rae.grammar import Grammar
from discrete_rae.model import SequenceLikelihood

RDLogger.DisableLog("rdApp.*")

N_SAMPLE = 300  # molecules per source: ~3 s of replay each


def _codec(max_length: int = 160, aromatic: bool = False) -> GrammarCodec:
    codec = GrammarCodec(Grammar.builtin("smiles_compact"), max_length=max_length)
    codec.aromatic = aromatic  # False: Kekule data (the default training data)
    return codec


def _ids(codec: GrammarCodec, smiles: list[str], kekulize: bool = True) -> torch.Tensor:
    """[N, max_length] true rule ids of the molecules that kekulise and parse."""
    g = codec.grammar
    seqs = []
    for s in smiles:
        if kekulize:
            s = kekulize_smiles(s)[0]
        try:
            seq = g.parse(s) if s else None
        except GrammarError:  # NCI: elements outside the SMILES grammar's tokens (Hg, ...)
            continue
        if seq is not None and len(seq) <= codec.max_length:
            seqs.append(seq)
    ids = torch.full((len(seqs), codec.max_length), g.pad_index, dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)] = torch.tensor(seq)
    return ids


def _zinc() -> list[str]:
    shared = shared_dir()
    path = shared / "data" / "zinc" / "valid.txt" if shared else None
    if path is None or not path.is_file():
        pytest.skip("shared ZINC data not present")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _moses() -> list[str]:
    path = Path(sysconfig.get_paths()["purelib"]) / "moses" / "dataset" / "data" / "train.csv.gz"
    if not path.is_file():
        pytest.skip("molsets data not installed")
    with gzip.open(path, "rt") as fh:  # the first 100,000 molecules: enough to sample from
        return [line.split(",")[0] for line in itertools.islice(fh, 1, 100_001) if line.strip()]


def _nci() -> list[str]:
    path = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    if not path.is_file():
        pytest.skip("RDKit's NCI set not installed")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("source", [_zinc, _moses, _nci], ids=["zinc", "moses", "nci"])
def test_true_rule_always_allowed_on_real_molecules(source) -> None:
    """Replaying real (kekulised) molecules, the constraints never forbid a true rule."""
    codec = _codec()
    ids = _ids(codec, random.Random(0).sample(source(), N_SAMPLE))
    assert len(ids) >= 0.9 * N_SAMPLE  # most parse (NCI has a few %nn labels / odd charges)
    slots, forbidden = tm.constraint_slots(codec, ids)
    assert forbidden == 0
    mask = tm.slots_to_rules(codec, ids, slots)
    assert bool(mask.gather(2, ids.unsqueeze(2)).all())


def test_mask_is_a_strict_subset_of_the_grammar_mask_with_only_pad_at_padding() -> None:
    codec = _codec()
    ids = _ids(codec, ["CC(=O)OC1=CC=CC=C1C(=O)O", "C1CC2CCC12", "O=[N+]([O-])C", "CCO", "C#N"])
    mask, grammar = tm.constraint_masks(codec, ids), codec.step_mask(ids)
    assert mask.shape == grammar.shape == (*ids.shape, codec.vocab_size)
    assert not bool((mask & ~grammar).any())
    pad = ids == codec.pad_index
    only_pad = torch.zeros(codec.vocab_size, dtype=torch.bool)
    only_pad[codec.pad_index] = True
    assert bool((mask[pad] == only_pad).all())
    # the constraints remove rules at real steps (e.g. ring digits other than the lowest free)
    assert int(mask[~pad].sum()) < int(grammar[~pad].sum())


def test_constrained_loss_is_at_most_the_grammar_loss_for_the_same_logits() -> None:
    codec = _codec()
    ids = _ids(codec, random.Random(1).sample(_moses(), 64))
    logits = torch.randn(*ids.shape, codec.vocab_size, generator=torch.Generator().manual_seed(0)) * 3
    plain = SequenceLikelihood(codec, "grammar").nll(logits, ids)
    constrained = SequenceLikelihood(codec, "constraints").nll(logits, ids)
    assert bool(torch.isfinite(constrained).all())
    assert bool((constrained <= plain + 1e-4).all())
    assert float((plain - constrained).min()) > 0  # every molecule has some constrained step


def test_cache_matches_the_direct_masks_and_computes_each_example_once(monkeypatch) -> None:
    codec = _codec()
    ids = _ids(codec, random.Random(2).sample(_moses(), 40))
    masks = tm.ConstraintMasks(codec)
    masks.warm(ids[:30])
    assert len(masks) == len(set(map(tuple, ids[:30].tolist())))
    expected = tm.constraint_masks(codec, ids[20:])
    calls = []
    real = tm.constraint_slots
    monkeypatch.setattr(tm, "constraint_slots", lambda c, x: calls.append(len(x)) or real(c, x))
    got = masks(ids[20:])  # rows 20..29 cached, 30..39 new: one replay of the 10 new rows
    assert calls == [10] and torch.equal(got, expected)
    assert torch.equal(masks(ids[20:]), expected) and calls == [10]  # all cached now


def test_a_forbidden_true_rule_is_reported_and_allowed(caplog) -> None:
    """Aromatic data: the per-atom aromatic budgets (c: 3) forbid an exocyclic double bond on an
    aromatic carbon (coumarin's c(=O)), a known limit of the aromatic mode. The training mask logs
    it and allows the true rule, so the loss stays finite."""
    codec = _codec(aromatic=True)
    ids = _ids(codec, ["O=c1ccc2ccccc2o1"], kekulize=False)
    with caplog.at_level(logging.WARNING, logger=tm.__name__):
        slots, forbidden = tm.constraint_slots(codec, ids)
    assert forbidden > 0 and "forbids the true rule" in caplog.text
    mask = tm.slots_to_rules(codec, ids, slots)
    assert bool(mask.gather(2, ids.unsqueeze(2)).all())
    nll = SequenceLikelihood(codec, "constraints").nll(torch.zeros(*ids.shape, codec.vocab_size), ids)
    assert bool(torch.isfinite(nll).all())
    # Kekule data, Kekule mode: the same molecule passes
    kek = _codec()
    assert tm.constraint_slots(kek, _ids(kek, ["O=c1ccc2ccccc2o1"]))[1] == 0


@pytest.mark.slow  # ~35 s: data preparation, 4 steps, evaluation
def test_train_mask_constraints_smoke_run_through_the_cli(tmp_path, capsys) -> None:
    argv = ["train", "--domain", "molecules", "--preset", "smoke", "--runs-dir", str(tmp_path), "--data-dir",
            str(tmp_path / "data"), "-q", "--train-mask", "constraints"]
    assert main([*argv, "--model", "grammar_rae", "--run-name", "c"]) == 0
    run = tmp_path / "c"
    assert 'train_mask = "constraints"' in (run / "config.toml").read_text()
    assert "forbids the true rule" not in (run / "train.log").read_text()  # warnings reach the log with -q
    assert (run / "metrics.json").is_file()
    # the option names the grammar codec's mask: a character model rejects it in one line
    assert main([*argv, "--model", "char_rae", "--run-name", "x"]) == 2
    assert "train-mask" in capsys.readouterr().err
