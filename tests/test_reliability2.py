"""Reliability, second round: each test reproduces one defect found by probing the command line
(image-table reuse, silent data loss in preparation, tiny data sets, --resume flags, OS errors,
checkpoint keys and digest, header detection, NUL bytes, TOML types, evaluate/compare flags).

Every user mistake must end with one ``error:`` line and exit code 2, no traceback; each test
also checks what was (not) written.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from discrete_rae.checkpoint import TRUST_ENV, save_atomic
from discrete_rae.cli import main


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _one_error_line(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = err.splitlines()
    assert lines and lines[-1].startswith("error:") and "Traceback" not in err, err
    assert sum(line.startswith("error:") for line in lines) == 1, err
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


def _train(root: Path, name: str, *extra: str, domain: str = "molecules") -> int:
    return main(["train", "--domain", domain, "--preset", "smoke", "--threads", "1", "--device", "cpu",
                 "--runs-dir", str(root), "--run-name", name, "--data-dir", str(root / "data"), "-q", *extra])


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory) -> Path:
    """An expressions smoke run stopped by its time budget (max_minutes 0.0001) after epoch 1."""
    root = tmp_path_factory.mktemp("budget")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _train(root, "t", "--max-minutes", "0.0001", domain="expressions") == 0
    finally:
        torch.set_num_threads(threads)
    metrics = json.loads((root / "t" / "metrics.json").read_text())
    assert metrics["stopped"] == "time budget" and metrics["epochs"] == 1
    return root / "t"


def _copy(run: Path, tmp_path: Path, name: str = "t") -> Path:
    dest = tmp_path / name
    shutil.copytree(run, dest)
    return dest


def _snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file() and p.name != "train.log"}


# --- 5: image-table never deletes a trained row with other settings unasked ----------------------
def test_image_table_refuses_to_replace_a_row_trained_with_other_settings(tmp_path, capsys):
    from discrete_rae.config import to_toml
    from discrete_rae.image_table import TableSpec, table_run_config

    row = tmp_path / "image-table-digits" / "ae"
    row.mkdir(parents=True)
    other = table_run_config("ae", TableSpec(preset="smoke", dataset="digits", seed=1, data_dir=""))
    (row / "config.toml").write_text(to_toml(other.sections()))
    (row / "checkpoint.pt").write_bytes(b"trained weights")
    (row / "metrics.json").write_text("{}\n")
    before = _snapshot(row)
    code = main(["image-table", "--preset", "smoke", "--models", "ae", "--seed", "0", "--runs-dir", str(tmp_path),
                 "--threads", "1", "-q"])
    _one_error_line(capsys, code, "'ae'", "train.seed: 1 -> 0", "--retrain")
    assert _snapshot(row) == before  # nothing deleted or retrained
    assert not (tmp_path / "image-table-digits" / "table.md").exists()


# --- 8: what preparation drops is reported by reason; nothing left is one error -----------------
def test_dropped_examples_are_reported_by_reason(tmp_path, one_thread):
    path = tmp_path / "mols.smi"
    long_chain = "C" * 70  # a derivation longer than --max-length 40
    path.write_text("\n".join(["CCO", "CCO", "OCC", "[Na+].[Cl-]", long_chain, "not_a_molecule",
                               "c1ccccc1", "CCN", "CCCO", "CC(C)O", "CCOC", "CC(=O)O", "CCCN", "OCCO"]) + "\n")
    assert _train(tmp_path, "r", "--dataset", str(path), "--max-length", "40") == 0
    info = json.loads((tmp_path / "r" / "run.json").read_text())["data"]
    dropped = info["dropped"]
    assert dropped["duplicates"] == 2
    assert dropped["rejected by the loader (invalid_smiles)"] == 1
    assert dropped["not encodable (grammar/vocabulary)"] == 1
    assert dropped["longer than max_length"] == 1
    assert info["n_kept"] == 14 - 5 == info["n_train"] + info["n_val"] + info["n_test"]
    log = (tmp_path / "r" / "train.log").read_text()
    assert "5 dropped" in log and "1 longer than max_length 40" in log and "2 duplicates" in log


def test_every_example_too_long_is_one_error_before_training(tmp_path, capsys, one_thread):
    code = _train(tmp_path, "r", "--max-length", "5")
    _one_error_line(capsys, code, "nci5k", "longer than max_length 5", "0 train / 0 val", "at least 2 train")
    assert not (tmp_path / "r").exists()


# --- 9: tiny data sets stop before training with the counts and the minimum --------------------
@pytest.mark.parametrize("domain,lines,needles", [
    ("molecules", ["CCO", "CCO", "OCC"], ["2 duplicates", "0 train / 1 val", "at least 2 train and 1 val"]),
    ("molecules", ["CCO"], ["0 train / 1 val", "at least 2 train"]),
    ("molecules", ["CCO", "c1ccccc1"], ["1 train / 1 val", "covariance"]),
    ("molecules", ["[Na+].[Cl-]", "[Fe]", "CC(=O)[O-].[Na+]"], ["none of its", "can be encoded", "'.'"]),
    ("expressions", ["sin(x)+x"], ["0 train / 1 val", "at least 2 train"]),
])
def test_tiny_data_sets_are_one_error(tmp_path, capsys, one_thread, domain, lines, needles):
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(lines) + "\n")
    code = _train(tmp_path, "r", "--dataset", str(path), domain=domain)
    _one_error_line(capsys, code, "tiny.txt", *needles)
    assert not (tmp_path / "r").exists()


def test_gmm_with_more_components_than_distinct_codes_fits_fewer(caplog):
    from discrete_rae.samplers import GaussianSampler, GMMSampler

    codes = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 0.0], [2.0, 0.0], [2.0, 0.0]])
    with caplog.at_level("WARNING", logger="discrete_rae.samplers"):
        gmm = GMMSampler(k=4).fit(codes)
    assert len(gmm.weights) == 2 and "2 distinct codes support only 2 of the 4 components" in caplog.text
    assert torch.isfinite(gmm.sample(5)).all()
    one = GaussianSampler().fit(codes[:1])  # one code: no covariance to estimate, the ridge only
    assert torch.isfinite(one.sample(3)).all() and torch.allclose(one.mean.float(), codes[0])


# --- 10: --resume honours safe changes, refuses the rest, continues a run stopped by its budget --
@pytest.mark.parametrize("extra,needle", [
    (["--lr", "0.01"], "--lr 0.01"),
    (["--batch-size", "7"], "--batch-size 7"),
    (["--dataset", "other.txt"], "--dataset other.txt"),
    (["--latent-dim", "3"], "--latent-dim 3"),
    (["--model", "grammar_vae"], "--model grammar_vae"),
    (["--epochs", "3"], "--max-minutes"),  # still stopped by the time budget: say which flag to raise
    (["--epochs", "3", "--max-minutes", "0.00001"], "--max-minutes"),
])
def test_resume_refuses_changes_it_cannot_honour(budget_run, tmp_path, capsys, extra, needle):
    run = _copy(budget_run, tmp_path)
    before = _snapshot(run)
    code = main(["train", "--resume", "--run-name", "t", "--runs-dir", str(tmp_path), "--domain", "expressions",
                 "--preset", "smoke", "--threads", "1", "-q", *extra])
    _one_error_line(capsys, code, needle)
    assert _snapshot(run) == before


def test_resume_refuses_a_changed_key_in_a_config_file(budget_run, tmp_path, capsys):
    run = _copy(budget_run, tmp_path)
    cfg = tmp_path / "more.toml"
    cfg.write_text("[train]\nlr = 0.5\n")
    before = _snapshot(run)
    code = main(["train", "--resume", "--run-name", "t", "--runs-dir", str(tmp_path), "--config", str(cfg), "-q"])
    _one_error_line(capsys, code, "more.toml", "lr")
    assert _snapshot(run) == before


def test_resume_with_a_raised_budget_trains_on_and_records_the_change(budget_run, tmp_path, capsys, one_thread):
    run = _copy(budget_run, tmp_path)
    code = main(["train", "--resume", "--run-name", "t", "--runs-dir", str(tmp_path), "--epochs", "3",
                 "--max-minutes", "0", "--batch-size", "64", "--threads", "1", "-q"])  # 64: the recorded value
    assert code == 0, capsys.readouterr().err
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stopped"] == "epochs done" and metrics["epochs"] == 3
    resumed = json.loads((run / "run.json").read_text())["resumed"]
    assert resumed == [{"at_epoch": 1, "changes": {"train.epochs": [1, 3], "train.max_minutes": [0.0001, 0.0]}}]
    assert "epochs = 3" in (run / "config.toml").read_text()
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["config"]["train"]["epochs"] == 3 and ckpt["config"]["train"]["max_minutes"] == 0.0


def test_a_run_stopped_early_trains_on_only_when_early_stopping_is_relaxed(tmp_path):
    from types import SimpleNamespace

    from discrete_rae.config import TrainConfig
    from discrete_rae.resume import ResumeError, _check_can_continue, reopen
    from discrete_rae.trainer import TrainState

    stopped = "early stopping (no validation improvement in 2 epochs)"
    run = SimpleNamespace(train=TrainConfig(epochs=5, early_stop=2))
    state = {"epoch": 3, "stopped": stopped, "bad_epochs": 2, "seconds": 1.0}
    flags = SimpleNamespace(**{"train.epochs": "5"})
    with pytest.raises(ResumeError, match="raise --early-stop above 2"):
        _check_can_continue(run, state, flags, tmp_path)
    ts = TrainState(epoch=3, stopped=stopped, bad_epochs=2)
    reopen(ts, run.train)
    assert ts.stopped == stopped  # the stop still holds
    reopen(ts, TrainConfig(epochs=5, early_stop=4))
    assert ts.stopped == ""
    budget = TrainState(epoch=1, stopped="time budget", seconds=120.0)
    reopen(budget, TrainConfig(epochs=5, max_minutes=1.5))  # 2 minutes used: still over
    assert budget.stopped == "time budget"
    reopen(budget, TrainConfig(epochs=5, max_minutes=3.0))
    assert budget.stopped == ""


# --- 12: OS errors are one line naming the path and the cause -----------------------------------
def test_runs_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "runs").write_text("not a folder")
    code = main(["train", "--preset", "smoke", "--runs-dir", str(tmp_path / "runs"), "--run-name", "r", "-q"])
    err = _one_error_line(capsys, code, str(tmp_path / "runs"))
    assert "Not a directory" in err or "File exists" in err  # depends on which mkdir meets the file first
    assert (tmp_path / "runs").read_text() == "not a folder"


@pytest.mark.parametrize("where", ["run name", "runs dir"])
def test_name_too_long_for_the_file_system(tmp_path, capsys, where):
    long = "r" * 300  # over NAME_MAX (255) on common file systems
    runs, name = (tmp_path, long) if where == "run name" else (tmp_path / long, "r")
    code = main(["train", "--preset", "smoke", "--runs-dir", str(runs), "--run-name", name, "-q"])
    err = _one_error_line(capsys, code)
    assert "too long" in err.lower() or (where == "run name" and "at most" in err)  # OS or --run-name check
    assert where == "run name" or long in err
    assert list(tmp_path.iterdir()) == []


def test_sample_into_a_missing_folder(budget_run, capsys):
    out = budget_run.parent / "no" / "such" / "samples.txt"
    code = main(["sample", "--run", str(budget_run), "--n", "3", "--out", str(out), "--threads", "1", "-q"])
    _one_error_line(capsys, code, str(out), "No such file or directory")
    assert not out.parent.exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_sample_onto_a_full_disk(budget_run, capsys):
    code = main(["sample", "--run", str(budget_run), "--n", "3", "--out", "/dev/full", "--threads", "1", "-q"])
    _one_error_line(capsys, code, "/dev/full", "No space left on device")


def test_full_disk_while_checkpointing(tmp_path, capsys, monkeypatch, one_thread):
    import discrete_rae.checkpoint as ckpt_mod

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt_mod.torch, "save", full)
    code = _train(tmp_path, "r", domain="expressions")
    _one_error_line(capsys, code, str(tmp_path / "r" / "checkpoint.pt"), "No space left on device")
    assert not list((tmp_path / "r").glob("checkpoint.pt*"))  # no checkpoint and no temporary left


# --- 13: hand-made checkpoints: missing keys and a deleted digest ---------------------------------
def _drop(*keys: str):
    def edit(payload):
        target = payload
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return edit


def _commands(run: Path) -> list[list[str]]:
    return [["sample", "--run", str(run), "--n", "3", "--threads", "1", "-q"],
            ["evaluate", "--run", str(run), "--n", "3", "--threads", "1", "-q"],
            ["train", "--resume", "--run-name", run.name, "--runs-dir", str(run.parent), "--threads", "1", "-q"]]


@pytest.mark.parametrize("keys,needle,commands", [
    (("trainer",), "lacks the key 'trainer'", (0, 1, 2)),
    (("model_state",), "lacks the key 'model_state'", (0, 1, 2)),
    (("config", "train"), "lacks the config section 'train'", (0, 1, 2)),
    (("codec", "kind"), "codec", (0, 1, 2)),  # refused by the codec fingerprint
    (("meta", "codec_hash", "codec", "kind"), "codec lacks the key 'kind'", (0, 1, 2)),
    (("samplers", "gaussian", "chol"), "sampler 'gaussian'", (0, 1)),
    (("trainer", "rng"), "trainer state lacks the key 'rng'", (2,)),
])
def test_checkpoint_with_missing_keys_is_refused(budget_run, tmp_path, capsys, keys, needle, commands):
    run = _copy(budget_run, tmp_path)
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    if keys[0] == "meta":  # two deletions: the fingerprint, then the key
        _drop(*keys[:2])(payload)
        keys = keys[2:]
    _drop(*keys)(payload)
    save_atomic(payload, run / "checkpoint.pt")  # a consistent digest: only the key is missing
    before = _snapshot(run)
    for i in commands:
        argv = _commands(run)[i]
        if keys == ("samplers", "gaussian", "chol"):
            argv += ["--sampler", "gaussian"]
        _one_error_line(capsys, main(argv), needle, "checkpoint")
    assert _snapshot(run) == before


def test_checkpoint_without_digest_is_refused_unless_trusted(budget_run, tmp_path, capsys, monkeypatch):
    run = _copy(budget_run, tmp_path)
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    del payload["digest"]
    name = next(k for k, v in payload["model_state"].items() if v.is_floating_point())
    payload["model_state"][name] = payload["model_state"][name] + 1.0  # altered weights
    torch.save(payload, run / "checkpoint.pt")
    for argv in _commands(run)[:2]:
        _one_error_line(capsys, main(argv), "no sha256 digest", TRUST_ENV)
    assert not (run / "samples-gaussian.txt").exists()
    monkeypatch.setenv(TRUST_ENV, "1")
    assert main(["sample", "--run", str(run), "--n", "3", "--sampler", "gaussian", "--threads", "1", "-q"]) == 0
    assert len((run / "samples-gaussian.txt").read_text().splitlines()) == 3


# --- 14: header detection, NUL bytes, TOML types, --n, compare flags, help text ------------------
def test_csv_without_header_keeps_its_first_row(tmp_path, capsys, one_thread):
    from discrete_rae.data.molecules import load_molecules

    by_index = tmp_path / "ids.csv"
    by_index.write_text("1,CCO\n2,c1ccccc1\n3,CCN\n")
    data = load_molecules(str(by_index), column=1, progress=False, workers=1)
    assert data.smiles == ["CCO", "c1ccccc1", "CCN"] and data.report.notes[0].startswith("no header row")
    broken_first = tmp_path / "broken.csv"  # a broken molecule in a data row is a bad line, not a header
    broken_first.write_text("C1CC,5\nc1ccccc1,2\nCCN,3\n")
    data = load_molecules(str(broken_first), progress=False, workers=1)
    assert data.smiles == ["c1ccccc1", "CCN"] and data.report.records == 3 and data.report.n_rejected == 1
    named = tmp_path / "named.csv"
    named.write_text("name,structure\na,CCO\nb,CCN\n")
    data = load_molecules(str(named), column="structure", progress=False, workers=1)
    assert data.smiles == ["CCO", "CCN"] and "header row" in data.report.notes[0]


@pytest.mark.parametrize("where", ["first line", "after 8 KB"])
def test_a_nul_byte_is_a_counted_bad_line_wherever_it_is(tmp_path, where):
    from discrete_rae.data.molecules import load_molecules

    good = [f"C{'C' * (i % 7)}O" if i % 2 else f"N{'C' * (i % 9)}" for i in range(2000)]
    lines = list(good)
    lines.insert(0 if where == "first line" else 1500, "CC\x00O")
    path = tmp_path / "mols.smi"
    path.write_bytes(("\n".join(lines) + "\n").encode())
    data = load_molecules(str(path), progress=False, workers=1)
    assert data.report.rejected == {"invalid_smiles": 1} and data.report.records == len(lines)


def test_toml_float_for_an_integer_key_is_an_error(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepochs = 1.7\n")
    code = main(["train", "--preset", "smoke", "--runs-dir", str(tmp_path / "runs"), "--config", str(cfg),
                 "--run-name", "r", "-q"])
    _one_error_line(capsys, code, "1.7", "epochs", "int")
    assert not (tmp_path / "runs" / "r").exists()


def test_evaluate_n_must_be_positive(budget_run, capsys):
    before = _snapshot(budget_run)
    code = main(["evaluate", "--run", str(budget_run), "--benchmark", "moses", "--n", "0", "-q"])
    _one_error_line(capsys, code, "--n 0", "positive")
    assert _snapshot(budget_run) == before and not (budget_run / "benchmark-moses.json").exists()


def test_compare_refuses_runs_and_models_together(budget_run, tmp_path, capsys):
    code = main(["compare", "--runs", f"{budget_run},{budget_run}", "--models", "grammar_rae,grammar_vae",
                 "--runs-dir", str(tmp_path), "-q"])
    _one_error_line(capsys, code, "--runs", "--models")
    assert list(tmp_path.iterdir()) == []


def test_help_says_image_data_sets_are_names_only(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    domains = {line.split()[0]: line for line in out.splitlines() if "datasets:" in line}
    assert "file path" not in domains["images"] and "file path" in domains["molecules"]
    assert "file path" in domains["expressions"]
