#!/usr/bin/env python
"""Train, sample and evaluate a model: ``python train.py --domain molecules --model grammar_rae``.

A thin entry point into :mod:`discrete_rae.cli`; ``python train.py --help`` lists everything.
"""

import sys

from discrete_rae.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
