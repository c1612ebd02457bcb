"""`optimize`: the objectives, the decode vote, and the CLI on a smoke expressions run."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

from discrete_rae.cli import main
from discrete_rae.expr_eval import GRID
from discrete_rae.interpolate import load_sequence_run
from discrete_rae.optimize import (OBJECTIVES, Box, MissingExtraError, Settings, expression_score,
                                   most_frequent_valid, optimize, require_botorch)

TINY = ["--rounds", "2", "--batch", "4", "--seeds", "2", "--n-train", "100", "--decodes", "2", "-q"]


def _optimize(run, out, *extra):
    return main(["optimize", "--run", str(run), "--objective", "expression", "--out", str(out), *TINY, *extra])


# --- objectives and helpers ---------------------------------------------------------------------
def test_expression_objective_known_values():
    assert expression_score("1 / 3 + x + sin( x * x )") == 0.0  # f* itself: log(1 + 0)
    assert expression_score("sin( x") == pytest.approx(math.log(1001))  # does not evaluate
    assert expression_score("x / ( x * 0 )") == pytest.approx(math.log(1001))  # infinite everywhere: the cap
    expected = np.log1p(np.mean(np.minimum((1 / 3 + np.sin(GRID * GRID)) ** 2, 1000)))
    assert expression_score("x") == pytest.approx(expected)


def test_objective_registry_directions():
    assert set(OBJECTIVES.names()) == {"penalized_logp", "expression"}
    expr, mol = OBJECTIVES.get("expression"), OBJECTIVES.get("penalized_logp")
    assert expr.domain == "expressions" and not expr.maximize and mol.domain == "molecules" and mol.maximize
    scores = np.array([0.5, 2.0, np.nan, 1.0])
    assert expr.worst(scores) == 2.0 and mol.worst(scores) == 0.5
    assert expr.best([0.5, 2.0]) == 0.5 and mol.best([0.5, 2.0]) == 2.0 and expr.best([]) is None
    assert expr.utility(2.0) == -2.0 and mol.utility(2.0) == 2.0
    assert np.isfinite(mol.score(["CCO"])).all() and np.isnan(mol.score(["C1CC"])).all()


def test_most_frequent_valid_decode():
    canon = lambda s: None if s == "bad" else s.strip()  # noqa: E731
    assert most_frequent_valid(["b", None, "bad", "a ", "a", "b", "a"], canon) == "a"  # " a" and "a" pool
    assert most_frequent_valid(["b", "a"], canon) == "b"  # a tie goes to the first seen
    assert most_frequent_valid([None, "bad"], canon) is None


def test_box_maps_to_unit_cube_and_back():
    codes = torch.tensor([[0.0, 1.0, 5.0], [2.0, 3.0, 5.0], [1.0, 2.0, 5.0]], dtype=torch.float64)
    box = Box.of(codes)
    unit = box.to_unit(codes)
    assert unit.min() >= 0 and unit.max() <= 1 and torch.isfinite(unit).all()  # the flat dimension too
    assert torch.allclose(box.from_unit(unit), codes)


def test_missing_botorch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "botorch", None)  # makes `import botorch` fail
    with pytest.raises(MissingExtraError, match=r"pip install 'discrete_rae\[optimize\]'"):
        require_botorch()


# --- the CLI ------------------------------------------------------------------------------------
def _without_timing(summary):
    summary = {k: v for k, v in summary.items() if k != "timing"}
    summary["per_seed"] = [{k: v for k, v in s.items() if k != "timing"} for s in summary["per_seed"]]
    return summary


def test_optimize_cli_outputs_and_determinism(expr_run, tmp_path, capsys):
    pytest.importorskip("botorch")
    assert _optimize(expr_run, tmp_path / "a") == 0
    out = capsys.readouterr().out
    assert "median best" in out and "bo" in out and "random" in out
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    for key in ("objective", "maximize", "settings", "seeds", "bo", "random", "gp", "per_seed", "timing"):
        assert key in summary, key
    assert summary["seeds"] == [0, 1] and not summary["maximize"]
    for method in ("bo", "random"):
        agg = summary[method]
        assert 0 <= agg["valid_fraction"] <= 1 and agg["n_proposals"] == 2 * 2 * 4
        assert len(agg["top3"]) <= 3 and len(agg["best_per_seed"]) == 2
        tops = [e["score"] for e in agg["top3"]]
        assert tops == sorted(tops)  # lower is better for this objective
        for seed in summary["per_seed"]:
            rec = seed[method]
            assert rec["n_proposals"] == len(rec["proposals"]) == 2 * 4
            assert 0 <= rec["valid_fraction"] <= 1
            valid = [p[2] for p in rec["proposals"] if p[2] is not None]
            assert rec["n_valid"] == len(valid)
            if valid:
                assert all(rec["best"] <= v for v in valid) and rec["best"] in valid
                assert rec["best_per_round"][-1] == rec["best"]
            per_round = [v for v in rec["best_per_round"] if v is not None]
            assert per_round == sorted(per_round, reverse=True)  # best so far never gets worse
    for seed in summary["per_seed"]:
        assert math.isfinite(seed["gp_test_rmse"]) and math.isfinite(seed["gp_test_loglik"])
        assert seed["n_gp_train"] + seed["n_gp_test"] == 100 and seed["n_gp_test"] == 10
    for name in ("best_per_round.png", "top3.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    assert _optimize(expr_run, tmp_path / "b") == 0
    again = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert _without_timing(again) == _without_timing(summary)


def test_optimize_leaves_the_global_rng_alone(expr_run):
    pytest.importorskip("botorch")
    cpu = torch.device("cpu")
    loaded, domain = load_sequence_run(expr_run, cpu)
    prepared = domain.prepare(loaded.run, codec_state=loaded.checkpoint["codec"], progress=False)
    state = torch.get_rng_state()
    summary = optimize(loaded.model, domain, prepared.train, prepared.train_texts, OBJECTIVES.get("expression"),
                       Settings(rounds=1, batch=2, n_train=50, decodes=2), [3], cpu, progress=False)
    assert torch.equal(torch.get_rng_state(), state)  # neither drawn from nor reseeded
    assert summary["bo"]["n_proposals"] == summary["random"]["n_proposals"] == 2


@pytest.mark.parametrize("argv,needle", [
    (["--objective", "penalized_logp"], "is for molecules runs"),
    (["--objective", "expression", "--rounds", "0"], "--rounds must be positive"),
    (["--objective", "expression", "--n-train", "5"], "--n-train must be at least 10"),
])
def test_optimize_usage_errors_exit_2(expr_run, tmp_path, capsys, argv, needle):
    pytest.importorskip("botorch")
    code = main(["optimize", "--run", str(expr_run), "--out", str(tmp_path / "o"), "-q", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_main_help_lists_the_new_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "optimize" in out and "interpolate" in out
