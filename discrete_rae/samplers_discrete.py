"""Ex-post samplers over one-hot categorical codes (``discrete = True``).

Codes are [M, N*K] one-hot rows of N variables with K classes; internally each row is its
index vector x in {0..K-1}^N. Every sampler fits to training codes, draws one-hot codes
[n, N*K] float32 and gives log-masses log q(x) [M]. State is plain tensors, ints and floats
(checkpoint-safe with ``weights_only=True``).

- ``uniform``: q(x) = prod_n 1/K, the Gumbel VAE's prior (no fitting).
- ``categorical``: independent per-variable categoricals, q(x) = prod_n theta_n[x_n] with
  theta_n = (count_n + alpha) / (M + K alpha) (additive smoothing alpha, default 1e-3).
- ``cat_mixture``: a mixture of C products of categoricals (latent class model),
  q(x) = sum_c pi_c prod_n theta_cn[x_n], fitted by EM (E: responsibilities r_ic proportional
  to pi_c prod_n theta_cn[x_in]; M: pi_c = mean_i r_ic, theta_cnk proportional to
  sum_i r_ic [x_in = k] + alpha). Initialised near the independent model, each component
  pulled towards a distinct training code (theta_c = 0.7 marginal + 0.3 one_hot(x_c)); stopped
  when the mean log-likelihood per code improves by less than ``tol`` nats (default 1e-3, as
  sklearn's GaussianMixture). With alpha -> 0 every M-step keeps the per-variable
  frequencies: sum_c pi_c theta_cnk = (1/M) sum_i [x_in = k].
- ``autoregressive``: q(x) = prod_n q(x_n | x_<n) by a MADE (Germain et al. 2015): a masked MLP
  (default one hidden layer of 512) on the one-hot code whose outputs for variable n see only
  variables < n; output biases start at the log marginals (the independent model). Trained by
  AdamW on 90% of the codes with early stopping on the other 10%, best weights kept; sampling
  runs N forward passes.

Which serves best (digits, 30 x 10 codes, 1,365 training codes; see the issue #5 report): the
MADE has the lowest held-out code NLL, but the mixture (k = 20..50) gives the best samples by the
Fréchet metric, with no sampled code equal to a training code; the independent and uniform
samplers are far worse (the variables are strongly dependent).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import SAMPLERS
from .samplers import Sampler

log = logging.getLogger(__name__)


class DiscreteSampler(Sampler):
    """Base of the samplers over one-hot codes of ``n_vars`` x ``n_classes``."""

    name = "discrete"
    discrete = True

    def __init__(self, n_vars: int, n_classes: int, **options: Any) -> None:
        super().__init__(n_vars=n_vars, n_classes=n_classes, **options)
        self.n_vars, self.n_classes = int(n_vars), int(n_classes)

    def indices(self, codes: Tensor) -> Tensor:
        """One-hot (or relaxed) codes [M, N*K] -> class indices [M, N] (argmax per variable)."""
        if codes.shape[1] != self.n_vars * self.n_classes:
            raise ValueError(f"codes have {codes.shape[1]} columns, expected {self.n_vars} x {self.n_classes}")
        return codes.reshape(len(codes), self.n_vars, self.n_classes).argmax(-1)

    def one_hot(self, idx: Tensor) -> Tensor:
        """Indices [n, N] -> one-hot codes [n, N*K] float32."""
        return F.one_hot(idx.long(), self.n_classes).float().reshape(len(idx), -1)

    def fit(self, codes: Tensor, seed: int = 0) -> "DiscreteSampler":
        super().fit(codes)
        self.indices(codes)  # validates the shape
        return self


@SAMPLERS.register("uniform")
class UniformSampler(DiscreteSampler):
    """Uniform over the K classes of each variable (the Gumbel VAE's prior)."""

    name = "uniform"

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.one_hot(torch.randint(self.n_classes, (n, self.n_vars), generator=generator))

    def log_prob(self, codes: Tensor) -> Tensor:
        self.indices(codes)
        return torch.full((len(codes),), -self.n_vars * math.log(self.n_classes))


def _log_normalize(counts: Tensor, alpha: float) -> Tensor:
    """log((counts + alpha) / sum_k (counts + alpha)) over the last dim."""
    smoothed = counts + alpha
    return (smoothed / smoothed.sum(-1, keepdim=True)).log()


@SAMPLERS.register("categorical")
class CategoricalSampler(DiscreteSampler):
    """Independent per-variable categoricals fitted by (smoothed) counting."""

    name = "categorical"

    def __init__(self, n_vars: int, n_classes: int, alpha: float = 1e-3) -> None:
        super().__init__(n_vars, n_classes, alpha=alpha)
        self.alpha = alpha
        self.log_theta: Tensor | None = None  # [N, K]

    def fit(self, codes: Tensor, seed: int = 0) -> "CategoricalSampler":
        super().fit(codes)
        counts = self.one_hot(self.indices(codes)).double().sum(0).reshape(self.n_vars, self.n_classes)
        self.log_theta = _log_normalize(counts, self.alpha)
        return self

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        idx = torch.multinomial(self.log_theta.exp(), n, replacement=True, generator=generator)  # [N, n]
        return self.one_hot(idx.T)

    def log_prob(self, codes: Tensor) -> Tensor:
        return (self.one_hot(self.indices(codes)).double() @ self.log_theta.reshape(-1)).float()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "log_theta": self.log_theta}

    def load_state_dict(self, state: dict[str, Any]) -> "CategoricalSampler":
        super().load_state_dict(state)
        self.log_theta = state["log_theta"]
        return self


