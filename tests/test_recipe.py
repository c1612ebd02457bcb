"""The training recipe: fixed step budgets, the linear LR schedule, length-bucketed batches with
trimmed decoding, the LSTM decoder cell and the reversed bi-GRU encoder."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import smoke_run
from discrete_rae.config import ConfigError, TrainConfig
from discrete_rae.pipeline import build_model
from discrete_rae.presets import QUICK_MOLECULE_STEPS, get_preset
from discrete_rae.trainer import Trainer, epoch_batches, lr_factor, sequence_lengths

CPU = torch.device("cpu")


def _trainer(prepared, run, tmp_path=None, **train) -> Trainer:
    torch.manual_seed(0)
    model = build_model(run, prepared.codec)
    cfg = dataclasses.replace(run.train, **train)
    return Trainer(model, cfg, tmp_path, CPU, progress=False)


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("model_overrides", [{}, {"decoder_cell": "lstm"}, {"decoder": "repeat"},
                                             {"encoder": "gru", "enc_reverse": True},
                                             {"encoder": "gru", "enc_cell": "lstm"},
                                             {"encoder": "transformer", "enc_hidden": 32, "enc_layers": 1}])
def test_trimmed_decoder_gives_the_same_nll_per_example(prepared_for, model_overrides):
    run, prepared = prepared_for("molecules", "grammar_rae")
    run = dataclasses.replace(run, model=dataclasses.replace(run.model, **model_overrides))
    torch.manual_seed(0)
    model = build_model(run, prepared.codec).eval()
    lengths = sequence_lengths(prepared.train, prepared.codec.pad_index)
    x = prepared.train[torch.argsort(lengths)[:32]]  # the shortest: the decoder stops well before L
    assert int(lengths.min()) < prepared.train.shape[1] // 2
    with torch.no_grad():
        trimmed = model.likelihood.nll(model(x)[1], x)
        model.decoder.trim_pad = None
        full = model.likelihood.nll(model(x)[1], x)
    assert torch.allclose(trimmed, full, rtol=1e-5, atol=1e-5), (trimmed - full).abs().max()


def test_character_decoder_is_not_trimmed(prepared_for):
    run, prepared = prepared_for("molecules", "char_rae")
    model = build_model(run, prepared.codec)
    assert model.decoder.trim_pad is None  # padding steps carry loss for characters


@pytest.mark.parametrize("world", [1, 2, 3])
def test_bucketed_batches_partition_the_shard_and_group_lengths(world):
    n, batch = 997, 16
    lengths = torch.randint(5, 90, (n,), generator=torch.Generator().manual_seed(1))
    spread = {}
    for bucket in (0, 8):
        per_rank = [epoch_batches(n, batch, 0, 2, r, world, lengths=lengths, bucket=bucket) for r in range(world)]
        assert len({len(b) for b in per_rank}) == 1  # ranks stay in step
        taken = torch.cat([torch.cat(b) for b in per_rank])
        assert len(taken) == n - n % world and len(set(taken.tolist())) == len(taken)
        spread[bucket] = sum(float(lengths[b].max() - lengths[b].min()) for b in per_rank[0]) / len(per_rank[0])
        again = epoch_batches(n, batch, 0, 2, 0, world, lengths=lengths, bucket=bucket)
        assert all(torch.equal(a, b) for a, b in zip(again, per_rank[0]))  # a function of (seed, epoch)
    assert spread[8] < spread[0] / 3, spread
    other_epoch = epoch_batches(n, batch, 0, 3, 0, 1, lengths=lengths, bucket=8)
    assert not all(torch.equal(a, b) for a, b in zip(other_epoch, epoch_batches(n, batch, 0, 2, 0, 1,
                                                                                 lengths=lengths, bucket=8)))


def test_linear_schedule_warms_up_then_decays_to_zero():
    total, warm = 100, 5
    factors = [lr_factor(s, total, warm) for s in range(total)]
    assert factors[:warm] == [(s + 1) / warm for s in range(warm)]
    assert factors[warm - 1] == 1.0 and factors[warm] == 1.0
    assert all(a > b for a, b in zip(factors[warm:], factors[warm + 1:]))
    assert factors[-1] == pytest.approx(1 / (total - warm)) and lr_factor(total, total, warm) == 0.0
    assert lr_factor(0, 10, 0) == 1.0  # no warm-up


def test_max_steps_stops_exactly_and_is_reproducible(prepared_for):
    run, prepared = prepared_for("molecules", "grammar_rae")
    steps = 7  # the smoke set has 4 batches of 64 per epoch: stops inside the second epoch
    assert -(-len(prepared.train) // run.train.batch_size) == 4
    results = []
    for _ in range(2):
        trainer = _trainer(prepared, run, epochs=50, max_steps=steps, lr_schedule="linear", bucket_batches=2)
        state = trainer.fit(prepared.train, prepared.val)
        results.append((state, _weights(trainer), trainer.optimizer.param_groups[0]["lr"]))
    (a, wa, lr_a), (b, wb, _) = results
    assert a.step == steps and a.stopped == f"max steps ({steps})" and a.epoch == 2
    assert [r["train"] for r in a.history] == [r["train"] for r in b.history]
    assert [r["val"] for r in a.history] == [r["val"] for r in b.history]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    warm = round(0.03 * steps)
    assert lr_a == pytest.approx(run.train.lr * lr_factor(steps - 1, steps, warm))  # the last update's rate


def test_time_cap_with_max_steps_is_recorded(prepared_for):
    run, prepared = prepared_for("molecules", "grammar_rae")
    trainer = _trainer(prepared, run, epochs=50, max_steps=10_000, max_minutes=1e-9)
    state = trainer.fit(prepared.train, prepared.val)
    assert state.stopped == "time cap" and state.step == 1


class _Crash(RuntimeError):
    pass


def test_resume_mid_budget_is_exact_with_linear_schedule_and_buckets(prepared_for, tmp_path):
    run, prepared = prepared_for("molecules", "grammar_rae")
    opts = dict(epochs=50, max_steps=12, lr_schedule="linear", warmup_fraction=0.2, bucket_batches=2)
    ref = _trainer(prepared, run, tmp_path / "ref", **opts)
    (tmp_path / "ref").mkdir()
    ref_state = ref.fit(prepared.train, prepared.val)

    (tmp_path / "part").mkdir()
    part = _trainer(prepared, run, tmp_path / "part", **opts)
    original_log = part._log_epoch

    def crash_after_first_epoch(record):
        original_log(record)
        raise _Crash

    part._log_epoch = crash_after_first_epoch
    with pytest.raises(_Crash):
        part.fit(prepared.train, prepared.val)
    resumed = _trainer(prepared, run, tmp_path / "part", **opts)
    ckpt = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert ckpt["trainer"]["step"] == -(-len(prepared.train) // run.train.batch_size)  # one epoch
    resumed.model.load_state_dict(ckpt["model_state"])
    resumed.load_state_dict(ckpt["trainer"])
    state = resumed.fit(prepared.train, prepared.val)
    assert state.step == ref_state.step == 12
    assert [(r["train"], r["val"], r["lr"]) for r in state.history] == \
        [(r["train"], r["val"], r["lr"]) for r in ref_state.history]
    w_ref, w_res = _weights(ref), _weights(resumed)
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)


@pytest.mark.parametrize("bad, needle", [({"lr_schedule": "cosine"}, "lr_schedule"), ({"max_steps": -1}, "max_steps"),
                                         ({"warmup_fraction": 1.5}, "warmup_fraction")])
def test_bad_training_options_are_refused(prepared_for, bad, needle):
    run, prepared = prepared_for("molecules", "grammar_rae")
    with pytest.raises(ConfigError, match=needle):
        _trainer(prepared, run, **bad)


def test_bad_decoder_cell_is_refused(prepared_for):
    run, prepared = prepared_for("molecules", "grammar_rae")
    run = dataclasses.replace(run, model=dataclasses.replace(run.model, decoder_cell="rnn"))
    with pytest.raises(ConfigError, match="decoder_cell 'rnn'"):
        build_model(run, prepared.codec)


def test_quick_presets_are_step_budgets():
    for domain in ("molecules", "expressions"):
        train = get_preset(domain, "quick")["train"]
        assert train["max_steps"] > 0 and train["max_minutes"] > 0
        assert TrainConfig(**train).max_steps == train["max_steps"]
    assert get_preset("molecules", "quick")["train"]["max_steps"] == QUICK_MOLECULE_STEPS
    assert smoke_run("molecules", "grammar_rae").train.max_steps == 0


def test_cli_max_steps_is_recorded_in_metrics(tmp_path):
    import json

    from discrete_rae.cli import main

    code = main(["train", "--domain", "expressions", "--model", "grammar_rae", "--preset", "smoke", "--runs-dir",
                 str(tmp_path), "--run-name", "r", "--data-dir", str(tmp_path / "data"), "-q", "--epochs", "5",
                 "--max-steps", "3", "--lr-schedule", "linear", "--bucket-batches", "2", "--threads", "1"])
    assert code == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["stopped"] == "max steps (3)" and metrics["epochs"] == 1


def test_transformer_encoder_reads_order_and_checks_its_heads(prepared_for):
    from discrete_rae.nn.sequence import TransformerSequenceEncoder
    enc = TransformerSequenceEncoder(vocab=12, length=10, hidden=16, layers=2, heads=4).eval()
    ids = torch.randint(0, 12, (3, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = enc(ids)
        swapped = enc(ids[:, [1, 0, *range(2, 10)]])
    assert h.shape == (3, 16) and enc.out_dim == 16
    assert not torch.allclose(h, swapped)  # positions matter: the mean pool is not a bag of tokens
    with pytest.raises(ValueError, match="divisible"):
        TransformerSequenceEncoder(vocab=12, length=10, hidden=18, heads=4)
    run, prepared = prepared_for("molecules", "grammar_rae")
    bad = dataclasses.replace(run, model=dataclasses.replace(run.model, encoder="transformer", enc_hidden=30,
                                                             enc_heads=4))
    with pytest.raises(ConfigError, match="enc_heads"):
        build_model(bad, prepared.codec)


def test_transformer_options_are_refused_on_the_conv_encoder():
    from discrete_rae.errors import UsageError
    from discrete_rae.runconfig import resolve_run_config
    with pytest.raises(UsageError) as err:
        resolve_run_config("molecules", "grammar_rae", "smoke", None, {"model": {"enc_heads": 2}})
    assert len(str(err.value).splitlines()) == 1 and "--enc-heads" in str(err.value)
    run = resolve_run_config("molecules", "grammar_rae", "smoke", None,
                             {"model": {"encoder": "transformer", "enc_heads": 2, "enc_hidden": 32}})
    assert (run.model.encoder, run.model.enc_heads) == ("transformer", 2)
