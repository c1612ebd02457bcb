"""Tests for the molecule metrics: Fréchet distance, Tanimoto kernels, MOSES and GuacaMol suites.

Every metric is checked against a brute-force or hand-computed value on small sets.  Tests that
need the MOSES reference files or heavy computation are marked ``slow``; those that need
fcd_torch skip when it is not installed.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator

from discrete_rae.data.errors import DataError
from discrete_rae.metrics import chemnet, moses_data, stats_files
from discrete_rae.metrics import mol_descriptors as md
from discrete_rae.metrics import molecules as mm
from discrete_rae.metrics.frechet import frechet_distance, gaussian_stats, sqrt_psd
from discrete_rae.metrics.similarity import (
    max_tanimoto,
    mean_pairwise_tanimoto,
    morgan_fingerprints,
    nearest_neighbour_within,
    pairwise_tanimoto_row_means,
    tanimoto_matrix,
)

needs_fcd = pytest.mark.skipif(not chemnet.fcd_available(), reason="fcd_torch not installed")
needs_moses = pytest.mark.skipif(moses_data.moses_data_dir() is None, reason="MOSES data files not installed")

# A small, varied, drug-like set (all valid, pairwise distinct).
MOLS = [
    "CC(=O)Oc1ccccc1C(=O)O",
    "CC(=O)Nc1ccc(O)cc1",
    "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc21",
    "CC(C)Cc1ccc(C(C)C(=O)O)cc1",
    "COc1ccc2[nH]cc(CCN(C)C)c2c1",
    "O=C(O)c1ccccc1O",
    "CCN(CC)CCNC(=O)c1ccc(N)cc1",
    "Cc1ccc(S(=O)(=O)NC(=O)NN2CCCCCC2)cc1",
    "O=C1CN=C(c2ccccc2)c2cc(Cl)ccc2N1",
    "CC1(C)SC2C(NC(=O)Cc3ccccc3)C(=O)N2C1C(=O)O",
    "Clc1ccc(C(c2ccccc2)n2ccnc2)cc1",
    "CCOC(=O)c1ccc(N)cc1",
    "c1ccc2c(c1)Cc1ccccc1-2",
    "CC(C)NCC(O)COc1cccc2ccccc12",
    "OC(c1ccccc1)(c1ccccc1)C1CCNCC1",
    "CN1CCC(=C2c3ccccc3CCc3ccccc32)CC1",
]


@pytest.fixture
def one_torch_thread():
    """Run ChemNet single-threaded: tiny batches gain nothing from threads, and on an oversubscribed
    machine OpenMP barriers can stall small batches for seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rdkit_bitvects(smiles: list[str], n_bits: int = 1024) -> list:
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=n_bits)
    return [gen.GetFingerprint(Chem.MolFromSmiles(s)) for s in smiles]


def _rdkit_sim_matrix(a: list[str], b: list[str]) -> np.ndarray:
    fa, fb = _rdkit_bitvects(a), _rdkit_bitvects(b)
    return np.array([DataStructs.BulkTanimotoSimilarity(x, fb) for x in fa])


def _random_psd(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d)


# --- Fréchet distance -------------------------------------------------------------------------------------
def test_frechet_identical_is_zero() -> None:
    rng = np.random.default_rng(0)
    mu, s = rng.normal(size=8), _random_psd(rng, 8)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)


def test_frechet_closed_forms() -> None:
    # 1-D: (m1 - m2)^2 + (sd1 - sd2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)
    # commuting (diagonal) covariances: sum (sqrt a - sqrt b)^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + 3.0
    assert frechet_distance(np.zeros(3), np.diag(a), np.ones(3), np.diag(b)) == pytest.approx(expected)


