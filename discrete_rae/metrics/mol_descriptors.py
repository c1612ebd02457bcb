"""Per-molecule descriptors behind the MOSES/GuacaMol suites, and a small process-pool map.

Every molecule is parsed once and all per-molecule quantities are computed in one pass
(:func:`describe`), in worker processes when ``n_jobs > 1``.

Definitions (see docs/METRICS.md for the full text):

* fingerprint: Morgan, radius 2, 1024 bits (``rdFingerprintGenerator``), stored bit-packed;
* fragments: the pieces of ``BRICS.BreakBRICSBonds`` (canonical SMILES with dummy-atom labels),
  every occurrence counted;
* scaffold: canonical SMILES of the Bemis-Murcko scaffold (``MurckoScaffold.GetScaffoldForMol``),
  ``None`` when it has fewer than 2 rings (MOSES drops those);
* physchem: Crippen logP, SA score, QED, average molecular weight;
* filters: see :func:`passes_filters` (MOSES's rules and SMARTS, ``moses_filters.csv``).
"""

from __future__ import annotations

import csv
import logging
import math
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np
from rdkit import Chem

from .. import chem

logger = logging.getLogger(__name__)

__all__ = [
    "ALLOWED_ATOMS",
    "FILTER_SMARTS_FILE",
    "GUACAMOL_DESCRIPTORS",
    "MolRecord",
    "brics_fragments",
    "canonicalize_parallel",
    "describe",
    "describe_many",
    "filter_patterns",
    "guacamol_descriptors",
    "murcko_scaffold",
    "parallel_map",
    "passes_filters",
    "resolve_n_jobs",
]

T = TypeVar("T")
R = TypeVar("R")

#: Elements a molecule may contain to pass :func:`passes_filters` (MOSES's atom whitelist).
ALLOWED_ATOMS = frozenset({"C", "N", "S", "O", "F", "Cl", "Br", "H"})
#: The structural alerts of :func:`passes_filters`: MOSES's 22 MCF and 480 PAINS SMARTS.
FILTER_SMARTS_FILE = Path(__file__).with_name("moses_filters.csv")
#: Largest ring size (over RDKit's ring perception) that passes :func:`passes_filters`.
MAX_RING_SIZE = 7
FP_RADIUS = 2
FP_BITS = 1024


# --- process pool -------------------------------------------------------------------------------
def resolve_n_jobs(n_jobs: int | None) -> int:
    """``None``/``1`` -> 1; ``-1`` (or any value < 1) -> all CPUs; otherwise ``n_jobs``."""
    if n_jobs is None:
        return 1
    if n_jobs < 1:
        return os.cpu_count() or 1
    return int(n_jobs)


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    n_jobs: int = 1,
    progress: bool = False,
    desc: str = "",
    chunksize: int = 256,
) -> list[R]:
    """``[fn(x) for x in items]``, over ``n_jobs`` worker processes when worthwhile, in order.

    ``fn`` must be a picklable top-level function.  Uses the ``fork`` start method where the
    platform has it (workers inherit loaded RDKit state), ``spawn`` otherwise.
    """
    from tqdm.auto import tqdm

    n_jobs = resolve_n_jobs(n_jobs)
    n = len(items)
    if n_jobs <= 1 or n < 2 * chunksize:
        return [fn(x) for x in tqdm(items, desc=desc, disable=not progress, leave=False)]
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else "spawn")
    chunksize = max(1, min(chunksize, math.ceil(n / (4 * n_jobs))))
    with ctx.Pool(n_jobs) as pool:
        return list(tqdm(pool.imap(fn, items, chunksize), total=n, desc=desc, disable=not progress, leave=False))


def canonicalize_parallel(
    smiles: Sequence[str | None], n_jobs: int = 1, progress: bool = False, desc: str = "canonical"
) -> list[str | None]:
    """:func:`discrete_rae.chem.canonical` over a list, in parallel; duplicates are computed once."""
    uniq = list(dict.fromkeys(smiles))
    canon = parallel_map(chem.canonical, uniq, n_jobs=n_jobs, progress=progress, desc=desc, chunksize=1024)
    table = dict(zip(uniq, canon))
    return [table[s] for s in smiles]


