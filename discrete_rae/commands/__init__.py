"""The commands of ``python -m discrete_rae`` (``train`` is also ``python train.py``).

Each module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; a
command whose flags depend on its own arguments (``train``) also has ``parse_args(argv)``.
:mod:`discrete_rae.cli` dispatches over :data:`COMMANDS`. Adding a command: write the module
here and add it to :data:`COMMANDS`. Nothing below this package imports it.
"""

from __future__ import annotations

from . import (compare, encode, evaluate, fit_sampler, image_table, interpolate, optimize, reconstruct, sample, train,
               zoo)

COMMANDS = (train, sample, evaluate, encode, reconstruct, compare, image_table, optimize, interpolate, fit_sampler,
            zoo)
