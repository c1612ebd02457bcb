"""``python -m discrete_rae compare``: two models (or two finished runs) side by side.

    python -m discrete_rae compare --domain digits --models gumbel_vae,discrete_rae --preset quick
    python -m discrete_rae compare --runs runs/grammar_vae-molecules,runs/grammar_rae-molecules

Trains both models with the same preset, overrides and seed (or loads finished runs with
:func:`pipeline.load_run`), then writes ``RUNS_DIR/compare-NAME/report.md``, ``comparison.json``
and PNGs. Continuous codes get the metrics that apply to them.

What is measured (all on the test split, or its first ``n_eval`` examples):

- reconstruction: -log p(x | code) in nats (and bits) per example with the deterministic code
  (posterior mean / argmax one-hot); pixels: mean squared error; sequences: token accuracy and
  the share of exactly reconstructed strings (greedy decoding).
- stochastic latents (VAEs): the negative ELBO and the importance-weighted bound
  -log (1/k) sum_i p(x | z_i) p(z_i) / q(z_i | x), z_i ~ q(z | x), from the same k draws
  (Burda et al. 2016). Categorical draws are exact one-hot samples (Jang et al.'s evaluation).
- sample quality of every fitted ex-post sampler, by the domain's metric (images: Fréchet
  distance in the feature space of the data set's classifier, precision/recall; sequences:
  validity, uniqueness, novelty); for discrete codes also the share of sampled codes that are
  copies of a training code.
- codes (discrete): per-variable entropy H_n of the class used over the training codes (nats)
  and perplexity exp(H_n); the share of (variable, class) slots never used; active variables =
  those whose most frequent class covers less than 99% of the training codes; distinct codes.
  Continuous: active units (Var_x E[z_d | x] > 0.01, Burda et al.).
- mutual information I(X; C) between the data and the code under the empirical distribution of
  the M evaluation examples and the encoder q(c | x):
  I = 1/M sum_i E_{c ~ q(.|x_i)} [log q(c | x_i) - log (1/M sum_j q(c | x_j))], estimated with S
  draws per example. For a deterministic code q is a point mass and I = H(C), the plug-in entropy
  of the codes. Either way I <= log M (reported). Also sum_n I(X; C_n) (per variable, exact),
  an upper bound of I(X; C) when the variables are conditionally independent given x.
- linear probe: logistic regression (classes; accuracy) or ridge regression (a molecular
  property, Crippen logP; r^2) from the codes of the training split to the test split.
- decoder smoothness (discrete codes): the quality of decoded test codes after resampling r
  variables uniformly (r = 0, 1, 3, 10).
- a 2-D PCA embedding of the test codes coloured by label; decodes along Hamming paths between
  pairs of test codes (one variable switched per step, in random order; for continuous codes a
  linear interpolation); for sequences the validity along the path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from . import cli

log = logging.getLogger(__name__)

# --domain aliases: name -> (domain, dataset)
DOMAIN_ALIASES = {"digits": ("images", "digits")}

# compare's "quick" = the domain's quick preset plus these overrides, so that the pair trains
# and is evaluated within about 5 minutes on 2 CPU cores. Same overrides for both models: the
# budget is a number of epochs (equal work), with a wall-clock cap as a safety net.
QUICK_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "images": {"model": {"channels": (32, 64)}, "train": {"epochs": 40, "max_minutes": 2.0}},
    "expressions": {"train": {"max_steps": 0, "max_minutes": 1.25}, "data": {"n_train": 20000, "n_test": 500}},
    # molecules: long SMILES derivations make a CPU step slow (about 3 s at one thread); a few
    # minutes per model give an undertrained pair, meant as a smoke-level comparison only.
    "molecules": {"train": {"max_steps": 0, "max_minutes": 3.0}, "data": {"n_train": 10000, "n_test": 500}},
}


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
    def domain(self) -> Any:
        from .registry import DOMAINS

        return DOMAINS.get(self.run.domain)

    @property
    def discrete(self) -> bool:
        return bool(getattr(self.model.latent, "discrete", False))

    @property
    def shape(self) -> tuple[int, int]:
        """(N variables, K classes) of a discrete code."""
        return int(self.run.model.n_vars), int(self.run.model.n_classes)


# --- reconstruction and bounds -------------------------------------------------------------------
def _batches(x: Tensor, size: int) -> list[Tensor]:
    return list(x.split(max(1, size)))


@torch.no_grad()
def reconstruction_nll(model: Any, x: Tensor, device: torch.device, batch: int = 256) -> Tensor:
    """-log p(x | code) per example [M] with the deterministic code (eval mode)."""
    model.eval()
    out = []
    for xb in _batches(x, batch):
        xb = xb.to(device)
        lat = model.latent(model.encoder(xb))
        out.append(model.likelihood.nll(model.decoder(lat.code, xb), xb).float().cpu())
    return torch.cat(out)


def _gaussian_posterior(latent: Any, out: Any, k: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """k draws z = mu + sigma eps [k, B, D] and log q(z|x) - log N(z; 0, I) [k, B]."""
    mu, logvar = out.stats["mu"].float(), out.stats["logvar"].float()
    eps = torch.randn((k, *mu.shape), generator=generator).to(mu.device)
    z = mu + (0.5 * logvar).exp() * eps
    log_ratio = (-0.5 * eps.pow(2) - 0.5 * logvar + 0.5 * z.pow(2)).sum(-1)  # the 2 pi terms cancel
    return z, log_ratio


def _gumbel_posterior(latent: Any, out: Any, k: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    return latent.sample_posterior(out, k, generator)


# latent type (config name) -> posterior sampler returning (z [k, B, D], log q - log p [k, B])
POSTERIORS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "gaussian": _gaussian_posterior, "gumbel": _gumbel_posterior}


def _repeat(x: Tensor, k: int) -> Tensor:
    """x [B, ...] -> [k*B, ...] (k copies, copy-major)."""
    return x.unsqueeze(0).expand(k, *x.shape).reshape(k * x.shape[0], *x.shape[1:])


@torch.no_grad()
def log_weights(model: Any, latent_name: str, x: Tensor, k: int, generator: torch.Generator,
                chunk_rows: int = 4096) -> Tensor:
    """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x), z_i ~ q(z|x): [k, B]."""
    out = model.latent(model.encoder(x))
    rows = []
    step = max(1, chunk_rows // max(1, x.shape[0]))
    for k0 in range(0, k, step):
        kc = min(step, k - k0)
        z, log_ratio = POSTERIORS[latent_name](model.latent, out, kc, generator)
        xs = _repeat(x, kc)
        nll = model.likelihood.nll(model.decoder(z.reshape(kc * x.shape[0], -1).to(x.device), xs), xs)
        rows.append(-nll.float().view(kc, -1) - log_ratio.float())
    return torch.cat(rows)


def bounds(side: Side, x: Tensor, k: int) -> dict[str, float]:
    """Negative ELBO and importance-weighted bound (nats per example) for stochastic latents."""
    name = side.run.model.latent
    if name not in POSTERIORS:
        return {}
    side.model.eval()
    g = torch.Generator().manual_seed(side.run.train.seed + 11)
    elbo, iwae = [], []
    for xb in _batches(x, 64):
        lw = log_weights(side.model, name, xb.to(side.device), k, g).cpu()
        elbo.append(lw.mean(0))
        iwae.append(torch.logsumexp(lw, 0) - math.log(k))
    return {"neg_elbo": -float(torch.cat(elbo).mean()), "neg_iwae": -float(torch.cat(iwae).mean()), "iw_k": k}


# --- codes -----------------------------------------------------------------------------------------
def code_indices(codes: Tensor, n_vars: int, n_classes: int) -> Tensor:
    """One-hot codes [M, N*K] -> indices [M, N]."""
    return codes.view(len(codes), n_vars, n_classes).argmax(-1)


def entropy_nats(p: Tensor, dim: int = -1) -> Tensor:
    """Shannon entropy sum -p log p (0 log 0 = 0) along ``dim``."""
    return (-(p * p.clamp_min(1e-30).log()).sum(dim)).clamp_min(0.0) + 0.0  # + 0.0 turns -0.0 into 0.0


def discrete_code_stats(idx: Tensor, n_classes: int) -> dict[str, Any]:
    """Usage statistics of index codes [M, N] (see the module docstring)."""
    m, n = idx.shape
    freq = torch.nn.functional.one_hot(idx, n_classes).double().mean(0)  # [N, K]
    h = entropy_nats(freq)
    return {"entropy_mean": float(h.mean()), "entropy_min": float(h.min()), "entropy_max": float(h.max()),
            "perplexity_mean": float(h.exp().mean()), "max_entropy": math.log(n_classes),
            "unused_classes": float((freq == 0).double().mean()),
            "active_vars": int((freq.max(-1).values < 0.99).sum()), "n_vars": n,
            "distinct_codes": len(torch.unique(idx, dim=0)) / m, "per_var_entropy": h.tolist()}


def continuous_code_stats(codes: Tensor) -> dict[str, Any]:
    """Active units (Var over x of the code > 0.01) and the spread of the code."""
    var = codes.double().var(0)
    return {"active_units": int((var > 0.01).sum()), "dims": codes.shape[1], "code_std_mean": float(var.sqrt().mean())}


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
        res["mi"] = _mc_mi_gaussian(side, x, samples)
        res["mi_samples"] = samples
        return res
    res["mi"] = None  # deterministic continuous code: I(X; Z) is not finite
    return res


def _mc_mi_categorical(log_q: Tensor, samples: int, seed: int) -> float:
    """Monte Carlo I(X; C) for factorised categorical encoders log_q [M, N, K]."""
    m, n, k = log_q.shape
    g = torch.Generator().manual_seed(seed + 17)
    idx = torch.multinomial(log_q.exp().reshape(m * n, k), samples, replacement=True, generator=g)
    idx = idx.view(m, n, samples).permute(0, 2, 1).reshape(m * samples, n)  # row = (i, s)
    onehot = torch.nn.functional.one_hot(idx, k).float().reshape(m * samples, n * k)
    flat = log_q.reshape(m, n * k)
    total = 0.0
    for rows in torch.arange(m * samples).split(2048):
        cross = onehot[rows] @ flat.T  # [r, M]: log q(c | x_j)
        own = cross[torch.arange(len(rows)), rows // samples]
        total += float((own - (torch.logsumexp(cross, 1) - math.log(m))).sum())
    return total / (m * samples)


def _mc_mi_gaussian(side: Side, x: Tensor, samples: int) -> float:
    """Monte Carlo I(X; Z) for a diagonal Gaussian encoder (same estimator, Gaussian densities)."""
    mus, logvars = [], []
    with torch.no_grad():
        for xb in _batches(x, 256):
            st = side.model.latent(side.model.encoder(xb.to(side.device))).stats
            mus.append(st["mu"].float().cpu()), logvars.append(st["logvar"].float().cpu())
    mu, logvar = torch.cat(mus), torch.cat(logvars)
    m = len(mu)
    g = torch.Generator().manual_seed(side.run.train.seed + 17)
    z = (mu.unsqueeze(1) + (0.5 * logvar).exp().unsqueeze(1) * torch.randn(m, samples, mu.shape[1], generator=g))
    z = z.reshape(m * samples, -1)
    inv_var = (-logvar).exp()
    total = 0.0
    for rows in torch.arange(m * samples).split(256):
        d = z[rows].unsqueeze(1) - mu.unsqueeze(0)  # [r, M, D]
        cross = -0.5 * (d.pow(2) * inv_var + logvar).sum(-1)  # log q(z | x_j) + const
        own = cross[torch.arange(len(rows)), rows // samples]
        total += float((own - (torch.logsumexp(cross, 1) - math.log(m))).sum())
    return total / (m * samples)


# --- linear probes ---------------------------------------------------------------------------------
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


def linear_probe(train_codes: Tensor, test_codes: Tensor, labels: tuple[str, str, np.ndarray, np.ndarray] | None,
                 seed: int) -> dict[str, Any]:
    """Accuracy (logistic regression) or r^2 (ridge) of labels from codes, on the test codes."""
    if labels is None:
        return {"probe": "n/a (no labels in this domain)"}
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    name, kind, ytr, yte = labels
    ok_tr, ok_te = np.isfinite(ytr.astype(float)), np.isfinite(yte.astype(float))
    xtr, xte = train_codes.numpy()[ok_tr], test_codes.numpy()[ok_te]
    scaler = StandardScaler().fit(xtr)
    xtr, xte = scaler.transform(xtr), scaler.transform(xte)
    if kind == "class":
        clf = LogisticRegression(max_iter=2000, C=0.1, random_state=seed).fit(xtr, ytr[ok_tr])
        score = float((clf.predict(xte) == yte[ok_te]).mean())
        baseline = float(np.mean(yte[ok_te] == np.bincount(ytr[ok_tr].astype(int)).argmax()))
        return {"probe": name, "probe_metric": "accuracy", "probe_score": score, "probe_baseline": baseline}
    reg = Ridge(alpha=1.0).fit(xtr, ytr[ok_tr])
    pred, y = reg.predict(xte), yte[ok_te]
    r2 = float(1 - ((pred - y) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-12))
    return {"probe": name, "probe_metric": "r2", "probe_score": r2, "probe_baseline": 0.0}


# --- domain views: decoding, quality and pictures ------------------------------------------------
class ImageView:
    """Images: decoded pixels, Fréchet distance / precision / recall in the classifier's features."""

    quality_key, better = "fid_feat", "min"

    def __init__(self) -> None:
        self._real: dict[int, Tensor] = {}

    def decode(self, side: Side, z: Tensor) -> Tensor:
        return side.domain.decode(side.model, z, side.device)

    def _extractor(self, side: Side) -> Any:
        from .domains.images import data_dir_of

        dataset = side.prepared.codec.dataset or side.prepared.info.get("dataset", "digits")
        return side.domain.feature_extractor(dataset, data_dir_of(side.prepared.info.get("data_dir", "")))

    def quality(self, side: Side, outputs: Tensor) -> dict[str, float]:
        from .metrics.images import frechet, precision_recall

        fe = self._extractor(side)
        key = id(side.prepared.test)
        if key not in self._real:
            self._real[key] = fe(side.prepared.test)
        fake = fe(outputs)
        pr = precision_recall(self._real[key], fake, seed=side.run.train.seed)
        return {"fid_feat": frechet(self._real[key], fake), "precision": pr["precision"], "recall": pr["recall"]}

    def reference(self, side: Side) -> dict[str, float]:
        """The floor: training images against the test images, same sample size."""
        from .metrics.images import frechet

        n = min(len(side.prepared.train), side.results["n_samples"])
        fe = self._extractor(side)
        return {"fid_feat_train_vs_test": frechet(fe(side.prepared.test), fe(side.prepared.train[:n]))}

    def reconstruction(self, side: Side, x: Tensor) -> dict[str, float]:
        from .nn.images import as_float_images

        codes = side.domain.encode(side.model, x, side.device)
        recon = self.decode(side, codes)
        return {"recon_mse": float((recon - as_float_images(x)).pow(2).mean())}

    def real(self, side: Side, n: int) -> Tensor:
        return side.prepared.test[:n]

    def draw_samples(self, panels: list[tuple[str, Any]], path: Path) -> None:
        from .domains.images import image_grid, save_panels

        save_panels([(t, image_grid(o[:64])) for t, o in panels], path)

    def sample_pictures(self, sides: list[Side]) -> list[tuple[str, Callable[[Path], Any]]]:
        """samples.png: real test images next to each model's best sampler; one PNG per model
        with every sampler."""
        panels = [("real (test)", self.real(sides[0], 64))]
        panels += [(f"{s.label} ({s.results['best_sampler']})", s.shown["samples"][s.results["best_sampler"]])
                   for s in sides]
        out: list[tuple[str, Callable[[Path], Any]]] = [("samples.png", lambda p: self.draw_samples(panels, p))]
        for s in sides:
            per = sorted(s.shown["samples"].items())
            out.append((f"samplers-{_slug(s.label)}.png", lambda p, per=per: self.draw_samples(per, p)))
        return out

    def draw_paths(self, sides: list[Side], path: Path) -> None:
        from .domains.images import image_grid, save_panels

        panels = [(f"{s.label}: {s.shown['path_kind']}", image_grid(s.shown["path_images"], ncol=s.shown["path_cols"]))
                  for s in sides if "path_images" in s.shown]
        save_panels(panels, path)

    def path_outputs(self, side: Side, paths: list[Tensor], cols: int = 10) -> dict[str, Any]:
        """Decode each path and keep ``cols`` evenly spaced points per path for the picture."""
        rows = []
        for z in paths:
            pick = torch.linspace(0, len(z) - 1, cols).round().long()
            rows.append(self.decode(side, z[pick]))
        side.shown.update(path_images=torch.cat(rows), path_cols=cols)
        return {}

    def text_lines(self, outputs: Any, n: int) -> list[str]:
        return []


