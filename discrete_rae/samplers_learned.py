"""Ex-post samplers that train a network on the codes: ``two_stage`` and ``flow`` here, ``wgan``
in samplers_wgan.py (all built on :class:`LearnedSampler`).

Like the samplers of samplers.py they are fitted to the training codes [N, D] after training,
but each trains a small network, so they are opt-in (``auto_fit = False``): the pipeline fits
them only when the run's ``eval.sampler`` names one, and :func:`discrete_rae.samplers_fit.fit_sampler`
adds one to a finished run's checkpoint.

Shared protocol (:class:`LearnedSampler`):
- the codes are standardised per dimension, x = (z - mean) / std; mean and std are stored and
  every density below is mapped back with the Jacobian, log q(z) = log q(x) - sum_d log std_d;
- a seeded random ``val_fraction`` of the codes (at least one code) is held out; the held-out
  loss, evaluated every ``eval_every`` steps with fixed noise, selects the weights that are kept
  and stops training after ``patience`` evaluations without improvement (never any test data);
- all randomness (initial weights, batches, noise, draws) comes from a private
  ``torch.Generator`` seeded by ``fit(codes, seed)``: fitting twice with one seed gives the same
  sampler, and the global RNG is left as it was (weights are built under ``fork_rng``);
- the state is plain data: sizes, numbers, and the weights as a dict of tensors, so checkpoints
  load with ``torch.load(weights_only=True)``; the networks are rebuilt from the stored sizes;
- ``fit(..., progress=True)`` shows a tqdm bar over the steps (``fit-sampler`` does, unless -q).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .registry import SAMPLERS
from .samplers import Sampler

log = logging.getLogger(__name__)


def mlp(sizes: list[int], act: Callable[[], nn.Module] = nn.SiLU) -> nn.Sequential:
    """Linear layers of widths ``sizes`` with an activation between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with the global RNG seeded by ``seed`` and restored afterwards.

    torch.nn layers (and zuko's) initialise from the global RNG; forking it keeps the caller's
    random stream untouched while making the initial weights a function of ``seed``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"sampler option {name}={value!r}: expected a positive integer")
    return value


