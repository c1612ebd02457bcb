"""RDKit canonicalisation and kekulisation of SMILES, with the reason for each rejection."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet_rdkit() -> Iterator[None]:
    """Silence RDKit's per-molecule error messages for the duration of the block."""
    from rdkit import rdBase

    if hasattr(rdBase, "BlockLogs"):
        blocker = rdBase.BlockLogs()
        try:
            yield
        finally:
            del blocker
    else:  # pragma: no cover - old RDKit
        from rdkit import RDLogger

        RDLogger.DisableLog("rdApp.*")
        try:
            yield
        finally:
            RDLogger.EnableLog("rdApp.error")


def _rejection_reason(smiles: str) -> str:
    """Why RDKit rejects ``smiles`` (called only on failures)."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None:
        return "invalid_smiles"
    try:
        Chem.SanitizeMol(mol)
    except Chem.AtomValenceException:
        return "valence"
    except Chem.KekulizeException:
        return "aromaticity"
    except Exception:  # noqa: BLE001 - any other sanitisation failure
        return "sanitization"
    return "rdkit"


def canonicalize_smiles(smiles: str) -> tuple[str | None, str]:
    """RDKit canonical SMILES of ``smiles`` (``Chem.MolToSmiles(Chem.MolFromSmiles(s))``).

    Returns:
        ``(canonical, "")`` or ``(None, reason)`` with reason one of
        ``invalid_smiles`` (syntax), ``valence``, ``aromaticity`` (kekulisation),
        ``sanitization``, ``empty_molecule``. RDKit's own messages are not printed.
    """
    from rdkit import Chem

    with _quiet_rdkit():
        return _canonical_one(Chem, smiles)


def _canonical_one(chem: Any, smiles: str, kekulize: bool = False) -> tuple[str | None, str]:
    mol = chem.MolFromSmiles(smiles)
    if mol is None:
        return None, _rejection_reason(smiles)
    if mol.GetNumAtoms() == 0:
        return None, "empty_molecule"
    if kekulize:
        return kekule_smiles_of(chem, mol)
    return chem.MolToSmiles(mol), ""


def kekule_smiles_of(chem: Any, mol: Any) -> tuple[str | None, str]:
    """Canonical Kekule SMILES of a sanitized molecule: no aromatic atoms, explicit ``=`` bonds.

    ``Chem.Kekulize(mol, clearAromaticFlags=True)`` then ``MolToSmiles(kekuleSmiles=True)``
    (canonical atom order). Returns ``(smiles, "")`` or ``(None, "aromaticity")``.
    """
    try:
        chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception:  # noqa: BLE001 - RDKit raises KekulizeException
        return None, "aromaticity"
    return chem.MolToSmiles(mol, kekuleSmiles=True), ""


def kekulize_smiles(smiles: str) -> tuple[str | None, str]:
    """Canonical Kekule SMILES of ``smiles`` (see :func:`kekule_smiles_of`), or ``(None, reason)``."""
    from rdkit import Chem

    with _quiet_rdkit():
        return _canonical_one(Chem, smiles, kekulize=True)


def _canonical_chunk(texts: list[str], kekulize: bool = False) -> list[tuple[str | None, str]]:
    """Canonicalise (optionally kekulise) a chunk (runs in worker processes too)."""
    from rdkit import Chem

    with _quiet_rdkit():
        return [_canonical_one(Chem, s, kekulize) for s in texts]


def _identity_chunk(texts: list[str]) -> list[tuple[str | None, str]]:
    return [(s, "") for s in texts]


def _worker_init() -> None:
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")  # our own worker process: silence RDKit for its lifetime