@pytest.mark.parametrize(("rank1", "rank2"), [(None, None), (3, None), (None, 5), (3, 5)])
def test_frechet_matches_scipy_sqrtm(rank1: int | None, rank2: int | None) -> None:
    """Both Cholesky routes and the singular fallback agree with scipy's sqrtm formula."""
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    d = 12
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_psd(rng, d, rank1), _random_psd(rng, d, rank2)
    root = linalg.sqrtm(s1 @ s2)
    ref = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(root)))
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(ref, rel=1e-6, abs=1e-6)
    assert got == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-7)  # symmetric


def test_frechet_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(2), np.eye(2) * np.nan, np.zeros(2), np.eye(2))


def test_sqrt_psd_squares_back() -> None:
    s = _random_psd(np.random.default_rng(2), 6)
    r = sqrt_psd(s)
    np.testing.assert_allclose(r @ r, s, atol=1e-10)


def test_gaussian_stats_and_weights() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20, 4))
    mu, s = gaussian_stats(x)
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(s, np.cov(x, rowvar=False))
    w = rng.integers(1, 4, size=20)
    mu_w, s_w = gaussian_stats(x, w)
    rep = np.repeat(x, w, axis=0)
    np.testing.assert_allclose(mu_w, rep.mean(0))
    np.testing.assert_allclose(s_w, np.cov(rep, rowvar=False))
    with pytest.raises(ValueError):
        gaussian_stats(x[:1])


# --- Tanimoto kernels ---------------------------------------------------------------------------------------
def test_morgan_fingerprints_match_rdkit() -> None:
    fps = morgan_fingerprints(MOLS[:4] + ["C1CC"])
    assert fps.shape == (5, 1024) and fps.dtype == np.uint8
    for row, bv in zip(fps, _rdkit_bitvects(MOLS[:4])):
        assert set(np.nonzero(row)[0]) == set(bv.GetOnBits())
    assert fps[4].sum() == 0


@pytest.mark.parametrize("dtype", [None, torch.float32, torch.float16, torch.bfloat16])
def test_max_tanimoto_matches_rdkit(dtype: torch.dtype | None) -> None:
    query, ref = MOLS[:7], MOLS[5:]
    expected = _rdkit_sim_matrix(query, ref).max(1)
    got = max_tanimoto(morgan_fingerprints(query), morgan_fingerprints(ref), block_rows=3, block_cols=4, dtype=dtype)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got[5] == pytest.approx(1.0) and got[6] == pytest.approx(1.0)  # shared molecules


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 9), st.integers(1, 9), st.integers(1, 40), st.integers(0, 2**31 - 1), st.floats(0.05, 0.9)
)
def test_max_tanimoto_property(n: int, m: int, bits: int, seed: int, density: float) -> None:
    rng = np.random.default_rng(seed)
    q = (rng.random((n, bits)) < density).astype(np.uint8)
    r = (rng.random((m, bits)) < density).astype(np.uint8)
    inter = q.astype(float) @ r.T.astype(float)
    union = q.sum(1)[:, None] + r.sum(1)[None, :] - inter
    brute = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    np.testing.assert_allclose(max_tanimoto(q, r, block_rows=2, block_cols=3), brute.max(1), atol=1e-6)
    np.testing.assert_allclose(tanimoto_matrix(q, r), brute, atol=1e-12)


def test_mean_pairwise_and_weights() -> None:
    fps = morgan_fingerprints(MOLS)
    sim = _rdkit_sim_matrix(MOLS, MOLS)
    got = mean_pairwise_tanimoto(fps, block=5)
    assert got[1] == pytest.approx(sim.mean(), abs=1e-6)
    assert got[2] == pytest.approx((sim**2).mean(), abs=1e-6)
    w = np.arange(1, len(MOLS) + 1)
    rep = np.repeat(np.arange(len(MOLS)), w)
    got_w = mean_pairwise_tanimoto(fps, weights=w, block=4)
    assert got_w[1] == pytest.approx(sim[np.ix_(rep, rep)].mean(), abs=1e-6)
    assert math.isnan(mean_pairwise_tanimoto(np.zeros((0, 8), np.uint8))[1])


