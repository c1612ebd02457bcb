"""Overfit tests: a model must be able to memorise a tiny set exactly (one per sequence family)."""

from __future__ import annotations

import torch

from discrete_rae.config import replace
from discrete_rae.registry import MODELS
from discrete_rae.trainer import Trainer

from conftest import smoke_run


def test_grammar_rae_reconstructs_32_molecules(prepared_for):
    _, prepared = prepared_for("molecules", "grammar_rae")
    run = smoke_run("molecules", "grammar_rae", model={"dec_hidden": 128, "latent_dim": 16, "enc_hidden": 128},
                    train={"epochs": 150, "batch_size": 32, "lr": 3e-3, "early_stop": 0})
    torch.manual_seed(0)
    model = MODELS.get("grammar_rae").build(run.model, prepared.codec)
    x = prepared.train[:32]
    Trainer(model, run.train, None, torch.device("cpu"), progress=False).fit(x, x)
    model.eval()
    ids, finished = model.generate(model.encode(x))
    texts = prepared.codec.to_text(ids, finished)
    truth = prepared.train_texts[:32]
    exact = sum(t == s for t, s in zip(texts, truth))
    assert exact == 32, [(t, s) for t, s in zip(texts, truth) if t != s][:3]
