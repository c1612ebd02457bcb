"""Our MOSES metrics against molsets' own metric code, on the same few hundred molecules.

molsets 0.3.1 does not import on current Python / pandas / NumPy / RDKit as shipped; three shims
make its metric code run (a ``rdkit.six`` stub with ``iteritems``, ``pandas.DataFrame.append``
mapped to ``pandas.concat``, ``numpy.NaN``).  They are applied inside this test module only, and
undone afterwards.  The molecules are a deliberately mixed set so that every metric sits away
from its trivial value: MOSES test molecules, NCI molecules shipped with RDKit (charges, metals,
salts, reactive groups, PAINS), randomly edited SMILES (many of them invalid) and duplicates.

The reference statistics given to molsets are the ones our pickle-free loader returns, so molsets'
own ``np.load(allow_pickle=True)`` of the stats files is never run.  The default test compares
every key but FCD (molsets' FCD runs fcd_torch twice per call, which is slow), with the SNN
reference fingerprints thinned to 30,000 per set (molsets' dense SNN over 2 x 176k references
takes most of its time); the slow test runs molsets' complete ``get_all_metrics`` with the full
references and compares all 19 keys.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import math
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from discrete_rae.metrics import chemnet, moses_data
from discrete_rae.metrics import molecules as mm

TOL = 1e-4
N_TEST, N_NCI, N_EDITED, N_DUPLICATES = 220, 110, 80, 30
#: SNN reference fingerprints per set in the default test (the slow test uses all 176k).
SNN_ROWS_DEFAULT_TEST = 30_000


def _molsets_package_dir() -> Path | None:
    """The installed ``moses`` package folder of the molsets distribution (not imported here)."""
    try:
        pkg = Path(str(importlib.metadata.distribution("molsets").locate_file("moses")))
    except importlib.metadata.PackageNotFoundError:
        return None
    return pkg if (pkg / "metrics" / "metrics.py").is_file() else None


pytestmark = pytest.mark.skipif(_molsets_package_dir() is None, reason="molsets is not installed")


# --- importing molsets with the three compatibility shims -----------------------------------------------
@contextlib.contextmanager
def molsets_imported() -> Iterator[Any]:
    """molsets' ``moses`` package with the three shims, all undone (and ``moses`` unloaded) on exit."""
    import pandas as pd  # molsets' metric code needs it (the dev extra installs it)

    saved_modules = set(sys.modules)
    six = types.ModuleType("rdkit.six")
    six.iteritems = lambda d, **kw: iter(d.items(**kw))  # type: ignore[attr-defined]
    sys.modules["rdkit.six"] = six
    had_append, had_nan = hasattr(pd.DataFrame, "append"), hasattr(np, "NaN")
    if not had_append:
        pd.DataFrame.append = lambda self, other, sort=False, **kw: pd.concat([self, other], sort=sort)
    if not had_nan:
        np.NaN = np.nan  # type: ignore[attr-defined]
    sys.path.insert(0, str(_molsets_package_dir().parent))
    try:
        yield importlib.import_module("moses")
    finally:
        sys.path.pop(0)
        if not had_append:
            del pd.DataFrame.append
        if not had_nan:
            del np.NaN
        for name in set(sys.modules) - saved_modules:
            if name == "rdkit.six" or name == "moses" or name.startswith("moses."):
                del sys.modules[name]


@pytest.fixture(scope="module")
def moses_pkg() -> Iterator[Any]:
    with molsets_imported() as moses:
        yield moses


# --- the molecule mix ---------------------------------------------------------------------------------------
def _nci_smiles() -> list[str]:
    from rdkit import RDConfig

    path = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _edit(smiles: str, rng: np.random.Generator) -> str:
    """One random character deletion, duplication or adjacent swap (often gives an invalid SMILES)."""
    i = int(rng.integers(0, len(smiles) - 1))
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return smiles[:i] + smiles[i + 1 :]
    if kind == 1:
        return smiles[: i + 1] + smiles[i:]
    return smiles[:i] + smiles[i + 1] + smiles[i] + smiles[i + 2 :]


