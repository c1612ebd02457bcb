"""Crash safety, exact resume, reproducibility, the non-finite guard and checkpoint integrity.

The module fixture trains the expressions smoke VAE (noise in every step) for 3 epochs in
three subprocesses at once (deterministic settings: one thread, ``torch.use_deterministic_algorithms``): two
uninterrupted runs A and B with the same seed, and a run C that is SIGKILLed in the middle of
epoch 2 (after its first checkpoint) and then resumed with ``--resume``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from discrete_rae import trainer as trainer_module
from discrete_rae.checkpoint import CheckpointError, load_checkpoint, save_atomic
from discrete_rae.cli import main
from discrete_rae.grammar import Grammar
from discrete_rae.registry import DOMAINS
from conftest import smoke_run

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
MODEL = "grammar_vae"  # stochastic encoder: exactness needs the RNG states too
TIMEOUT = 240.0

# Runs train.py's entry point with deterministic settings; optionally slows every step down
# (DRAE_TEST_STEP_DELAY seconds, numerics untouched) and writes the current step to a file, so
# that the test can kill the process at a known point.
WRAPPER = r"""
import os, sys, time
import torch
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
delay = float(os.environ.get("DRAE_TEST_STEP_DELAY", "0"))
progress = os.environ.get("DRAE_TEST_PROGRESS")
if delay or progress:
    from discrete_rae import trainer
    forward = trainer._LossModule.forward
    def traced(self, x, step, phase=0):
        if progress:
            with open(progress, "w") as fh:
                fh.write(str(step))
        time.sleep(delay)
        return forward(self, x, step, phase)
    trainer._LossModule.forward = traced
from discrete_rae.cli import train_main
sys.exit(train_main(sys.argv[1:]))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}
    env.pop("WORLD_SIZE", None)
    return env


def _launch(root: Path, name: str, *extra: str, **env: str) -> subprocess.Popen:
    argv = ["--domain", "expressions", "--model", MODEL, "--preset", "smoke", "--epochs", str(EPOCHS),
            "--runs-dir", str(root), "--run-name", name, "--data-dir", str(root / "data"), "--device", "cpu",
            "--threads", "1", "-q", *extra]  # three runs at once: one thread each
    log = open(root / f"{name}.out", "ab")
    return subprocess.Popen([sys.executable, "-c", WRAPPER, *argv], cwd=root, env=_env(**env), stdout=log,
                            stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, root: Path, name: str) -> None:
    code = proc.wait(timeout=TIMEOUT)
    assert code == 0, f"run {name} exited {code}:\n{(root / f'{name}.out').read_text()[-3000:]}"


