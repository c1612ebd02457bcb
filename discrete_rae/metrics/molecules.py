"""Distribution-learning metrics for generated molecules: the MOSES and GuacaMol suites.

Both suites are re-implemented here from their published definitions (Polykovskiy et al. 2020,
"Molecular Sets (MOSES)"; Brown et al. 2019, "GuacaMol"); only the reference *data* of MOSES
(the molsets wheel's test-set statistics) and ChemNet's *weights* (fcd_torch) are reused.
docs/METRICS.md states every definition, the choices we had to make, and reference numbers.

Quick use::

    from discrete_rae.metrics.molecules import moses_metrics, format_table
    print(format_table(moses_metrics(samples, n_jobs=2)))

All metrics except ``valid`` are computed on the valid samples after RDKit canonicalisation;
duplicates are kept wherever MOSES keeps them (every metric but unique@k and novelty).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import moses_data
from .chemnet import FCD_INSTALL_HINT, chemnet_activations, fcd_available
from .frechet import frechet_distance, gaussian_stats
from .mol_descriptors import (
    GUACAMOL_DESCRIPTORS,
    GUACAMOL_FP_BITS,
    MolRecord,
    canonicalize_parallel,
    describe_many,
    guacamol_descriptors,
    parallel_map,
    unpack_fingerprints,
)
from .similarity import max_tanimoto, nearest_neighbour_within, pairwise_tanimoto_row_means

logger = logging.getLogger(__name__)

__all__ = [
    "MOSES_KEYS",
    "cosine_similarity_counts",
    "format_table",
    "guacamol_metrics",
    "internal_diversity",
    "kl_divergence_continuous",
    "kl_divergence_discrete",
    "moses_metrics",
    "reference_stats_from_smiles",
    "wasserstein_1d",
]

#: Result keys of :func:`moses_metrics`, in MOSES's printing order (``{ref}`` is Test / TestSF).
MOSES_KEYS = (
    "valid", "unique@1000", "unique@10000",
    "FCD/Test", "SNN/Test", "Frag/Test", "Scaf/Test",
    "FCD/TestSF", "SNN/TestSF", "Frag/TestSF", "Scaf/TestSF",
    "IntDiv", "IntDiv2", "Filters", "logP", "SA", "QED", "weight", "Novelty",
)  # fmt: skip
_PHYSCHEM = ("logP", "SA", "QED", "weight")


# --- small, testable building blocks ----------------------------------------------------------------
def cosine_similarity_counts(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Cosine similarity of two sparse count vectors given as ``{key: count}`` (NaN if one is empty)."""
    na = math.sqrt(sum(float(v) ** 2 for v in a.values()))
    nb = math.sqrt(sum(float(v) ** 2 for v in b.values()))
    if na == 0.0 or nb == 0.0:
        return float("nan")
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    dot = sum(float(v) * float(large.get(k, 0.0)) for k, v in small.items())
    return dot / (na * nb)


def wasserstein_1d(u: Sequence[float] | np.ndarray, v: Sequence[float] | np.ndarray) -> float:
    """Wasserstein-1 distance between two empirical 1-D distributions: the integral of |F_u - F_v|."""
    u = np.sort(np.asarray(u, np.float64))
    v = np.sort(np.asarray(v, np.float64))
    if u.size == 0 or v.size == 0:
        return float("nan")
    grid = np.sort(np.concatenate([u, v]))
    widths = np.diff(grid)
    cdf_u = np.searchsorted(u, grid[:-1], side="right") / u.size
    cdf_v = np.searchsorted(v, grid[:-1], side="right") / v.size
    return float(np.sum(np.abs(cdf_u - cdf_v) * widths))