# Molecules that hit MOSES's filter rules or edge cases of them (aldehyde, alkyl halide, epoxide,
# azo, 8-ring, charges, disallowed atoms, PAINS, stereo).
_HAND_PICKED = [
    "O=CC1CCCCC1", "CCCCBr", "CC1CO1", "CN=NC", "C1CCCCCCC1", "C[N+](C)(C)C", "CCI", "CP(C)C",
    "S=C1SC(=Cc2ccccc2)C(=O)N1", "Oc1ccc(N)cc1", "C/C=C/C(=O)NC", "N#CC=C1CCCC1", "ClCCl",
    "FC(F)(F)c1cc(C(F)(F)F)cc(C(F)(F)F)c1", "O=C(O)C[C@H](N)c1ccccc1", "c1ccc2c(c1)ccc1ccccc12",
]  # fmt: skip


def build_molecule_mix() -> list[str]:
    """The fixed, seeded mix of the module docstring (456 SMILES, 393 of them valid)."""
    rng = np.random.default_rng(20240601)
    test = moses_data.load_moses_smiles("test")
    nci = _nci_smiles()
    picked = [test[i] for i in rng.choice(len(test), N_TEST, replace=False)]
    picked += [nci[i] for i in rng.choice(len(nci), N_NCI, replace=False)]
    picked += [_edit(test[i], rng) for i in rng.choice(len(test), N_EDITED, replace=False)]
    picked += _HAND_PICKED
    picked += [picked[i] for i in rng.choice(len(picked), N_DUPLICATES, replace=False)]
    return [picked[i] for i in rng.permutation(len(picked))]


@pytest.fixture(scope="module")
def molecule_mix() -> list[str]:
    return build_molecule_mix()


@pytest.fixture(scope="module")
def train_subset(molecule_mix: list[str]) -> list[str]:
    return build_train_subset(molecule_mix)


def build_train_subset(molecule_mix: list[str]) -> list[str]:
    """A novelty reference in which about a third of the valid molecules occur (canonical SMILES)."""
    from rdkit import Chem

    train = moses_data.load_moses_smiles("train")[:2000]
    mols = [Chem.MolFromSmiles(s) for s in molecule_mix[::3]]
    return train + [Chem.MolToSmiles(m) for m in mols if m is not None]


@pytest.fixture(scope="module")
def references() -> dict[str, dict[str, Any]]:
    return load_references()


@pytest.fixture(scope="module")
def light_references() -> dict[str, dict[str, Any]]:
    return load_references(snn_rows=SNN_ROWS_DEFAULT_TEST)