class SequenceView:
    """Strings: grammar-masked greedy decoding, validity / uniqueness / novelty."""

    quality_key, better = "valid", "max"

    def decode(self, side: Side, z: Tensor) -> list[str | None]:
        return side.domain.decode(side.model, z, side.device)

    def quality(self, side: Side, outputs: list[str | None]) -> dict[str, float]:
        return side.domain.sample_metrics(outputs, side.prepared.train_texts)

    def reference(self, side: Side) -> dict[str, float]:
        return {}

    def reconstruction(self, side: Side, x: Tensor) -> dict[str, float]:
        from .config import EvalConfig

        n = len(x)
        sub = dataclasses.replace(side.prepared, test=x, test_texts=side.prepared.test_texts[:n])
        rec = side.domain.reconstruction(side.model, sub, EvalConfig(recon_protocol="greedy"), side.device)
        with torch.no_grad():
            side.model.eval()
            acc = [float(side.model.likelihood.token_accuracy(side.model(xb.to(side.device))[1], xb.to(side.device)))
                   * len(xb) for xb in _batches(x, 256)]
        return {"recon_accuracy": rec["recon_accuracy"], "token_accuracy": sum(acc) / n}

    def real(self, side: Side, n: int) -> list[str]:
        return side.prepared.test_texts[:n]

    def valid(self, side: Side, outputs: list[str | None]) -> list[bool]:
        return [s is not None and side.domain.canonical(s) is not None for s in outputs]

    def sample_pictures(self, sides: list[Side]) -> list[tuple[str, Callable[[Path], Any]]]:
        """The domain's own picture (molecule grid, expression plots) of the real test strings
        and of each model's best-sampler samples."""
        out: list[tuple[str, Callable[[Path], Any]]] = [
            ("samples-real.png", lambda p: sides[0].domain.render(self.real(sides[0], 64), p))]
        for s in sides:
            best = s.shown["samples"][s.results["best_sampler"]]
            out.append((f"samples-{_slug(s.label)}.png", lambda p, s=s, best=best: s.domain.render(best, p)))
        return out

    def path_outputs(self, side: Side, paths: list[Tensor], bins: int = 11) -> dict[str, Any]:
        """Validity along the paths, by relative position t in [0, 1] (bins of 0.1)."""
        hits, counts = np.zeros(bins), np.zeros(bins)
        example: list[str] = []
        for z in paths:
            texts = self.decode(side, z)
            ok = self.valid(side, texts)
            pos = np.round(np.linspace(0, 1, len(z)) * (bins - 1)).astype(int)
            np.add.at(hits, pos, ok)
            np.add.at(counts, pos, 1)
            if not example:
                example = ["<unfinished>" if t is None else t for t in texts]
        curve = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan).tolist()  # nan: no path point there
        side.shown.update(path_validity=curve, path_example=example)
        return {"path_validity_mean": float(hits.sum() / max(counts.sum(), 1)), "path_validity_by_t": curve}

    def draw_paths(self, sides: list[Side], path: Path) -> None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.4))
        ax = fig.add_subplot(1, 1, 1)
        for s in sides:
            curve = s.shown.get("path_validity")
            if curve is not None:
                ax.plot(np.linspace(0, 1, len(curve)), curve, marker="o", label=f"{s.label} ({s.shown['path_kind']})")
        ax.set_xlabel("position along the path (0 = code a, 1 = code b)")
        ax.set_ylabel("share of valid decodes")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    def text_lines(self, outputs: Any, n: int) -> list[str]:
        return ["<unfinished>" if s is None else s for s in list(outputs)[:n]]


