"""image-table: any rows, a fixed step budget, extra ex-post samplers per row, the table's cells."""

from __future__ import annotations

import json

import pytest

from discrete_rae.cli import main
from discrete_rae.domains.images import QUICK_IMAGE_STEPS
from discrete_rae.image_table import TableSpec, extra_sampler_scores, format_table, table_run_config
from discrete_rae.presets import get_preset


def test_the_images_quick_preset_is_a_fixed_step_budget_with_a_time_cap():
    train = get_preset("images", "quick")["train"]
    assert train["max_steps"] == QUICK_IMAGE_STEPS > 0 and train["max_minutes"] > 0
    run = table_run_config("vamp_vae", TableSpec(dataset="digits", preset="quick"))
    assert run.train.max_steps == QUICK_IMAGE_STEPS and run.model.prior == "vamp" and run.model.vamp_k == 50
    assert table_run_config("vae", TableSpec(dataset="mnist5k", max_steps=300)).train.max_steps == 300


def _row(model: str, **kw) -> dict:
    base = {"model": model, "recon_mse": 0.01, "fid_feat_prior": 50.0, "fid_feat_gaussian": 40.0,
            "fid_feat_gmm": 10.0, "fid_feat_interp": 20.0, "precision_prior": 0.5, "recall_prior": 0.6,
            "precision_gmm": 0.8, "recall_gmm": 0.7, "steps": 800, "train_seconds": 60, "n_samples": 1000,
            "n_reference": 360, "feature_net_accuracy": 0.99, "fid_feat_train": 3.0}
    return {**base, **kw}


def test_table_has_one_column_per_extra_sampler_and_links_the_grids():
    rows = [_row("vae"), _row("gumbel_vae", fid_feat_gmm=None)]
    extra = {"vae": {"two_stage": {"fid_feat": 12.345}, "flow": {"fid_feat": 9.5}}, "gumbel_vae": {}}
    text = format_table(rows, TableSpec(dataset="digits", max_steps=300), 1.0, None, extra, ("two_stage", "flow"))
    lines = text.splitlines()
    head = [c.strip() for c in lines[2].strip("|").split("|")]
    vae = [c.strip() for c in lines[4].strip("|").split("|")]
    gumbel = [c.strip() for c in lines[5].strip("|").split("|")]
    assert head[2] == "Fréchet prior" and head[5:7] == ["Fréchet two_stage", "Fréchet flow"]
    assert vae[5:7] == ["12.35", "9.50"] and gumbel[4:7] == ["-", "-", "-"]
    assert vae[-1] == "[grid](vae/samples.png)" and head[-3] == "steps" and vae[-3] == "800"
    assert "300 steps (--max-steps)" in text and "VampPrior mixture" in text


def test_extra_sampler_scores_reuse_the_cached_scores(tmp_path):
    run = tmp_path / "vae"
    run.mkdir()
    (run / "extra_samplers.json").write_text(json.dumps({"flow": {"fid_feat": 7.0}}))
    # cached: neither the run (no checkpoint here) nor the data is touched
    assert extra_sampler_scores(["vae"], tmp_path, None, ("flow",), 10) == {"vae": {"flow": {"fid_feat": 7.0}}}


@pytest.mark.parametrize("argv, message", [
    (["--samplers", "cat_mixture"], "categorical codes"),
    (["--max-steps", "-1"], "--max-steps -1"),
    (["--models", "vae,grammar_vae"], "does not run on images"),
])
def test_bad_table_arguments_are_one_line_errors(tmp_path, capsys, argv, message):
    assert main(["image-table", "--runs-dir", str(tmp_path), "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "image-table-digits").exists()
