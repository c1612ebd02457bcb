"""The one model class: a composition of parts.

    x --encoder--> h --latent--> q(z|x), z --decoder--> output --likelihood--> -log p(x|z)
                                  prior p(z)            regulariser (decoder)

The objective (objectives.py) turns these into the loss; for the shared ``penalized`` one:

    loss = likelihood.nll(output, x).mean()             reconstruction (nats per example)
         + beta_t * posterior.divergence(prior).mean()   KL (VAE) or 1/2 ||z||^2 (RAE)
         + regularizer.penalty(z, mean output)           gradient penalty (RAE-GP), else 0
    (L2 lives in the optimiser's decoder-only parameter group; SN inside the decoder.)

A VAE and an RAE differ only in ``latent`` and ``regularizer`` (zoo.py). Models own their
loss, optimizers and training phases; the trainer only calls :meth:`configure_optimizers`,
:meth:`phases` and :meth:`loss`.
"""

from __future__ import annotations

import contextlib

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .distributions import Prior, StandardNormal
from .grammar.teacher_mask import ConstraintMasks
from .latents import Latent, LatentOutput
from .objectives import Objective, Phase
from .regularizers import DecoderRegularizer


class SequenceLikelihood(nn.Module):
    """Categorical likelihood over tokens, masked by the codec (grammar) per step.

    nll[b] = -sum_t log softmax_{allowed(b,t)}(logits[b, t])[y_bt]: the log-softmax runs over
    only the rules whose left-hand side is the true step's non-terminal (all tokens for the
    character codec). Disallowed logits are set to -inf in float32, and the true token is
    always allowed, so the result is finite.
    """

    def __init__(self, codec: Any, train_mask: str = "grammar") -> None:
        super().__init__()
        self.codec = codec
        if train_mask not in ("grammar", "constraints"):
            raise ValueError(f"train_mask {train_mask!r} is unknown; choose grammar or constraints")
        # "constraints": the decoding constraints replayed along the true derivation (cached per example)
        self.step_mask = ConstraintMasks(codec) if train_mask == "constraints" else codec.step_mask

    def masked_log_probs(self, logits: Tensor, ids: Tensor) -> Tensor:
        logits = logits.float()
        mask = self.step_mask(ids.long())
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return F.log_softmax(logits, dim=-1)

    def nll(self, logits: Tensor, ids: Tensor) -> Tensor:
        logp = self.masked_log_probs(logits, ids)
        return -logp.gather(-1, ids.long().unsqueeze(-1)).squeeze(-1).sum(-1)

    def mean(self, logits: Tensor, ids: Tensor) -> Tensor:
        """Decoder mean output for the gradient penalty: per-step probabilities [B, L, V]."""
        return self.masked_log_probs(logits, ids).exp()

    def token_accuracy(self, logits: Tensor, ids: Tensor) -> Tensor:
        return (self.masked_log_probs(logits, ids).argmax(-1) == ids.long()).float().mean()


