"""Tests for discrete_rae.chem: validity, canonical SMILES, property scores and drawings."""

from __future__ import annotations

import math

import pytest

from discrete_rae import chem

JTVAE_BEST = "CC(=O)c1cc2cc(Cl)ccc2cc1C(=O)Nc1cccc(NC(=O)Nc2cccc(-c3ccccc3C)c2)c1"


# --- parsing ------------------------------------------------------------------------------------------
def test_canonical_identifies_equivalent_smiles() -> None:
    forms = ["OCC", "C(O)C", "CCO", "[CH3][CH2][OH]"]
    canon = {chem.canonical(s) for s in forms}
    assert canon == {"CCO"}
    assert chem.canonical("c1ccccc1") == chem.canonical("C1=CC=CC=C1") == "c1ccccc1"


@pytest.mark.parametrize("bad", ["C1CC", "c1cccc1", "C(", "CC(C)(C)(C)(C)C", "Xx", "", "   ", ".", None])
def test_invalid_smiles_are_rejected(bad: str | None) -> None:
    assert chem.canonical(bad) is None
    assert not chem.is_valid(bad)


def test_canonical_many_keeps_order_and_nones() -> None:
    assert chem.canonical_many(["OCC", "bad(", "C1=CC=CC=C1", None]) == ["CCO", None, "c1ccccc1", None]


def test_canonical_is_idempotent() -> None:
    for s in ["CC(=O)Nc1ccc(O)cc1", JTVAE_BEST, "C[C@H](N)C(=O)O", "c1ccc2[nH]ccc2c1"]:
        c = chem.canonical(s)
        assert c is not None and chem.canonical(c) == c


def test_rdkit_errors_are_silenced(capfd: pytest.CaptureFixture[str]) -> None:
    for bad in ["C1CC", "c1cccc1", "CC(C)(C)(C)(C)C"]:
        assert chem.canonical(bad) is None
    out, err = capfd.readouterr()
    assert "SMILES Parse Error" not in err and "Explicit valence" not in err and err.strip() == ""


# --- properties -----------------------------------------------------------------------------------------
def test_penalized_logp_reference_molecule() -> None:
    """The best JT-VAE BO molecule: 5.30 normalised, 6.24 unnormalised (docs/REFERENCE.md §3)."""
    assert chem.penalized_logp(JTVAE_BEST) == pytest.approx(5.30, abs=0.005)
    assert chem.penalized_logp(JTVAE_BEST, normalized=False) == pytest.approx(6.24, abs=0.005)


def test_penalized_logp_is_assembled_from_its_terms() -> None:
    s = "CC1CCCCCCCCC1c1ccccc1O"  # has a 10-ring: cycle penalty 4
    lp, sa, cyc = chem.logp(s), chem.sa_score(s), chem.cycle_score(s)
    assert cyc == 4.0
    assert chem.penalized_logp(s, normalized=False) == pytest.approx(lp - sa - cyc)
    (m1, s1), (m2, s2), (m3, s3) = (chem.ZINC250K_STATS[k] for k in ("logp", "neg_sa", "neg_cycle"))
    expected = (lp - m1) / s1 + (-sa - m2) / s2 + (-cyc - m3) / s3
    assert chem.penalized_logp(s) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("smiles", "score"),
    [("CCCC", 0.0), ("c1ccccc1", 0.0), ("C1CCCCCC1", 1.0), ("C1CCCCCCC1", 2.0), ("c1ccc2ccccc2c1", 0.0)],
)
def test_cycle_score(smiles: str, score: float) -> None:
    assert chem.cycle_score(smiles) == score


def test_property_helpers_known_values() -> None:
    assert chem.mol_weight("CCO") == pytest.approx(46.069, abs=1e-3)
    assert chem.mol_weight("O") == pytest.approx(18.015, abs=1e-3)
    assert chem.logp("CCO") == pytest.approx(-0.0014, abs=1e-4)  # Wildman-Crippen value
    assert chem.logp("c1ccccc1") == pytest.approx(1.6866, abs=1e-4)
    q = chem.qed("CC(=O)Oc1ccccc1C(=O)O")  # aspirin
    assert q is not None and 0.5 < q < 0.6
    easy, hard = chem.sa_score("CCO"), chem.sa_score("C[C@H]1C[C@@]23CC[C@@H]4[C@](C)(CC[C@H]4C2)[C@H]3C1=O")
    assert easy is not None and hard is not None
    assert 1.0 <= easy < 3.0 and easy < hard <= 10.0


@pytest.mark.parametrize(
    "fn", [chem.logp, chem.sa_score, chem.qed, chem.mol_weight, chem.cycle_score, chem.penalized_logp]
)
def test_property_helpers_return_none_for_invalid(fn) -> None:  # noqa: ANN001
    assert fn("C1CC") is None


def test_properties_accept_mol_objects() -> None:
    mol = chem.mol_from_smiles("CCO")
    assert chem.mol_weight(mol) == chem.mol_weight("CCO")


# --- drawing ---------------------------------------------------------------------------------------------
def test_draw_grid_skips_invalid(tmp_path) -> None:  # noqa: ANN001
    from PIL import Image

    path = tmp_path / "sub" / "grid.png"
    n = chem.draw_grid(["CCO", "C1CC", None, "c1ccccc1", "CC(=O)O"], path, n_per_row=2, legends=list("abcde"))
    assert n == 3
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        w, h = img.size
    assert w == 2 * 250 and h == 2 * 200  # 3 molecules, 2 per row


def test_draw_grid_all_invalid_writes_blank(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "blank.png"
    assert chem.draw_grid(["C1CC", "((", None], path) == 0
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_draw_grid_checks_legend_length(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ValueError):
        chem.draw_grid(["CCO", "CCN"], tmp_path / "x.png", legends=["only one"])


def test_zinc_constants_are_finite() -> None:
    assert all(math.isfinite(m) and s > 0 for m, s in chem.ZINC250K_STATS.values())
