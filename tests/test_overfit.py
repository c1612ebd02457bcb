"""Overfit test: a grammar RAE must memorise 32 molecules exactly (greedy decode of their codes)."""

from __future__ import annotations

import numpy as np
import torch

from discrete_rae.codecs import GrammarCodec
from discrete_rae.grammar import Grammar
from discrete_rae.registry import MODELS
from discrete_rae.trainer import Trainer

from conftest import smoke_run

MOLECULES = [
    "CCO", "CC(=O)O", "c1ccccc1", "CCN(CC)CC", "CC(C)O", "OC1CCCCC1", "Cc1ccccc1", "CC#N",
    "O=C1CCCC1", "CCOC(C)=O", "Nc1ccccc1", "CC(=O)Nc1ccccc1", "c1ccncc1", "C1CCNCC1", "CCCl", "OCCO",
    "CC(C)(C)O", "COc1ccccc1", "Oc1ccccc1", "C=CC(=O)O", "CCS", "c1ccoc1", "c1ccsc1", "CC(N)C(=O)O",
    "FC(F)F", "CCBr", "O=Cc1ccccc1", "CN1CCOCC1", "C1CCOC1", "CC=O", "NC(=O)N", "c1cc[nH]c1",
]


def test_grammar_rae_reconstructs_32_molecules():
    grammar = Grammar.builtin("smiles")
    rows = [grammar.parse(s) for s in MOLECULES]
    codec = GrammarCodec(grammar, max_length=max(map(len, rows)))
    ids = np.full((len(rows), codec.max_length), grammar.pad_index, dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    x = torch.from_numpy(ids)
    run = smoke_run("molecules", "grammar_rae", model={"dec_hidden": 128, "latent_dim": 16, "enc_hidden": 128},
                    train={"epochs": 300, "batch_size": 32, "lr": 3e-3, "early_stop": 0, "lr_patience": 1000})
    torch.manual_seed(0)
    model = MODELS.get("grammar_rae").build(run.model, codec)
    Trainer(model, run.train, None, torch.device("cpu"), progress=False).fit(x, x)
    model.eval()
    out_ids, finished = model.generate(model.encode(x))
    texts = codec.to_text(out_ids, finished)
    wrong = [(t, s) for t, s in zip(texts, MOLECULES) if t != s]
    assert not wrong, wrong[:3]
