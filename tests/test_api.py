"""The Python API (``discrete_rae.load``) and the ``encode`` / ``reconstruct`` commands, on the
shared smoke expressions run (trained once per session through the CLI, in-process)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import discrete_rae
from discrete_rae.api import EncodeError, Model
from discrete_rae.cli import main
from discrete_rae.errors import UsageError

GOOD = ["sin( x ) + x", "x * x / 3", "x + 1", "exp( x )"]
BAD = "sin( x"  # not in the expression language


@pytest.fixture(scope="module")
def model(expr_run) -> Model:
    return discrete_rae.load(expr_run)


def test_load_from_the_package_root(model, expr_run):
    assert isinstance(model, Model) and model.run_dir == expr_run
    assert model.run.domain == "expressions" and model.samplers


def test_encode_decode_reconstruct_agree(model):
    z = model.encode(GOOD)
    assert z.shape == (len(GOOD), model.latent_dim) and z.dtype == torch.float32 and torch.isfinite(z).all()
    assert torch.allclose(model.encode(list(reversed(GOOD))), z.flip(0))  # one code per string, order kept
    decoded = model.decode(z)
    assert len(decoded) == len(GOOD) and all(s is None or isinstance(s, str) for s in decoded)
    assert model.reconstruct(GOOD) == decoded  # greedy: deterministic
    # the code is the deterministic one: a string and its canonical spelling share it
    spaced = model.encode(["sin(x)+x"])
    assert torch.allclose(spaced[0], z[0])


def test_encode_names_the_first_bad_string_and_the_count(model):
    with pytest.raises(EncodeError) as info:
        model.encode([GOOD[0], BAD, "", GOOD[1]])
    message = str(info.value)
    assert isinstance(info.value, UsageError)  # the CLI prints it as one `error:` line
    assert message.startswith("2 of 4 strings cannot be encoded") and repr(BAD) in message
    assert "\n" not in message and [f.index for f in info.value.failures] == [1, 2]


def test_try_encode_keeps_the_good_ones(model):
    codes, ok, failures = model.try_encode([BAD, GOOD[2], GOOD[3]])
    assert ok == [1, 2] and [f.index for f in failures] == [0]
    assert torch.allclose(codes, model.encode(GOOD[2:]))


def test_sample_and_decode_checks(model):
    a = model.sample(6, seed=3)
    assert len(a) == 6 and all(s is None or isinstance(s, str) for s in a)
    assert model.sample(6, seed=3) == a  # seeded draws repeat
    with pytest.raises(UsageError, match="n must be positive"):
        model.sample(0)
    with pytest.raises(UsageError, match=rf"shape \[N, {model.latent_dim}\]"):
        model.decode(torch.zeros(2, model.latent_dim + 1))


def test_load_of_a_folder_without_checkpoint(tmp_path):
    with pytest.raises(UsageError, match="no checkpoint.pt"):
        discrete_rae.load(tmp_path)


def test_encode_command_writes_nan_rows_for_bad_lines(model, expr_run, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("\n".join([GOOD[0], BAD, GOOD[1]]) + "\n")
    out = tmp_path / "codes.npy"
    assert main(["encode", "--run", str(expr_run), "--input", str(src), "--out", str(out), "--threads", "1",
                 "-q"]) == 0
    printed = capsys.readouterr().out
    assert "1 of 3 lines could not be encoded" in printed and f"line 2: {BAD!r}" in printed
    codes = np.load(out)
    assert codes.shape == (3, model.latent_dim) and np.isnan(codes[1]).all()
    assert np.allclose(codes[[0, 2]], model.encode([GOOD[0], GOOD[1]]).numpy(), atol=1e-6)


def test_reconstruct_command_reports_the_exact_match_rate(model, expr_run, tmp_path, capsys):
    src = tmp_path / "in.txt"
    lines = [*GOOD, BAD]
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "rec.txt"
    assert main(["reconstruct", "--run", str(expr_run), "--input", str(src), "--out", str(out), "--threads", "1",
                 "-q"]) == 0
    written = out.read_text().splitlines()
    expected = model.reconstruct(GOOD)
    assert written == [("<unfinished>" if s is None else s) for s in expected] + ["<not encoded>"]
    canonical = model.domain.canonical
    matches = sum(s is not None and canonical(s) == canonical(t) for s, t in zip(expected, GOOD))
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["exact_match"] == matches and summary["encoded"] == 4 and summary["bad_lines"] == 1
    assert summary["exact_match_rate"] == pytest.approx(matches / 4)
    assert f"exact reconstruction: {matches / 4:.3f} ({matches} of 4 encodable lines)" in capsys.readouterr().out


@pytest.mark.parametrize("content,needle", [(f"{BAD}\n\n", "none of its 2 lines can be encoded"),
                                            ("", "the file is empty"), (None, "no such file")])
def test_encode_and_reconstruct_bad_files_exit_2(expr_run, tmp_path, capsys, content, needle):
    src = tmp_path / "in.txt"
    if content is not None:
        src.write_text(content)
    for command in ("encode", "reconstruct"):
        code = main([command, "--run", str(expr_run), "--input", str(src), "--out", str(tmp_path / "o"), "-q"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("error:") and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
