"""Objectives: the loss of a model from its posterior, prior, likelihood and regulariser.

An objective is registered by name (``OBJECTIVES``) and built from the model config. It owns
the weights of the terms it adds and, for models trained in several phases (adversarial
models), the extra optimizers and the phases of one training step (:class:`Phase`).

``penalized`` (every model so far; Kingma & Welling 2014, Higgins et al. 2017, Ghosh et al. 2020)::

    loss = E_batch[ -log p(x | z) ]                    z = posterior.rsample() (training)
         + beta_t * E_batch[ posterior.divergence(prior) ]
         + decoder regulariser penalty                  (GP; L2 is weight decay, SN is in the net)

``divergence`` is KL(q(z|x) || p(z)) for stochastic posteriors (so the loss is the negative
beta-ELBO; beta = 1 is the ELBO) and the prior's energy for deterministic codes (1/2 ||z||^2
under N(0, I): the RAE loss). For stochastic posteriors beta_t rises linearly from 0 to beta
over ``kl_anneal_steps`` (0 = constant); a deterministic code's term always has weight beta.
The VAE and the RAE therefore share this objective and differ only in the latent type and the
decoder regulariser (zoo.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor, nn

from .registry import OBJECTIVES

#: A loss function of one training phase: (x, step) -> named scalar terms, "loss" minimised.
LossFn = Callable[[Tensor, int], dict[str, Tensor]]


@dataclass
class Phase:
    """One part of a training step: minimise ``loss`` with the optimizer named ``optimizer``,
    ``repeats`` times per batch. The first phase's terms are the model's (validation, early
    stopping); later phases log their terms with the phase name as prefix."""

    name: str
    optimizer: str
    loss: LossFn
    repeats: int = 1


class Objective(nn.Module):
    """Base: ``terms(model, x, step)`` -> named scalars ("loss" is minimised).

    A module, so that networks it owns (a discriminator, a critic) are part of the model's
    state; the model's "main" optimizer leaves them to the objective's own optimizers.
    ``extra_optimizers`` and ``phases`` default to none and one phase.
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.beta = float(cfg.beta)
        self.kl_anneal_steps = int(getattr(cfg, "kl_anneal_steps", 0))

    def beta_at(self, step: int) -> float:
        """beta_t = beta * min(1, step / kl_anneal_steps) (constant when annealing is off)."""
        if self.kl_anneal_steps <= 0:
            return self.beta
        return self.beta * min(1.0, step / self.kl_anneal_steps)

    def terms(self, model: Any, x: Tensor, step: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def main_betas(self) -> tuple[float, float]:
        """Adam betas of the model's "main" optimizer (adversarial objectives use beta1 0.5)."""
        return (0.9, 0.999)

    def extra_optimizers(self, model: Any, lr: float) -> dict[str, Any]:
        """Optimizers besides the model's "main" one (name -> torch optimizer; not "main")."""
        return {}

    def phases(self, model: Any) -> list[Phase]:
        """The phases of one training step; the default is the model's loss with "main"."""
        return [Phase("main", "main", model.loss)]


@OBJECTIVES.register("penalized")
class Penalized(Objective):
    """reconstruction + beta_t * latent divergence + decoder penalty (module docstring)."""

    def latent_term(self, model: Any, lat: Any, step: int) -> Tensor:
        # the annealing is of the KL: a deterministic code's term has its full weight throughout
        beta = self.beta_at(step) if lat.posterior.has_density else self.beta
        if beta == 0:
            return lat.z.new_zeros(())
        return beta * lat.posterior.divergence(model.prior).mean()

    def terms(self, model: Any, x: Tensor, step: int) -> dict[str, Tensor]:
        lat, out = model(x)
        rec = model.likelihood.nll(out, x).mean()
        latent_term = self.latent_term(model, lat, step)
        reg = model.decoder_penalty(lat, out, x)
        return {"loss": rec + latent_term + reg, "rec": rec.detach(), "latent": latent_term.detach(),
                "reg": reg.detach(), **model.likelihood_terms()}


def build_objective(cfg: Any) -> Objective:
    """The objective named by ``cfg.objective`` with its weights from ``cfg``."""
    return OBJECTIVES.get(cfg.objective)(cfg)
