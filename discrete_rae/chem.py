"""Small RDKit helpers for SMILES: validity, canonical forms, property scores and drawings.

Everything here works on SMILES strings and returns ``None`` (or ``False``) for strings RDKit
cannot parse and sanitize, so callers never see RDKit exceptions or its stderr chatter.

Properties
----------
``logp``        Wildman-Crippen logP (``Crippen.MolLogP``).
``sa_score``    Ertl & Schuffenhauer synthetic accessibility (1 easy .. 10 hard), computed by the
                ``SA_Score/sascorer.py`` module that ships in RDKit's Contrib directory.
``qed``         Bickerton's quantitative estimate of drug-likeness (``rdkit.Chem.QED.qed``).
``mol_weight``  average molecular weight (``Descriptors.MolWt``).
``cycle_score`` max(0, size of the largest ring in a cycle basis of the molecular graph - 6).
``penalized_logp``  logP - SA - cycle, optionally with each term standardised by ZINC-250k
                statistics (the objective of latent-space Bayesian optimisation in GVAE/JT-VAE).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path
from types import ModuleType
from typing import Iterable, Sequence

from rdkit import Chem, RDConfig, RDLogger
from rdkit.Chem import Crippen, Descriptors
from rdkit.Chem import QED as _QED

logger = logging.getLogger(__name__)

RDLogger.DisableLog("rdApp.*")  # silence parse/sanitize errors on invalid samples

__all__ = [
    "ZINC250K_STATS",
    "canonical",
    "canonical_many",
    "cycle_score",
    "draw_grid",
    "is_valid",
    "logp",
    "mol_from_smiles",
    "mol_weight",
    "penalized_logp",
    "qed",
    "sa_score",
]

#: Mean and standard deviation of the three penalized-logP terms over ZINC-250k, as used by
#: the JT-VAE / SD-VAE / GVAE Bayesian-optimisation experiments.  Keys: term -> (mean, std);
#: note the SA and cycle entries describe the *negated* terms (-SA, -cycle).
ZINC250K_STATS: dict[str, tuple[float, float]] = {
    "logp": (2.4570953396190123, 1.434324401111988),
    "neg_sa": (-3.0525811293166134, 0.8335207024513095),
    "neg_cycle": (-0.0485696876403053, 0.2860212110245455),
}


# --- parsing ------------------------------------------------------------------------------------
def mol_from_smiles(smiles: str | None) -> Chem.Mol | None:
    """Parse and sanitize ``smiles``; ``None`` for anything RDKit rejects, non-strings, blank strings
    and SMILES without atoms (such as ``"."``)."""
    if not isinstance(smiles, str) or not smiles.strip():
        return None
    try:
        mol = Chem.MolFromSmiles(smiles)  # sanitizes by default; returns None on failure
    except Exception:  # noqa: BLE001 - RDKit can raise on pathological input
        return None
    if mol is None or mol.GetNumAtoms() == 0:  # e.g. "." parses to an empty molecule
        return None
    return mol


def canonical(smiles: str | None) -> str | None:
    """RDKit canonical SMILES of ``smiles`` (isomeric), or ``None`` if it does not parse/sanitize."""
    mol = mol_from_smiles(smiles)
    if mol is None:
        return None
    try:
        return Chem.MolToSmiles(mol)
    except Exception:  # noqa: BLE001
        return None


def is_valid(smiles: str | None) -> bool:
    """True when RDKit can parse and sanitize ``smiles``."""
    return mol_from_smiles(smiles) is not None


def canonical_many(smiles: Iterable[str | None]) -> list[str | None]:
    """:func:`canonical` over an iterable, preserving order (``None`` for invalid entries)."""
    return [canonical(s) for s in smiles]


def _as_mol(x: str | Chem.Mol | None) -> Chem.Mol | None:
    if isinstance(x, Chem.Mol):
        return x
    return mol_from_smiles(x)


# --- properties ---------------------------------------------------------------------------------
_SASCORER: ModuleType | None = None
_SASCORER_LOCK = threading.Lock()


def _sascorer() -> ModuleType:
    """Load RDKit's Contrib ``SA_Score/sascorer.py`` once (it is not an importable package)."""
    global _SASCORER
    if _SASCORER is None:
        with _SASCORER_LOCK:
            if _SASCORER is None:
                path = Path(RDConfig.RDContribDir) / "SA_Score" / "sascorer.py"
                if not path.is_file():
                    raise FileNotFoundError(
                        f"RDKit's SA_Score contrib module is missing ({path}); "
                        "install an rdkit build that ships Contrib/SA_Score"
                    )
                spec = importlib.util.spec_from_file_location("_discrete_rae_sascorer", path)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                module.readFragmentScores()  # load fpscores.pkl.gz now, not inside a hot loop
                _SASCORER = module
                logger.debug("loaded SA scorer from %s", path)
    return _SASCORER


def logp(smiles: str | Chem.Mol) -> float | None:
    """Wildman-Crippen logP, or ``None`` for an invalid molecule."""
    mol = _as_mol(smiles)
    return None if mol is None else float(Crippen.MolLogP(mol))