def _epochs_logged(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _kill_mid_epoch_two(proc: subprocess.Popen, run: Path, progress: Path) -> int:
    """SIGKILL ``proc`` once epoch 1 is checkpointed and logged and epoch 2 is two steps in."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        logged = _epochs_logged(run)
        # read once: the writer truncates and rewrites the file, so a read may see it empty
        text = progress.read_text().strip() if progress.is_file() else ""
        if logged and text.isdigit():
            step = int(text)
            if step >= logged[0]["step"] + 2:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
                return step
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("the run never reached epoch 2")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reliability")
    a, b = _launch(root, "A"), _launch(root, "B")
    progress = root / "C.progress"
    c = _launch(root, "C", DRAE_TEST_STEP_DELAY="0.15", DRAE_TEST_PROGRESS=str(progress))
    killed_at = _kill_mid_epoch_two(c, root / "C", progress)
    state = load_checkpoint(root / "C" / "checkpoint.pt")["trainer"]
    assert state["epoch"] == 1 and killed_at > state["step"], (state["epoch"], state["step"], killed_at)
    assert [r["epoch"] for r in _epochs_logged(root / "C")] == [1]
    assert not (root / "C" / "metrics.json").exists()  # it really died before finishing
    # As if the process had died after logging an epoch that never reached the checkpoint:
    with open(root / "C" / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"epoch": 2, "step": 99, "train": {"loss": -1.0}, "val": {"loss": -1.0}}) + "\n")
    resumed = _launch(root, "C", "--resume")
    for proc, name in ((a, "A"), (b, "B"), (resumed, "C")):
        _finish(proc, root, name)
    return {"A": root / "A", "B": root / "B", "C": root / "C", "root": root}


def _losses(run: Path) -> list[tuple[int, int, dict, dict]]:
    return [(r["epoch"], r["step"], r["train"], r["val"]) for r in _epochs_logged(run)]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoint.pt")["model_state"]


def _assert_same_weights(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> None:
    assert x.keys() == y.keys()
    for key in x:
        assert torch.equal(x[key], y[key]), key


def test_resume_after_sigkill_is_exact(runs):
    ref, resumed = _losses(runs["A"]), _losses(runs["C"])
    assert [e for e, *_ in resumed] == list(range(1, EPOCHS + 1))  # no epoch lost, none duplicated
    assert resumed == ref
    _assert_same_weights(_weights(runs["C"]), _weights(runs["A"]))
    final = [json.loads((runs[k] / "metrics.json").read_text()) for k in ("A", "C")]
    assert final[0]["best_val_loss"] == final[1]["best_val_loss"] and final[1]["epochs"] == EPOCHS
    assert (runs["C"] / "samples.txt").read_text() == (runs["A"] / "samples.txt").read_text()
    assert not list(runs["C"].glob("*.tmp"))


def test_same_seed_gives_same_losses_weights_and_samples(runs):
    assert _losses(runs["A"]) == _losses(runs["B"])
    assert len(_losses(runs["A"])) == EPOCHS
    _assert_same_weights(_weights(runs["A"]), _weights(runs["B"]))
    samples = (runs["A"] / "samples.txt").read_text()
    assert samples.strip() and samples == (runs["B"] / "samples.txt").read_text()


def test_run_json_records_versions_and_hashes(runs):
    import nltk
    import rdkit

    info = [json.loads((runs[k] / "run.json").read_text()) for k in ("A", "B")]
    versions = info[0]["versions"]
    assert versions["torch"] == str(torch.__version__)
    assert versions["rdkit"] == rdkit.__version__ and versions["nltk"] == nltk.__version__
    assert info[0]["grammar_hash"] == Grammar.builtin("expressions").hash
    assert len(info[0]["data_hash"]) == 64 and info[0]["data_hash"] == info[1]["data_hash"]
    same = smoke_run("expressions", MODEL, data={"data_dir": str(runs["root"] / "data")})
    other = smoke_run("expressions", MODEL, data={"data_dir": str(runs["root"] / "data")}, train={"seed": 1})
    hashes = [DOMAINS.get("expressions").prepare(r, progress=False).info["data_hash"] for r in (same, other)]
    assert hashes[0] == info[0]["data_hash"] != hashes[1]  # the hash identifies the data


# --- non-finite guard ---------------------------------------------------------------------------
@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train_in_process(tmp_path: Path, name: str, *extra: str) -> int:
    return main(["train", "--domain", "expressions", "--model", "grammar_rae", "--preset", "smoke", "--runs-dir",
                 str(tmp_path), "--run-name", name, "--data-dir", str(tmp_path / "data"), "--device", "cpu", "-q",
                 *extra])


@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_non_finite_stops_with_exit_3_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch, one_thread,
                                                                      poison):
    forward = trainer_module._LossModule.forward
    bad_step = 8  # epoch 1 has 6 steps: the poison hits epoch 2

    def poisoned(self, x, step, phase=0):
        terms = forward(self, x, step, phase)
        if step >= bad_step and poison == "loss":
            terms = {**terms, "rec": terms["rec"] * float("nan")}
            terms["loss"] = terms["rec"] + terms["latent"]
        elif step >= bad_step:  # finite loss, infinite gradient
            terms["loss"].register_hook(lambda g: g * float("inf"))
        return terms

    monkeypatch.setattr(trainer_module._LossModule, "forward", poisoned)
    code = _train_in_process(tmp_path, "nan", "--epochs", "3")
    err = capsys.readouterr().err.strip()
    assert code == 3, err
    assert err.startswith("error: non-finite") and len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"at step {bad_step} (epoch 2)" in err
    if poison == "loss":
        assert "'rec': nan" in err and "'latent'" in err
    else:
        assert "gradient norm" in err
    ckpt = load_checkpoint(tmp_path / "nan" / "checkpoint.pt")
    assert ckpt["trainer"]["epoch"] == 1 and ckpt["trainer"]["step"] == 6
    assert all(torch.isfinite(v).all() for v in ckpt["model_state"].values() if v.is_floating_point())
    assert [r["epoch"] for r in _epochs_logged(tmp_path / "nan")] == [1]


# --- checkpoint integrity and security ----------------------------------------------------------
def _copy_run(runs: dict[str, Path], tmp_path: Path, name: str = "copy") -> Path:
    dest = tmp_path / name
    shutil.copytree(runs["A"], dest)
    return dest


def _run_commands(run: Path) -> list[list[str]]:
    return [["sample", "--run", str(run), "--n", "3", "-q"], ["evaluate", "--run", str(run), "--n", "3", "-q"],
            ["train", "--resume", "--run-name", run.name, "--runs-dir", str(run.parent), "-q"]]


def _assert_refused(capsys, run: Path, needle: str) -> None:
    for argv in _run_commands(run):
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv[0], err)
        assert err.startswith("error:") and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert needle in err, (argv[0], err)


def test_truncated_checkpoint_is_refused(runs, tmp_path, capsys):
    run = _copy_run(runs, tmp_path)
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    _assert_refused(capsys, run, "truncated or corrupted")


def test_flipped_byte_in_the_weights_is_refused(runs, tmp_path, capsys):
    run = _copy_run(runs, tmp_path)
    data = bytearray((run / "checkpoint.pt").read_bytes())
    weights = load_checkpoint(run / "checkpoint.pt")["model_state"]
    probe = next(v for v in weights.values() if v.numel() >= 16).reshape(-1)[:4].numpy().tobytes()
    at = bytes(data).find(probe)
    assert at > 0
    data[at] ^= 0x40
    (run / "checkpoint.pt").write_bytes(bytes(data))
    _assert_refused(capsys, run, "corrupted")


def _edit_checkpoint(path: Path, edit) -> None:
    """Change a checkpoint and save it consistently (as if it had been written that way)."""
    payload = torch.load(path, weights_only=True)
    edit(payload)
    save_atomic(payload, path)


@pytest.mark.parametrize("codec_hash", ["kept", "absent"])
def test_checkpoint_with_another_grammar_is_refused(runs, tmp_path, capsys, codec_hash):
    """Both checks: the codec fingerprint, and (for checkpoints without one) the grammar hash."""
    run = _copy_run(runs, tmp_path)

    def swap_terminal(payload):
        text = payload["codec"]["grammar"]
        assert "'exp('" in text
        payload["codec"]["grammar"] = text.replace("'exp('", "'cos('")  # same number of rules
        if codec_hash == "absent":
            del payload["meta"]["codec_hash"]

    _edit_checkpoint(run / "checkpoint.pt", swap_terminal)
    _assert_refused(capsys, run, "grammar")


def test_checkpoint_with_another_vocabulary_is_refused(tmp_path, capsys, one_thread):
    assert main(["train", "--domain", "expressions", "--model", "char_rae", "--preset", "smoke", "--runs-dir",
                 str(tmp_path), "--run-name", "char", "--data-dir", str(tmp_path / "data"), "--device", "cpu",
                 "-q"]) == 0
    capsys.readouterr()
    run = tmp_path / "char"

    def swap_characters(payload):
        alphabet = payload["codec"]["alphabet"]
        alphabet[0], alphabet[1] = alphabet[1], alphabet[0]  # same size: the weights still fit

    _edit_checkpoint(run / "checkpoint.pt", swap_characters)
    _assert_refused(capsys, run, "vocabulary")


class _Payload:
    """Unpickling this would create a file: the proof that a checkpoint ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path, capsys):
    marker = tmp_path / "code-was-run"
    run = tmp_path / "evil"
    run.mkdir()
    torch.save({"format_version": 1, "model_state": {}, "extra": _Payload(marker)}, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(run / "checkpoint.pt")
    assert main(["sample", "--run", str(run), "-q"]) == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()


def test_no_unsafe_loading_or_eval_in_the_package():
    """Every torch.load passes weights_only=True; nothing calls eval/exec/pickle.load."""
    import re

    offenders = []
    for path in (REPO / "discrete_rae").rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                offenders.append(f"{path.name}: {m.group(0)}")
        for m in re.finditer(r"(?<![\w.])(eval|exec)\(|pickle\.loads?\(|marshal\.loads?\(", text):
            offenders.append(f"{path.name}: {m.group(0)}")
    assert not offenders, offenders


def test_stale_temporary_checkpoints_are_removed_on_resume(runs, tmp_path, capsys, one_thread):
    run = _copy_run(runs, tmp_path)
    (run / "checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    assert main(["train", "--resume", "--run-name", run.name, "--runs-dir", str(tmp_path), "-q",
                 "--epochs", str(EPOCHS)]) == 0
    assert not list(run.glob("*.tmp"))
    assert [r["epoch"] for r in _epochs_logged(run)] == list(range(1, EPOCHS + 1))


