"""Discrete-latent models: the Gumbel-softmax VAE, the discrete RAE and the discrete AE control.

One builder for every domain: the network comes from the domain's codec (``codec.kind``) via
:data:`NETWORKS` (images: the conv encoder/decoder of models/images.py; expressions and
molecules: the grammar-masked sequence networks of models/sequence.py). The latent type and
the decoder regulariser come from the config, as for every other model of the toolkit.

The three registered models differ only in these config values (``_GUMBEL``, ``_DRAE``,
``_DAE`` below):

- ``gumbel_vae``: latent ``gumbel`` (N x K = 30 x 10, relaxed Gumbel-softmax samples in
  training, KL to the uniform prior with weight beta = 1, annealed over the first 2,000 steps
  on the sequence domains), no decoder regulariser; samples from the uniform prior
  (``uniform``), as in Jang et al. 2017.
- ``discrete_rae``: latent ``categorical`` (deterministic argmax one-hot, straight-through
  gradient), decoder regulariser L2 (decoder-only weight decay 1e-2), the small logit penalty
  beta = 1e-3 (latents_discrete.py); samples from an ex-post mixture of categoricals
  (``cat_mixture``, k = 30).
- ``discrete_ae``: the same deterministic code with no regulariser at all (beta 0, ``none``).

Why L2 (digits, quick image preset with channels (32, 64), 40 epochs, training seed 0;
Fréchet distance in the digits classifier's features of 1,000 ``cat_mixture`` samples, mean of
3 sampling seeds; test -log p(x|code) in nats): L2 1e-2 + beta 1e-3: FID 9.9, rec 29.7;
GP 1e-3: 13.0, 29.1; none + beta 0 (``discrete_ae``): 11.8, 29.6; L2 1e-2 + beta 0: 11.7, 29.2;
L2 1e-1: 14.1, 28.8; SN: 29.1, 29.8 (SN also blurs reconstructions: reconstruction FID 9.3
against about 1 for the others). L2 1e-2 with the logit penalty had the best sample quality at
equal reconstruction; the gaps between L2, GP and no regulariser are within the spread of one
training seed (a few FID points), SN is clearly worse.

Importing this module also registers the ``gumbel`` / ``categorical`` latents and the discrete
samplers.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from .. import latents_discrete  # noqa: F401  (registers the gumbel / categorical latents)
from .. import samplers_discrete  # noqa: F401  (registers the discrete samplers)
from ..registry import ModelSpec, register_model
from .sequence import SequenceModelConfig, build_sequence_model

log = logging.getLogger(__name__)

# codec.kind -> builder(cfg, codec) of the domain's encoder/decoder pair.
NETWORKS: dict[str, Callable[[Any, Any], Any]] = {"grammar": build_sequence_model, "char": build_sequence_model}
CONFIGS: dict[str, Callable[..., Any]] = {"molecules": SequenceModelConfig, "expressions": SequenceModelConfig}

try:  # the image family is optional: without it the models run on the sequence domains only
    from .images import ImageModelConfig, build_image_model
except ModuleNotFoundError as err:  # pragma: no cover - depends on which families are installed
    if not (err.name or "").startswith("discrete_rae"):
        raise
    log.debug("image family not available: %s", err)
else:
    CONFIGS["images"] = ImageModelConfig
    NETWORKS["pixels"] = build_image_model


def build_discrete_model(cfg: Any, codec: Any) -> Any:
    """The domain's network (by ``codec.kind``) with the config's discrete latent and regulariser."""
    try:
        network = NETWORKS[codec.kind]
    except KeyError:
        raise ValueError(f"no network for codec kind {codec.kind!r}; known: {', '.join(sorted(NETWORKS))}") from None
    return network(cfg, codec)


_COMMON = dict(n_vars=30, n_classes=10, tau=1.0, tau_min=0.5, tau_rate=1e-4, tau_every=100)
_GUMBEL = dict(_COMMON, latent="gumbel", beta=1.0, kl_anneal_steps=0, straight_through=False,
               decoder_reg="none", reg_weight=0.0)
# With an autoregressive sequence decoder the KL is annealed from 0 over 2,000 steps, as for the
# Gaussian grammar_vae (models/sequence.py): without it the posterior collapsed on expressions
# (I(X; C) = 0.006 nats, quick preset).
_GUMBEL_SEQUENCE = dict(kl_anneal_steps=2000)
# Discrete RAE: decoder regulariser chosen by measurement (module docstring).
_DRAE = dict(_COMMON, latent="categorical", categorical_mode="argmax", beta=1e-3, decoder_reg="l2", reg_weight=1e-2)
_DAE = dict(_COMMON, latent="categorical", categorical_mode="argmax", beta=0.0, decoder_reg="none", reg_weight=0.0)


def _configs(values: dict[str, Any], sequence: dict[str, Any] | None = None) -> dict[str, Any]:
    """One default config per domain: the domain family's config class with ``values``; sequence
    models read production rules (the grammar codec) and take the ``sequence`` extras."""
    family = {SequenceModelConfig: {"codec": "grammar", **(sequence or {})}}
    return {domain: cls(**{**values, **family.get(cls, {})}) for domain, cls in CONFIGS.items()}


_DOMAINS = tuple(CONFIGS)

register_model(ModelSpec(
    "gumbel_vae", "Gumbel-softmax VAE: 30x10 categorical latent, KL to uniform, uniform-prior sampling",
    _configs(_GUMBEL, sequence=_GUMBEL_SEQUENCE), build_discrete_model, _DOMAINS, "uniform", family="discrete"))
register_model(ModelSpec(
    "discrete_rae", "discrete RAE: deterministic argmax code (straight-through), regularised decoder, "
    "ex-post mixture of categoricals", _configs(_DRAE), build_discrete_model, _DOMAINS, "cat_mixture",
    family="discrete"))
register_model(ModelSpec(
    "discrete_ae", "discrete AE control: deterministic argmax code, no regulariser, ex-post sampling",
    _configs(_DAE), build_discrete_model, _DOMAINS, "cat_mixture", family="discrete"))