def sa_score(smiles: str | Chem.Mol) -> float | None:
    """Ertl synthetic-accessibility score (1 = easy, 10 = hard), or ``None`` if invalid."""
    mol = _as_mol(smiles)
    return None if mol is None else float(_sascorer().calculateScore(mol))


def qed(smiles: str | Chem.Mol) -> float | None:
    """QED drug-likeness in [0, 1], or ``None`` if invalid."""
    mol = _as_mol(smiles)
    return None if mol is None else float(_QED.qed(mol))


def mol_weight(smiles: str | Chem.Mol) -> float | None:
    """Average molecular weight in Da, or ``None`` if invalid."""
    mol = _as_mol(smiles)
    return None if mol is None else float(Descriptors.MolWt(mol))


def _largest_basis_cycle(mol: Chem.Mol) -> int:
    """Size of the largest cycle in a cycle basis of the heavy-atom graph (0 if acyclic).

    Uses ``networkx.cycle_basis`` on the graph built from RDKit's adjacency matrix (the
    construction used when the ZINC-250k normalisation constants were computed); without networkx
    it falls back to RDKit's symmetrised SSSR, which agrees except on some fused ring systems.
    """
    if mol.GetNumBonds() == 0:
        return 0
    try:
        import networkx as nx
    except ImportError:  # pragma: no cover - networkx is a torch dependency
        rings = Chem.GetSymmSSSR(mol)
        return max((len(r) for r in rings), default=0)
    graph = nx.from_numpy_array(Chem.GetAdjacencyMatrix(mol))
    return max((len(c) for c in nx.cycle_basis(graph)), default=0)


def cycle_score(smiles: str | Chem.Mol) -> float | None:
    """max(0, largest cycle-basis ring size - 6), or ``None`` if invalid."""
    mol = _as_mol(smiles)
    if mol is None:
        return None
    return float(max(0, _largest_basis_cycle(mol) - 6))


def penalized_logp(smiles: str | Chem.Mol, normalized: bool = True) -> float | None:
    """Penalized logP = logP - SA - cycle (``None`` for an invalid molecule).

    With ``normalized=True`` each term is standardised with :data:`ZINC250K_STATS`::

        (logP - m1)/s1 + (-SA - m2)/s2 + (-cycle - m3)/s3

    which is the form in which latent-BO results (GVAE 2.94, SD-VAE 4.04, JT-VAE 5.30) are quoted.
    """
    mol = _as_mol(smiles)
    if mol is None:
        return None
    lp = float(Crippen.MolLogP(mol))
    sa = float(_sascorer().calculateScore(mol))
    cyc = float(max(0, _largest_basis_cycle(mol) - 6))
    if not normalized:
        return lp - sa - cyc
    m1, s1 = ZINC250K_STATS["logp"]
    m2, s2 = ZINC250K_STATS["neg_sa"]
    m3, s3 = ZINC250K_STATS["neg_cycle"]
    return (lp - m1) / s1 + (-sa - m2) / s2 + (-cyc - m3) / s3


# --- drawing ------------------------------------------------------------------------------------
def draw_grid(
    smiles_list: Sequence[str | None],
    path: str | Path,
    n_per_row: int = 6,
    legends: Sequence[str] | None = None,
    sub_img_size: tuple[int, int] = (250, 200),
    max_mols: int | None = 100,
) -> int:
    """Draw valid molecules of ``smiles_list`` as a PNG grid at ``path``; return how many were drawn.

    Invalid (or ``None``) entries are skipped together with their legends.  When nothing is valid,
    a blank image of one cell is written so that downstream code can always open ``path``.
    ``max_mols`` caps the grid size (``None`` = no cap).
    """
    from rdkit.Chem import Draw

    if legends is not None and len(legends) != len(smiles_list):
        raise ValueError(f"got {len(legends)} legends for {len(smiles_list)} molecules")
    mols: list[Chem.Mol] = []
    labels: list[str] = []
    for i, s in enumerate(smiles_list):
        mol = mol_from_smiles(s)
        if mol is None:
            continue
        mols.append(mol)
        labels.append(str(legends[i]) if legends is not None else "")
        if max_mols is not None and len(mols) >= max_mols:
            break
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    skipped = len(smiles_list) - len(mols)
    if skipped:
        logger.debug("draw_grid: skipped %d invalid/unused entries", skipped)
    if not mols:
        from PIL import Image

        logger.warning("draw_grid: no valid molecule to draw; writing a blank image to %s", path)
        Image.new("RGB", sub_img_size, "white").save(path, format="PNG")
        return 0
    image = Draw.MolsToGridImage(
        mols,
        molsPerRow=max(1, min(n_per_row, len(mols))),
        subImgSize=sub_img_size,
        legends=labels if legends is not None else None,
        returnPNG=False,
    )
    if isinstance(image, bytes):  # some RDKit builds/environments return raw PNG data
        path.write_bytes(image)
    elif hasattr(image, "save"):
        image.save(path, format="PNG")
    else:  # IPython display object wrapping PNG bytes
        path.write_bytes(image.data)
    return len(mols)