def test_row_means_and_internal_diversity_with_weights() -> None:
    fps = morgan_fingerprints(MOLS)
    w = np.arange(1, len(MOLS) + 1)
    rep = np.repeat(np.arange(len(MOLS)), w)  # the weights written out as duplicate rows
    full = _rdkit_sim_matrix(MOLS, MOLS)[np.ix_(rep, rep)]
    rows = pairwise_tanimoto_row_means(fps, weights=w, block=3)  # several off-diagonal blocks
    np.testing.assert_allclose(rows[1][rep], full.mean(1), atol=1e-6)
    np.testing.assert_allclose(rows[2][rep], (full**2).mean(1), atol=1e-6)
    div = mm.internal_diversity(fps, w)
    assert div["IntDiv"] == pytest.approx(1 - full.mean(), abs=1e-6)
    assert div["IntDiv2"] == pytest.approx(1 - np.sqrt((full**2).mean(1)).mean(), abs=1e-6)
    assert div["IntDiv2"] > 1 - math.sqrt((full**2).mean())  # Jensen: root per row, then mean


def test_nearest_neighbour_within() -> None:
    fps = morgan_fingerprints(MOLS)
    sim = _rdkit_sim_matrix(MOLS, MOLS)
    np.fill_diagonal(sim, -1)
    np.testing.assert_allclose(nearest_neighbour_within(fps, block=3), sim.max(1), atol=1e-6)
    dup = morgan_fingerprints([MOLS[0], MOLS[0], MOLS[1]])
    assert nearest_neighbour_within(dup)[:2] == pytest.approx([1.0, 1.0])


def test_fp16_guard() -> None:
    wide = np.ones((2, 3000), np.uint8)
    with pytest.raises(ValueError):
        max_tanimoto(wide, wide, dtype=torch.float16)
    assert max_tanimoto(wide, wide) == pytest.approx([1.0, 1.0])  # float32 chosen automatically


# --- building blocks ----------------------------------------------------------------------------------------
def test_wasserstein_1d() -> None:
    u = np.array([0.0, 1.0, 3.0])
    assert mm.wasserstein_1d(u, u) == 0.0
    assert mm.wasserstein_1d(u, u + 2.5) == pytest.approx(2.5)
    assert mm.wasserstein_1d([0.0], [1.0, 2.0]) == pytest.approx(1.5)
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=137), rng.gamma(2.0, size=91)
    assert mm.wasserstein_1d(a, b) == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-10)


def test_cosine_similarity_counts() -> None:
    assert mm.cosine_similarity_counts({"a": 2, "b": 1}, {"a": 2, "b": 1}) == pytest.approx(1.0)
    assert mm.cosine_similarity_counts({"a": 1}, {"b": 5}) == 0.0
    assert mm.cosine_similarity_counts({"a": 1, "b": 1}, {"a": 3}) == pytest.approx(1 / math.sqrt(2))
    assert math.isnan(mm.cosine_similarity_counts({}, {"a": 1}))


def test_kl_divergences() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    assert mm.kl_divergence_continuous(x, x) == pytest.approx(0.0, abs=1e-12)
    assert mm.kl_divergence_continuous(x, x + 3.0) > 1.0
    # discrete: P = (1/2, 1/2) on {0, 1}; Q = (1/4, 3/4): KL = 0.5 ln 2 + 0.5 ln(2/3)
    kl = mm.kl_divergence_discrete([0, 1], [0, 1, 1, 1])
    assert kl == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-8)
    assert mm.kl_divergence_discrete([2, 2, 3], [2, 2, 3]) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("smiles", "ok"),
    [
        ("CC(=O)Oc1ccccc1C(=O)O", True),
        ("C1CCCCCC1", True),  # 7-ring allowed
        ("C1CCCCCCC1", False),  # 8-ring
        ("C[N+](C)(C)C", False),  # charged
        ("CC(=O)[O-]", False),  # charged
        ("CP(C)C", False),  # phosphorus not allowed
        ("CCI", False),  # iodine not allowed
        ("S=C1SC(=Cc2ccccc2)C(=O)N1", False),  # PAINS ene_rhod
        ("Oc1ccc(N)cc1", False),  # PAINS anil_no_alk
        ("O=CC1CCCCC1", False),  # MCF7 aldehyde
        ("CCCCBr", False),  # MCF4 primary alkyl halide
        ("CC1CO1", False),  # MCF5 epoxide
        ("CN=NC", False),  # MCF11 azo
        ("CC(C)(C)Br", True),  # tertiary halide: MCF4 needs a CH2
        ("C1CC", False),  # invalid
    ],
)
def test_passes_filters(smiles: str, ok: bool) -> None:
    assert md.passes_filters(smiles) is ok