def load_references(snn_rows: int | None = None) -> dict[str, dict[str, Any]]:
    """MOSES Test / TestSF statistics; ``snn_rows`` keeps every k-th SNN reference fingerprint so
    that about that many remain (both implementations then search the same, smaller set)."""
    refs = {"Test": moses_data.moses_reference_stats("test"),
            "TestSF": moses_data.moses_reference_stats("test_scaffolds")}  # fmt: skip
    if snn_rows is None:
        return refs
    out = {}
    for name, ref in refs.items():
        fps = ref["SNN"]["fps"]
        out[name] = {**ref, "SNN": {"fps": fps[:: max(1, len(fps) // snn_rows)]}}
    return out


def _as_molsets_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """Our loaded statistics in the layout molsets' metric objects take as ``pref``."""
    return {
        "FCD": {"mu": stats["FCD"]["mu"], "sigma": stats["FCD"]["sigma"]},
        "SNN": {"fps": stats["SNN"]["fps"]},
        "Frag": {"frag": stats["Frag"]["frag"]},
        "Scaf": {"scaf": stats["Scaf"]["scaf"]},
        **{k: {"values": stats[k]["values"]} for k in ("logP", "SA", "QED", "weight")},
    }


def molsets_metrics_without_fcd(moses: Any, gen: list[str], refs: dict, train: list[str]) -> dict[str, float]:
    """The steps of molsets' ``get_all_metrics`` minus FCD, each one molsets' own function."""
    from moses.metrics import metrics as mt  # the module, not the re-exported function
    from moses.utils import get_mol

    out: dict[str, float] = {"valid": mt.fraction_valid(gen)}
    gen = mt.remove_invalid(gen, canonize=True)
    for k in (1000, 10000):
        out[f"unique@{k}"] = mt.fraction_unique(gen, k)
    mols = [get_mol(s) for s in gen]
    for name, ref in refs.items():
        pref = _as_molsets_stats(ref)
        out[f"SNN/{name}"] = mt.SNNMetric()(gen=mols, pref=pref["SNN"])
        out[f"Frag/{name}"] = mt.FragMetric()(gen=mols, pref=pref["Frag"])
        out[f"Scaf/{name}"] = mt.ScafMetric()(gen=mols, pref=pref["Scaf"])
    out["IntDiv"] = mt.internal_diversity(mols)
    out["IntDiv2"] = mt.internal_diversity(mols, p=2)
    out["Filters"] = mt.fraction_passes_filters(mols)
    pref = _as_molsets_stats(refs["Test"])
    for name, fn in (("logP", mt.logP), ("SA", mt.SA), ("QED", mt.QED), ("weight", mt.weight)):
        out[name] = mt.WassersteinMetric(fn)(gen=mols, pref=pref[name])
    out["Novelty"] = mt.novelty(mols, train)
    return out


def _compare(ours: dict[str, float], theirs: dict[str, float]) -> None:
    bad = {k: (ours.get(k), v) for k, v in theirs.items()
           if k not in ours or not math.isclose(ours[k], float(v), rel_tol=0.0, abs_tol=TOL)}  # fmt: skip
    assert not bad, f"keys where ours != molsets' (ours, molsets): {bad}"


@pytest.fixture(scope="module")
def ours_light(molecule_mix: list[str], train_subset: list[str], light_references: dict) -> dict[str, float]:
    return mm.moses_metrics(molecule_mix, train=train_subset, progress=False, fcd=False, references=light_references)


def test_mix_is_not_trivial(ours_light: dict[str, float]) -> None:
    out = ours_light
    assert 0.8 < out["valid"] < 0.97 and out["unique@1000"] < 1.0
    assert 0.5 < out["Filters"] < 0.9 and 0.3 < out["Novelty"] < 0.9
    assert 0.5 < out["IntDiv2"] < out["IntDiv"] < 1.0


def test_agrees_with_molsets_without_fcd(moses_pkg: Any, molecule_mix: list[str], train_subset: list[str],
                                         light_references: dict, ours_light: dict[str, float]) -> None:  # fmt: skip
    theirs = molsets_metrics_without_fcd(moses_pkg, molecule_mix, light_references, train_subset)
    assert set(theirs) == set(mm.MOSES_KEYS) - {"FCD/Test", "FCD/TestSF"}
    _compare(ours_light, theirs)


@pytest.mark.slow
@pytest.mark.skipif(not chemnet.fcd_available(), reason="fcd_torch not installed")
def test_agrees_with_molsets_get_all_metrics(moses_pkg: Any, molecule_mix: list[str], train_subset: list[str],
                                             references: dict) -> None:  # fmt: skip
    theirs = moses_pkg.get_all_metrics(
        molecule_mix, n_jobs=1, test=["C"], ptest=_as_molsets_stats(references["Test"]),
        test_scaffolds=["C"], ptest_scaffolds=_as_molsets_stats(references["TestSF"]), train=train_subset,
    )  # fmt: skip
    ours = mm.moses_metrics(molecule_mix, train=train_subset, progress=False, references=references)
    assert set(theirs) == set(mm.MOSES_KEYS)
    _compare(ours, theirs)


def test_filter_smarts_are_molsets_own(moses_pkg: Any) -> None:
    from rdkit import Chem

    from discrete_rae.metrics import mol_descriptors as md
    from moses.metrics import utils as moses_utils

    theirs = [Chem.MolToSmarts(q) for q in moses_utils._filters]
    ours = [Chem.MolToSmarts(q) for q in md.filter_patterns()]
    assert len(ours) == 502 and ours == theirs
