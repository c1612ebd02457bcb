"""The VampPrior (Tomczak & Welling, AISTATS 2018) and its ex-post sampler ``vamp``.

The prior is the model's own posterior averaged over K learned pseudo-inputs u_k::

    p(z) = (1/K) sum_k q(z | u_k),    q(z | u) = N(mu(u), diag exp(logvar(u)))   (the encoder + latent)
    log p(z) = logsumexp_k log N(z; mu_k, diag exp(logvar_k)) - log K          z [..., D] -> [...]

The pseudo-inputs are parameters of the prior, one image each: u_k = sigmoid(a_k), a_k
[C, H, W] unconstrained, so every pixel stays in (0, 1) like the data and never sticks at a
bound (a clamp would stop its gradient there). They are initialised at a_k ~ N(0, 1), grey
noise; the encoder and the prior learn together (the prior's gradient reaches the encoder too).

The KL(q(z|x) || p(z)) has no closed form: the posterior's one-draw Monte Carlo fallback
log q(z|x) - log p(z), z ~ q(z|x) (distributions.Posterior.kl) estimates it.

**Reaching the encoder.** The components need the model's encoder and latent head, which the
model owns. The model calls :meth:`VampPrior.attach` once it is built (model.AutoEncoder); the
prior keeps a plain Python reference (in a tuple, so nn.Module registers no sub-module: the
encoder is neither counted twice in ``parameters()`` nor stored twice in the state dict, and a
deep copy of the model points its prior at the copied encoder).

**Batch statistics.** The image encoder has BatchNorm. The pseudo-inputs go through the encoder
and latent in *eval mode* (the running statistics; the modules' modes are restored afterwards),
in training too, so they neither update the running statistics nor mix into the batch's
statistics. The cost: early in training the running statistics lag the batch ones, so q(z|u_k)
in training is computed with slightly different normalisation than a real batch gets.

**Images only.** A pseudo-input must be a point of the encoder's input space that gradients
can move. Images are continuous; sequence encoders read token ids through an embedding lookup
(and the grammar codec's ids are production rules), so a pseudo-input there would have to be a
relaxed one-hot fed past the lookup, a different encoder path that no sequence family has. The
prior therefore refuses codecs without an image shape, and the ``vamp_vae`` row runs on images.

**Sampling without the model.** :meth:`VampPrior.export` evaluates the K components once (eval
mode, no gradient) and returns them as plain tensors (``means``, ``logvars`` [K, D]); the
``prior`` sampler stores that, so a checkpoint's sampler draws the mixture without the model.
The ``vamp`` sampler is the same draw under its own name; it only accepts models with this prior.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from .distributions import LOG_2PI, DiagonalGaussian, Prior
from .errors import ConfigError
from .registry import PRIORS, SAMPLERS
from .samplers import PriorSampler


def mixture_log_prob(z: Tensor, means: Tensor, logvars: Tensor) -> Tensor:
    """log (1/K) sum_k N(z; means_k, diag exp(logvars_k)) for z [..., D], means/logvars [K, D] -> [...].

    Computed in float32 with a log-sum-exp over the K components.
    """
    z = z.float().unsqueeze(-2)  # [..., 1, D]
    means, logvars = means.float(), logvars.float()
    per_dim = -0.5 * ((z - means).pow(2) * torch.exp(-logvars) + logvars + LOG_2PI)  # [..., K, D]
    return torch.logsumexp(per_dim.sum(-1), dim=-1) - math.log(means.shape[0])


def mixture_sample(means: Tensor, logvars: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n i.i.d. draws [n, D] of the equal-weight diagonal Gaussian mixture (component, then noise)."""
    comp = torch.randint(means.shape[0], (n,), generator=generator)
    eps = torch.randn(n, means.shape[1], generator=generator)
    return (means[comp] + (0.5 * logvars[comp]).exp() * eps).float()


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Every sub-module of ``modules`` in eval mode inside the block, its own mode restored after."""
    saved = [(m, m.training) for root in modules for m in root.modules()]
    try:
        for root in modules:
            root.eval()
        yield
    finally:
        for m, training in saved:
            m.training = training


@PRIORS.register("vamp")
class VampPrior(Prior):
    """p(z) = (1/K) sum_k q(z | u_k) over K learned pseudo-images u_k [C, H, W] (module docstring)."""

    domains = ("images",)  # validate.py refuses other domains before any data is read

    def __init__(self, dim: int, n_components: int = 50, input_shape: tuple[int, ...] = (1, 8, 8)) -> None:
        super().__init__(dim)
        if n_components < 1:
            raise ValueError(f"vamp prior: n_components {n_components} must be at least 1")
        self.n_components = int(n_components)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.pseudo_logits = nn.Parameter(torch.randn(self.n_components, *self.input_shape))
        self._owner: tuple[Any, ...] = ()  # (model,): a plain reference, not a registered sub-module

    @classmethod
    def from_config(cls, cfg: Any, latent: Any, codec: Any) -> "VampPrior":
        """Sized from the model config (``vamp_k``), the latent (code size) and the codec (image shape)."""
        shape = getattr(codec, "shape", None)
        if getattr(codec, "kind", None) != "pixels" or shape is None:
            raise ValueError("prior 'vamp' needs image inputs (its pseudo-inputs are images); the "
                             f"{getattr(codec, 'kind', type(codec).__name__)} codec has none: use it on the images domain")
        if getattr(cfg, "latent", "gaussian") != "gaussian":
            raise ValueError(f"prior 'vamp' mixes Gaussian posteriors q(z|u_k); latent {cfg.latent!r} has none: "
                             "use --latent gaussian")
        return cls(latent.code_dim, int(getattr(cfg, "vamp_k", 50)), tuple(shape))

    def attach(self, model: Any) -> None:
        """Remember the model whose ``encoder`` and ``latent`` give q(z | u) (called by the model)."""
        self._owner = (model,)

    def _model(self) -> Any:
        if not self._owner:
            raise RuntimeError("the vamp prior is not attached to a model (AutoEncoder attaches it when built)")
        return self._owner[0]

    def pseudo_inputs(self) -> Tensor:
        """u [K, C, H, W] in (0, 1)."""
        return torch.sigmoid(self.pseudo_logits)

    def components(self) -> tuple[Tensor, Tensor]:
        """means, logvars [K, D] (float32) of q(z | u_k), the encoder and latent in eval mode."""
        model = self._model()
        with eval_mode(model.encoder, model.latent):
            posterior = model.latent(model.encoder(self.pseudo_inputs())).posterior
        if not isinstance(posterior, DiagonalGaussian):
            raise ConfigError(f"prior 'vamp' needs a Gaussian posterior, the latent gives {type(posterior).__name__}")
        return posterior.mu.float(), posterior.logvar.float()

    def log_prob(self, z: Tensor) -> Tensor:
        means, logvars = self.components()
        return mixture_log_prob(z, means, logvars)

    @torch.no_grad()
    def export(self) -> dict[str, Any]:
        means, logvars = self.components()
        return {"dim": self.dim, "means": means.detach().cpu(), "logvars": logvars.detach().cpu()}

    @staticmethod
    def sample_exported(state: dict[str, Any], n: int, generator: torch.Generator | None = None) -> Tensor:
        return mixture_sample(state["means"], state["logvars"], n, generator)

    @staticmethod
    def log_prob_exported(state: dict[str, Any], z: Tensor) -> Tensor:
        return mixture_log_prob(z, state["means"], state["logvars"])


@SAMPLERS.register("vamp")
class VampSampler(PriorSampler):
    """Draws from a VampPrior model's mixture (1/K) sum_k q(z | u_k), exported when bound.

    The same draws as the ``prior`` sampler of such a model, under a name that refuses other
    models (their prior is not a mixture of their own posteriors). Opt-in (``auto_fit`` False):
    fitted when ``--sampler vamp`` names it.
    """

    name = "vamp"
    auto_fit = False
    needs_prior = "vamp"

    def bind(self, model: Any) -> "VampSampler":
        prior = getattr(model, "prior", None)
        if not isinstance(prior, VampPrior):
            raise ConfigError(f"sampler 'vamp' draws a VampPrior's mixture; this model's prior is "
                              f"{type(prior).__name__}: use --prior vamp (the vamp_vae model) or another sampler")
        super().bind(model)
        return self

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        self._check_bound()
        return super().sample(n, generator)

    def log_prob(self, codes: Tensor) -> Tensor:
        self._check_bound()
        return super().log_prob(codes)

    def _check_bound(self) -> None:
        if self.prior_state is None:
            raise RuntimeError("the vamp sampler was never bound to a model with the vamp prior")