def test_scaffolds_and_fragments() -> None:
    assert md.murcko_scaffold("CCc1ccccc1") is None  # one ring: dropped
    assert md.murcko_scaffold("CCCC") is None
    assert md.murcko_scaffold("Cc1ccc(Cc2ccccc2)cc1") == "c1ccc(Cc2ccccc2)cc1"
    assert md.murcko_scaffold("Cc1ccccc1", min_rings=1) == "c1ccccc1"
    frags = md.brics_fragments("CCOC(=O)c1ccc(N)cc1")
    assert len(frags) >= 2 and all(Chem.MolFromSmiles(f) is not None for f in frags)
    assert Counter(md.brics_fragments("c1ccccc1")) == Counter(["c1ccccc1"])


# --- the MOSES suite on hand-checkable sets ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_refs() -> dict:
    return {"Ref": mm.reference_stats_from_smiles(MOLS, progress=False, fcd=False)}


def test_moses_self_reference(small_refs: dict) -> None:
    out = mm.moses_metrics(MOLS, train=MOLS, progress=False, fcd=False, references=small_refs, ks=(5, 100))
    assert out["valid"] == 1.0 and out["n_valid"] == len(MOLS)
    assert out["SNN/Ref"] == pytest.approx(1.0)
    assert out["Frag/Ref"] == pytest.approx(1.0)
    assert out["Scaf/Ref"] == pytest.approx(1.0)
    assert out["Novelty"] == 0.0
    assert out["unique@5"] == 1.0 and out["unique@100"] == 1.0
    for key in ("logP", "SA", "QED", "weight"):
        assert out[key] == pytest.approx(0.0, abs=1e-12)
    sim = _rdkit_sim_matrix(MOLS, MOLS)
    assert out["IntDiv"] == pytest.approx(1 - sim.mean(), abs=1e-6)
    # molsets takes the square root per molecule, then averages (not the paper's root of the mean)
    assert out["IntDiv2"] == pytest.approx(1 - np.sqrt((sim**2).mean(1)).mean(), abs=1e-6)
    assert out["Filters"] == pytest.approx(np.mean([md.passes_filters(s) for s in MOLS]))
    assert "FCD/Ref" not in out


