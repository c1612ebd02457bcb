"""DDP on the CPU: 2 gloo processes launched by torchrun.

1. Trainer level: both ranks end with identical weights, and the run matches one process with
   the same global batch (2 x 32 vs 64) up to float rounding.
2. CLI level: ``torchrun ... train.py`` creates exactly one run directory (rank 0 names it and
   broadcasts it), writes one metrics line per epoch and a loadable checkpoint; a usage error
   on rank 0 ends every rank with exit code 2 instead of a hang.
3. Sharding: equal step counts on every rank, and the global batch of one process.
4. (slow) ``--resume`` under torchrun is exact.
5. Several phases and optimizers (the AAE: reconstruction, discriminator, generator) train under
   DDP: the replicas stay equal, and every part (encoder, decoder, discriminator) is updated.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from discrete_rae.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300


def _torchrun(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *argv]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_processes_agree_and_match_one_process(tmp_path, one_thread):
    import ddp_worker

    data_dir = str(tmp_path / "data")
    ddp_worker.train_once(data_dir, 64)  # builds the data cache once, before the ranks start
    proc = _torchrun(str(REPO / "tests" / "ddp_worker.py"), str(tmp_path), data_dir, "32", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["model_state"].keys() == ranks[1]["model_state"].keys()
    for key, value in ranks[0]["model_state"].items():
        assert torch.equal(value, ranks[1]["model_state"][key]), key  # DDP keeps the replicas equal
    losses = [[(h["epoch"], h["step"], h["lr"], h["train"], h["val"]) for h in r["history"]] for r in ranks]
    assert losses[0] == losses[1]  # losses are reduced over ranks (only "seconds" may differ)

    single = ddp_worker.train_once(data_dir, 64)
    ddp_hist, one_hist = ranks[0]["history"], single["history"]
    assert [h["step"] for h in ddp_hist] == [h["step"] for h in one_hist] == [6, 12]
    for ddp, one in zip(ddp_hist, one_hist):
        for split in ("train", "val"):
            assert ddp[split]["loss"] == pytest.approx(one[split]["loss"], rel=1e-5), (split, ddp, one)
    for key, value in single["model_state"].items():
        torch.testing.assert_close(ranks[0]["model_state"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    first = ddp_hist[0]["train"]["loss"]
    assert ddp_hist[-1]["train"]["loss"] < first  # it trained


def test_adversarial_model_trains_under_ddp_with_equal_replicas(tmp_path, one_thread):
    import ddp_worker

    data_dir = str(tmp_path / "data")
    ddp_worker.train_once(data_dir, 64, model_name="aae")  # builds the data cache before the ranks start
    proc = _torchrun(str(REPO / "tests" / "ddp_worker.py"), str(tmp_path), data_dir, "32", "aae", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    final, initial = ranks[0]["model_state"], ranks[0]["initial_state"]
    for key, value in final.items():
        # every phase's gradients are all-reduced, so the two replicas never drift apart
        assert torch.equal(value, ranks[1]["model_state"][key]), key
    changed = {k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("objective.") else "")
               for k, v in final.items() if v.is_floating_point() and not torch.equal(v, initial[k])}
    for part in ("encoder", "decoder", "objective.discriminator"):
        assert part in changed, (part, sorted(changed))  # each optimizer stepped its parameters
    history = ranks[0]["history"]
    assert [h["step"] for h in history] == [6, 12]
    assert any(k.startswith("discriminator/") for k in history[-1]["train"]), history[-1]["train"]


def _train_argv(runs: Path, *extra: str) -> list[str]:
    return [str(REPO / "train.py"), "--domain", "expressions", "--model", "grammar_rae", "--preset", "smoke",
            "--epochs", "2", "--runs-dir", str(runs), "--data-dir", str(runs.parent / "data"), "--device", "cpu",
            "-q", *extra]


def test_torchrun_cli_rank0_owns_the_run_directory(tmp_path):
    runs = tmp_path / "runs"
    (runs / "grammar_rae-expressions").mkdir(parents=True)  # auto naming must step past it, once
    proc = _torchrun(*_train_argv(runs), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == ["grammar_rae-expressions", "grammar_rae-expressions-2"]
    run = runs / "grammar_rae-expressions-2"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and [r["step"] for r in lines] == [3, 6]  # 2 x 64 per step
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["trainer"]["epoch"] == 2 and ckpt["samplers"]
    assert (run / "metrics.json").is_file() and (run / "train.log").is_file()
    assert proc.stdout.count("run directory:") == 1  # only rank 0 reports

    again = _torchrun(*_train_argv(runs, "--run-name", "grammar_rae-expressions-2"), cwd=tmp_path)
    assert again.returncode != 0
    assert again.stderr.count("already exists") == 1  # one line, from rank 0
    # Each rank exits with the usage code 2; torchrun may SIGTERM (-15) the slower rank once the first
    # has failed, so a rank reports either 2 or -15, and at least one reports 2.
    codes = re.findall(r"exitcode\s*:\s*(-?\d+) \(pid", again.stderr)
    assert "2" in codes and set(codes) <= {"2", "-15"}, codes
    assert "discrete_rae/" not in again.stderr  # no traceback from our code (torchrun prints its own)
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2  # untouched


def test_epoch_batches_shard_evenly_and_form_the_global_batch():
    """Every rank takes the same number of steps; the k-th batches of all ranks together are the
    k-th batch (size batch x world) of one process walking the same shuffled order."""
    from discrete_rae.trainer import epoch_batches

    for n in (1, 2, 5, 63, 64, 65, 129, 361):
        for world in (1, 2, 3, 4):
            for batch in (1, 7, 64):
                per_rank = [epoch_batches(n, batch, 0, 3, r, world) for r in range(world)]
                steps = {len(b) for b in per_rank}
                assert len(steps) == 1, (n, world, batch)
                order = torch.randperm(n, generator=torch.Generator().manual_seed(3))[: n - n % world]
                glob = batch * world
                assert steps.pop() == -(-len(order) // glob)
                for k in range(len(per_rank[0])):
                    parts = torch.cat([b[k] for b in per_rank])
                    assert sorted(parts.tolist()) == sorted(order[k * glob:(k + 1) * glob].tolist())


@pytest.mark.slow
def test_torchrun_resume_is_exact(tmp_path):
    """2 epochs, then --resume to 3, equals 3 epochs in one go (VAE noise: per-rank reseeding)."""
    runs = tmp_path / "runs"
    model = ["--model", "grammar_vae"]
    ref = _torchrun(*_train_argv(runs, *model, "--run-name", "ref", "--epochs", "3"), cwd=tmp_path)
    part = _torchrun(*_train_argv(runs, *model, "--run-name", "part", "--epochs", "2"), cwd=tmp_path)
    resumed = _torchrun(*_train_argv(runs, *model, "--run-name", "part", "--resume", "--epochs", "3"), cwd=tmp_path)
    for proc in (ref, part, resumed):
        assert proc.returncode == 0, proc.stderr[-3000:]
    logged = [[json.loads(line) for line in (runs / name / "metrics.jsonl").read_text().splitlines()]
              for name in ("ref", "part")]
    assert [(r["train"], r["val"]) for r in logged[0]] == [(r["train"], r["val"]) for r in logged[1]]
    assert len(logged[0]) == 3
    weights = [load_checkpoint(runs / name / "checkpoint.pt")["model_state"] for name in ("ref", "part")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