@SAMPLERS.register("cat_mixture")
class CategoricalMixtureSampler(DiscreteSampler):
    """Mixture of ``k`` products of categoricals, fitted by EM."""

    name = "cat_mixture"

    def __init__(self, n_vars: int, n_classes: int, k: int = 30, max_iter: int = 200, tol: float = 1e-3,
                 alpha: float = 1e-3, init_pull: float = 0.3) -> None:
        super().__init__(n_vars, n_classes, k=k, max_iter=max_iter, tol=tol, alpha=alpha, init_pull=init_pull)
        self.k, self.max_iter, self.tol, self.alpha, self.init_pull = k, max_iter, tol, alpha, init_pull
        self.log_pi: Tensor | None = None  # [C]
        self.log_theta: Tensor | None = None  # [C, N, K]

    def _joint(self, x: Tensor) -> Tensor:
        """log pi_c + log prod_n theta_cn[x_n] for one-hot x [M, N*K] (float32) -> [M, C]."""
        return x @ self.log_theta.reshape(len(self.log_pi), -1).T + self.log_pi

    def _m_step(self, x: Tensor, resp: Tensor) -> None:
        """pi_c = mean_i r_ic; theta_cnk proportional to sum_i r_ic x_i,nk + alpha."""
        weight = resp.sum(0)  # [C]
        self.log_pi = (weight / weight.sum()).clamp_min(1e-300).log()
        counts = (resp.T @ x).reshape(len(weight), self.n_vars, self.n_classes)
        self.log_theta = _log_normalize(counts, self.alpha)

    def _init(self, x: Tensor, seed: int) -> None:
        """Centres near the independent model, each pulled towards a distinct training code:
        theta_c = (1 - s) * marginal + s * one_hot(x_c) with s = ``init_pull``; equal weights."""
        unique = torch.unique(x, dim=0)
        c = min(self.k, len(unique))
        g = torch.Generator().manual_seed(seed)
        centres = unique[torch.randperm(len(unique), generator=g)[:c]].reshape(c, self.n_vars, self.n_classes)
        marginal = x.mean(0).reshape(1, self.n_vars, self.n_classes)
        theta = (1 - self.init_pull) * marginal + self.init_pull * centres + 1e-6
        self.log_theta = (theta / theta.sum(-1, keepdim=True)).log()
        self.log_pi = torch.full((c,), -math.log(c), dtype=x.dtype)

    def fit(self, codes: Tensor, seed: int = 0) -> "CategoricalMixtureSampler":
        super().fit(codes)
        x = self.one_hot(self.indices(codes))
        self._init(x, seed)
        previous = -math.inf
        for it in range(self.max_iter):
            joint = self._joint(x)
            mean_ll = float(torch.logsumexp(joint, 1).mean())
            self._m_step(x, torch.softmax(joint, 1))
            if mean_ll - previous < self.tol:
                break
            previous = mean_ll
        else:
            log.warning("cat_mixture EM did not converge in %d iterations", self.max_iter)
        log.debug("cat_mixture: %d components, %d EM iterations, mean log-likelihood %.3f nats",
                  len(self.log_pi), it + 1, mean_ll)
        return self

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        comp = torch.multinomial(self.log_pi.exp(), n, replacement=True, generator=generator)  # [n]
        probs = self.log_theta.exp()[comp].reshape(n * self.n_vars, self.n_classes)
        idx = torch.multinomial(probs, 1, generator=generator).reshape(n, self.n_vars)
        return self.one_hot(idx)

    def log_prob(self, codes: Tensor) -> Tensor:
        return torch.logsumexp(self._joint(self.one_hot(self.indices(codes))), 1)

    def marginals(self) -> Tensor:
        """Per-variable class probabilities of the mixture, sum_c pi_c theta_c, [N, K]."""
        return torch.einsum("c,cnk->nk", self.log_pi.exp(), self.log_theta.exp())

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "log_pi": self.log_pi, "log_theta": self.log_theta}

    def load_state_dict(self, state: dict[str, Any]) -> "CategoricalMixtureSampler":
        super().load_state_dict(state)
        self.log_pi, self.log_theta = state["log_pi"], state["log_theta"]
        return self


