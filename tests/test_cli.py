"""CLI smoke tests: train -> sample -> evaluate on both sequence domains, and user errors."""

from __future__ import annotations

import json

import pytest

from discrete_rae.cli import main


def _train(tmp_path, domain, model, name, *extra):
    return main(["train", "--domain", domain, "--model", model, "--preset", "smoke", "--runs-dir", str(tmp_path),
                 "--run-name", name, "--data-dir", str(tmp_path / "data"), "-q", *extra])


@pytest.mark.parametrize("domain,model", [("molecules", "grammar_rae"), ("expressions", "grammar_vae"),
                                          ("expressions", "char_rae")])
def test_train_sample_evaluate(tmp_path, capsys, domain, model):
    assert _train(tmp_path, domain, model, "r") == 0
    run = tmp_path / "r"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("valid", "unique", "novel", "recon_accuracy", "unfinished", "n_samples", "sampler", "dataset",
                "model", "train_seconds"):
        assert key in metrics, key
    assert 0 <= metrics["valid"] <= 1 and metrics["model"] == model
    assert (run / "samples.txt").is_file() and (run / "samples.png").is_file()
    assert (run / "config.toml").is_file() and (run / "metrics.jsonl").is_file()
    assert main(["sample", "--run", str(run), "--n", "7", "--sampler", "gaussian", "-q"]) == 0
    lines = (run / "samples-gaussian.txt").read_text().splitlines()
    assert len(lines) == 7
    assert main(["evaluate", "--run", str(run), "--n", "10", "-q"]) == 0
    assert json.loads((run / "metrics.json").read_text())["n_samples"] == 10


def test_help_lists_domains_and_models(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for word in ("molecules", "expressions", "grammar_rae", "grammar_vae", "char_vae", "char_rae", "--latent-dim"):
        assert word in out


@pytest.mark.parametrize("argv,needle", [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--domain", "nowhere"], "unknown domain 'nowhere'"),
    (["--sampler", "nope"], "unknown sampler 'nope'"),
    (["--decoder-reg", "xx"], "unknown decoder regulariser 'xx'"),
    (["--latent-dim", "abc"], "bad value 'abc'"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--epochs", "0"], "--epochs must be positive"),
    (["--resume"], "--resume needs --run-name"),
    (["--dataset", "/no/such/file.smi"], "/no/such/file.smi"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, needle):
    code = main(["train", "--preset", "smoke", "--runs-dir", str(tmp_path), "-q", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err and "Traceback" not in err
    assert err.startswith("error:") and len(err.splitlines()) == 1


def test_existing_run_dir_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("x")
    assert _train(tmp_path, "expressions", "grammar_rae", "taken") == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "taken" / "keep.txt").read_text() == "x"


def test_bad_checkpoint_is_reported(tmp_path, capsys):
    run = tmp_path / "broken"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["sample", "--run", str(run), "-q"]) == 2
    assert "truncated or corrupted" in capsys.readouterr().err


@pytest.mark.parametrize("domain,grammar", [("molecules", "smiles_compact"), ("expressions", "expressions_compact")])
def test_compact_grammar_run_and_paper_cutoff_on_evaluate(tmp_path, domain, grammar):
    """The quick presets' compact grammars train end to end; `evaluate --length-mask false`
    re-scores the same run with the Grammar VAE's cut-off (unfinished decodes are invalid)."""
    assert _train(tmp_path, domain, "grammar_rae", "c", "--grammar", grammar) == 0
    run = tmp_path / "c"
    ckpt_codec = json.loads((run / "run.json").read_text())
    assert ckpt_codec["grammar_hash"]
    masked = json.loads((run / "metrics.json").read_text())
    assert masked["unfinished"] == 0.0  # the length mask lets every decode finish
    assert main(["evaluate", "--run", str(run), "--n", "30", "--length-mask", "false", "-q"]) == 0
    plain = json.loads((run / "metrics.json").read_text())
    assert 0 <= plain["unfinished"] <= 1 and plain["n_samples"] == 30


def test_unknown_grammar_is_a_usage_error(tmp_path, capsys):
    assert _train(tmp_path, "expressions", "grammar_rae", "g", "--grammar", "klingon") == 2
    assert "unknown grammar 'klingon'" in capsys.readouterr().err


def test_grammar_of_another_domain_is_a_usage_error(tmp_path, capsys):
    assert _train(tmp_path, "expressions", "grammar_rae", "g", "--grammar", "smiles_compact") == 2
    assert "does not describe the expressions domain" in capsys.readouterr().err