def test_moses_counting_rules(small_refs: dict) -> None:
    # Non-canonical spellings, duplicates and invalid strings; novelty against a 2-molecule train set.
    samples = ["OC(=O)c1ccccc1OC(C)=O", MOLS[0], "C1CC", MOLS[1], MOLS[1], None, "xyz", MOLS[2], MOLS[1], "CCO"]
    out = mm.moses_metrics(samples, train=[MOLS[0], "c1ccccc1"], progress=False, fcd=False,
                           references=small_refs, ks=(3, 4, 1000))  # fmt: skip
    assert out["n_samples"] == 10 and out["n_valid"] == 7
    assert out["valid"] == pytest.approx(0.7)
    # first valid: aspirin, aspirin, paracetamol, paracetamol, MOLS[2], paracetamol, ethanol
    assert out["unique@3"] == pytest.approx(2 / 3)
    assert out["unique@4"] == pytest.approx(2 / 4)
    assert out["unique@1000"] == pytest.approx(4 / 7)
    # unique valid = {aspirin, paracetamol, MOLS[2], ethanol}; aspirin is in train
    assert out["Novelty"] == pytest.approx(3 / 4)
    # SNN: mean over valid samples (duplicates count) of the max similarity to the reference set
    valid = [MOLS[0], MOLS[0], MOLS[1], MOLS[1], MOLS[2], MOLS[1], "CCO"]
    nn = _rdkit_sim_matrix(valid, MOLS).max(1)
    assert out["SNN/Ref"] == pytest.approx(nn.mean(), abs=1e-6)
    sim = _rdkit_sim_matrix(valid, valid)
    assert out["IntDiv"] == pytest.approx(1 - sim.mean(), abs=1e-6)
    frag = Counter(f for s in valid for f in md.brics_fragments(s))
    ref_frag = Counter(f for s in MOLS for f in md.brics_fragments(s))
    assert out["Frag/Ref"] == pytest.approx(mm.cosine_similarity_counts(frag, ref_frag))


def test_intdiv_of_identical_molecules_is_zero(small_refs: dict) -> None:
    out = mm.moses_metrics(["CCO", "OCC", "C(C)O"], train=[], progress=False, fcd=False, references=small_refs)
    assert out["IntDiv"] == pytest.approx(0.0, abs=1e-9) and out["IntDiv2"] == pytest.approx(0.0, abs=1e-9)
    assert out["unique@1000"] == pytest.approx(1 / 3)
    assert out["Novelty"] == 1.0


def test_moses_no_valid_samples(small_refs: dict) -> None:
    out = mm.moses_metrics(["C1CC", "(("], train=[], progress=False, fcd=False, references=small_refs)
    assert out["valid"] == 0.0
    assert all(math.isnan(out[k]) for k in ("unique@1000", "IntDiv", "Filters", "SNN/Test"))
    with pytest.raises(ValueError):
        mm.moses_metrics([], train=[], progress=False)


def test_moses_parallel_equals_serial(small_refs: dict) -> None:
    samples = MOLS * 40  # 640 samples: enough to use the pool
    a = mm.moses_metrics(samples, train=MOLS[:3], n_jobs=1, progress=False, fcd=False, references=small_refs)
    b = mm.moses_metrics(samples, train=MOLS[:3], n_jobs=2, progress=False, fcd=False, references=small_refs)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], nan_ok=True)


def test_fcd_missing_gives_warning(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                   small_refs: dict) -> None:  # fmt: skip
    monkeypatch.setattr(mm, "fcd_available", lambda: False)
    refs = {"Ref": {**small_refs["Ref"], "FCD": {"mu": np.zeros(512), "sigma": np.eye(512)}}}
    with caplog.at_level(logging.WARNING, logger="discrete_rae.metrics.molecules"):
        out = mm.moses_metrics(MOLS, train=[], progress=False, fcd=True, references=refs)
    assert not any(k.startswith("FCD") for k in out)
    assert "fcd_torch" in caplog.text and "pip install" in caplog.text


def test_format_table() -> None:
    text = mm.format_table({"n_samples": 30000.0, "valid": 0.97654, "FCD/Test": float("nan")})
    lines = text.splitlines()
    assert lines[2].split() == ["n_samples", "30000"]
    assert lines[3].split() == ["valid", "0.9765"]
    assert lines[4].split() == ["FCD/Test", "nan"]


# --- FCD (needs fcd_torch) ----------------------------------------------------------------------------------------
@needs_fcd
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fcd_torch's own np.row_stack
def test_chemnet_activations_match_fcd_torch() -> None:
    from fcd_torch import FCD

    acts = chemnet.chemnet_activations(MOLS + MOLS[:2])
    assert acts.shape == (len(MOLS) + 2, 512) and np.isfinite(acts).all()
    np.testing.assert_array_equal(acts[-2:], acts[:2])  # duplicates
    canon = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in MOLS]
    theirs = FCD(device="cpu", n_jobs=1).get_predictions(canon)
    np.testing.assert_allclose(chemnet.chemnet_activations(canon), theirs, atol=1e-6)


