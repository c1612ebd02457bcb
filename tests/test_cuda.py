"""The GPU path: every test body runs on ``cuda`` (marked ``cuda``; skipped without a GPU) and,
where a CPU run still checks something, on ``cpu`` too so that the code is exercised anywhere.

1. Every registered model on every domain it supports, on the device: build, loss, backward,
   one optimiser step, encode and generate (CPU: one model per family).
2. bf16 autocast: finite losses within a few percent of fp32, finite gradients; the trainer
   fits an epoch with autocast.
3. A run checkpointed on one device loads on the other: identical weights and sampler states,
   bitwise-identical outputs to the source model moved there, close outputs across devices.
4. Greedy grammar decoding on the device equals the CPU's: exactly on the same logits (with and
   without the decoding masks), and on the same codes through a model (TF32 off).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from discrete_rae.codecs import GrammarCodec
from discrete_rae.config import replace
from discrete_rae.grammar import Grammar
from discrete_rae.pipeline import DECODING_OPTIONS, load_run, train_run
from discrete_rae.registry import DOMAINS, MODELS
from discrete_rae.trainer import Trainer

from conftest import smoke_run

ALL_CASES = [(name, domain) for name, spec in MODELS.items() for domain in spec.domains]
# one model per family for the CPU variant (the full zoo runs on the CPU in test_models.py)
CPU_CASES = [("grammar_rae", "molecules"), ("grammar_vae", "expressions"), ("char_vae", "molecules"),
             ("discrete_rae", "expressions"), ("gumbel_vae", "images"), ("rae_gp", "images")]


def devices_x_cases(cpu_cases: list, cuda_cases: list) -> list:
    """pytest params (device, *case): the CUDA ones carry the ``cuda`` mark."""
    params = [pytest.param("cpu", *case, id=f"cpu-{'-'.join(case)}") for case in cpu_cases]
    params += [pytest.param("cuda", *case, marks=pytest.mark.cuda, id=f"cuda-{'-'.join(case)}") for case in cuda_cases]
    return params


@pytest.fixture
def no_tf32():
    """Full fp32 matmuls and convolutions, so CPU and GPU results agree to ~1e-6."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _built(prepared_for, name: str, domain: str, device: str):
    run, prepared = prepared_for(domain, name)
    torch.manual_seed(0)
    model = MODELS.get(name).build(run.model, prepared.codec).to(device)
    return run, prepared, model


