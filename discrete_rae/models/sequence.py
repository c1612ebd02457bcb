"""Sequence models: GrammarVAE / GrammarRAE and the character baselines (CVAE / CRAE).

All of them are one builder over :class:`SequenceModelConfig`; the registered names differ
only in config values. The VAE/RAE difference is visible in two lines: ``_VAE`` and ``_RAE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import ConfigError, LatentConfig
from ..latents import build_latent
from ..model import AutoEncoder, SequenceLikelihood
from ..nn.sequence import DECODERS, ENCODERS, RNN_CELLS, ConvSequenceEncoder, GRUSequenceEncoder
from ..registry import ModelSpec, register_model
from ..regularizers import build_regularizer


@dataclass
class SequenceModelConfig(LatentConfig):
    """Sequence autoencoder. codec: grammar | char.  max_length 0: from the training data.

    ``grammar``: a builtin grammar name (``smiles``, ``smiles_compact``, ``expressions``,
    ``expressions_compact``); empty = the domain's default.

    Encoder ``conv`` is the Grammar VAE's (channels/kernels/enc_hidden), ``gru`` a
    bidirectional GRU (``enc_layers``; ``enc_reverse`` reads the sequence reversed, as
    MHG-VAE).  Decoder ``gru`` is autoregressive (teacher-forced; ``decoder_cell`` gru | lstm),
    ``repeat`` the paper's non-autoregressive one (code repeated at each step).
    """

    codec: str = "grammar"
    grammar: str = ""
    max_length: int = 0
    encoder: str = "conv"
    conv_channels: tuple[int, ...] = (9, 9, 10)
    conv_kernels: tuple[int, ...] = (9, 9, 11)
    enc_hidden: int = 435
    enc_layers: int = 1
    enc_reverse: bool = False
    decoder: str = "gru"
    decoder_cell: str = "gru"
    dec_hidden: int = 256
    dec_layers: int = 1
    embed_dim: int = 64
    word_dropout: float = 0.0


def build_sequence_model(cfg: SequenceModelConfig, codec: Any) -> AutoEncoder:
    """Assemble encoder, latent, decoder, likelihood and regulariser for ``codec``."""
    _check_choices(cfg)
    vocab, length = codec.vocab_size, codec.max_length
    if cfg.encoder == "conv":
        encoder = ConvSequenceEncoder(vocab, length, cfg.conv_channels, cfg.conv_kernels, cfg.enc_hidden)
    else:
        encoder = GRUSequenceEncoder(vocab, length, cfg.enc_hidden, cfg.embed_dim, cfg.enc_layers, cfg.enc_reverse)
    latent = build_latent(cfg, encoder.out_dim)
    # the grammar codec's loss mask pins padding positions to the padding rule (zero loss), so
    # the decoder may stop at each batch's longest sequence; the character codec's may not
    trim_pad = codec.pad_index if getattr(codec, "kind", "") == "grammar" else None
    dec_kwargs = {"hidden": cfg.dec_hidden, "layers": cfg.dec_layers, "trim_pad": trim_pad}
    if cfg.decoder == "gru":
        dec_kwargs.update(embed=cfg.embed_dim, word_dropout=cfg.word_dropout, cell=cfg.decoder_cell)
    decoder = DECODERS[cfg.decoder](latent.code_dim, vocab, length, **dec_kwargs)
    return AutoEncoder(encoder, latent, decoder, SequenceLikelihood(codec),
                       build_regularizer(cfg.decoder_reg, cfg.reg_weight), codec)


def _check_choices(cfg: SequenceModelConfig) -> None:
    """One clear error for an unknown encoder, decoder or decoder cell."""
    for key, known in (("encoder", ENCODERS), ("decoder", DECODERS), ("decoder_cell", RNN_CELLS)):
        if getattr(cfg, key) not in known:
            raise ConfigError(f"{key} {getattr(cfg, key)!r} is unknown; choose one of: {', '.join(known)}")
    if cfg.enc_layers < 1 or cfg.dec_layers < 1:
        raise ConfigError(f"enc_layers {cfg.enc_layers} and dec_layers {cfg.dec_layers} must be >= 1")


# The whole difference between the VAE and the RAE readings of the same network:
_VAE = dict(latent="gaussian", beta=1.0, kl_anneal_steps=2000, decoder_reg="none", reg_weight=0.0)
_RAE = dict(latent="deterministic", beta=1e-3, decoder_reg="l2", reg_weight=1e-4)

_SEQ_DOMAINS = ("molecules", "expressions")
_WHAT = {"grammar": "Grammar", "char": "character"}

for _codec in ("grammar", "char"):
    register_model(ModelSpec(
        f"{_codec}_vae", f"{_WHAT[_codec]} VAE: Gaussian latent + KL, prior sampling",
        SequenceModelConfig(codec=_codec, **_VAE), build_sequence_model, _SEQ_DOMAINS, "prior"))
    register_model(ModelSpec(
        f"{_codec}_rae", f"{_WHAT[_codec]} RAE: deterministic code, L2 decoder, GMM sampling",
        SequenceModelConfig(codec=_codec, **_RAE), build_sequence_model, _SEQ_DOMAINS, "gmm"))

for _reg, _weight in (("l2", 1e-4), ("gp", 1e-2), ("sn", 0.0), ("none", 0.0)):
    register_model(ModelSpec(
        f"grammar_rae_{_reg}", f"Grammar RAE with decoder regulariser {_reg}",
        SequenceModelConfig(**{**_RAE, "decoder_reg": _reg, "reg_weight": _weight}),
        build_sequence_model, _SEQ_DOMAINS, "gmm"))

register_model(ModelSpec(
    "grammar_ae", "Grammar AE control: deterministic code, no latent or decoder regulariser",
    SequenceModelConfig(latent="deterministic", beta=0.0, decoder_reg="none", reg_weight=0.0),
    build_sequence_model, _SEQ_DOMAINS, "gmm"))