# --- autoregressive prior (MADE) -----------------------------------------------------------------
class _MaskedLinear(nn.Linear):
    """Linear layer whose weight is multiplied by a fixed 0/1 mask [out, in]."""

    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def made_masks(n_vars: int, n_classes: int, hidden: tuple[int, ...]) -> list[Tensor]:
    """MADE connectivity for one-hot inputs ordered by variable.

    Input unit (n, k) has degree n+1; hidden unit j of every layer degree 1 + j mod (N-1);
    a hidden unit sees inputs (or hidden units) of degree <= its own; the outputs of variable
    n (degree n+1) see hidden units of degree < n+1. So logits of x_n depend on x_<n only.
    """
    d_in = torch.arange(1, n_vars + 1).repeat_interleave(n_classes)
    degrees = [d_in] + [1 + torch.arange(h) % max(n_vars - 1, 1) for h in hidden]
    masks = [(d_out[:, None] >= d_prev[None, :]) for d_prev, d_out in zip(degrees[:-1], degrees[1:])]
    masks.append(d_in[:, None] > degrees[-1][None, :])
    return masks


class MADE(nn.Module):
    """Masked MLP: one-hot codes [B, N*K] -> logits [B, N, K] of q(x_n | x_<n)."""

    def __init__(self, n_vars: int, n_classes: int, hidden: tuple[int, ...] = (512,)) -> None:
        super().__init__()
        self.n_vars, self.n_classes = n_vars, n_classes
        layers: list[nn.Module] = []
        for mask in made_masks(n_vars, n_classes, tuple(hidden)):
            layers += [_MaskedLinear(mask), nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).view(len(x), self.n_vars, self.n_classes)

    def log_prob(self, x: Tensor) -> Tensor:
        """sum_n log q(x_n | x_<n) for one-hot x [B, N*K] -> [B]."""
        logp = F.log_softmax(self(x), -1)
        return (logp * x.view_as(logp)).sum((-2, -1))


