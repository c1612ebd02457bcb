"""Fréchet distance between Gaussians, shared by FCD (molecules) and FID-like image metrics.

For X1 ~ N(mu1, S1) and X2 ~ N(mu2, S2) the squared 2-Wasserstein (Fréchet) distance is::

    d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})

``S1 S2`` is not symmetric, but with any factorisation ``S2 = L L^T`` it is similar to
``L^T S1 L``, which is symmetric positive semi-definite, so ``tr((S1 S2)^{1/2})`` is the sum of the
square roots of the eigenvalues of ``L^T S1 L``.  ``L`` is a Cholesky factor when one covariance is
positive definite, else the symmetric square root.  Only symmetric eigenvalue problems are
solved: no complex ``sqrtm``, and rank-deficient covariances (fewer samples than dimensions) are
fine because tiny negative round-off eigenvalues are clipped to zero.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["frechet_distance", "gaussian_stats", "sqrt_psd"]


def _single_threaded_blas() -> contextlib.AbstractContextManager:
    """Limit BLAS/LAPACK to one thread (if threadpoolctl is installed) for the duration of a block.

    Decompositions of 512x512 matrices gain nothing from threads, and on an oversubscribed
    machine OpenBLAS' spinning threads can slow them down by an order of magnitude.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def gaussian_stats(features: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64) of ``features`` ``[N, D]``.

    ``weights`` (non-negative integers, optional) are frequency weights: row ``i`` counts as
    ``weights[i]`` identical rows, exactly as if it had been repeated.  At least two (weighted)
    rows are required.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D [N, D], got shape {x.shape}")
    if weights is None:
        n = x.shape[0]
        if n < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {n}")
        mu = x.mean(axis=0)
        centred = x - mu
        sigma = centred.T @ centred / (n - 1)
        return mu, sigma
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (x.shape[0],) or (w < 0).any():
        raise ValueError("weights must be a non-negative vector with one entry per row")
    n = w.sum()
    if n < 2:
        raise ValueError(f"need a total weight of at least 2 for a covariance, got {n}")
    mu = (w @ x) / n
    centred = x - mu
    sigma = (centred * w[:, None]).T @ centred / (n - 1)
    return mu, sigma


def sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    m = np.asarray(matrix, dtype=np.float64)
    m = 0.5 * (m + m.T)
    eigval, eigvec = np.linalg.eigh(m)
    return (eigvec * np.sqrt(np.clip(eigval, 0.0, None))) @ eigvec.T


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr((s1 s2)^{1/2}) for symmetric PSD s1, s2.

    The eigenvalues of s1 s2 equal those of the symmetric PSD matrix L^T s2 L when s1 = L L^T, so a
    Cholesky factor of either (positive definite) matrix plus one eigenvalue-only decomposition
    suffices.  If neither factorises (both singular, e.g. fewer samples than dimensions), the
    symmetric square root s1^{1/2} from a full eigendecomposition takes L's place.
    """
    for factored, other in ((s2, s1), (s1, s2)):
        try:
            chol = np.linalg.cholesky(factored)
        except np.linalg.LinAlgError:
            continue
        inner = chol.T @ other @ chol
        break
    else:
        root = sqrt_psd(s1)
        inner = root @ s2 @ root
    eig = np.linalg.eigvalsh(0.5 * (inner + inner.T))
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (the FID/FCD number).

    Inputs are converted to float64 and the covariances symmetrised.  The exact value is >= 0;
    round-off can make it slightly negative for (near-)identical Gaussians with singular
    covariances (square roots of eigenvalues ~1e-16 are ~1e-8 each), so negative results are
    reported as 0, with a warning if they are below -1e-4 relative to the traces.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors differ in shape: {mu1.shape} vs {mu2.shape}")
    d = mu1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"covariances must be {d}x{d}, got {s1.shape} and {s2.shape}")
    if not (np.isfinite(mu1).all() and np.isfinite(mu2).all() and np.isfinite(s1).all() and np.isfinite(s2).all()):
        raise ValueError("non-finite values in the Gaussian statistics")
    s1 = 0.5 * (s1 + s1.T)
    s2 = 0.5 * (s2 + s2.T)
    with _single_threaded_blas():
        tr_sqrt = _trace_sqrt_product(s1, s2)
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)
    if value < 0.0:
        scale = max(1.0, float(np.trace(s1) + np.trace(s2)))
        if value < -1e-4 * scale:
            logger.warning("Fréchet distance came out negative (%.3g); numerical trouble?", value)
        value = 0.0
    return value