@needs_fcd
@pytest.mark.usefixtures("one_torch_thread")
def test_fcd_of_identical_sets_is_zero() -> None:
    refs = {"Self": mm.reference_stats_from_smiles(MOLS, progress=False, fcd=True)}
    out = mm.moses_metrics(list(reversed(MOLS)), train=[], progress=False, fcd=True, references=refs)
    assert out["FCD/Self"] == pytest.approx(0.0, abs=1e-6)
    other = mm.moses_metrics(["CCO", "CCN", "CCC", "OCCO"], train=[], progress=False, references=refs)
    assert other["FCD/Self"] > 1.0


# --- GuacaMol -------------------------------------------------------------------------------------------------------
@needs_fcd
@pytest.mark.usefixtures("one_torch_thread")
def test_guacamol_self_scores() -> None:
    out = mm.guacamol_metrics(MOLS, train=MOLS, progress=False, n_reference=100)
    assert out["validity"] == 1.0 and out["uniqueness"] == 1.0 and out["novelty"] == 0.0
    assert out["KL_score"] == pytest.approx(1.0, abs=1e-9)
    assert out["FCD"] == pytest.approx(0.0, abs=1e-6) and out["FCD_score"] == pytest.approx(1.0, abs=1e-6)


def test_guacamol_counts_and_kl() -> None:
    samples = [MOLS[0], MOLS[0], "C1CC", "CCO", "CCCCCCCC", "CCCCO"]
    out = mm.guacamol_metrics(samples, train=MOLS, progress=False, fcd=False, n_reference=100)
    assert out["validity"] == pytest.approx(5 / 6)
    assert out["uniqueness"] == pytest.approx(4 / 5)
    assert out["novelty"] == pytest.approx(3 / 4)
    assert 0.0 < out["KL_score"] < 0.9  # tiny aliphatic molecules do not look like drugs
    assert set(k for k in out if k.startswith("KL/")) == {f"KL/{n}" for n in
                                                           (*md.GUACAMOL_DESCRIPTORS, "internal_similarity")}
    assert "FCD" not in out


# --- against the real MOSES reference files (slow) --------------------------------------------------------------------
@pytest.mark.slow
@needs_moses
def test_moses_stats_layout_and_fingerprints() -> None:
    stats = moses_data.moses_reference_stats("test")
    smiles = moses_data.load_moses_smiles("test")
    assert len(smiles) == 176074 == stats["SNN"]["fps"].shape[0]
    assert stats["FCD"]["mu"].shape == (512,) and stats["FCD"]["sigma"].shape == (512, 512)
    idx = np.random.default_rng(0).choice(len(smiles), 200, replace=False)
    np.testing.assert_array_equal(morgan_fingerprints([smiles[i] for i in idx]), stats["SNN"]["fps"][idx])
    # our fragment / scaffold definitions reproduce the stored counters on a random subset
    frag = Counter(f for i in idx for f in md.brics_fragments(smiles[i]))
    assert sum(1 for k in frag if k in stats["Frag"]["frag"]) / len(frag) > 0.99
    scafs = [md.murcko_scaffold(smiles[i]) for i in idx]
    assert sum(1 for s in scafs if s is None or s in stats["Scaf"]["scaf"]) / len(scafs) > 0.98