VIEWS: dict[str, Any] = {"images": ImageView(), "molecules": SequenceView(), "expressions": SequenceView()}


# --- sample quality, paths ------------------------------------------------------------------------
def sample_quality(side: Side, view: Any, n: int) -> dict[str, dict[str, Any]]:
    """Quality of ``n`` decoded draws of every fitted sampler of the run."""
    out: dict[str, dict[str, Any]] = {}
    train_keys = None
    if side.discrete:
        n_vars, n_classes = side.shape
        train_keys = {tuple(r) for r in code_indices(side.shown["train_codes"], n_vars, n_classes).tolist()}
    for i, (name, sampler) in enumerate(sorted(side.loaded.samplers.items())):
        g = torch.Generator().manual_seed(side.run.train.seed * 1000 + 101 + i)
        t0 = time.monotonic()
        z = sampler.sample(n, generator=g)
        outputs = view.decode(side, z)
        metrics = {k: v for k, v in view.quality(side, outputs).items()
                   if isinstance(v, (int, float)) and k != "n_samples"}
        if train_keys is not None:
            drawn = code_indices(z, *side.shape).tolist()
            metrics["code_copies"] = sum(tuple(r) in train_keys for r in drawn) / n
        metrics["seconds"] = round(time.monotonic() - t0, 1)
        out[name] = metrics
        side.shown.setdefault("samples", {})[name] = outputs[:64]
    return out