class AutoEncoder(nn.Module):
    """encoder + latent + decoder + likelihood + decoder regulariser + prior + objective.

    ``codec`` is the domain codec (grammar, characters, pixels); it is plain data, not a module.
    ``prior`` defaults to N(0, I) over the code; ``objective`` to the caller's choice (required
    for training: :meth:`loss` delegates to it).
    """

    def __init__(self, encoder: nn.Module, latent: Latent, decoder: nn.Module, likelihood: nn.Module,
                 regularizer: DecoderRegularizer, codec: Any = None, prior: Prior | None = None,
                 objective: Objective | None = None) -> None:
        super().__init__()
        self.encoder, self.latent, self.likelihood = encoder, latent, likelihood
        self.regularizer = regularizer
        self.decoder = regularizer.prepare(decoder)
        self.codec = codec
        self.prior = prior if prior is not None else StandardNormal(latent.code_dim)
        if hasattr(self.prior, "attach"):  # a prior built from the model's own networks (VampPrior)
            self.prior.attach(self)
        self.objective = objective
        if hasattr(objective, "attach"):  # an objective that changes a part (MaskAAE masks the decoder's input)
            objective.attach(self)

    # --- training --------------------------------------------------------------------------
    def forward(self, x: Tensor) -> tuple[LatentOutput, Tensor]:
        lat = self.latent(self.encoder(x))
        with self._decoder_context(lat.z):
            return lat, self.decoder(lat.z, x)

    def _decoder_context(self, z: Tensor) -> Any:
        """cuDNN's RNN kernels have no double backward, which the gradient penalty needs
        (d/dtheta of a gradient w.r.t. z through the GRU): run such decoders without cuDNN then.
        Image decoders (convolutions) keep cuDNN."""
        needs_double_backward = self.regularizer.needs_penalty and self.training and z.is_cuda
        if needs_double_backward and any(isinstance(m, nn.RNNBase) for m in self.decoder.modules()):
            return torch.backends.cudnn.flags(enabled=False)
        return contextlib.nullcontext()

    def loss(self, x: Tensor, step: int = 0) -> dict[str, Tensor]:
        """Loss terms of the objective for a batch; ``loss`` is what is minimised. All scalars."""
        if self.objective is None:
            raise RuntimeError("this model was built without an objective; it cannot compute a loss")
        return self.objective.terms(self, x, step)

    def decoder_penalty(self, lat: LatentOutput, out: Tensor, x: Tensor) -> Tensor:
        """The decoder regulariser's penalty (gradient penalty) in training, else 0 (a scalar)."""
        if self.regularizer.needs_penalty and self.training:
            return self.regularizer.penalty(lat.z, self.likelihood.mean(out, x))
        return lat.z.new_zeros((), dtype=torch.float32)

    def likelihood_terms(self) -> dict[str, Tensor]:
        """Learned likelihood parameters (e.g. the pixel variance) for the training log."""
        return self.likelihood.logged_terms() if hasattr(self.likelihood, "logged_terms") else {}

    def parameters_except(self, *modules: nn.Module) -> list[nn.Parameter]:
        """Model parameters outside ``modules`` (e.g. not a discriminator's)."""
        skip = {id(p) for m in modules for p in m.parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    def configure_optimizer(self, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
        """AdamW whose parameter groups carry the decoder regulariser's weight decay (L2).

        Parameters that belong to an objective's own optimizers (e.g. a discriminator) are left out.
        """
        decoder_ids = {id(p) for p in self.decoder.parameters()}
        others = [p for p in self.parameters_except(*self._objective_modules()) if id(p) not in decoder_ids]
        groups = [g for g in self.regularizer.param_groups(self.decoder, others) if g["params"]]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)

    def _objective_modules(self) -> list[nn.Module]:
        """The objective's own networks (discriminators, critics): its own optimizers train them."""
        return [self.objective] if self.objective is not None else []

    def configure_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer by name: "main" (:meth:`configure_optimizer`) plus the objective's."""
        if self.objective is None:
            return {"main": self.configure_optimizer(lr)}
        extra = self.objective.extra_optimizers(self, lr)
        if "main" in extra:
            raise ValueError("an objective's extra optimizers must not be named 'main' (use main_betas)")
        return {"main": self.configure_optimizer(lr, betas=self.objective.main_betas()), **extra}

    def phases(self) -> list[Phase]:
        """The phases of one training step (objectives.Phase); one phase for most models."""
        if self.objective is None:
            return [Phase("main", "main", self.loss)]
        return self.objective.phases(self)

    def on_step(self, step: int) -> dict[str, float]:
        """Per-step schedules owned by the model (e.g. Gumbel temperature)."""
        return self.latent.on_step(step)

    # --- inference -------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Deterministic codes [B, D] (posterior mean, or one-hot for categorical latents)."""
        return self.latent(self.encoder(x)).code

    @torch.no_grad()
    def generate(self, z: Tensor, greedy: bool = True, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> Any:
        """Decode codes z [B, D] into the codec's output (ids + finished for sequences)."""
        if hasattr(self.decoder, "generate"):
            return self.decoder.generate(z, self.codec, greedy, temperature, generator)
        return self.likelihood.decode(self.decoder(z, None))
