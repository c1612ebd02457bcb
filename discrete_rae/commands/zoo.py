"""``zoo``: print the model table (every row's latent, prior, objective, regulariser, sampler)."""

from __future__ import annotations

import argparse

NAME = "zoo"
HELP = "list the models: one row each (latent, prior, objective, decoder regulariser, default sampler)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Every model is one row of discrete_rae/zoo.py; earlier codec-specific names "
                     "(grammar_rae, char_vae, ...) are aliases of rows with a fixed codec.")


def run(args: argparse.Namespace) -> int:
    from ..catalog import load_all
    from ..zoo import markdown_table

    load_all()
    print(markdown_table())
    return 0
