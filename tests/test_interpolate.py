"""`interpolate`: path geometry, neighbourhoods, and the CLI on a smoke expressions run."""

from __future__ import annotations

import json

import pytest
import torch

from discrete_rae.cli import main
from discrete_rae.interpolate import encode_texts, interpolate_codes, load_sequence_run, neighbourhood


def _angle(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.arccos(torch.clamp(a @ b / (a.norm() * b.norm()), -1, 1)))


# --- geometry -----------------------------------------------------------------------------------
def test_line_endpoints_and_midpoint():
    z0, z1 = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 0.0, -1.5])
    t, codes = interpolate_codes(z0, z1, 5, "line")
    assert codes.shape == (5, 3) and t.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert torch.equal(codes[0], z0) and torch.equal(codes[-1], z1)
    assert torch.allclose(codes[2], (z0 + z1) / 2)


def test_slerp_moves_along_the_great_circle():
    gen = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(8, generator=gen, dtype=torch.float64), 3 * torch.randn(8, generator=gen, dtype=torch.float64)
    t, codes = interpolate_codes(z0, z1, 7, "slerp")
    assert torch.equal(codes[0], z0) and torch.equal(codes[-1], z1)
    total = _angle(z0, z1)
    for ti, z in zip(t.tolist(), codes):
        assert _angle(z, z0) == pytest.approx(ti * total, abs=1e-9)  # angle linear in t
        assert _angle(z, z0) + _angle(z, z1) == pytest.approx(total, abs=1e-9)  # on the arc between them
        assert float(z.norm()) == pytest.approx((1 - ti) * float(z0.norm()) + ti * float(z1.norm()))


@pytest.mark.parametrize("z1_of", [lambda z: 2 * z, lambda z: -z, lambda z: torch.zeros_like(z)])
def test_slerp_falls_back_to_the_line(z1_of):
    z0 = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    z1 = z1_of(z0)
    assert torch.allclose(interpolate_codes(z0, z1, 6, "slerp")[1], interpolate_codes(z0, z1, 6, "line")[1])


def test_bad_path_arguments():
    z = torch.zeros(3)
    with pytest.raises(ValueError, match="steps"):
        interpolate_codes(z, z, 1)
    with pytest.raises(ValueError, match="unknown path"):
        interpolate_codes(z, z, 3, "spiral")


def test_neighbourhood_scale_order_and_seed():
    z = torch.tensor([1.0, 2.0, 3.0])
    dist, codes = neighbourhood(z, 50, 0.5, torch.tensor([1.0, 0.0, 2.0]), torch.Generator().manual_seed(1))
    assert codes.shape == (50, 3) and torch.all(dist[1:] >= dist[:-1])  # nearest first
    assert torch.all(codes[:, 1] == 2.0)  # no spread in the data, no perturbation
    again = neighbourhood(z, 50, 0.5, torch.tensor([1.0, 0.0, 2.0]), torch.Generator().manual_seed(1))[1]
    assert torch.equal(codes, again)
    scale = torch.tensor([1.0, 1.0, 2.0])
    dist, codes = neighbourhood(z, 20, 0.5, scale, torch.Generator().manual_seed(2))
    eps = (codes - z) / (0.5 * scale)
    assert torch.allclose(dist, 0.5 * eps.norm(dim=1), atol=1e-5)  # the reported scaled distance


# --- the CLI ------------------------------------------------------------------------------------
def test_interpolate_cli_path(expr_run, tmp_path, capsys):
    start, end = "sin( x ) + x", "x * x / 3"
    assert main(["interpolate", "--run", str(expr_run), "--from", start, "--to", end, "--steps", "5",
                 "--path", "slerp", "--out", str(tmp_path), "-q"]) == 0
    assert "validity along the path" in capsys.readouterr().out
    result = json.loads((tmp_path / "interpolation.json").read_text())
    assert 0 <= result["validity"] <= 1 and len(result["points"]) == 5
    assert [p["t"] for p in result["points"]] == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    assert (tmp_path / "interpolation.png").stat().st_size > 0
    loaded, domain = load_sequence_run(expr_run, torch.device("cpu"))
    z = encode_texts(loaded, domain, [start], torch.device("cpu"))
    assert result["points"][0]["text"] == domain.decode(loaded.model, z, torch.device("cpu"), temperature=0.0)[0]


def test_interpolate_cli_around(expr_run, tmp_path):
    assert main(["interpolate", "--run", str(expr_run), "--around", "x + 1", "--n", "6", "--out", str(tmp_path),
                 "-q"]) == 0
    result = json.loads((tmp_path / "interpolation.json").read_text())
    assert result["mode"] == "around" and len(result["points"]) == 7  # the centre, then 6 neighbours
    assert 0 <= result["validity"] <= 1 and 0 <= result["same_as_centre"] <= 1
    assert (tmp_path / "interpolation.png").stat().st_size > 0


@pytest.mark.parametrize("argv,needle", [
    (["--from", "sin( x", "--to", "x"], "'sin( x' is not a valid expression"),
    (["--from", "x"], "give --from STRING --to STRING"),
    (["--around", "x", "--from", "x", "--to", "x"], "cannot be combined"),
    (["--from", "x", "--to", "x", "--steps", "1"], "--steps must be at least 2"),
])
def test_interpolate_usage_errors_exit_2(expr_run, tmp_path, capsys, argv, needle):
    code = main(["interpolate", "--run", str(expr_run), "--out", str(tmp_path / "o"), "-q", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