@pytest.mark.slow
@needs_moses
@needs_fcd
def test_moses_test_subset_against_test_stats() -> None:
    smiles = moses_data.load_moses_smiles("test")
    rng = np.random.default_rng(0)
    sub = [smiles[i] for i in rng.choice(len(smiles), 2000, replace=False)]
    out = mm.moses_metrics(sub, train=[], n_jobs=2, progress=False)
    assert out["valid"] == 1.0 and out["SNN/Test"] == pytest.approx(1.0)
    assert out["Frag/Test"] > 0.99 and out["Filters"] > 0.99
    assert 0.1 < out["FCD/Test"] < 1.5  # finite-sample bias at n = 2000, not zero
    assert out["Scaf/TestSF"] < 0.05  # scaffold split: no shared scaffolds


# --- reading statistics files without running code from them ------------------------------------------------
class _Payload:
    """Unpickling this object opens (and so creates) ``marker``: a stand-in for any command."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted_stats(directory: Path, marker: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "test_stats.npz"
    np.savez(path, stats=np.array(_Payload(str(marker)), dtype=object))  # what np.save pickles
    return path


@pytest.fixture
def isolated_moses(tmp_path, monkeypatch):
    """A MOSES data folder and a cache folder of the test's own, the memo cleared before and after."""
    data = tmp_path / "moses_data"
    monkeypatch.setenv(moses_data.MOSES_DATA_ENV, str(data))
    monkeypatch.setenv(moses_data.CACHE_ENV, str(tmp_path / "cache"))
    moses_data._stats_memo.cache_clear()
    yield data
    moses_data._stats_memo.cache_clear()
    moses_data._find_moses_dir.cache_clear()


def test_crafted_stats_file_is_refused_and_never_unpickled(isolated_moses, tmp_path) -> None:
    marker = tmp_path / "payload_ran"
    path = _crafted_stats(isolated_moses, marker)
    with pytest.raises(DataError, match="refusing to read") as info:
        moses_data.moses_reference_stats("test")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load io.open"):
        stats_files.read_packaged_stats(path)  # the restricted unpickler, even past the digest gate
    assert not marker.exists()
    np.load(path, allow_pickle=True)["stats"]  # the payload is real: plain allow_pickle runs it
    assert marker.exists()


def test_working_directory_is_never_searched(tmp_path, monkeypatch) -> None:
    # A crafted data folder and a fake molsets distribution in the working directory.
    _crafted_stats(tmp_path / "moses" / "dataset" / "data", tmp_path / "payload_ran")
    dist_info = tmp_path / "molsets-0.3.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: molsets\nVersion: 0.3.1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(moses_data.MOSES_DATA_ENV, raising=False)
    monkeypatch.setattr("sys.path", ["", str(tmp_path), *__import__("sys").path])
    moses_data._find_moses_dir.cache_clear()
    try:
        found = moses_data.moses_data_dir()
    finally:
        moses_data._find_moses_dir.cache_clear()
    assert found is None or tmp_path not in found.resolve().parents


def test_canonical_train_set_is_cached_atomically_and_read_back(isolated_moses, monkeypatch) -> None:
    import gzip

    isolated_moses.mkdir()
    with gzip.open(isolated_moses / "train.csv.gz", "wt") as fh:
        fh.write("SMILES,SPLIT\nOCC,train\nC1=CC=CC=C1,train\nnot_a_smiles,train\n")
    monkeypatch.setattr(moses_data, "_TRAIN_MEMO", {})
    first = moses_data.moses_train_canonical(n_jobs=1, progress=False)
    assert first == {"CCO", "c1ccccc1"}
    cache = isolated_moses.parent / "cache"
    (path,) = cache.iterdir()  # the cache file only: no temporary file left beside it
    assert path.name.startswith("moses_train_canonical_rdkit") and path.name.endswith(".txt.gz")
    with gzip.open(path, "rt") as fh:
        assert fh.read() == "CCO\nc1ccccc1"
    monkeypatch.setattr(moses_data, "_TRAIN_MEMO", {})
    monkeypatch.setattr(moses_data, "load_moses_smiles", lambda split: pytest.fail("canonicalised again"))
    assert moses_data.moses_train_canonical(n_jobs=1, progress=False) == first


