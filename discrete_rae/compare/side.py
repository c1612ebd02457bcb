"""One compared run (:class:`Side`) and the estimators that need its model, data and seed."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from .stats import (_batches, has_posterior_density, _mc_mi_categorical, _mc_mi_gaussian, entropy_nats, log_weights)

if TYPE_CHECKING:
    from ..domains.base import Domain

log = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    """Sizes of the comparison's evaluation (0 = all / the run's own setting)."""

    n_eval: int = 0
    iw_k: int = 1000
    n_samples: int = 0
    mi_samples: int = 16
    n_paths: int = 8
    probe_train: int = 5000


PRESET_EVAL = {
    "smoke": EvalSettings(n_eval=20, iw_k=4, n_samples=40, mi_samples=2, n_paths=2, probe_train=300),
    "quick": EvalSettings(n_eval=300, iw_k=100, n_samples=1000, mi_samples=4, n_paths=8, probe_train=3000),
    "paper": EvalSettings(),
}


@dataclass
class Side:
    """One of the two compared runs and everything evaluated on it."""

    label: str
    loaded: Any  # pipeline.LoadedRun
    prepared: Any  # domains.base.Prepared
    device: torch.device
    results: dict[str, Any] = field(default_factory=dict)
    shown: dict[str, Any] = field(default_factory=dict)  # outputs kept for the pictures

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def run(self) -> Any:
        return self.loaded.run

    @property
    def domain(self) -> Domain:
        from ..registry import DOMAINS

        return DOMAINS.get(self.run.domain)

    @property
    def discrete(self) -> bool:
        return bool(getattr(self.model.latent, "discrete", False))

    @property
    def shape(self) -> tuple[int, int]:
        """(N variables, K classes) of a discrete code."""
        return int(self.run.model.n_vars), int(self.run.model.n_classes)


def bounds(side: Side, x: Tensor, k: int) -> dict[str, float]:
    """Negative ELBO and importance-weighted bound (nats per example) for stochastic latents."""
    if not has_posterior_density(side.model):
        return {}
    side.model.eval()
    g = torch.Generator().manual_seed(side.run.train.seed + 11)
    elbo, iwae = [], []
    for xb in _batches(x, 64):
        lw = log_weights(side.model, xb.to(side.device), k, g).cpu()
        elbo.append(lw.mean(0))
        iwae.append(torch.logsumexp(lw, 0) - math.log(k))
    return {"neg_elbo": -float(torch.cat(elbo).mean()), "neg_iwae": -float(torch.cat(iwae).mean()), "iw_k": k}


def _log_q_matrix(side: Side, x: Tensor) -> Tensor | None:
    """log q(y_n = k | x) [M, N, K] for a categorical latent (None otherwise)."""
    out = []
    side.model.eval()
    with torch.no_grad():
        for xb in _batches(x, 256):
            stats = side.model.latent(side.model.encoder(xb.to(side.device))).stats
            if "log_q" not in stats:
                return None
            out.append(stats["log_q"].float().cpu())
    return torch.cat(out)


def _gaussian_stats(side: Side, x: Tensor) -> tuple[Tensor, Tensor]:
    """Posterior means and log-variances [M, D] of a Gaussian encoder on ``x``."""
    mus, logvars = [], []
    with torch.no_grad():
        for xb in _batches(x, 256):
            st = side.model.latent(side.model.encoder(xb.to(side.device))).stats
            mus.append(st["mu"].float().cpu())
            logvars.append(st["logvar"].float().cpu())
    return torch.cat(mus), torch.cat(logvars)


def mutual_information(side: Side, x: Tensor, samples: int) -> dict[str, Any]:
    """I(X; C) and sum_n I(X; C_n) under the empirical data distribution (module docstring)."""
    m = len(x)
    res: dict[str, Any] = {"mi_upper_log_m": math.log(m), "mi_examples": m}
    if side.discrete:
        log_q = _log_q_matrix(side, x)
        n, k = side.shape
        stochastic = bool(getattr(side.model.latent, "stochastic", False))
        if not stochastic:  # point-mass encoder: I = H(C) plug-in
            idx = log_q.argmax(-1)
            _, counts = torch.unique(idx, dim=0, return_counts=True)
            p = counts.double() / m
            res["mi"] = float(entropy_nats(p, 0))
            freq = torch.nn.functional.one_hot(idx, k).double().mean(0)
            res["mi_per_var_sum"] = float(entropy_nats(freq).sum())
            return res
        res["mi"] = _mc_mi_categorical(log_q, samples, side.run.train.seed)
        q = log_q.double().exp()
        res["mi_per_var_sum"] = float((entropy_nats(q.mean(0)) - entropy_nats(q).mean(0)).sum())
        res["mi_samples"] = samples
        return res
    if side.run.model.latent == "gaussian":
        mu, logvar = _gaussian_stats(side, x)
        res["mi"] = _mc_mi_gaussian(mu, logvar, samples, side.run.train.seed)
        res["mi_samples"] = samples
        return res
    res["mi"] = None  # deterministic continuous code: I(X; Z) is not finite
    return res


def _crippen_logp(texts: list[str]) -> np.ndarray:
    from rdkit import Chem, RDLogger
    from rdkit.Chem import Crippen

    RDLogger.DisableLog("rdApp.*")
    mols = [Chem.MolFromSmiles(t) for t in texts]
    return np.array([Crippen.MolLogP(m) if m is not None else np.nan for m in mols])


def probe_labels(side: Side, n_train: int, n_test: int) -> tuple[str, str, np.ndarray, np.ndarray] | None:
    """(name, kind, train labels, test labels) for the probe, or None when the domain has none.

    kind: ``class`` (accuracy) or ``value`` (r^2). Train labels are for the first ``n_train``
    training examples, test labels for the first ``n_test`` test examples.
    """
    labels = side.prepared.labels
    if "class" in labels and "class_test" in labels:
        return "class", "class", labels["class"][:n_train].numpy(), labels["class_test"][:n_test].numpy()
    if side.run.domain == "molecules" and side.prepared.train_texts:
        return ("logP (Crippen)", "value", _crippen_logp(side.prepared.train_texts[:n_train]),
                _crippen_logp(side.prepared.test_texts[:n_test]))
    return None


def hamming_paths(side: Side, codes: Tensor, n_paths: int) -> list[Tensor]:
    """Paths between random pairs of test codes: [d+1, D] each.

    Discrete: switch the differing variables of a to b's classes one at a time, in random order
    (d = Hamming distance). Continuous: 11 points of the linear interpolation.
    """
    g = torch.Generator().manual_seed(side.run.train.seed + 29)
    m = len(codes)
    paths = []
    for _ in range(n_paths):
        i, j = torch.randperm(m, generator=g)[:2].tolist()
        if not side.discrete:
            t = torch.linspace(0, 1, 11)[:, None]
            paths.append((1 - t) * codes[i] + t * codes[j])
            continue
        n_vars, n_classes = side.shape
        a, b = codes[i].view(n_vars, n_classes), codes[j].view(n_vars, n_classes)
        differ = (a.argmax(-1) != b.argmax(-1)).nonzero().flatten()
        order = differ[torch.randperm(len(differ), generator=g)]
        steps, cur = [a.reshape(-1).clone()], a.clone()
        for v in order.tolist():
            cur[v] = b[v]
            steps.append(cur.reshape(-1).clone())
        paths.append(torch.stack(steps))
    side.shown["path_kind"] = "Hamming path" if side.discrete else "linear interpolation"
    side.shown["path_lengths"] = [len(p) - 1 for p in paths]
    return paths


def train_or_reuse(run: Any, run_dir: Path, device: torch.device, overwrite: bool, progress: bool) -> None:
    """Train ``run`` into ``run_dir`` unless a finished run with the same config is there."""
    from ..config import to_toml
    from ..pipeline import train_run

    finished = (run_dir / "metrics.json").is_file() and (run_dir / "checkpoint.pt").is_file()
    if finished and not overwrite:
        saved = (run_dir / "config.toml").read_text() if (run_dir / "config.toml").is_file() else ""
        if saved != to_toml(run.sections()):
            raise UsageError(f"{run_dir} holds a run with another configuration; use --overwrite or --name")
        log.info("reusing the finished run %s", run_dir)
        return
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    log.info("training %s on %s into %s", run.model_name, run.domain, run_dir)
    train_run(run, run_dir, device, None, progress=progress, evaluate=False)


def load_side(label: str, run_dir: Path, device: torch.device) -> Side:
    from ..pipeline import load_run
    from ..registry import DOMAINS

    loaded = load_run(run_dir, device)
    if not loaded.samplers:
        raise UsageError(f"{run_dir}: training did not finish (no fitted sampler); train it to the end first")
    prepared = DOMAINS.get(loaded.run.domain).prepare(loaded.run, codec_state=loaded.checkpoint["codec"],
                                                      progress=False)
    return Side(label, loaded, prepared, device)
