"""Shared fixtures: tiny prepared data sets per (domain, codec), built once per session."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from discrete_rae.catalog import load_all
from discrete_rae.config import RunConfig
from discrete_rae.registry import DOMAINS
from discrete_rae.runconfig import resolve_run_config

load_all()
torch.set_num_threads(1)  # tiny models: one thread is fastest and immune to oversubscription


def shared_dir() -> Path | None:
    """../shared beside the checkout (test data); None when absent."""
    env = os.environ.get("DISCRETE_RAE_SHARED")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    return path if path.is_dir() else None


def smoke_run(domain: str, model_name: str, **sections: dict) -> RunConfig:
    """The smoke-preset RunConfig of ``model_name`` on ``domain`` with optional overrides."""
    return resolve_run_config(domain, model_name, "smoke", None, sections)


_PREPARED: dict = {}


@pytest.fixture(scope="session")
def prepared_for(tmp_path_factory):
    """prepared_for(domain, model_name) -> Prepared, cached per (domain, codec kind)."""
    data_dir = tmp_path_factory.mktemp("data")

    def get(domain: str, model_name: str):
        run = smoke_run(domain, model_name, data={"data_dir": str(data_dir)})
        key = (domain, getattr(run.model, "codec", "pixels"))
        if key not in _PREPARED:
            _PREPARED[key] = DOMAINS.get(domain).prepare(run, progress=False)
        return run, _PREPARED[key]

    return get


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` need an NVIDIA GPU: skipped where torch sees none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _quiet_logs():
    logging.getLogger("discrete_rae").setLevel(logging.WARNING)
    yield


@pytest.fixture(scope="session")
def expr_run(tmp_path_factory):
    """A finished smoke-preset grammar RAE on expressions (seconds), shared by the tests of the
    commands that work on a run (optimize, interpolate); they must not modify it."""
    from discrete_rae.cli import main

    root = tmp_path_factory.mktemp("expr_run")
    code = main(["train", "--domain", "expressions", "--model", "grammar_rae", "--preset", "smoke", "--runs-dir",
                 str(root), "--run-name", "r", "--data-dir", str(root / "data"), "-q"])
    assert code == 0
    return root / "r"