# --- bad input on the command line (see also tests/test_cli.py) ---------------------------------
def _train_argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["train", "--domain", "molecules", "--preset", "smoke", "--runs-dir", str(tmp_path / "runs"),
            "--data-dir", str(tmp_path / "data"), "--device", "cpu", "-q", *extra]


def _assert_usage_error(capsys, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("content,needle", [
    (b"", "is empty"),
    (b"\n \n\n", "is empty"),
    (b"CCO\x00\x01\x02\xff", "binary"),
    (b"hello\nworld\n[[[\n", "no line is a valid molecule"),
    (b"C" * 1_000_000 + b"\n", "no line is a valid molecule"),
])
def test_bad_data_file(tmp_path, capsys, content, needle):
    path = tmp_path / "mols.smi"
    path.write_bytes(content)
    err = _assert_usage_error(capsys, _train_argv(tmp_path, "--dataset", str(path), "--run-name", "r"), needle,
                              str(path))
    assert len(err) < 600  # an extremely long line is shown cut short
    assert not (tmp_path / "runs" / "r").exists()  # the failed run leaves no directory behind


def test_extremely_long_line_among_good_ones_is_counted_not_fatal(tmp_path):
    from discrete_rae.data.molecules import load_molecules

    path = tmp_path / "mols.smi"
    path.write_text("C" * 1_000_000 + "\nCCO\nc1ccccc1\n")
    data = load_molecules(str(path), progress=False, workers=1)
    assert sorted(data.smiles) == ["CCO", "c1ccccc1"]
    assert data.report.n_rejected == 1 and len(data.report.summary()) < 2000


def test_wrong_column_name(tmp_path, capsys):
    path = tmp_path / "mols.csv"
    path.write_text("smiles,score\nCCO,1\nc1ccccc1,2\n")
    _assert_usage_error(capsys, _train_argv(tmp_path, "--dataset", str(path), "--column", "smiles_x"),
                        "no column 'smiles_x'", "'smiles'")


@pytest.mark.parametrize("extra,needle", [
    (["--domain", "expressions", "--dataset", "nosuch"], "nosuch"),
    (["--dataset", "nosuch"], "not a known data set"),
    (["--model", "grammar_rae", "--sampler", "categorical"], "does not fit the continuous latent"),
    (["--domain", "expressions", "--model", "discrete_rae", "--sampler", "gmm"], "does not fit the categorical"),
    (["--resume", "--overwrite", "--run-name", "x"], "contradict"),
    (["--resume", "--run-name", "never-trained"], "nothing to resume"),
    (["--domain", "images", "--model", "grammar_rae"], "does not run on domain 'images'"),
    (["--precision", "fp8"], "--precision"),
    (["--compile", "maybe"], "bad value 'maybe'"),
])
def test_bad_flags(tmp_path, capsys, extra, needle):
    argv = _train_argv(tmp_path)
    argv[argv.index("--domain") + 1: argv.index("--domain") + 2] = ["molecules"]
    _assert_usage_error(capsys, argv + extra, needle)


def test_auto_named_run_directories_are_claimed_not_reused(tmp_path):
    from types import SimpleNamespace

    from discrete_rae.cli import run_dir_for

    args = SimpleNamespace(runs_dir=str(tmp_path), run_name=None, resume=False, overwrite=False)
    run = SimpleNamespace(model_name="grammar_rae", domain="expressions")
    (tmp_path / "grammar_rae-expressions").mkdir()
    (tmp_path / "grammar_rae-expressions" / "keep.txt").write_text("x")
    claims = run_dir_for(args, run), run_dir_for(args, run)
    first, second = (c.path for c in claims)
    assert first.name == "grammar_rae-expressions-2" and second.name == "grammar_rae-expressions-3"
    assert first.is_dir() and second.is_dir()  # claimed at once, so no other run can take them
    assert (tmp_path / "grammar_rae-expressions" / "keep.txt").read_text() == "x"
    for c in claims:
        c.release()


# --- GPU-path flags on the CPU --------------------------------------------------------------------
@pytest.mark.slow
def test_compile_flag_trains_like_eager(tmp_path, capsys, one_thread):
    """``--compile true`` goes through torch.compile (inductor needs a C compiler; minutes on a
    loaded CPU, hence slow) and gives the eager losses up to rounding."""
    assert _train_in_process(tmp_path, "eager") == 0
    assert _train_in_process(tmp_path, "compiled", "--compile", "true") == 0
    eager, compiled = _epochs_logged(tmp_path / "eager"), _epochs_logged(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 1
    for split in ("train", "val"):
        assert compiled[0][split]["loss"] == pytest.approx(eager[0][split]["loss"], rel=1e-4)
    assert load_checkpoint(tmp_path / "compiled" / "checkpoint.pt")["config"]["train"]["compile"] is True
