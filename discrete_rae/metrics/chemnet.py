"""ChemNet activations for the Fréchet ChemNet Distance (FCD), via the optional ``fcd_torch`` package.

``fcd_torch`` (PyPI, MIT licence) ships a PyTorch port of ChemNet with its pretrained weights and
runs offline.  We only use it for (1) the network and its weights and (2) its SMILES one-hot
encoding, which must match the encoding the reference statistics were computed with (SMILES
padded to 350 symbols; the padding influences the final LSTM state, so it cannot be trimmed).
Batching, de-duplication and the Fréchet distance itself are ours (see :mod:`.frechet`).

Install with ``pip install --no-deps fcd_torch`` (its only requirements, torch/numpy/scipy, are
already toolkit dependencies; ``--no-deps`` keeps pip from replacing a CPU torch build).
"""

from __future__ import annotations

import functools
import logging
from typing import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["FCD_INSTALL_HINT", "chemnet_activations", "fcd_available"]

FCD_INSTALL_HINT = (
    "FCD needs the optional 'fcd' extra: pip install --no-deps fcd_torch==1.0.7 "
    "(or pip install 'discrete_rae[fcd]' in an environment whose torch build you are happy to keep)"
)
ACTIVATION_DIM = 512


def fcd_available() -> bool:
    """True when ``fcd_torch`` can be imported."""
    try:
        import fcd_torch  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError or a broken install
        return False
    return True


@functools.lru_cache(maxsize=1)
def _chemnet() -> torch.nn.Module:
    """The pretrained ChemNet (loaded once per process, CPU, eval mode)."""
    import warnings

    from fcd_torch import FCD

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.load / keras-port deprecation chatter
        model = FCD(device="cpu", n_jobs=1).model
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _encode(smiles: Sequence[str]) -> torch.Tensor:
    """fcd_torch's ChemNet input encoding ``[B, vocab, 350]`` for already canonical SMILES."""
    from fcd_torch.utils import SmilesDataset

    ds = SmilesDataset(list(smiles), canonize=False)
    x = np.stack([ds[i] for i in range(len(ds))]).astype(np.float32)  # [B, 350, vocab]
    return torch.from_numpy(x).transpose(1, 2)


def chemnet_activations(
    smiles: Sequence[str], batch_size: int = 1024, progress: bool = False, desc: str = "ChemNet"
) -> np.ndarray:
    """Penultimate ChemNet activations ``[N, 512]`` (float32) for a list of SMILES.

    The SMILES should be RDKit-canonical (as the reference statistics were); they are not
    re-canonicalised here.  Duplicates are computed once.  Raises ``ImportError`` with an install
    hint when ``fcd_torch`` is missing.
    """
    if not fcd_available():
        raise ImportError(FCD_INSTALL_HINT)
    smiles = list(smiles)
    if not smiles:
        return np.zeros((0, ACTIVATION_DIM), np.float32)
    uniq = list(dict.fromkeys(smiles))
    model = _chemnet()
    from tqdm.auto import tqdm

    chunks = []
    with torch.inference_mode():
        for i in tqdm(range(0, len(uniq), batch_size), desc=desc, disable=not progress, leave=False):
            chunks.append(model(_encode(uniq[i : i + batch_size])).float().numpy())
    acts = np.concatenate(chunks)
    if len(uniq) == len(smiles):
        return acts
    pos = {s: i for i, s in enumerate(uniq)}
    return acts[[pos[s] for s in smiles]]