def test_saved_stats_leave_no_temporary_file(isolated_moses) -> None:
    stats = mm.reference_stats_from_smiles(MOLS[:5], progress=False, fcd=False)
    digest = stats_files.save_reference_stats(stats, isolated_moses / "sub" / "test_stats.npz")
    assert [p.name for p in (isolated_moses / "sub").iterdir()] == ["test_stats.npz"]
    assert digest == stats_files.content_digest(stats_files._read_plain(isolated_moses / "sub" / "test_stats.npz"))


def test_own_format_round_trip_and_refusal_of_other_files(isolated_moses) -> None:
    stats = mm.reference_stats_from_smiles(MOLS, progress=False, fcd=False)
    stats_files.save_reference_stats(stats, isolated_moses / "test_stats.npz")
    back = moses_data.moses_reference_stats("test")
    np.testing.assert_array_equal(back["SNN"]["fps"], stats["SNN"]["fps"])
    np.testing.assert_array_equal(back["SNN"]["weights"], stats["SNN"]["weights"])
    assert back["Frag"] == stats["Frag"] and back["Scaf"] == stats["Scaf"] and "FCD" not in back
    np.testing.assert_array_equal(back["QED"]["values"], stats["QED"]["values"])
    (isolated_moses / "test_scaffolds_stats.npz").write_bytes(b"not an archive")
    with pytest.raises(DataError, match="test_scaffolds_stats.npz: refusing to read"):
        moses_data.moses_reference_stats("test_scaffolds")


def test_packaged_file_is_converted_once_and_the_cache_verified(isolated_moses, monkeypatch, caplog) -> None:
    # A benign file in molsets' pickled layout stands in for the real one (whose conversion is slow).
    stats = mm.reference_stats_from_smiles(MOLS, progress=False, fcd=False)
    legacy = {**stats, "SNN": {"fps": stats["SNN"]["fps"]}, "Frag": {"frag": Counter(stats["Frag"]["frag"])},
              "FCD": {"mu": np.zeros(3, np.float32), "sigma": np.eye(3)}}  # fmt: skip
    isolated_moses.mkdir()
    path = isolated_moses / "test_stats.npz"
    np.savez(path, stats=np.array(legacy, dtype=object))
    converted = stats_files.content_digest(stats_files.flatten_stats(legacy))
    monkeypatch.setitem(stats_files.PACKAGED_STATS_SHA256, "test", stats_files.file_sha256(path))
    monkeypatch.setitem(stats_files.CONVERTED_STATS_SHA256, "test", converted)
    first = moses_data.moses_reference_stats("test")
    assert first["Frag"]["frag"] == stats["Frag"]["frag"] and first["FCD"]["sigma"].shape == (3, 3)
    (cache,) = (isolated_moses.parent / "cache").glob("moses_test_stats_*.npz")
    moses_data._stats_memo.cache_clear()
    with monkeypatch.context() as m:  # the second load reads only the cache
        m.setattr(stats_files, "read_packaged_stats", lambda p: pytest.fail("unpickled again"))
        np.testing.assert_array_equal(moses_data.moses_reference_stats("test")["SNN"]["fps"], stats["SNN"]["fps"])
    arrays = dict(np.load(cache))
    arrays["QED.values"] = arrays["QED.values"] + 1.0  # a tampered cache is rebuilt, not trusted
    np.savez(cache, **arrays)
    moses_data._stats_memo.cache_clear()
    with caplog.at_level(logging.WARNING, logger="discrete_rae.metrics.stats_files"):
        again = moses_data.moses_reference_stats("test")
    assert "content digest" in caplog.text
    np.testing.assert_array_equal(again["QED"]["values"], stats["QED"]["values"])
    monkeypatch.setitem(stats_files.CONVERTED_STATS_SHA256, "test", "0" * 64)  # conversion must match too
    moses_data._stats_memo.cache_clear()
    with pytest.raises(DataError, match="differ from the known content"):
        moses_data.moses_reference_stats("test")