def _gaussian_kde(samples: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian KDE (Scott's bandwidth n^(-1/5) * std, floored) evaluated on ``grid``."""
    x = np.asarray(samples, np.float64)
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    span = float(grid[-1] - grid[0]) if grid.size > 1 else 1.0
    h = max(std * x.size ** (-1.0 / 5.0), 1e-3 * max(span, 1e-12), 1e-12)
    dens = np.zeros_like(grid)
    for chunk in np.array_split(x, max(1, x.size // 2048)):
        z = (grid[None, :] - chunk[:, None]) / h
        dens += np.exp(-0.5 * z * z).sum(0)
    return dens / (x.size * h * math.sqrt(2 * math.pi))


def kl_divergence_continuous(p_samples: Sequence[float], q_samples: Sequence[float], n_grid: int = 1000) -> float:
    """KL(P || Q) between Gaussian-KDE densities of two samples, on a shared grid of ``n_grid`` points.

    The grid spans the union of both samples; densities get 1e-10 added and are normalised to
    sum to one on the grid before the discrete KL sum.
    """
    p = np.asarray(p_samples, np.float64)
    q = np.asarray(q_samples, np.float64)
    p, q = p[np.isfinite(p)], q[np.isfinite(q)]
    if p.size == 0 or q.size == 0:
        return float("nan")
    lo, hi = min(p.min(), q.min()), max(p.max(), q.max())
    if hi <= lo:
        hi = lo + 1.0
    grid = np.linspace(lo, hi, n_grid)
    dp = _gaussian_kde(p, grid) + 1e-10
    dq = _gaussian_kde(q, grid) + 1e-10
    dp, dq = dp / dp.sum(), dq / dq.sum()
    return float(np.sum(dp * np.log(dp / dq)))


def kl_divergence_discrete(p_samples: Sequence[float], q_samples: Sequence[float]) -> float:
    """KL(P || Q) between the empirical distributions of two integer-valued samples.

    Both probability mass functions live on the union of observed values, get 1e-10 added and are
    renormalised (so a value unseen in Q costs a large but finite penalty).
    """
    p = np.asarray(p_samples, np.float64)
    q = np.asarray(q_samples, np.float64)
    p, q = np.rint(p[np.isfinite(p)]), np.rint(q[np.isfinite(q)])
    if p.size == 0 or q.size == 0:
        return float("nan")
    support = np.union1d(p, q)
    pp = np.array([np.count_nonzero(p == s) for s in support], np.float64) / p.size + 1e-10
    qq = np.array([np.count_nonzero(q == s) for s in support], np.float64) / q.size + 1e-10
    pp, qq = pp / pp.sum(), qq / qq.sum()
    return float(np.sum(pp * np.log(pp / qq)))


def internal_diversity(
    fps: np.ndarray, weights: np.ndarray | None = None, powers: Sequence[int] = (1, 2), progress: bool = False
) -> dict[str, float]:
    """MOSES internal diversity ``{"IntDiv": ..., "IntDiv2": ...}`` of fingerprints ``[N, bits]``.

    As molsets computes it: the p-th root is taken per molecule, then averaged,

        IntDiv_p = 1 - mean_i ( mean_j T(i, j)^p )^(1/p)

    over all valid samples i, j (duplicates counted through ``weights``, the diagonal included).
    For p = 1 this is the paper's ``1 - mean_{i,j} T(i, j)``; for p = 2 it is *not* the paper's
    ``1 - (mean_{i,j} T^2)^(1/2)`` (by Jensen's inequality molsets' value is the larger).
    """
    w = np.ones(len(fps)) if weights is None else np.asarray(weights, np.float64)
    if w.sum() <= 0:
        return {"IntDiv" if p == 1 else f"IntDiv{p}": float("nan") for p in powers}
    rows = pairwise_tanimoto_row_means(fps, weights=w, powers=powers, progress=progress)
    out = {}
    for p in powers:
        per_molecule = rows[p] if p == 1 else np.power(rows[p], 1.0 / p)
        out["IntDiv" if p == 1 else f"IntDiv{p}"] = 1.0 - float(np.dot(w, per_molecule) / w.sum())
    return out


# --- reference statistics ---------------------------------------------------------------------------
def _stats_from_records(records: Sequence[MolRecord], weights: np.ndarray, acts: np.ndarray | None) -> dict[str, Any]:
    frag: Counter[str] = Counter()
    scaf: Counter[str] = Counter()
    for r, w in zip(records, weights):
        for f in r.fragments:
            frag[f] += int(w)
        if r.scaffold is not None:
            scaf[r.scaffold] += int(w)
    out: dict[str, Any] = {
        "SNN": {"fps": unpack_fingerprints(records), "weights": weights},
        "Frag": {"frag": dict(frag)},
        "Scaf": {"scaf": dict(scaf)},
    }
    for key in _PHYSCHEM:
        values = np.array([getattr(r, key) for r in records], np.float64)
        out[key] = {"values": np.repeat(values, weights.astype(np.int64))}
    if acts is not None and weights.sum() >= 2:
        mu, sigma = gaussian_stats(acts, weights)
        out["FCD"] = {"mu": mu, "sigma": sigma}
    return out


def reference_stats_from_smiles(
    smiles: Sequence[str], n_jobs: int = 1, progress: bool = True, fcd: bool = True
) -> dict[str, Any]:
    """Reference statistics (same layout as the MOSES ``*_stats.npz``) for your own test set.

    Pass the result in ``moses_metrics(..., references={"MyTest": stats})``.  Invalid SMILES are
    dropped; duplicates count with their multiplicity.
    """
    canon = [c for c in canonicalize_parallel(list(smiles), n_jobs, progress, "canonical reference") if c]
    counts = Counter(canon)
    uniq = list(counts)
    records = [r for r in describe_many(uniq, n_jobs, progress, "reference descriptors") if r is not None]
    weights = np.array([counts[r.smiles] for r in records], np.float64)
    acts = None
    if fcd and fcd_available():
        acts = chemnet_activations([r.smiles for r in records], progress=progress, desc="ChemNet reference")
    elif fcd:
        logger.warning("reference statistics without FCD: %s", FCD_INSTALL_HINT)
    return _stats_from_records(records, weights, acts)


def _default_references() -> dict[str, dict[str, Any]]:
    if moses_data.moses_data_dir() is None:
        logger.warning("MOSES reference statistics not found, so FCD/SNN/Frag/Scaf/physchem are skipped; %s",
                       moses_data.MOSES_INSTALL_HINT)
        return {}
    return {
        "Test": moses_data.moses_reference_stats("test"),
        "TestSF": moses_data.moses_reference_stats("test_scaffolds"),
    }


# --- the MOSES suite ----------------------------------------------------------------------------------
def _canonical_train(
    train: Iterable[str] | None, n_jobs: int, progress: bool, train_is_canonical: bool
) -> frozenset[str] | None:
    if train is None:
        if moses_data.moses_data_dir() is None:
            logger.warning("no training set given and MOSES data missing: novelty skipped; %s",
                           moses_data.MOSES_INSTALL_HINT)
            return None
        return moses_data.moses_train_canonical(n_jobs=n_jobs, progress=progress)
    if train_is_canonical:
        return frozenset(train)
    items = list(dict.fromkeys(train))
    return frozenset(c for c in canonicalize_parallel(items, n_jobs, progress, "canonical train") if c is not None)


def moses_metrics(
    samples: Sequence[str | None],
    train: Iterable[str] | None = None,
    n_jobs: int = 1,
    progress: bool = True,
    fcd: bool = True,
    *,
    references: Mapping[str, Mapping[str, Any]] | None = None,
    ks: Sequence[int] = (1000, 10000),
    train_is_canonical: bool = False,
) -> dict[str, float]:
    """The MOSES metric suite for generated SMILES ``samples`` (30,000 recommended).

    Args:
        samples: generated SMILES; ``None``/empty/unparsable entries count as invalid.
        train: training SMILES for novelty (any container; canonicalised here unless
            ``train_is_canonical``).  ``None`` = the MOSES training set (canonicalised once with the
            installed RDKit and cached on disk, see :mod:`.moses_data`).
        n_jobs: worker processes for per-molecule RDKit work (-1 = all CPUs).  Torch work (ChemNet,
            similarity kernels) uses torch's own thread pool.
        progress: tqdm progress bars.
        fcd: compute FCD/* (needs ``fcd_torch``; if missing, the keys are absent and a warning tells
            how to install the ``fcd`` extra).
        references: ``{suffix: stats}`` reference statistics; default MOSES ``Test`` (test.csv)
            and ``TestSF`` (scaffold split) from the molsets wheel.  Build your own with
            :func:`reference_stats_from_smiles`.
        ks: sizes for ``unique@k``: the first k valid samples (all valid ones if fewer, with a warning).
        train_is_canonical: skip canonicalising ``train``.

    Returns:
        ``{"n_samples", "n_valid", "valid", "unique@1000", "unique@10000", "FCD/Test", "SNN/Test",
        "Frag/Test", "Scaf/Test", ... "/TestSF" ..., "IntDiv", "IntDiv2", "Filters", "logP", "SA",
        "QED", "weight", "Novelty"}`` as floats (logP..weight are Wasserstein-1 distances to the
        reference's values).  With no valid sample every metric but ``valid`` is NaN.
    """
    t_start = time.perf_counter()
    samples = list(samples)
    n = len(samples)
    if n == 0:
        raise ValueError("moses_metrics needs at least one sample")
    refs = dict(_default_references() if references is None else references)

    canon_all = canonicalize_parallel(samples, n_jobs, progress, "canonical samples")
    valid = [c for c in canon_all if c is not None]
    n_valid = len(valid)
    out: dict[str, float] = {"n_samples": float(n), "n_valid": float(n_valid), "valid": n_valid / n}
    logger.info("moses_metrics: %d samples, %d valid (%.4f)", n, n_valid, n_valid / n)

    for k in ks:
        head = valid[:k]
        if len(valid) < k:
            logger.warning("unique@%d: only %d valid samples; computed on all of them", k, len(valid))
        out[f"unique@{k}"] = len(set(head)) / len(head) if head else float("nan")

    counts = Counter(valid)
    uniq = list(counts)
    t0 = time.perf_counter()
    records = [r for r in describe_many(uniq, n_jobs, progress, "descriptors") if r is not None]
    if not records:  # no valid sample (or, pathologically, none whose canonical SMILES re-parses)
        for key in MOSES_KEYS:
            out.setdefault(key, float("nan"))
        return out
    weights = np.array([counts[r.smiles] for r in records], np.float64)
    logger.info("per-molecule descriptors for %d unique molecules: %.1fs", len(records), time.perf_counter() - t0)
    gen = _stats_from_records(records, weights, None)

    acts = None
    if fcd and not fcd_available():
        logger.warning("FCD skipped: %s", FCD_INSTALL_HINT)
    elif fcd and weights.sum() >= 2 and any("FCD" in r for r in refs.values()):
        t0 = time.perf_counter()
        acts = chemnet_activations([r.smiles for r in records], progress=progress)
        gen_mu, gen_sigma = gaussian_stats(acts, weights)
        logger.info("ChemNet activations: %.1fs", time.perf_counter() - t0)

    gen_fps = gen["SNN"]["fps"]
    for name, ref in refs.items():
        if acts is not None and "FCD" in ref:
            out[f"FCD/{name}"] = frechet_distance(gen_mu, gen_sigma, ref["FCD"]["mu"], ref["FCD"]["sigma"])
        if "SNN" in ref:
            t0 = time.perf_counter()
            nn = max_tanimoto(gen_fps, ref["SNN"]["fps"], progress=progress, desc=f"SNN/{name}")
            out[f"SNN/{name}"] = float(np.average(nn, weights=weights))
            logger.info("SNN/%s: %.1fs", name, time.perf_counter() - t0)
        if "Frag" in ref:
            out[f"Frag/{name}"] = cosine_similarity_counts(gen["Frag"]["frag"], ref["Frag"]["frag"])
        if "Scaf" in ref:
            out[f"Scaf/{name}"] = cosine_similarity_counts(gen["Scaf"]["scaf"], ref["Scaf"]["scaf"])

    t0 = time.perf_counter()
    out.update(internal_diversity(gen_fps, weights, powers=(1, 2), progress=progress))
    logger.info("IntDiv: %.1fs", time.perf_counter() - t0)
    out["Filters"] = float(np.average([r.passes_filters for r in records], weights=weights))

    physchem_ref = next((r for r in (refs.get("Test"), *refs.values()) if r is not None and "logP" in r), None)
    if physchem_ref is not None:
        for key in _PHYSCHEM:
            values = gen[key]["values"]
            out[key] = wasserstein_1d(values[np.isfinite(values)], physchem_ref[key]["values"])

    train_set = _canonical_train(train, n_jobs, progress, train_is_canonical)
    if train_set is not None:
        out["Novelty"] = sum(1 for s in uniq if s not in train_set) / len(uniq)

    logger.info("moses_metrics done in %.1fs", time.perf_counter() - t_start)
    ordered = {k: out[k] for k in ("n_samples", "n_valid", *MOSES_KEYS) if k in out}
    ordered.update({k: v for k, v in out.items() if k not in ordered})
    return ordered


# --- the GuacaMol suite -------------------------------------------------------------------------------
def _guacamol_profile(smiles: Sequence[str], n_jobs: int, progress: bool, desc: str) -> dict[str, np.ndarray]:
    """Descriptor columns plus each molecule's nearest-neighbour similarity within the set."""
    rows = [r for r in parallel_map(guacamol_descriptors, list(smiles), n_jobs, progress, desc, 64) if r is not None]
    values = np.array([r[0] for r in rows], np.float64).reshape(len(rows), len(GUACAMOL_DESCRIPTORS))
    prof = {name: values[:, i] for i, name in enumerate(GUACAMOL_DESCRIPTORS)}
    if rows:
        fps = np.unpackbits(np.stack([np.frombuffer(r[1], np.uint8) for r in rows]), axis=1)[:, :GUACAMOL_FP_BITS]
        prof["internal_similarity"] = nearest_neighbour_within(fps)
    else:
        prof["internal_similarity"] = np.zeros(0)
    return prof


def guacamol_metrics(
    samples: Sequence[str | None],
    train: Sequence[str] | None,
    n_jobs: int = 1,
    progress: bool = True,
    fcd: bool = True,
    *,
    n_reference: int | None = None,
    seed: int = 0,
    train_is_canonical: bool = False,
) -> dict[str, float]:
    """The GuacaMol distribution-learning suite (10,000 samples recommended).

    * ``validity``: valid / all samples;  ``uniqueness``: unique canonical / valid;
      ``novelty``: unique valid not in ``train`` / unique valid.
    * ``KL_score``: mean over the 9 physico-chemical descriptors of :data:`GUACAMOL_DESCRIPTORS`
      and the within-set nearest-neighbour ECFP4 similarity of ``exp(-KL(reference || samples))``
      (KDE-based KL for continuous, histogram KL for integer descriptors), computed on the unique
      valid samples against ``n_reference`` random distinct training molecules (``seed``; default:
      as many as there are distinct valid samples, so that the within-set similarity
      distributions of both sets come from sets of equal size).
    * ``FCD`` and ``FCD_score = exp(-0.2 * FCD)``: valid samples (with duplicates) against the same
      random training subset (needs ``fcd_torch``; absent otherwise, with a warning).

    ``train=None`` uses the MOSES training set.  Per-descriptor KLs are returned as ``KL/<name>``.
    """
    samples = list(samples)
    n = len(samples)
    if n == 0:
        raise ValueError("guacamol_metrics needs at least one sample")
    train_set = _canonical_train(train, n_jobs, progress, train_is_canonical)
    canon = canonicalize_parallel(samples, n_jobs, progress, "canonical samples")
    valid = [c for c in canon if c is not None]
    uniq = list(dict.fromkeys(valid))
    out: dict[str, float] = {"n_samples": float(n), "n_valid": float(len(valid)), "validity": len(valid) / n}
    out["uniqueness"] = len(uniq) / len(valid) if valid else float("nan")
    if train_set is None:
        raise ValueError("guacamol_metrics needs a training set (or the MOSES data files for train=None)")
    out["novelty"] = sum(1 for s in uniq if s not in train_set) / len(uniq) if uniq else float("nan")
    if not uniq:
        out.update({"KL_score": float("nan"), "FCD": float("nan"), "FCD_score": float("nan")})
        return out

    pool = sorted(train_set)  # sorted: the random subset depends only on the set and the seed
    rng = np.random.default_rng(seed)
    size = min(len(uniq) if n_reference is None else n_reference, len(pool))
    ref = [pool[i] for i in rng.choice(len(pool), size=size, replace=False)]

    gen_prof = _guacamol_profile(uniq, n_jobs, progress, "GuacaMol descriptors")
    ref_prof = _guacamol_profile(ref, n_jobs, progress, "GuacaMol reference descriptors")
    scores = []
    for name in (*GUACAMOL_DESCRIPTORS, "internal_similarity"):
        discrete = GUACAMOL_DESCRIPTORS.get(name, False)
        kl_fn = kl_divergence_discrete if discrete else kl_divergence_continuous
        kl = kl_fn(ref_prof[name], gen_prof[name])
        out[f"KL/{name}"] = kl
        scores.append(math.exp(-kl) if math.isfinite(kl) else 0.0)
    out["KL_score"] = float(np.mean(scores))

    if fcd and not fcd_available():
        logger.warning("FCD skipped: %s", FCD_INSTALL_HINT)
    elif fcd and len(valid) >= 2 and len(ref) >= 2:
        counts = Counter(valid)
        acts = chemnet_activations(uniq, progress=progress)
        mu_g, s_g = gaussian_stats(acts, np.array([counts[s] for s in uniq], np.float64))
        mu_r, s_r = gaussian_stats(chemnet_activations(ref, progress=progress, desc="ChemNet reference"))
        out["FCD"] = frechet_distance(mu_g, s_g, mu_r, s_r)
        out["FCD_score"] = math.exp(-0.2 * out["FCD"])
    keys = ["n_samples", "n_valid", "validity", "uniqueness", "novelty", "KL_score", "FCD", "FCD_score"]
    ordered = {k: out[k] for k in keys if k in out}
    ordered.update({k: v for k, v in out.items() if k not in ordered})
    return ordered


# --- printing -------------------------------------------------------------------------------------------
def format_table(metrics: Mapping[str, Any], digits: int = 4) -> str:
    """Two-column plain-text table of a metrics dict (integers as integers, NaN as 'nan')."""
    if not metrics:
        return "(no metrics)"
    width = max(len(str(k)) for k in metrics)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * max(5, digits + 2)}"]
    for key, value in metrics.items():
        if isinstance(value, (bool, np.bool_)):
            text = str(bool(value))
        elif isinstance(value, (int, np.integer)) or (
            isinstance(value, float) and math.isfinite(value) and value.is_integer() and str(key).startswith("n_")
        ):
            text = str(int(value))
        elif isinstance(value, (float, np.floating)):
            text = "nan" if math.isnan(value) else f"{float(value):.{digits}f}"
        else:
            text = str(value)
        lines.append(f"{str(key):<{width}}  {text}")
    return "\n".join(lines)