def best_sampler(quality: dict[str, dict[str, Any]], key: str, better: str) -> str:
    pick = min if better == "min" else max
    scored = {k: v[key] for k, v in quality.items() if isinstance(v.get(key), (int, float)) and math.isfinite(v[key])}
    return pick(scored, key=scored.get) if scored else next(iter(quality))


def perturbation_quality(side: Side, view: Any, codes: Tensor, flips: tuple[int, ...] = (0, 1, 3, 10)
                         ) -> dict[str, dict[str, float]]:
    """Quality of decodes of test codes with r variables resampled uniformly (discrete codes).

    How smooth the decoder is off the code manifold in Hamming space: what an imperfect ex-post
    density costs. r = 0 is the plain reconstruction. Empty for continuous codes.
    """
    if not side.discrete:
        return {}
    n_vars, n_classes = side.shape
    g = torch.Generator().manual_seed(side.run.train.seed + 43)
    idx = code_indices(codes, n_vars, n_classes)
    out = {}
    for r in flips:
        noisy = idx.clone()
        if r > 0:
            pick = torch.rand(len(idx), n_vars, generator=g).argsort(1)[:, : min(r, n_vars)]
            noisy.scatter_(1, pick, torch.randint(n_classes, pick.shape, generator=g))
        z = torch.nn.functional.one_hot(noisy, n_classes).float().view(len(idx), -1)
        q = view.quality(side, view.decode(side, z))
        out[str(r)] = {view.quality_key: q[view.quality_key]}
    return out


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


# --- one side end to end --------------------------------------------------------------------------
def evaluate_side(side: Side, settings: EvalSettings) -> None:
    """Fill ``side.results`` with every figure of the report (timed by part)."""
    view = VIEWS[side.run.domain]
    x = side.prepared.test[: settings.n_eval or len(side.prepared.test)]
    side.results.update(n_eval=len(x), n_samples=settings.n_samples or side.run.eval.n_samples)
    for part, fn in (("recon", _reconstruction_part), ("codes", _codes_part), ("samples", _samples_part)):
        t0 = time.monotonic()
        fn(side, view, x, settings)
        side.results[f"timing_{part}_s"] = round(time.monotonic() - t0, 1)


