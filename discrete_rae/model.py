"""The one model class: a composition of parts.

    x --encoder--> h --latent--> z --decoder--> output --likelihood--> -log p(x|z)

    loss = likelihood.nll(output, x).mean()        reconstruction (nats per example)
         + latent.penalty(z)                       KL (VAE) or beta/2 ||z||^2 (RAE)
         + regularizer.penalty(z, mean output)     gradient penalty (RAE-GP), else 0
    (L2 lives in the optimiser's decoder-only parameter group; SN inside the decoder.)

A VAE and an RAE built by the same builder differ only in ``latent`` and ``regularizer``.
Models own their loss and their optimiser; the trainer only calls :meth:`loss` and
:meth:`configure_optimizer`.
"""

from __future__ import annotations

import contextlib

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .grammar.teacher_mask import ConstraintMasks
from .latents import Latent, LatentOutput
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
    """encoder + latent + decoder + likelihood + decoder regulariser.

    ``codec`` is the domain codec (grammar, characters, pixels); it is plain data, not a module.
    """

    def __init__(self, encoder: nn.Module, latent: Latent, decoder: nn.Module, likelihood: nn.Module,
                 regularizer: DecoderRegularizer, codec: Any = None) -> None:
        super().__init__()
        self.encoder, self.latent, self.likelihood = encoder, latent, likelihood
        self.regularizer = regularizer
        self.decoder = regularizer.prepare(decoder)
        self.codec = codec

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
        """Loss terms for a batch; ``loss`` is what is minimised. All scalars."""
        lat, out = self(x)
        rec = self.likelihood.nll(out, x).mean()
        latent_term = self.latent.penalty(lat, step)
        reg = (self.regularizer.penalty(lat.z, self.likelihood.mean(out, x))
               if self.regularizer.needs_penalty and self.training else rec.new_zeros(()))
        # Likelihoods with learned parameters (e.g. the pixel variance) report them for the log.
        extra = self.likelihood.logged_terms() if hasattr(self.likelihood, "logged_terms") else {}
        return {"loss": rec + latent_term + reg, "rec": rec.detach(), "latent": latent_term.detach(),
                "reg": reg.detach(), **extra}

    def configure_optimizer(self, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
        """AdamW whose parameter groups carry the decoder regulariser's weight decay (L2)."""
        decoder_ids = {id(p) for p in self.decoder.parameters()}
        others = [p for p in self.parameters() if id(p) not in decoder_ids]
        groups = [g for g in self.regularizer.param_groups(self.decoder, others) if g["params"]]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)

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
