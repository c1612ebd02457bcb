"""Run-directory safety: names stay inside --runs-dir, --overwrite never loses a run, one process per run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from discrete_rae import rundir
from discrete_rae.cli import main
from discrete_rae.errors import UsageError


def _snapshot(root: Path) -> dict[str, int]:
    """Every path below ``root`` with its size (directories 0): what a run may not change."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = 0 if path.is_dir() else path.stat().st_size
    return out


def _train(runs: Path, *flags: str, domain: str = "expressions") -> int:
    return main(["train", "--domain", domain, "--preset", "smoke", "--threads", "1", "-q",
                 "--runs-dir", str(runs), *flags])


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """A parent folder with a sibling the runs must never touch, and a runs folder with one old run."""
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "data.txt").write_text("keep me")
    runs = tmp_path / "runs"
    (runs / "old").mkdir(parents=True)
    (runs / "old" / "checkpoint.pt").write_bytes(b"old run")
    return tmp_path, runs


BAD_NAMES = ["..", ".", "", "../precious", "../../x", "a/b", "/tmp/escape-test", ".hidden", "x" * 300,
             "name with space", "a\\b"]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_unsafe_run_names_are_refused_before_anything_happens(world, name, extra, capsys):
    parent, runs = world
    before = _snapshot(parent)
    code = _train(runs, "--run-name", name, *extra, "--dataset", "nope.smi", domain="molecules")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: --run-name"), err
    assert _snapshot(parent) == before
    assert not Path("/tmp/escape-test").exists()


def test_resume_with_escaping_name_is_refused(world, capsys):
    parent, runs = world
    (parent / "precious" / "checkpoint.pt").write_bytes(b"not a run")
    before = _snapshot(parent)
    assert _train(runs, "--run-name", "../precious", "--resume") == 2
    assert "error: --run-name" in capsys.readouterr().err
    assert _snapshot(parent) == before


def test_overwrite_keeps_the_old_run_when_the_new_one_fails_at_once(world, capsys):
    parent, runs = world
    before = _snapshot(parent)
    code = _train(runs, "--run-name", "old", "--overwrite", "--dataset", "nope.smi", domain="molecules")
    assert code == 2
    assert "nope.smi" in capsys.readouterr().err
    assert _snapshot(parent) == {**before, "runs/.locks": 0, "runs/.locks/old.lock": _lock_size(runs, "old")}
    assert (runs / "old" / "checkpoint.pt").read_bytes() == b"old run"


def _lock_size(runs: Path, name: str) -> int:
    return (runs / ".locks" / f"{name}.lock").stat().st_size


def test_overwrite_replaces_the_old_run_once_the_new_one_has_a_checkpoint(world):
    parent, runs = world
    assert _train(runs, "--run-name", "old", "--overwrite", "--epochs", "1") == 0
    assert (runs / "old" / "checkpoint.pt").read_bytes() != b"old run"
    assert (runs / "old" / "metrics.json").is_file()
    assert not (runs / ".old.replaced").exists()
    assert (parent / "precious" / "data.txt").read_text() == "keep me"


def test_a_second_process_on_the_same_run_gets_a_clear_error(world, capsys):
    _, runs = world
    held = rundir.claim(runs, "busy")  # another training process holds this run
    try:
        (runs / "busy" / "checkpoint.pt").write_bytes(b"first run")
        for flags in (["--overwrite"], ["--resume"]):
            assert _train(runs, "--run-name", "busy", *flags) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "in use by another process" in err[0], err
        assert (runs / "busy" / "checkpoint.pt").read_bytes() == b"first run"
    finally:
        held.release()


def test_lock_is_released_when_the_holder_ends(world):
    _, runs = world
    first = rundir.claim(runs, "a")
    first.release()
    second = rundir.claim(runs, "a", overwrite=True)  # would raise 'in use' if the lock were stale
    second.settle()
    second.release()
    assert not (runs / ".a.replaced").exists()


def test_interrupted_overwrite_is_not_clobbered(world, capsys):
    _, runs = world
    (runs / ".old.replaced").mkdir()
    (runs / ".old.replaced" / "checkpoint.pt").write_bytes(b"older run")
    assert _train(runs, "--run-name", "old", "--overwrite") == 2
    assert "was interrupted" in capsys.readouterr().err
    assert (runs / ".old.replaced" / "checkpoint.pt").read_bytes() == b"older run"
    assert (runs / "old" / "checkpoint.pt").read_bytes() == b"old run"


def test_symlinked_run_directory_is_refused(world):
    parent, runs = world
    (runs / "link").symlink_to(parent / "precious")
    with pytest.raises(UsageError, match="symbolic link"):
        rundir.claim(runs, "link", overwrite=True)
    assert (parent / "precious" / "data.txt").read_text() == "keep me"


def test_settle_restores_the_old_run_if_the_new_one_has_no_checkpoint(world):
    _, runs = world
    claimed = rundir.claim(runs, "old", overwrite=True)
    assert (runs / ".old.replaced" / "checkpoint.pt").is_file() and not any((runs / "old").iterdir())
    (runs / "old" / "train.log").write_text("partial")
    claimed.settle()
    claimed.release()
    assert (runs / "old" / "checkpoint.pt").read_bytes() == b"old run"
    assert not (runs / "old" / "train.log").exists() and not (runs / ".old.replaced").exists()


def test_compare_and_image_table_names_are_confined(tmp_path, capsys):
    code = main(["compare", "--domain", "digits", "--models", "gumbel_vae,discrete_rae", "--name", "../../x",
                 "--runs-dir", str(tmp_path), "--preset", "smoke", "-q"])
    assert code == 2 and "error: --name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