def _reconstruction_part(side: Side, view: Any, x: Tensor, settings: EvalSettings) -> None:
    nll = reconstruction_nll(side.model, x, side.device)
    side.results.update(recon_nats=float(nll.mean()), recon_bits=float(nll.mean()) / math.log(2))
    side.results.update(view.reconstruction(side, x))
    side.results.update(bounds(side, x, settings.iw_k))


def _codes_part(side: Side, view: Any, x: Tensor, settings: EvalSettings) -> None:
    r = side.results
    train_codes = side.domain.encode(side.model, side.prepared.train, side.device)
    test_codes = side.domain.encode(side.model, x, side.device)
    side.shown.update(train_codes=train_codes, test_codes=test_codes)
    r["codes"] = (discrete_code_stats(code_indices(train_codes, *side.shape), side.shape[1]) if side.discrete
                  else continuous_code_stats(train_codes))
    r["mi"] = mutual_information(side, x, settings.mi_samples)
    n_probe = min(settings.probe_train, len(train_codes))
    r["probe"] = linear_probe(train_codes[:n_probe], test_codes, probe_labels(side, n_probe, len(test_codes)),
                              side.run.train.seed)


def _samples_part(side: Side, view: Any, x: Tensor, settings: EvalSettings) -> None:
    r, test_codes = side.results, side.shown["test_codes"]
    r["samplers"] = sample_quality(side, view, r["n_samples"])
    r["default_sampler"] = _default_sampler(side)
    r["best_sampler"] = best_sampler(r["samplers"], view.quality_key, view.better)
    r["reference"] = view.reference(side)
    r["perturbed"] = perturbation_quality(side, view, test_codes)
    r["paths"] = view.path_outputs(side, hamming_paths(side, test_codes, settings.n_paths))
    r["path_lengths"] = side.shown.get("path_lengths", [])


def _default_sampler(side: Side) -> str:
    from .pipeline import default_sampler

    name = default_sampler(side.run)
    return name if name in side.loaded.samplers else next(iter(sorted(side.loaded.samplers)), "")


