"""The sequence network family: GrammarVAE / GrammarRAE networks and the character / SELFIES ones.

Supplies, for a sequence codec (production rules, characters, SELFIES tokens), the encoder,
the decoder and the grammar-masked categorical likelihood; the zoo (zoo.py) supplies the
latent type, prior, objective and decoder regulariser. Domains: molecules, expressions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..codecs import CODECS, SequenceCodec
from ..config import ConfigError, LatentConfig, names_in, option
from ..model import SequenceLikelihood
from ..nn.sequence import (DECODERS, ENCODERS, RNN_CELLS, ConvSequenceEncoder, GRUSequenceEncoder,
                           TransformerSequenceEncoder)
from ..registry import FAMILIES, Family
from .build import Networks


def _sequence_codecs() -> list[str]:
    """The registered codecs that tokenise strings (CODECS also holds e.g. the pixel codec)."""
    return sorted(name for name, cls in CODECS.items() if issubclass(cls, SequenceCodec))


_CONV = {"encoder": ("conv",)}
TRAIN_MASKS = ("grammar", "constraints")


@dataclass
class SequenceModelConfig(LatentConfig):
    """Sequence autoencoder. codec: grammar | char | selfies.  max_length 0: from the training data.

    ``grammar``: a builtin grammar name (``smiles``, ``smiles_compact``, ``expressions``,
    ``expressions_compact``); empty = the domain's default.

    Encoder ``conv`` is the Grammar VAE's (channels/kernels/enc_hidden), ``gru`` a
    bidirectional GRU (``enc_layers``; ``enc_reverse`` reads the sequence reversed, as
    MHG-VAE), ``transformer`` self-attention layers (``enc_layers``, ``enc_heads``; width
    ``enc_hidden``).  Decoder ``gru`` is autoregressive (teacher-forced; ``decoder_cell`` gru | lstm),
    ``repeat`` the paper's non-autoregressive one (code repeated at each step).
    """

    codec: str = option("grammar", "sequence codec: grammar = production rules, char = characters",
                        choices=_sequence_codecs, kind="sequence codec")
    grammar: str = option("", "builtin grammar for the grammar codec; empty = the domain's",
                          choices=names_in("discrete_rae.grammar", "builtin_names"), kind="grammar", optional=True,
                          applies={"codec": ("grammar",)})
    max_length: int = option(0, "sequence length; 0 = longest in the data", ge=0)
    encoder: str = option("conv", "sequence encoder: conv = the Grammar VAE's, gru = bidirectional GRU, "
                          "transformer = self-attention layers, mean-pooled",
                          choices=ENCODERS, kind="sequence encoder")
    conv_channels: tuple[int, ...] = option((9, 9, 10), "conv encoder channels, comma-separated", ge=1, min_items=1,
                                            applies=_CONV)
    conv_kernels: tuple[int, ...] = option((9, 9, 11), "conv encoder kernel sizes, comma-separated", ge=1,
                                           min_items=1, applies=_CONV)
    enc_hidden: int = option(435, "encoder dense/hidden width", ge=1)
    enc_layers: int = option(1, "GRU / transformer encoder layers", ge=1, applies={"encoder": ("gru", "transformer")})
    enc_heads: int = option(4, "transformer encoder: attention heads (must divide enc_hidden)", ge=1,
                            applies={"encoder": ("transformer",)})
    enc_reverse: bool = option(False, "GRU encoder: read the sequence reversed (padding first, the first rule "
                               "last)", applies={"encoder": ("gru",)})
    enc_cell: str = option("gru", "recurrent encoder cell: gru | lstm (bidirectional either way; on the CPU "
                           "nn.LSTM runs a fused kernel)", choices=RNN_CELLS, kind="encoder cell",
                           applies={"encoder": ("gru",)})
    decoder: str = option("gru", "sequence decoder: gru = autoregressive, repeat = code repeated at every step",
                          choices=DECODERS, kind="sequence decoder")
    decoder_cell: str = option("gru", "autoregressive decoder cell: gru | lstm (a fused kernel on the CPU)",
                               choices=RNN_CELLS, kind="decoder cell", applies={"decoder": ("gru",)})
    dec_hidden: int = option(256, "decoder RNN width", ge=1)
    dec_layers: int = option(1, "decoder RNN layers", ge=1)
    embed_dim: int = option(64, "token embedding size of the GRU encoder / autoregressive decoder", ge=1,
                            applies=({"encoder": ("gru",)}, {"decoder": ("gru",)}))
    train_mask: str = option("grammar", "rules the training log-softmax runs over at each step: grammar = those of "
                             "the true step's non-terminal, constraints = those the decoding constraints (length, "
                             "ring, chemistry masks) allow along the true derivation", choices=TRAIN_MASKS,
                             kind="training mask", applies={"codec": ("grammar",)})
    word_dropout: float = option(0.0, "autoregressive decoder: probability of hiding each previous token in "
                                 "training", ge=0, lt=1, applies={"decoder": ("gru",)})


def sequence_networks(cfg: SequenceModelConfig, codec: Any) -> Networks:
    """Encoder, decoder factory and masked categorical likelihood for ``codec``."""
    _check_choices(cfg)
    vocab, length = codec.vocab_size, codec.max_length
    if cfg.encoder == "conv":
        encoder = ConvSequenceEncoder(vocab, length, cfg.conv_channels, cfg.conv_kernels, cfg.enc_hidden)
    elif cfg.encoder == "transformer":
        encoder = TransformerSequenceEncoder(vocab, length, cfg.enc_hidden, cfg.enc_layers, cfg.enc_heads)
    else:
        encoder = GRUSequenceEncoder(vocab, length, cfg.enc_hidden, cfg.embed_dim, cfg.enc_layers, cfg.enc_reverse,
                                     cell=cfg.enc_cell)
    # the grammar codec's loss mask pins padding positions to the padding rule (zero loss), so
    # the decoder may stop at each batch's longest sequence; the character codec's may not
    trim_pad = codec.pad_index if getattr(codec, "kind", "") == "grammar" else None
    dec_kwargs: dict[str, Any] = {"hidden": cfg.dec_hidden, "layers": cfg.dec_layers, "trim_pad": trim_pad}
    if cfg.decoder == "gru":
        dec_kwargs.update(embed=cfg.embed_dim, word_dropout=cfg.word_dropout, cell=cfg.decoder_cell)

    def decoder(code_dim: int) -> Any:
        return DECODERS[cfg.decoder](code_dim, vocab, length, **dec_kwargs)

    return Networks(encoder, decoder, SequenceLikelihood(codec, cfg.train_mask))


def _check_choices(cfg: SequenceModelConfig) -> None:
    """One clear error for an unknown encoder, decoder or decoder cell."""
    for key, known in (("encoder", ENCODERS), ("decoder", DECODERS), ("decoder_cell", RNN_CELLS),
                       ("enc_cell", RNN_CELLS)):
        if getattr(cfg, key) not in known:
            raise ConfigError(f"{key} {getattr(cfg, key)!r} is unknown; choose one of: {', '.join(known)}")
    if cfg.enc_layers < 1 or cfg.dec_layers < 1:
        raise ConfigError(f"enc_layers {cfg.enc_layers} and dec_layers {cfg.dec_layers} must be >= 1")
    if cfg.encoder == "transformer" and cfg.enc_hidden % cfg.enc_heads:
        raise ConfigError(f"enc_hidden {cfg.enc_hidden} must be divisible by enc_heads {cfg.enc_heads} "
                          "(the transformer encoder splits its width over the heads)")


FAMILIES.register("sequence", Family("sequence", SequenceModelConfig, sequence_networks, ("molecules", "expressions")))
