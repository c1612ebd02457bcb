"""Continuous ex-post samplers: fit, draw, plain-data state round trip."""

from __future__ import annotations

import io

import torch

from discrete_rae.samplers import build_sampler, sampler_from_state


def _two_clusters(n: int = 2000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n // 2, 3, generator=g) * 0.1 + torch.tensor([5.0, 0.0, 0.0])
    b = torch.randn(n // 2, 3, generator=g) * 0.1 - torch.tensor([5.0, 0.0, 0.0])
    return torch.cat([a, b])


def test_gaussian_recovers_mean_and_covariance():
    codes = torch.randn(5000, 2) @ torch.tensor([[2.0, 0.0], [1.0, 0.5]]) + torch.tensor([1.0, -2.0])
    s = build_sampler("gaussian").fit(codes)
    draws = s.sample(20000, torch.Generator().manual_seed(1))
    assert torch.allclose(draws.mean(0), codes.mean(0), atol=0.1)
    assert torch.allclose(torch.cov(draws.T), torch.cov(codes.T), atol=0.15)


def test_gmm_samples_are_shuffled_fresh_and_cover_modes():
    s = build_sampler("gmm", k=2).fit(_two_clusters())
    a, b = s.sample(400), s.sample(400)
    assert not torch.equal(a, b)  # fresh randomness on every call
    signs = (a[:, 0] > 0).float()
    assert 0.35 < signs.mean() < 0.65
    # Not grouped by component: the first half alone contains both modes.
    assert 0 < signs[:200].mean() < 1
    assert (a[:, 0].abs() - 5).abs().max() < 1.0


def test_state_roundtrip_weights_only():
    for name in ("prior", "gaussian", "gmm"):
        s = build_sampler(name).fit(_two_clusters(200))
        buf = io.BytesIO()
        torch.save(s.state_dict(), buf)
        buf.seek(0)
        t = sampler_from_state(torch.load(buf, weights_only=True))
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        assert torch.equal(s.sample(50, g1), t.sample(50, g2))


def test_gmm_log_prob_prefers_data_region():
    s = build_sampler("gmm", k=2).fit(_two_clusters())
    lp = s.log_prob(torch.tensor([[5.0, 0, 0], [0.0, 0, 0]]))
    assert lp[0] > lp[1] + 10