@SAMPLERS.register("autoregressive")
class AutoregressiveSampler(DiscreteSampler):
    """Autoregressive prior over the N code indices (a MADE), trained on the codes."""

    name = "autoregressive"

    def __init__(self, n_vars: int, n_classes: int, hidden: int = 512, layers: int = 1, epochs: int = 200,
                 batch_size: int = 256, lr: float = 2e-3, weight_decay: float = 1e-4, patience: int = 8,
                 max_seconds: float = 120.0) -> None:
        super().__init__(n_vars, n_classes, hidden=hidden, layers=layers, epochs=epochs, batch_size=batch_size,
                         lr=lr, weight_decay=weight_decay, patience=patience, max_seconds=max_seconds)
        self.hidden, self.layers = hidden, layers
        self.train_opts = dict(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                               patience=patience, max_seconds=max_seconds)
        self.net = self._new_net(seed=0)
        self.report: dict[str, float] = {}

    def _new_net(self, seed: int) -> MADE:
        """A freshly initialised MADE; seeded without touching the global RNG stream."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return MADE(self.n_vars, self.n_classes, (self.hidden,) * self.layers)

    def fit(self, codes: Tensor, seed: int = 0) -> "AutoregressiveSampler":
        super().fit(codes)
        x = self.one_hot(self.indices(codes))
        g = torch.Generator().manual_seed(seed)
        self.net = self._new_net(seed)
        with torch.no_grad():  # start from the independent model: output biases = log marginals
            counts = x.sum(0).reshape(self.n_vars, self.n_classes)
            self.net.net[-1].bias.copy_(_log_normalize(counts, 1.0).reshape(-1))
        order = torch.randperm(len(x), generator=g)
        n_val = max(1, len(x) // 10) if len(x) >= 20 else 0
        val, train = x[order[:n_val]], x[order[n_val:]]
        with _threads(1):  # a network this small runs faster on one thread than on several
            self.report = _train_made(self.net, train, val if n_val else train, g, **self.train_opts)
        log.info("autoregressive prior: %d epochs, held-out NLL %.3f nats (%.1fs)", self.report["epochs"],
                 self.report["val_nll"], self.report["seconds"])
        return self

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        self.net.eval()
        x = torch.zeros(n, self.n_vars * self.n_classes)
        for v in range(self.n_vars):
            probs = torch.softmax(self.net(x)[:, v], -1)
            idx = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            x[:, v * self.n_classes:(v + 1) * self.n_classes] = F.one_hot(idx, self.n_classes).float()
        return x

    @torch.no_grad()
    def log_prob(self, codes: Tensor) -> Tensor:
        self.net.eval()
        return self.net.log_prob(self.one_hot(self.indices(codes)))

    def state_dict(self) -> dict[str, Any]:
        weights = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        return {**super().state_dict(), "weights": weights, "report": dict(self.report)}

    def load_state_dict(self, state: dict[str, Any]) -> "AutoregressiveSampler":
        super().load_state_dict(state)
        self.net.load_state_dict(state["weights"])
        self.report = dict(state.get("report", {}))
        return self


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Temporarily run torch's intra-op work on ``n`` threads (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(n, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_made(net: MADE, train: Tensor, val: Tensor, generator: torch.Generator, epochs: int,
                batch_size: int, lr: float, weight_decay: float, patience: int, max_seconds: float
                ) -> dict[str, float]:
    """Minimise the mean NLL (nats per code) with AdamW; keep the weights best on ``val``."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_state, bad, start, epoch = math.inf, copy.deepcopy(net.state_dict()), 0, time.monotonic(), 0
    for epoch in range(1, epochs + 1):
        net.train()
        for idx in torch.randperm(len(train), generator=generator).split(batch_size):
            loss = -net.log_prob(train[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            val_nll = float(-net.log_prob(val).mean())
        if val_nll < best - 1e-4:
            best, best_state, bad = val_nll, copy.deepcopy(net.state_dict()), 0
        else:
            bad += 1
        if bad >= patience or time.monotonic() - start > max_seconds:
            break
    net.load_state_dict(best_state)
    net.eval()
    return {"epochs": epoch, "val_nll": best, "seconds": round(time.monotonic() - start, 2)}