class LearnedSampler(Sampler):
    """Base class of the trained samplers: standardising, hold-out split, selection, state.

    Subclasses implement ``_build()`` (the modules, from ``self.dim`` and the options),
    ``_train_step(batch, gen)`` (one optimisation step, returns the loss) and ``_val_loss(x)``
    (held-out criterion, lower is better, deterministic).
    """

    auto_fit = False  # trained networks: fitted only on request, not after every run
    name = "learned"
    batches_per_step = 1  # real batches one training step consumes (WGAN-GP: one per critic step)

    def __init__(self, steps: int = 3000, batch_size: int = 256, lr: float = 1e-3, val_fraction: float = 0.1,
                 eval_every: int = 100, patience: int = 10, **options: Any) -> None:
        super().__init__(steps=steps, batch_size=batch_size, lr=lr, val_fraction=val_fraction,
                         eval_every=eval_every, patience=patience, **options)
        for key in ("steps", "batch_size", "eval_every", "patience"):
            _positive_int(key, self.options[key])
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"sampler option val_fraction={val_fraction!r}: expected a fraction in (0, 1)")
        if not lr > 0:
            raise ValueError(f"sampler option lr={lr!r}: expected a positive learning rate")
        self.mean: Tensor | None = None
        self.std: Tensor | None = None
        self.nets: nn.ModuleDict | None = None
        self.history: dict[str, Any] = {}

    # --- subclass hooks ---------------------------------------------------------------------
    def _build(self) -> nn.ModuleDict:
        raise NotImplementedError

    def _setup(self, gen: torch.Generator) -> None:
        """Create optimisers (called once per fit, after ``_build``)."""
        self.opt = torch.optim.Adam(self.nets.parameters(), lr=self.options["lr"])

    def _train_step(self, batch: Tensor, gen: torch.Generator) -> float:
        raise NotImplementedError

    def _val_loss(self, x: Tensor) -> float:
        raise NotImplementedError

    # --- fitting ----------------------------------------------------------------------------
    def fit(self, codes: Tensor, seed: int = 0, progress: bool | None = None) -> "LearnedSampler":
        """Train on codes [N, D]; keeps the weights with the lowest held-out loss (``progress``: a bar;
        None: the ``progress`` attribute)."""
        if codes.dim() != 2 or len(codes) < 4:
            raise ValueError(f"sampler {self.name} needs codes [N, D] with N >= 4, got shape {tuple(codes.shape)}")
        if not torch.isfinite(codes).all():
            raise ValueError(f"sampler {self.name}: the codes contain NaN or infinite values")
        super().fit(codes)
        if progress is not None:
            self.progress = bool(progress)
        gen = torch.Generator().manual_seed(int(seed))
        x = codes.detach().float().cpu()
        self.mean = x.mean(0)
        self.std = x.std(0).clamp_min(1e-6)  # a constant dimension would divide by zero
        x = (x - self.mean) / self.std
        perm = torch.randperm(len(x), generator=gen)
        n_val = max(1, int(round(self.options["val_fraction"] * len(x))))
        val, train = x[perm[:n_val]], x[perm[n_val:]]
        self.nets = seeded(int(torch.randint(2**31 - 1, (1,), generator=gen)), self._build)
        self._setup(gen)
        self._train_loop(train, val, gen)
        return self

    def _train_loop(self, train: Tensor, val: Tensor, gen: torch.Generator) -> None:
        from tqdm.auto import tqdm

        o = self.options
        log.info("%s: training on %d codes of dim %d (%d held out), up to %d steps", self.name, len(train),
                 self.dim, len(val), o["steps"])
        best, best_state, best_step, bad, t0 = math.inf, None, 0, 0, time.monotonic()
        step = 0
        bar = tqdm(range(1, o["steps"] + 1), desc=f"fit {self.name}", unit="step", disable=not self.progress,
                   leave=False)
        for step in bar:
            self.nets.train()
            size = min(o["batch_size"], len(train)) * self.batches_per_step
            batch = train[torch.randint(len(train), (size,), generator=gen)]
            loss = self._train_step(batch, gen)
            if not math.isfinite(loss):
                log.warning("%s: non-finite training loss at step %d; keeping the best weights so far", self.name, step)
                break
            if step % o["eval_every"] == 0 or step == o["steps"]:
                self.nets.eval()
                val_loss = self._val_loss(val)
                if val_loss < best:
                    best, best_state, best_step, bad = val_loss, copy.deepcopy(self.nets.state_dict()), step, 0
                else:
                    bad += 1
                log.debug("%s step %d: train %.4f held-out %.4f", self.name, step, loss, val_loss)
                bar.set_postfix(held_out=f"{val_loss:.4g}", best=f"{best:.4g}@{best_step}", refresh=False)
                if bad >= o["patience"]:
                    log.info("%s: held-out loss has not improved for %d evaluations; stopping at step %d",
                             self.name, bad, step)
                    break
        bar.close()
        if best_state is not None:
            self.nets.load_state_dict(best_state)
        self.nets.eval()
        self.history = {"best_step": best_step, "best_val_loss": best, "steps_run": step,
                        "n_train": len(train), "n_val": len(val)}
        log.info("%s: fitted on %d codes (%d held out) in %.1fs; best held-out loss %.4f at step %d",
                 self.name, len(train), len(val), time.monotonic() - t0, best, best_step)

    # --- helpers ----------------------------------------------------------------------------
    def _to_codes(self, x: Tensor) -> Tensor:
        return (x * self.std + self.mean).float()

    def _standardise(self, codes: Tensor) -> Tensor:
        return (codes.float().cpu() - self.mean) / self.std

    def _log_jacobian(self) -> Tensor:
        return self.std.log().sum()

    def _check_fitted(self) -> None:
        if self.nets is None:
            raise ValueError(f"sampler {self.name} is not fitted")

    # --- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self._check_fitted()
        weights = {k: v.detach().clone() for k, v in self.nets.state_dict().items()}
        return {**super().state_dict(), "mean": self.mean, "std": self.std, "weights": weights,
                "history": {k: float(v) for k, v in self.history.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> "LearnedSampler":
        super().load_state_dict(state)
        self.mean, self.std = state["mean"], state["std"]
        self.history = dict(state.get("history") or {})
        self.nets = seeded(0, self._build)  # the stored weights replace these initial ones
        self.nets.load_state_dict(state["weights"])
        self.nets.eval()
        return self

    def _descend(self, loss: Tensor) -> float:
        """One optimiser step on ``loss`` (the single-optimiser samplers); returns its value."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()


@SAMPLERS.register("two_stage")
class TwoStageVAESampler(LearnedSampler):
    """Second-stage VAE on the codes (Dai & Wipf 2019, "Diagnosing and enhancing VAE models", ICLR).

    On standardised codes x [N, D] a VAE with latent u of the same dimension D is trained:
    encoder q(u|x) = N(mu(x), diag sigma^2(x)), decoder p(x|u) = N(f(u), gamma I) with ONE scalar
    variance gamma = exp(log_gamma), a trained parameter, prior p(u) = N(0, I). Per code the loss
    is the negative ELBO (nats)

        L(x) = ||x - f(u)||^2 / (2 gamma) + D/2 log(2 pi gamma) + KL(q(u|x) || N(0, I)),
        u = mu(x) + sigma(x) * eps,   eps ~ N(0, I).

    The D/2 log gamma term is kept (some implementations drop it with the learned variance and
    so optimise a different objective): it is what lets gamma shrink where the decoder fits the
    codes, which Dai & Wipf show is needed for q(u) to match N(0, I). ``min_log_gamma`` floors
    log gamma so the loss stays bounded. gamma starts at exp(``init_log_gamma``) = 0.14, below
    the unit variance of the standardised codes: started at gamma = 1 (= every direction's
    variance) the VAE sits on its collapsed solution (q(u|x) = p(u), f = 0; for a linear VAE
    collapse holds while gamma >= the data variance, Lucas et al. 2019) and stays there. Sampling: u ~ N(0, I), code = f(u) (the decoder mean,
    as in the paper), mapped back from the standardised space. ``log_prob`` is an importance-
    sampled estimate with ``n_importance`` draws from q(u|x) (the IWAE bound: a lower bound in
    expectation, tight as the number of draws grows) of the model density
    p(z) = int N(z; f(u), gamma I) N(u; 0, I) du, including the decoder noise gamma.
    """

    name = "two_stage"

    def __init__(self, hidden: int = 256, layers: int = 2, steps: int = 3000, batch_size: int = 256,
                 lr: float = 1e-3, val_fraction: float = 0.1, eval_every: int = 100, patience: int = 10,
                 init_log_gamma: float = -2.0, min_log_gamma: float = -12.0, n_importance: int = 64) -> None:
        super().__init__(steps=steps, batch_size=batch_size, lr=lr, val_fraction=val_fraction,
                         eval_every=eval_every, patience=patience, hidden=hidden, layers=layers,
                         init_log_gamma=init_log_gamma, min_log_gamma=min_log_gamma, n_importance=n_importance)
        if not min_log_gamma < init_log_gamma:
            raise ValueError(f"two_stage sampler options: init_log_gamma={init_log_gamma!r} must exceed "
                             f"min_log_gamma={min_log_gamma!r}")
        for key in ("hidden", "layers", "n_importance"):
            _positive_int(key, self.options[key])

    def _build(self) -> nn.ModuleDict:
        d, h, k = self.dim, self.options["hidden"], self.options["layers"]
        nets = nn.ModuleDict({"encoder": mlp([d] + [h] * k + [2 * d]), "decoder": mlp([d] + [h] * k + [d])})
        nets.register_parameter("log_gamma", nn.Parameter(torch.tensor(float(self.options["init_log_gamma"]))))
        return nets

    @property
    def log_gamma(self) -> Tensor:
        return self.nets.log_gamma.clamp_min(self.options["min_log_gamma"])

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_var = self.nets["encoder"](x).chunk(2, dim=-1)
        return mu, log_var.clamp(-20.0, 10.0)

    def negative_elbo(self, x: Tensor, eps: Tensor) -> Tensor:
        """Per-code negative ELBO [N] (nats, standardised space) for codes x [N, D], noise eps [N, D]."""
        mu, log_var = self._encode(x)
        u = mu + (0.5 * log_var).exp() * eps
        log_gamma = self.log_gamma
        rec = (x - self.nets["decoder"](u)).pow(2).sum(-1) / (2 * log_gamma.exp())
        log_norm = 0.5 * x.shape[-1] * (math.log(2 * math.pi) + log_gamma)  # the learned-variance term
        kl = 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var).sum(-1)
        return rec + log_norm + kl

    def _train_step(self, batch: Tensor, gen: torch.Generator) -> float:
        eps = torch.randn(batch.shape, generator=gen)
        loss = self.negative_elbo(batch, eps).mean()
        return self._descend(loss)

    @torch.no_grad()
    def _val_loss(self, x: Tensor) -> float:
        eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))  # fixed noise: comparable evaluations
        return float(self.negative_elbo(x, eps).mean())

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        self._check_fitted()
        u = torch.randn(n, self.dim, generator=generator)
        return self._to_codes(self.nets["decoder"](u))

    @torch.no_grad()
    def log_prob(self, codes: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Importance-sampled log p(z) [N] of codes [N, D] (IWAE estimate, ``n_importance`` draws)."""
        self._check_fitted()
        gen = generator or torch.Generator().manual_seed(0)
        x = self._standardise(codes)
        mu, log_var = self._encode(x)
        std = (0.5 * log_var).exp()
        k, log_gamma = self.options["n_importance"], self.log_gamma
        out = []
        for _ in range(k):
            u = mu + std * torch.randn(x.shape, generator=gen)
            log_px_u = -0.5 * ((x - self.nets["decoder"](u)).pow(2).sum(-1) / log_gamma.exp()
                               + x.shape[-1] * (math.log(2 * math.pi) + log_gamma))
            log_pu = -0.5 * (u.pow(2).sum(-1) + x.shape[-1] * math.log(2 * math.pi))
            log_qu = -0.5 * (((u - mu) / std).pow(2).sum(-1) + log_var.sum(-1) + x.shape[-1] * math.log(2 * math.pi))
            out.append(log_px_u + log_pu - log_qu)
        return torch.logsumexp(torch.stack(out), 0) - math.log(k) - self._log_jacobian()


@SAMPLERS.register("flow")
class FlowSampler(LearnedSampler):
    """A normalising flow q(x) fitted to the standardised codes by maximum likelihood (zuko).

    ``kind`` picks ``zuko.flows.NSF`` (neural spline flow, Durkan et al. 2019; default) or
    ``zuko.flows.MAF`` (masked autoregressive flow, Papamakarios et al. 2017), with ``transforms``
    autoregressive transforms of ``hidden`` x ``layers`` MLPs. The loss is the mean negative
    log-likelihood -log q(x) of a batch; the held-out NLL selects the weights. Samples: base
    draws e ~ N(0, I) from the caller's generator pushed through the inverse transform.
    ``log_prob`` is exact: log q(z) = log q(x) - sum_d log std_d.
    """

    name = "flow"
    KINDS = ("nsf", "maf")

    def __init__(self, kind: str = "nsf", transforms: int = 3, hidden: int = 128, layers: int = 2,
                 steps: int = 3000, batch_size: int = 256, lr: float = 1e-3, val_fraction: float = 0.1,
                 eval_every: int = 100, patience: int = 10) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"flow sampler option kind={kind!r}: choose one of {', '.join(self.KINDS)}")
        super().__init__(steps=steps, batch_size=batch_size, lr=lr, val_fraction=val_fraction,
                         eval_every=eval_every, patience=patience, kind=kind, transforms=transforms,
                         hidden=hidden, layers=layers)
        for key in ("transforms", "hidden", "layers"):
            _positive_int(key, self.options[key])

    def _build(self) -> nn.ModuleDict:
        import zuko  # imported here so that importing the package does not need it

        o = self.options
        cls = zuko.flows.NSF if o["kind"] == "nsf" else zuko.flows.MAF
        flow = cls(features=self.dim, context=0, transforms=o["transforms"],
                   hidden_features=[o["hidden"]] * o["layers"])
        return nn.ModuleDict({"flow": flow})

    def _dist(self) -> Any:
        return self.nets["flow"]()

    def _train_step(self, batch: Tensor, gen: torch.Generator) -> float:
        loss = -self._dist().log_prob(batch).mean()
        return self._descend(loss)

    @torch.no_grad()
    def _val_loss(self, x: Tensor) -> float:
        return float(-self._dist().log_prob(x).mean())

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        self._check_fitted()
        dist = self._dist()
        e = torch.randn(n, self.dim, generator=generator)
        return self._to_codes(dist.transform.inv(e))

    @torch.no_grad()
    def log_prob(self, codes: Tensor) -> Tensor:
        """Exact log q(z) [N] of codes [N, D] (nats)."""
        self._check_fitted()
        return self._dist().log_prob(self._standardise(codes)) - self._log_jacobian()
