"""Registry-wide model tests: every registered model on every domain it supports, smoke sizes."""

from __future__ import annotations

import io

import pytest
import torch

from discrete_rae.config import replace
from discrete_rae.registry import MODELS
from discrete_rae.trainer import Trainer

from conftest import smoke_run

CASES = [(name, domain) for name, spec in MODELS.items() for domain in spec.domains]


def _build(prepared_for, name, domain):
    run, prepared = prepared_for(domain, name)
    torch.manual_seed(0)
    model = MODELS.get(name).build(run.model, prepared.codec)
    return run, prepared, model


@pytest.mark.parametrize("name,domain", CASES)
def test_build_forward_loss_step_roundtrip(prepared_for, name, domain):
    run, prepared, model = _build(prepared_for, name, domain)
    x = prepared.train[:8]
    model.train()
    lat, out = model(x)
    assert lat.z.shape[0] == 8 and lat.code.shape == lat.z.shape
    if x.dtype in (torch.uint8, torch.int16, torch.int64):  # sequences: logits [B, L, V]
        assert out.shape == (8, prepared.codec.max_length, prepared.codec.vocab_size)
    else:
        assert out.shape[0] == 8
    terms = model.loss(x, step=0)
    assert set(terms) >= {"loss", "rec", "latent", "reg"}
    assert all(torch.isfinite(v) for v in terms.values())

    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = model.configure_optimizer(1e-2)
    opt.zero_grad()
    model.loss(x, step=0)["loss"].backward()
    opt.step()
    changed = [k for k, v in model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert any(k.startswith("encoder") for k in changed) and any(k.startswith("decoder") for k in changed)

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    clone = MODELS.get(name).build(run.model, prepared.codec)
    clone.load_state_dict(torch.load(buf, weights_only=True))
    model.eval(), clone.eval()
    with torch.no_grad():
        assert torch.equal(model.encode(x), clone.encode(x))
        assert torch.equal(model(x)[1], clone(x)[1])


@pytest.mark.parametrize("domain", ["molecules", "expressions"])
def test_vae_and_rae_differ_only_in_latent_and_regulariser(domain):
    vae, rae = (MODELS.get(name).config_for(domain) for name in ("grammar_vae", "grammar_rae"))
    differ = {k for k in vars(vae) if getattr(vae, k) != getattr(rae, k)}
    # exactly the latent column (type, weight of its term, annealing) and the regulariser column
    assert differ == {"latent", "beta", "kl_anneal_steps", "decoder_reg", "reg_weight"}


def test_trainer_reduces_loss(prepared_for):
    run, prepared, model = _build(prepared_for, "grammar_rae", "expressions")
    cfg = replace(run.train, {"epochs": 3, "lr": 3e-3})
    trainer = Trainer(model, cfg, None, torch.device("cpu"), progress=False)
    start = trainer.evaluate(prepared.val)["rec"]
    trainer.fit(prepared.train, prepared.val)
    assert trainer.evaluate(prepared.val)["rec"] < start


def test_word_dropout_hides_history_only_in_training() -> None:
    from discrete_rae.nn.sequence import AutoregressiveGRUDecoder

    torch.manual_seed(0)
    dec = AutoregressiveGRUDecoder(code_dim=4, vocab=7, length=12, hidden=16, embed=8, word_dropout=0.5)
    z, ids = torch.randn(3, 4), torch.randint(0, 7, (3, 12))
    dec.train()
    assert not torch.equal(dec(z, ids), dec(z, ids))  # different tokens hidden each call
    dec.eval()
    assert torch.equal(dec(z, ids), dec(z, ids))
    dec.word_dropout = 0.0
    dec.train()
    assert torch.equal(dec(z, ids), dec(z, ids))
