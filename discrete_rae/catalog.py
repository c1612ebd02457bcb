"""The one module that imports every plugin, so that the registries of :mod:`registry` fill.

Plugins register themselves on import (models, domains, latents, samplers, decoder
regularisers). Nothing else imports them for that side effect: code that looks names up calls
:func:`load_all` first (the pipeline, the API and the command line do). A new plugin module is
one more import line in :func:`load_all`. Third-party dependencies that a plugin needs only
for some data sets (torchvision for the large image sets) are imported lazily by the plugin.
"""

from __future__ import annotations

_loaded = False


def load_all() -> None:
    """Import every plugin module (idempotent; keeps ``import discrete_rae`` light)."""
    global _loaded
    if _loaded:
        return
    # latents, samplers and decoder regularisers (continuous and discrete)
    from . import latents, latents_discrete, regularizers, samplers, samplers_discrete  # noqa: F401
    from . import samplers_learned, samplers_wgan  # noqa: F401
    # priors and objectives
    from . import distributions, objectives, objectives_adversarial, objectives_labels  # noqa: F401
    from . import objectives_iwae, objectives_mae, objectives_mask, objectives_mmd, prior_vamp  # noqa: F401
    # codecs beyond the built-in grammar / character ones (the SELFIES package itself loads lazily)
    from . import selfies_codec  # noqa: F401
    # domains: where data comes from and how samples are judged
    from .domains import expressions, images, molecules  # noqa: F401,F811
    # network families, then the zoo's rows over them
    from .models import sequence  # noqa: F401
    from .models import images as image_models  # noqa: F401
    from . import zoo

    zoo.register_zoo()
    _loaded = True