# --- single-molecule definitions ------------------------------------------------------------------
_FILTER_PATTERNS: list[Chem.Mol] | None = None
_FP_GEN: Any = None


def filter_patterns() -> list[Chem.Mol]:
    """The query molecules of :data:`FILTER_SMARTS_FILE`, parsed once (502 patterns)."""
    global _FILTER_PATTERNS
    if _FILTER_PATTERNS is None:
        with open(FILTER_SMARTS_FILE, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
        patterns = []
        for row in rows:
            query = Chem.MolFromSmarts(row["smarts"])
            if query is None:  # a broken pattern would silently pass everything it should catch
                raise RuntimeError(f"{FILTER_SMARTS_FILE}: filter {row['name']} has an unparsable SMARTS")
            patterns.append(query)
        _FILTER_PATTERNS = patterns
    return _FILTER_PATTERNS


def _fp_generator() -> Any:
    global _FP_GEN
    if _FP_GEN is None:
        from rdkit.Chem import rdFingerprintGenerator

        _FP_GEN = rdFingerprintGenerator.GetMorganGenerator(radius=FP_RADIUS, fpSize=FP_BITS)
    return _FP_GEN


def passes_filters(mol: Chem.Mol | str) -> bool:
    """The MOSES ``Filters`` test of one molecule (the rules of molsets 0.3.1).

    A molecule passes when all of these hold:

    1. no ring of RDKit's ring perception (``GetRingInfo().AtomRings()``, the symmetrised SSSR)
       has more than :data:`MAX_RING_SIZE` atoms;
    2. no atom carries a formal charge;
    3. every atom is one of :data:`ALLOWED_ATOMS`;
    4. no SMARTS of :data:`FILTER_SMARTS_FILE` (22 MCF + 480 PAINS alerts) matches the molecule
       with explicit hydrogens (the alerts spell hydrogens out as ``[#1]``/``[H]`` atoms);
    5. its non-isomeric SMILES is non-empty and parses again.

    The result is the conjunction, so the order only saves work.
    """
    m = chem._as_mol(mol)
    if m is None:
        return False
    if any(len(ring) > MAX_RING_SIZE for ring in m.GetRingInfo().AtomRings()):
        return False
    for atom in m.GetAtoms():
        if atom.GetFormalCharge() != 0 or atom.GetSymbol() not in ALLOWED_ATOMS:
            return False
    with_h = Chem.AddHs(m)
    if any(with_h.HasSubstructMatch(query) for query in filter_patterns()):
        return False
    smiles = Chem.MolToSmiles(m, isomericSmiles=False)
    return bool(smiles) and Chem.MolFromSmiles(smiles) is not None


def brics_fragments(mol: Chem.Mol | str) -> list[str]:
    """Canonical SMILES of the fragments left after breaking all BRICS bonds (with repeats)."""
    from rdkit.Chem import BRICS

    m = chem._as_mol(mol)
    if m is None:
        return []
    return Chem.MolToSmiles(BRICS.BreakBRICSBonds(m)).split(".")


def murcko_scaffold(mol: Chem.Mol | str, min_rings: int = 2) -> str | None:
    """Canonical Bemis-Murcko scaffold SMILES, or ``None`` if it has fewer than ``min_rings`` rings."""
    from rdkit.Chem import rdMolDescriptors
    from rdkit.Chem.Scaffolds import MurckoScaffold

    m = chem._as_mol(mol)
    if m is None:
        return None
    try:
        scaffold = MurckoScaffold.GetScaffoldForMol(m)
    except (ValueError, RuntimeError):
        return None
    if rdMolDescriptors.CalcNumRings(scaffold) < min_rings:
        return None
    smiles = Chem.MolToSmiles(scaffold)
    return smiles or None


@dataclass(frozen=True)
class MolRecord:
    """Everything the MOSES suite needs from one (valid, canonical) molecule."""

    smiles: str
    fp_packed: bytes  # np.packbits of the 1024-bit Morgan fingerprint
    fragments: tuple[str, ...]
    scaffold: str | None
    logP: float
    SA: float
    QED: float
    weight: float
    passes_filters: bool


def _safe(fn: Callable[[], float]) -> float:
    try:
        return float(fn())
    except Exception as exc:  # noqa: BLE001 - one odd molecule must not sink an evaluation
        logger.debug("descriptor failed: %s", exc)
        return float("nan")


def describe(smiles: str) -> MolRecord | None:
    """All per-molecule MOSES quantities for one SMILES (``None`` if it is invalid)."""
    from rdkit.Chem import QED, Crippen, Descriptors

    mol = chem.mol_from_smiles(smiles)
    if mol is None:
        return None
    bits = _fp_generator().GetFingerprintAsNumPy(mol).astype(np.uint8)
    try:
        frags = tuple(brics_fragments(mol))
    except Exception:  # noqa: BLE001
        frags = ()
    try:
        passes = passes_filters(mol)
    except Exception:  # noqa: BLE001
        passes = False
    return MolRecord(
        smiles=smiles,
        fp_packed=np.packbits(bits).tobytes(),
        fragments=frags,
        scaffold=murcko_scaffold(mol),
        logP=_safe(lambda: Crippen.MolLogP(mol)),
        SA=_safe(lambda: chem._sascorer().calculateScore(mol)),
        QED=_safe(lambda: QED.qed(mol)),
        weight=_safe(lambda: Descriptors.MolWt(mol)),
        passes_filters=passes,
    )


def describe_many(
    smiles: Sequence[str], n_jobs: int = 1, progress: bool = False, desc: str = "descriptors"
) -> list[MolRecord | None]:
    """:func:`describe` over a list (in parallel with ``n_jobs`` processes)."""
    chem._sascorer()  # load once in the parent so forked workers inherit it
    filter_patterns()
    return parallel_map(describe, list(smiles), n_jobs=n_jobs, progress=progress, desc=desc, chunksize=64)


def unpack_fingerprints(records: Iterable[MolRecord]) -> np.ndarray:
    """Dense uint8 fingerprint matrix ``[N, 1024]`` of a list of records."""
    packed = [np.frombuffer(r.fp_packed, np.uint8) for r in records]
    if not packed:
        return np.zeros((0, FP_BITS), np.uint8)
    return np.unpackbits(np.stack(packed), axis=1)[:, :FP_BITS]


# --- GuacaMol descriptors -------------------------------------------------------------------------
#: The physico-chemical descriptors of the GuacaMol KL-divergence benchmark: name -> is_discrete.
GUACAMOL_DESCRIPTORS: dict[str, bool] = {
    "BertzCT": False,
    "MolLogP": False,
    "MolWt": False,
    "TPSA": False,
    "NumHAcceptors": True,
    "NumHDonors": True,
    "NumRotatableBonds": True,
    "NumAliphaticRings": True,
    "NumAromaticRings": True,
}


def guacamol_descriptors(smiles: str) -> tuple[tuple[float, ...], bytes] | None:
    """(the :data:`GUACAMOL_DESCRIPTORS` values, packed 4096-bit ECFP4) for one SMILES, or ``None``."""
    from rdkit.Chem import Descriptors, rdFingerprintGenerator

    mol = chem.mol_from_smiles(smiles)
    if mol is None:
        return None
    values = tuple(_safe(lambda name=name: getattr(Descriptors, name)(mol)) for name in GUACAMOL_DESCRIPTORS)
    global _ECFP4_4096
    if _ECFP4_4096 is None:
        _ECFP4_4096 = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=GUACAMOL_FP_BITS)
    bits = _ECFP4_4096.GetFingerprintAsNumPy(mol).astype(np.uint8)
    return values, np.packbits(bits).tobytes()


GUACAMOL_FP_BITS = 4096
_ECFP4_4096: Any = None