# --- pictures ----------------------------------------------------------------------------------------
def embedding_plot(sides: list[Side], path: Path) -> None:
    """PCA of the test codes of each model, coloured by the probe label where there is one."""
    from matplotlib.figure import Figure
    from sklearn.decomposition import PCA

    fig = Figure(figsize=(5 * len(sides), 4.4))
    for i, side in enumerate(sides):
        ax = fig.add_subplot(1, len(sides), i + 1)
        codes = side.shown["test_codes"].numpy().astype(np.float64)
        with warnings.catch_warnings():  # constant codes: PCA divides by a zero variance
            warnings.simplefilter("ignore", RuntimeWarning)
            xy = PCA(2, random_state=0).fit_transform(codes) if codes.shape[1] >= 2 else np.c_[codes, 0 * codes]
        labels = probe_labels(side, 0, len(codes))
        colour = labels[3] if labels is not None else None
        cmap = "tab10" if labels is not None and labels[1] == "class" else "viridis"
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=colour, cmap=cmap if colour is not None else None, s=8, alpha=0.8)
        if colour is not None:
            fig.colorbar(sc, ax=ax, label=labels[0])
        ax.set_title(f"{side.label}: PCA of test codes", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def draw_pictures(sides: list[Side], out_dir: Path) -> list[str]:
    """Sample grids, embedding and path pictures; returns the names of the PNGs written."""
    view = VIEWS[sides[0].run.domain]
    written: list[str] = []

    def attempt(name: str, fn: Callable[[Path], Any]) -> None:
        try:
            result = fn(out_dir / name)
            if result is not False and (out_dir / name).is_file():
                written.append(name)
        except Exception as err:  # noqa: BLE001 - a picture must never cost the report
            log.warning("could not draw %s: %s", name, err)

    for name, draw in view.sample_pictures(sides):
        attempt(name, draw)
    attempt("embedding.png", lambda p: embedding_plot(sides, p))
    attempt("paths.png", lambda p: view.draw_paths(sides, p))
    return written


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


# --- the report --------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    header = [h.replace("|", "\\|") for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in rows]


def _setup_rows(sides: list[Side]) -> list[list[Any]]:
    rows = []
    for s in sides:
        m, tr = s.run.model, s.loaded.checkpoint.get("trainer", {})
        code = f"{m.n_vars}x{m.n_classes} one-hot" if s.discrete else f"{s.model.latent.code_dim}-d"
        params = sum(p.numel() for p in s.model.parameters())
        reg = f"{m.decoder_reg} ({m.reg_weight:g})" if m.decoder_reg != "none" else "none"
        rows.append([s.label, f"{m.latent} ({code})", m.beta, reg, params, tr.get("epochs", tr.get("epoch")),
                     tr.get("step"), f"{float(tr.get('seconds', 0.0)):.1f}", tr.get("stopped") or "epochs done"])
    return rows


def _recon_rows(sides: list[Side]) -> list[list[Any]]:
    keys = [("recon_nats", "-log p(x|code), nats/example"), ("recon_bits", "-log p(x|code), bits/example"),
            ("recon_mse", "pixel MSE"), ("recon_accuracy", "exact reconstruction (greedy)"),
            ("token_accuracy", "token accuracy"), ("neg_elbo", "negative ELBO, nats"),
            ("neg_iwae", "importance-weighted bound, nats")]
    rows = []
    for key, name in keys:
        values = [s.results.get(key) for s in sides]
        if any(v is not None for v in values):
            if key == "neg_iwae":
                name += f" (k={max(s.results.get('iw_k', 0) for s in sides)})"
            rows.append([name, *values])
    return rows


def _sampler_rows(side: Side, view: Any) -> tuple[list[str], list[list[Any]]]:
    quality = side.results["samplers"]
    metric_keys = sorted({k for v in quality.values() for k in v if k != "seconds"},
                         key=lambda k: (k != view.quality_key, k))
    rows = []
    for name, metrics in quality.items():
        mark = " (default)" if name == side.results["default_sampler"] else ""
        mark += " **best**" if name == side.results["best_sampler"] else ""
        rows.append([name + mark, *[metrics.get(k) for k in metric_keys]])
    return ["sampler", *metric_keys], rows


def _code_rows(sides: list[Side]) -> list[list[Any]]:
    keys = [("entropy_mean", "per-variable entropy, mean (nats)"), ("entropy_min", "per-variable entropy, min"),
            ("max_entropy", "max entropy log K"), ("perplexity_mean", "per-variable perplexity, mean"),
            ("unused_classes", "share of classes never used"), ("active_vars", "active variables"),
            ("n_vars", "variables"), ("distinct_codes", "distinct codes / training examples"),
            ("active_units", "active units (continuous)"), ("dims", "code dimensions")]
    rows = []
    for key, name in keys:
        values = [s.results["codes"].get(key) for s in sides]
        if any(v is not None for v in values):
            rows.append([name, *values])
    for key, name in [("mi", "I(X; C) estimate, nats"), ("mi_per_var_sum", "sum_n I(X; C_n), nats"),
                      ("mi_upper_log_m", "upper limit log M, nats")]:
        rows.append([name, *[s.results["mi"].get(key) for s in sides]])
    probe = [s.results["probe"] for s in sides]
    if any("probe_score" in p for p in probe):
        what = next(p for p in probe if "probe_score" in p)
        rows.append([f"linear probe: {what['probe']} ({what['probe_metric']})", *[p.get("probe_score") for p in probe]])
        rows.append(["probe baseline (majority class / r^2 = 0)", *[p.get("probe_baseline") for p in probe]])
    return rows


def verdict(sides: list[Side], view: Any) -> list[str]:
    """Plain statements on the two targets: reconstruction and best-sampler sample quality."""
    a, b = sides
    lines = []
    ra, rb = a.results["recon_nats"], b.results["recon_nats"]
    better = b.label if rb < ra else a.label if ra < rb else "neither"
    lines.append(f"- Reconstruction (-log p(x|code), nats/example): {a.label} {ra:.3f}, {b.label} {rb:.3f} "
                 f"-> better: **{better}**.")
    key = view.quality_key
    qa = a.results["samplers"][a.results["default_sampler"]][key]
    qa_best = a.results["samplers"][a.results["best_sampler"]][key]
    qb = b.results["samplers"][b.results["best_sampler"]][key]
    ratio = qb / qa if qa else math.nan
    if view.better == "min":
        ok, rule = qb <= 1.10 * qa, f"{b.label}'s best <= 1.10 x {a.label}'s default"
    else:
        ok, rule = qb >= 0.90 * qa, f"{b.label}'s best >= 0.90 x {a.label}'s default"
    lines.append(f"- Sample quality ({key}, {'lower' if view.better == 'min' else 'higher'} is better): "
                 f"{a.label} with its default sampler `{a.results['default_sampler']}` {qa:.3f} "
                 f"(its best, `{a.results['best_sampler']}`: {qa_best:.3f}); {b.label} with its best sampler "
                 f"`{b.results['best_sampler']}` {qb:.3f}; ratio {_fmt(ratio)} -> {rule}: **{'yes' if ok else 'no'}**.")
    if a.results["best_sampler"] != a.results["default_sampler"]:
        lines.append(f"- Best against best: {b.label} {qb:.3f} vs {a.label} {qa_best:.3f} "
                     f"(ratio {_fmt(qb / qa_best if qa_best else math.nan)}).")
    copies = b.results["samplers"][b.results["best_sampler"]].get("code_copies")
    if copies is not None:
        lines.append(f"- {b.label}'s best sampler draws a code identical to a training code in {copies:.1%} of the "
                     "samples (a memorising prior would score well by replaying the training set).")
    return lines


def write_report(sides: list[Side], out_dir: Path, pictures: list[str], meta: dict[str, Any]) -> Path:
    """report.md and comparison.json in ``out_dir``."""
    view = VIEWS[sides[0].run.domain]
    a, b = sides
    dataset = sides[0].run.data.dataset or sides[0].run.domain
    lines = [f"# {a.label} vs {b.label} on {sides[0].run.domain} ({dataset})", "",
             f"Command: `{meta['command']}`  ", f"Device: {meta['device']}; preset `{meta['preset']}`; "
             f"total wall time {meta['wall_s']:.0f} s (training {meta['train_s']:.0f} s, evaluation "
             f"{meta['eval_s']:.0f} s).  ", f"Runs: {', '.join(f'`{s.loaded.run_dir}`' for s in sides)}", "",
             "## Verdict", "", *verdict(sides, view), "", "## Setup (same preset, overrides and seed)", "",
             *_table(["model", "latent", "beta", "decoder reg.", "parameters", "epochs", "steps", "train s",
                      "stopped"], _setup_rows(sides)), "",
             f"Evaluation on the first {a.results['n_eval']} test examples; {a.results['n_samples']} samples per "
             f"sampler; importance-weighted bound with k = {meta['iw_k']}"
             + (f" ({meta['preset']} mode: fewer than the paper's k = 1000)" if meta["iw_k"] < 1000 else "") + ".",
             "",
             "## Reconstruction", "", *_table(["metric", a.label, b.label], _recon_rows(sides)), ""]
    if sides[0].run.domain == "images":
        lines += ["Pixel likelihood as trained (the Gaussian likelihood drops its constant "
                  "C*H*W * 1/2 log(2 pi sigma^2), so its nats are relative).", ""]
    lines += ["## Sample quality by ex-post sampler", ""]
    for s in sides:
        header, rows = _sampler_rows(s, view)
        lines += [f"**{s.label}**", "", *_table(header, rows), ""]
    ref = a.results.get("reference") or {}
    for key, value in ref.items():
        lines += [f"Reference: {key} = {value:.3f} (the floor at this sample size).", ""]
    lines += ["## Codes", "", *_table(["statistic", a.label, b.label], _code_rows(sides)), ""]
    lines += _perturbation_section(sides, view)
    lines += _path_section(sides)
    lines += _samples_section(sides, view, pictures)
    lines += ["## Definitions", "", _DEFINITIONS, "", "## Timing (seconds)", "",
              *_table(["part", a.label, b.label],
                      [[k, *[s.results.get(f"timing_{k}_s") for s in sides]] for k in ("recon", "codes", "samples")]),
              ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    payload = {"meta": meta, "sides": {s.label: {"run_dir": str(s.loaded.run_dir), **s.results} for s in sides}}
    (out_dir / "comparison.json").write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Tensor):
        return obj.tolist()
    return str(obj)


def _perturbation_section(sides: list[Side], view: Any) -> list[str]:
    flips = sorted({r for s in sides for r in s.results.get("perturbed", {})}, key=int)
    if not flips:
        return []
    rows = [[r, *[s.results.get("perturbed", {}).get(r, {}).get(view.quality_key) for s in sides]] for r in flips]
    return ["## Decoder smoothness in code space", "",
            f"{view.quality_key} of the decoded evaluation codes after resampling r of the variables uniformly "
            "(r = 0: the reconstructions). A decoder that stays good off the training codes forgives an "
            "imperfect ex-post density.", "", *_table(["r", *[s.label for s in sides]], rows), ""]


def _path_section(sides: list[Side]) -> list[str]:
    lines = ["## Paths between codes", ""]
    for s in sides:
        lengths = s.results.get("path_lengths", [])
        line = f"- {s.label}: {s.shown.get('path_kind', '')}s, lengths {lengths}"
        if "path_validity_mean" in s.results["paths"]:
            curve = ", ".join(_fmt(v, 2) for v in s.results["paths"]["path_validity_by_t"])
            line += f"; valid decodes along the path {s.results['paths']['path_validity_mean']:.2f} (by t: {curve})"
        lines.append(line)
    example = [(s.label, s.shown.get("path_example")) for s in sides if s.shown.get("path_example")]
    for label, texts in example:
        lines += ["", f"First path of {label}:", "", "```", *texts[:16], "```"]
    return lines + ["", "![paths](paths.png)", ""]


def _samples_section(sides: list[Side], view: Any, pictures: list[str]) -> list[str]:
    lines = ["## Samples", ""]
    if "samples.png" in pictures:
        lines += ["Real test data next to each model's best sampler:", "", "![samples](samples.png)", ""]
    if "samples-real.png" in pictures:
        lines += ["real (test): ![samples-real.png](samples-real.png)", ""]
    for s in sides:
        for name in (f"samplers-{_slug(s.label)}.png", f"samples-{_slug(s.label)}.png"):
            if name in pictures:
                lines += [f"{s.label}: ![{name}]({name})", ""]
    texts = [(s.label, view.text_lines(s.shown["samples"][s.results["best_sampler"]], 10)) for s in sides]
    if any(t for _, t in texts):
        lines += ["```", "real: " + " | ".join(view.text_lines(view.real(sides[0], 8), 8))]
        lines += [f"{label}: " + " | ".join(t) for label, t in texts]
        lines += ["```", ""]
    if "embedding.png" in pictures:
        lines += ["![embedding](embedding.png)", ""]
    return lines


_DEFINITIONS = """\
- Reconstruction uses the deterministic code (posterior mean, or argmax one-hot); negative ELBO
  and the importance-weighted bound -log 1/k sum_i p(x|z_i) p(z_i) / q(z_i|x) use exact draws
  z_i ~ q(z|x) (one-hot for categorical latents), from the same k draws.
- Sample quality: every ex-post sampler fitted to the training codes draws n codes that are
  decoded greedily. `code_copies`: share of drawn discrete codes equal to some training code.
- Per-variable entropy: H_n = -sum_k f_nk log f_nk with f_nk the share of training codes whose
  variable n takes class k; perplexity exp(H_n); active variable: max_k f_nk < 0.99.
- I(X; C): 1/M sum_i E_{c~q(.|x_i)} [log q(c|x_i) - log 1/M sum_j q(c|x_j)] over the M evaluation
  examples (S Monte Carlo draws per example for stochastic encoders, the plug-in code entropy for
  deterministic ones); it cannot exceed log M. sum_n I(X; C_n) is computed exactly per variable.
- Linear probe: standardised codes of the training split, logistic regression (C = 0.1) or ridge
  (alpha = 1), scored on the evaluation examples.
- Paths: for discrete codes, the classes of code a are replaced by those of code b one variable at
  a time (random order), so consecutive codes differ in one variable; continuous codes: linear."""


# --- command line -------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Train two models with the same budget and seed (or load two finished runs) and write "
                     "RUNS_DIR/compare-NAME/report.md with reconstruction, sample quality, code statistics "
                     "and pictures.")
    p.add_argument("--domain", default="digits", help="digits (= images + digits) | images | molecules | expressions")
    p.add_argument("--dataset", default="", help="data set of the domain (default: the preset's)")
    p.add_argument("--models", default="gumbel_vae,discrete_rae", help="two registered models, A,B")
    p.add_argument("--runs", default="", help="two finished run directories A,B (instead of training)")
    p.add_argument("--preset", default="quick", help="smoke | quick (default) | paper")
    p.add_argument("--config", default=None, help="TOML file applied to both models ([model]/[train]/...)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override for both models, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="training seed of both models (default: the preset's)")
    p.add_argument("--name", default="", help="report directory RUNS_DIR/compare-NAME (default: A-vs-B-DATASET)")
    p.add_argument("--runs-dir", default="runs", help="where run and report directories go (default: runs)")
    p.add_argument("--overwrite", action="store_true", help="retrain runs that already exist in the report directory")
    p.add_argument("--iw-k", type=int, default=None, help="importance samples for the bound (quick 100, paper 1000)")
    p.add_argument("--n-eval", type=int, default=None, help="test examples to evaluate (0 = all)")
    p.add_argument("--n-samples", type=int, default=None, help="samples per ex-post sampler")
    cli._add_common(p)


def _pair(text: str, flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if len(items) != 2:
        raise cli.UsageError(f"{flag} needs exactly two comma-separated entries, got {text!r}")
    return items


def resolve_domain(name: str, dataset: str) -> tuple[str, str]:
    """``digits`` -> (images, digits); otherwise (name, dataset)."""
    domain, implied = DOMAIN_ALIASES.get(name, (name, ""))
    if implied and dataset and dataset != implied:
        raise cli.UsageError(f"--domain {name} means dataset {implied!r}; drop --dataset {dataset!r}")
    return domain, dataset or implied


def overrides_for(args: argparse.Namespace, domain: str, dataset: str) -> dict[str, dict[str, Any]]:
    """quick-mode overrides < --dataset/--seed < --set items, per config section."""
    out: dict[str, dict[str, Any]] = {s: {} for s in ("model", "train", "data", "eval")}
    if args.preset == "quick":
        for section, values in QUICK_OVERRIDES.get(domain, {}).items():
            out[section].update(values)
    if dataset:
        out["data"]["dataset"] = dataset
    if args.seed is not None:
        out["train"]["seed"] = args.seed
    for item in args.set:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not (sep and dot) or section not in out:
            raise cli.UsageError(f"--set {item!r}: use SECTION.KEY=VALUE with SECTION in model, train, data, eval")
        out[section][name.replace("-", "_")] = value
    return out


def run_config(domain: str, model: str, preset: str, config: str | None, overrides: dict[str, dict[str, Any]]) -> Any:
    """The RunConfig ``train.py`` would build from these flags (same validation)."""
    ns = argparse.Namespace(domain=domain, model=model, preset=preset, config=config)
    for section, values in overrides.items():
        for key, value in values.items():
            setattr(ns, f"{section}.{key}", value)
    return cli.resolve_run_config(ns)


def train_or_reuse(run: Any, run_dir: Path, device: torch.device, overwrite: bool, progress: bool) -> None:
    """Train ``run`` into ``run_dir`` unless a finished run with the same config is there."""
    from .config import to_toml
    from .pipeline import train_run

    finished = (run_dir / "metrics.json").is_file() and (run_dir / "checkpoint.pt").is_file()
    if finished and not overwrite:
        saved = (run_dir / "config.toml").read_text() if (run_dir / "config.toml").is_file() else ""
        if saved != to_toml(run.sections()):
            raise cli.UsageError(f"{run_dir} holds a run with another configuration; use --overwrite or --name")
        log.info("reusing the finished run %s", run_dir)
        return
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    log.info("training %s on %s into %s", run.model_name, run.domain, run_dir)
    train_run(run, run_dir, device, None, progress=progress, evaluate=False)


def load_side(label: str, run_dir: Path, device: torch.device) -> Side:
    from .pipeline import load_run
    from .registry import DOMAINS

    loaded = load_run(run_dir, device)
    if not loaded.samplers:
        raise cli.UsageError(f"{run_dir}: training did not finish (no fitted sampler); train it to the end first")
    prepared = DOMAINS.get(loaded.run.domain).prepare(loaded.run, codec_state=loaded.checkpoint["codec"],
                                                      progress=False)
    return Side(label, loaded, prepared, device)


def obtain_sides(args: argparse.Namespace, device: torch.device) -> tuple[list[Side], Path, float]:
    """Train or load the two runs; returns the sides, the report directory and training seconds."""
    runs_dir = Path(args.runs_dir)
    t0 = time.monotonic()
    if args.runs:
        dirs = [Path(d) for d in _pair(args.runs, "--runs")]
        for d in dirs:
            if not (d / "checkpoint.pt").is_file():
                raise cli.UsageError(f"--runs: {d}/checkpoint.pt does not exist")
        labels = [d.name for d in dirs]
        name = args.name or "-vs-".join(labels)
        sides = [load_side(lab, d, device) for lab, d in zip(labels, dirs)]
        if sides[0].run.domain != sides[1].run.domain:
            raise cli.UsageError(f"--runs: {sides[0].run.domain} and {sides[1].run.domain} runs cannot be compared")
        return sides, runs_dir / f"compare-{name}", 0.0
    domain, dataset = resolve_domain(args.domain, args.dataset)
    models = _pair(args.models, "--models")
    if models[0] == models[1]:
        raise cli.UsageError("--models: name two different models (or compare two runs with --runs)")
    out_dir = runs_dir / f"compare-{args.name or '-vs-'.join(models) + '-' + (dataset or domain)}"
    overrides = overrides_for(args, domain, dataset)
    runs = [run_config(domain, m, args.preset, args.config, overrides) for m in models]
    for run, model in zip(runs, models):
        train_or_reuse(run, out_dir / model, device, args.overwrite, progress=not args.quiet)
    train_s = time.monotonic() - t0
    return [load_side(m, out_dir / m, device) for m in models], out_dir, train_s


def eval_settings(args: argparse.Namespace) -> EvalSettings:
    settings = dataclasses.replace(PRESET_EVAL.get(args.preset, EvalSettings()))
    for flag, key in (("iw_k", "iw_k"), ("n_eval", "n_eval"), ("n_samples", "n_samples")):
        value = getattr(args, flag)
        if value is not None:
            if value < 0 or (key == "iw_k" and value < 1):
                raise cli.UsageError(f"--{flag.replace('_', '-')} must be positive")
            setattr(settings, key, value)
    return settings


def run(args: argparse.Namespace) -> int:
    """The ``compare`` subcommand."""
    import shlex
    import sys

    start = time.monotonic()
    device = cli.choose_device(args.device)
    settings = eval_settings(args)
    sides, out_dir, train_s = obtain_sides(args, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_eval = time.monotonic()
    for side in sides:
        log.info("evaluating %s", side.label)
        evaluate_side(side, settings)
    pictures = draw_pictures(sides, out_dir)
    meta = {"command": "python -m discrete_rae " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "device": str(device), "preset": args.preset, "iw_k": settings.iw_k, "train_s": train_s,
            "eval_s": time.monotonic() - t_eval, "wall_s": time.monotonic() - start,
            "settings": dataclasses.asdict(settings)}
    report = write_report(sides, out_dir, pictures, meta)
    view = VIEWS[sides[0].run.domain]
    print("\n".join(verdict(sides, view)))
    print(f"report: {report}  ({meta['wall_s']:.0f} s)")
    return 0


cli.COMMANDS["compare"] = ("compare two models or runs: reconstruction, samples, codes (report.md + PNGs)",
                           add_arguments, run)