# --- 1. the zoo on the device ------------------------------------------------------------------
@pytest.mark.parametrize("device,name,domain", devices_x_cases(CPU_CASES, ALL_CASES))
def test_model_builds_trains_and_generates_on_device(prepared_for, device, name, domain):
    run, prepared, model = _built(prepared_for, name, domain, device)
    assert {p.device.type for p in model.parameters()} == {device}
    assert {b.device.type for b in model.buffers()} <= {device}
    x = prepared.train[:16].to(device)
    model.train()
    terms = model.loss(x, step=0)
    assert terms["loss"].device.type == device
    assert all(torch.isfinite(v) for v in terms.values()), terms

    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = model.configure_optimizer(1e-2)
    opt.zero_grad()
    terms["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads)
    opt.step()
    changed = [k for k, v in model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert any(k.startswith("encoder") for k in changed) and any(k.startswith("decoder") for k in changed)

    model.eval()
    codes = model.encode(x[:4])
    assert codes.device.type == device and torch.isfinite(codes).all()
    out = model.generate(codes)
    if isinstance(out, tuple):  # sequences: (ids [B, L], finished [B])
        ids, finished = out
        assert ids.device.type == device and ids.shape == (4, prepared.codec.max_length)
        assert finished.dtype == torch.bool
    else:  # images
        assert out.device.type == device and out.shape[0] == 4 and torch.isfinite(out).all()


# --- 2. bf16 autocast ---------------------------------------------------------------------------
BF16_CASES = [("grammar_rae", "molecules"), ("grammar_vae", "expressions"), ("char_rae", "molecules"),
              ("discrete_rae", "expressions"), ("rae", "images"), ("gumbel_vae", "images")]


@pytest.mark.parametrize("device,name,domain", devices_x_cases(BF16_CASES[:2], BF16_CASES))
def test_bf16_autocast_is_finite_and_close_to_fp32(prepared_for, device, name, domain):
    run, prepared, model = _built(prepared_for, name, domain, device)
    x = prepared.train[:32].to(device)
    model.eval()  # no latent noise: the two precisions see the same computation
    with torch.no_grad():
        fp32 = model.loss(x, step=0)
        with torch.autocast(device, dtype=torch.bfloat16):
            bf16 = model.loss(x, step=0)
    assert all(torch.isfinite(v) for v in bf16.values()), bf16
    # bf16 keeps 8 mantissa bits (~0.4% per rounding); the sequence losses sum 50-300 steps
    assert float(bf16["rec"]) == pytest.approx(float(fp32["rec"]), rel=0.05), (bf16, fp32)
    assert float(bf16["loss"]) == pytest.approx(float(fp32["loss"]), rel=0.05)

    model.train()
    with torch.autocast(device, dtype=torch.bfloat16):
        loss = model.loss(x, step=0)["loss"]
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert all(g.dtype == torch.float32 for g in grads)  # autocast keeps fp32 master weights


@pytest.mark.parametrize("device", [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.cuda)])
def test_trainer_fits_an_epoch_with_bf16_autocast(prepared_for, device):
    run, prepared, model = _built(prepared_for, "grammar_rae", "molecules", device)
    cfg = replace(run.train, {"epochs": 2, "lr": 3e-3})
    # the trainer applies autocast on CUDA only (bf16 is slower than fp32 for these nets on a CPU)
    trainer = Trainer(model, cfg, None, torch.device(device), torch.bfloat16, progress=False)
    state = trainer.fit(prepared.train, prepared.val)
    assert state.epoch == 2 and state.step > 0
    losses = [h[split]["loss"] for h in state.history for split in ("train", "val")]
    assert all(math.isfinite(v) for v in losses)
    assert state.history[-1]["train"]["rec"] < state.history[0]["train"]["rec"] * 1.05


# --- 3. checkpoints across devices ---------------------------------------------------------------
CROSS = [pytest.param("cpu", "cpu", "molecules", id="cpu-to-cpu-molecules")] + [
    pytest.param(src, dst, domain, marks=pytest.mark.cuda, id=f"{src}-to-{dst}-{domain}")
    for src, dst in (("cuda", "cpu"), ("cpu", "cuda")) for domain in ("molecules", "expressions")]


@pytest.mark.parametrize("src,dst,domain", CROSS)
def test_checkpoint_written_on_one_device_loads_on_the_other(tmp_path, no_tf32, src, dst, domain):
    run = smoke_run(domain, "grammar_rae", data={"data_dir": str(tmp_path / "data")}, train={"epochs": 1})
    run_dir = tmp_path / "run"
    amp = torch.bfloat16 if src == "cuda" else None
    train_run(run, run_dir, torch.device(src), amp, progress=False, evaluate=False)
    a, b = load_run(run_dir, torch.device(src)), load_run(run_dir, torch.device(dst))
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sb[key].device.type == dst and torch.equal(sa[key].cpu(), sb[key].cpu()), key
    for name in a.samplers:  # sampler states are plain CPU data: the same draws anywhere
        ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        assert torch.equal(a.samplers[name].sample(8, generator=ga), b.samplers[name].sample(8, generator=gb))

    x = DOMAINS.get(domain).prepare(run, codec_state=a.checkpoint["codec"], progress=False).test[:32]
    moved = copy.deepcopy(a.model).to(dst).eval()
    with torch.no_grad():
        # the loaded model computes exactly what the source model computes on the same device
        assert torch.equal(b.model.encode(x.to(dst)), moved.encode(x.to(dst)))
        assert torch.equal(b.model(x.to(dst))[1], moved(x.to(dst))[1])
        # and, across devices, the same up to float rounding
        za, zb = a.model.encode(x.to(src)), b.model.encode(x.to(dst))
        torch.testing.assert_close(zb.cpu(), za.cpu(), rtol=1e-4, atol=1e-4)
    assert _same_rows(a.model.generate(za), b.model.generate(za.to(dst))) >= 0.95


def _same_rows(first: tuple, second: tuple) -> float:
    """Share of rows whose decoded ids and finished flag agree."""
    (ia, fa), (ib, fb) = first, second
    same = (ia.cpu() == ib.cpu()).all(dim=1) & (fa.cpu() == fb.cpu())
    return float(same.float().mean())


# --- 4. greedy decoding: device == CPU ------------------------------------------------------------
@pytest.mark.parametrize("device", [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("grammar", ["smiles", "smiles_compact", "expressions"])
@pytest.mark.parametrize("masks", [True, False], ids=["masks-on", "masks-off"])
def test_greedy_decoding_of_logits_matches_cpu(device, grammar, masks):
    codec = GrammarCodec(Grammar.builtin(grammar))
    for key in DECODING_OPTIONS:
        if hasattr(codec, key):
            setattr(codec, key, masks)
    n = 96 if grammar.startswith("smiles") else 256
    logits = torch.randn(n, codec.max_length, codec.vocab_size, generator=torch.Generator().manual_seed(3))
    # scale so that some rows finish early and others run into the length limit
    logits = logits * torch.linspace(0.5, 4.0, n).view(n, 1, 1)
    ids_cpu, fin_cpu = codec.decode_logits(logits)
    ids_dev, fin_dev = codec.decode_logits(logits.to(device))
    assert ids_dev.device.type == device
    assert torch.equal(ids_dev.cpu(), ids_cpu) and torch.equal(fin_dev.cpu(), fin_cpu)
    assert fin_cpu.any()
    texts = codec.to_text(ids_dev, fin_dev)
    assert sum(t is not None for t in texts) == int(fin_cpu.sum())


@pytest.mark.parametrize("device,name,domain", devices_x_cases(
    [("grammar_rae", "expressions")],
    [("grammar_rae", "molecules"), ("grammar_rae", "expressions"), ("grammar_vae", "molecules")]))
def test_greedy_decoding_of_codes_matches_cpu(prepared_for, no_tf32, device, name, domain):
    """Same weights, same codes: the GPU's greedy decodes equal the CPU's. The decoders feed each
    choice back, so a logit tie broken differently by float rounding would change the rest of
    that row; with random weights such near-ties are rare, hence >= 97% and not 100%."""
    run, prepared, model = _built(prepared_for, name, domain, "cpu")
    for key in DECODING_OPTIONS:
        if hasattr(prepared.codec, key):
            setattr(prepared.codec, key, True)
    model.eval()
    z = torch.randn(128, model.encode(prepared.train[:1]).shape[1], generator=torch.Generator().manual_seed(5))
    on_cpu = model.generate(z)
    on_dev = copy.deepcopy(model).to(device).generate(z.to(device))
    assert on_dev[0].device.type == device
    assert _same_rows(on_cpu, on_dev) >= 0.97
