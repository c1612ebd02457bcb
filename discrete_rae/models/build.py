"""One build function for every zoo row on every domain.

A network family (models/sequence.py, models/images.py) provides, for its codec, the encoder,
a decoder factory (the decoder's input size is the latent's code size) and the likelihood:
:class:`Networks`. The config's component names pick the rest: latent type, prior, objective
and decoder regulariser. The parts are created in the order encoder, latent, decoder, so a
seed gives the same initial weights as before the zoo existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ..distributions import build_prior
from ..errors import ConfigError
from ..latents import build_latent
from ..model import AutoEncoder
from ..objectives import build_objective
from ..registry import FAMILIES, Family
from ..regularizers import build_regularizer


@dataclass
class Networks:
    """What a network family supplies: ``encoder`` (with ``out_dim``), ``decoder(code_dim)``
    building the decoder, and the ``likelihood`` module."""

    encoder: nn.Module
    decoder: Callable[[int], nn.Module]
    likelihood: nn.Module


def family_of(cfg: Any) -> Family:
    """The network family whose config class ``cfg`` is an instance of."""
    for _, family in FAMILIES.items():
        if isinstance(cfg, family.config):
            return family
    raise ConfigError(f"no network family takes a {type(cfg).__name__} config")


def build_model(cfg: Any, codec: Any) -> AutoEncoder:
    """Encoder, latent, decoder, likelihood (from the family), prior, objective, regulariser."""
    nets = family_of(cfg).networks(cfg, codec)
    latent = build_latent(cfg, nets.encoder.out_dim)
    decoder = nets.decoder(latent.code_dim)
    try:
        prior = build_prior(cfg.prior, latent, cfg, codec)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return AutoEncoder(nets.encoder, latent, decoder, nets.likelihood,
                       build_regularizer(cfg.decoder_reg, cfg.reg_weight), codec, prior, build_objective(cfg))
