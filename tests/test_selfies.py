"""SELFIES codec: round trip on MOSES, bad SMILES as failures, every decode a molecule, CLI run."""

from __future__ import annotations

import gzip
import io
import json
import random
from pathlib import Path

import pytest
import torch

pytest.importorskip("selfies")

from discrete_rae.chem import canonical  # noqa: E402
from discrete_rae.codecs import codec_from_state  # noqa: E402
from discrete_rae.selfies_codec import SelfiesCodec  # noqa: E402


def _moses_train() -> Path | None:
    """moses/dataset/data/train.csv.gz of the molsets wheel, found without importing moses."""
    import importlib.util

    spec = importlib.util.find_spec("moses")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset" / "data" / "train.csv.gz"
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def moses_sample() -> list[str]:
    path = _moses_train()
    if path is None:
        pytest.skip("molsets data files not installed")
    with gzip.open(path, "rt") as fh:
        lines = [line.strip() for line in fh.read().splitlines()[1:] if line.strip()]
    # the file is not shuffled: a seeded random sample, never its head
    return [canonical(s) for s in random.Random(20261203).sample(lines, 400)]


def _all(n: int) -> torch.Tensor:
    return torch.ones(n, dtype=torch.bool)


def test_moses_round_trip(moses_sample):
    codec = SelfiesCodec.fit(moses_sample)
    enc = codec.encode(moses_sample)
    assert not enc.failures and enc.texts == moses_sample
    assert enc.ids.shape == (400, codec.max_length) and int(enc.lengths.max()) == codec.max_length
    decoded = codec.to_text(torch.from_numpy(enc.ids).long(), _all(400))
    mismatches = [(a, b) for a, b in zip(moses_sample, decoded) if a != b]
    assert not mismatches, mismatches[:3]


def test_bad_smiles_are_failures_not_crashes():
    codec = SelfiesCodec.fit(["CCO", "CCN"])
    texts = ["CCO", "C(C)(C)(C)(C)C", "C1CC", "not a smiles", "", "CCCl", "CCCCCCCC"]
    enc = codec.encode(texts)
    assert enc.texts == ["CCO"]
    reasons = {text: reason for _, text, reason in enc.failures}
    assert "semantic constraints" in reasons["C(C)(C)(C)(C)C"]  # pentavalent carbon
    assert reasons["C1CC"].startswith("selfies encoder") and reasons["not a smiles"].startswith("selfies encoder")
    assert reasons[""].startswith("selfies encoder")  # the encoder rejects an empty string
    assert "unknown SELFIES token [Cl]" in reasons["CCCl"]
    assert "longer than" in reasons["CCCCCCCC"]


def test_every_nonempty_decode_is_a_molecule_and_empty_is_invalid(moses_sample):
    codec = SelfiesCodec.fit(moses_sample[:200])
    ids = torch.randint(1, codec.vocab_size, (300, codec.max_length), generator=torch.Generator().manual_seed(0))
    ids[::3, 5:] = 0  # some end early
    out = codec.to_text(ids, _all(300))
    assert all(s is not None for s in out)
    assert all(canonical(s) == s for s in out if s)  # valid and already canonical
    empty = codec.to_text(torch.zeros(2, codec.max_length, dtype=torch.long), _all(2))
    assert empty == ["", ""] and canonical("") is None
    ring_only = codec.to_text(torch.tensor([[codec.index["[Ring1]"], 0]]), _all(1))
    assert ring_only == [""]  # no atom written: empty, counted invalid


def test_state_is_plain_data(moses_sample):
    codec = SelfiesCodec.fit(moses_sample[:100])
    buf = io.BytesIO()
    torch.save({"codec": codec.state_dict()}, buf)
    buf.seek(0)
    clone = codec_from_state(torch.load(buf, weights_only=True)["codec"])
    assert isinstance(clone, SelfiesCodec)
    assert clone.alphabet == codec.alphabet and clone.max_length == codec.max_length
    enc = codec.encode(moses_sample[:100])
    assert (clone.encode(moses_sample[:100]).ids == enc.ids).all()


def test_domain_prepares_selfies_and_reports_beam_reconstruction(prepared_for):
    from discrete_rae.config import EvalConfig
    from discrete_rae.registry import DOMAINS, MODELS

    run, prepared = prepared_for("molecules", "selfies_rae")
    assert isinstance(prepared.codec, SelfiesCodec)
    model = MODELS.get("selfies_rae").build(run.model, prepared.codec).eval()
    out = DOMAINS.get("molecules").reconstruction(model, prepared, EvalConfig(beam_width=3), torch.device("cpu"))
    assert out["beam_width"] == 3 and 0.0 <= out["recon_accuracy_beam"] <= 1.0
    assert "recon_accuracy_beam" not in DOMAINS.get("molecules").reconstruction(
        model, prepared, EvalConfig(), torch.device("cpu"))


def test_cli_smoke_run(tmp_path):
    from discrete_rae.cli import main

    code = main(["train", "--domain", "molecules", "--model", "selfies_rae", "--preset", "smoke", "--runs-dir",
                 str(tmp_path), "--run-name", "r", "--data-dir", str(tmp_path / "data"), "--threads", "1",
                 "--beam-width", "2", "-q"])
    assert code == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["model"] == "selfies_rae" and metrics["beam_width"] == 2
    samples = (tmp_path / "r" / "samples.txt").read_text().splitlines()
    # every sample is a molecule except empty decodes (written as empty lines)
    assert metrics["valid"] == pytest.approx(sum(bool(s) for s in samples) / len(samples))
    ckpt = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert ckpt["codec"]["kind"] == "selfies"
