"""Precise's double-ring toy (samplers/toy2d.py): the exact posterior, the distances, and what the rules do on it."""
import math

import pytest
import torch

from samplers import DEFAULT_ETA, comfy_normal, sample_flow
from samplers.toy2d import (double_ring, energy_distance, points_posterior_mean, radial_stats, ring_denoiser,
                            ring_points, ring_posterior_mean)


def _probe(n=64, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.8


@pytest.mark.parametrize("t", [0.999, 0.9, 0.5, 0.2, 0.05, 0.02])
def test_ring_posterior_equals_the_softmax_formula_on_a_fine_quadrature(t):
    """Equally spaced points on the rings are an exponentially accurate quadrature of the angle integral."""
    x = _probe()
    exact = ring_posterior_mean(x, t)
    quadrature = points_posterior_mean(x, t, ring_points(4096))
    assert torch.allclose(exact, quadrature, atol=1e-10, rtol=0)


def test_ring_posterior_matches_a_brute_force_monte_carlo_posterior():
    """Self-normalised importance sampling over i.i.d. ring samples: E[x0 | x_t] = E[x0 p(x_t|x0)] / E[p(x_t|x0)]."""
    gen = torch.Generator().manual_seed(1)
    x0 = double_ring(400_000, gen)
    for t in (0.8, 0.5, 0.3):
        x = _probe(8, seed=2)
        log_lik = -((x[:, None, :] - (1 - t) * x0[None]) ** 2).sum(-1) / (2 * t * t)
        mc = torch.softmax(log_lik, dim=1) @ x0
        assert torch.allclose(ring_posterior_mean(x, t), mc, atol=0.01, rtol=0), t


def test_point_set_posterior_is_bayes_rule_with_gaussian_likelihoods():
    points = torch.tensor([[0.5, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.3, -0.4]], dtype=torch.float64)
    masses = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    x, t = _probe(16, seed=3), 0.4
    lik = torch.stack([torch.distributions.MultivariateNormal((1 - t) * d, t * t * torch.eye(2, dtype=torch.float64))
                       .log_prob(x).exp() for d in points], dim=1) * masses
    bayes = (lik / lik.sum(1, keepdim=True)) @ points
    assert torch.allclose(points_posterior_mean(x, t, points, masses), bayes, atol=1e-12, rtol=0)


def test_ring_posterior_limits():
    x = _probe()
    assert ring_posterior_mean(x, 1.0).abs().max() == 0                 # t = 1: the data mean
    assert ring_posterior_mean(x, 0.999).abs().max() < 2e-3
    assert ring_posterior_mean(torch.zeros(1, 2, dtype=torch.float64), 0.3).abs().max() == 0
    u = torch.nn.functional.normalize(x, dim=1)
    t, a = 0.01, 0.99
    for rho, ring in ((0.4, 0.5), (0.6, 0.5), (0.8, 1.0), (1.3, 1.0)):  # t → 0: the nearest ring point
        out = ring_posterior_mean(a * rho * u, t)
        assert torch.allclose(out, ring * u, atol=1e-3, rtol=0), rho
    assert ring_posterior_mean(x.float(), 0.3).dtype == torch.float32


def test_energy_distance_zero_symmetric_and_the_gaussian_shift_closed_form():
    gen = torch.Generator().manual_seed(4)
    a, b = torch.randn(2000, 1, generator=gen), torch.randn(2000, 1, generator=gen)
    assert energy_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert energy_distance(a, b + 1) == pytest.approx(energy_distance(b + 1, a), abs=1e-9)
    assert 0 < energy_distance(a, b) < 2e-3                               # V-statistic bias ≈ (2/√π)(2/n) = 1.1e-3
    # N(0, 1) vs N(μ, 1): E|X − Y| = (2/√π) e^{−μ²/4} + μ erf(μ/2), E|X − X'| = 2/√π. On the normal quantile grid
    # (a deterministic, evenly weighted sample) the estimate has no sampling noise: it is within 4e-5 at n = 1000.
    n = 1000
    grid = torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n)[:, None]
    for mu in (0.25, 0.5, 1.0, 2.0):
        closed = 4 / math.sqrt(math.pi) * (math.exp(-mu * mu / 4) - 1) + 2 * mu * math.erf(mu / 2)
        assert energy_distance(grid, grid + mu) == pytest.approx(closed, abs=2e-4), mu


def test_energy_distance_and_radial_stats_on_ring_data():
    gen = torch.Generator().manual_seed(5)
    data, other = double_ring(2000, gen), double_ring(2000, gen)
    floor = energy_distance(data, other)
    assert 0 < floor < 3e-3
    assert energy_distance(data, 0.9 * other) > 5 * floor              # rings contracted by 10 % are detected
    stats = radial_stats(data)
    assert stats["off_ring"] < 1e-12 and stats["rms_0.5"] < 1e-12 and stats["rms_1"] < 1e-12
    assert stats["mean"] == pytest.approx(0.75, abs=0.01) and stats["std"] == pytest.approx(0.25, abs=0.002)
    assert stats["frac_0.5"] == pytest.approx(0.5, abs=0.04)
    contracted = radial_stats(0.9 * data)
    assert contracted["mean"] == pytest.approx(0.9 * stats["mean"]) and contracted["std"] == pytest.approx(0.9 * stats["std"])


def _sample(rule, nfe, n=2000, seed=0):
    x1 = torch.randn(n, 2, generator=torch.Generator().manual_seed(3000 + seed), dtype=torch.float64)
    return sample_flow(ring_denoiser(), x1, comfy_normal(nfe).double(), rule=rule, eta=DEFAULT_ETA[rule],
                       seed=4000 + seed)


def test_ode_with_the_exact_posterior_at_30_nfe_lands_on_the_data():
    gen = torch.Generator().manual_seed(6)
    data, other = double_ring(2000, gen), double_ring(2000, gen)
    floor = energy_distance(data, other)
    out = _sample("ode", 30)
    stats = radial_stats(out)
    assert stats["off_ring"] < 1e-6                                      # the last step lands exactly on a ring
    assert stats["frac_0.5"] == pytest.approx(0.5, abs=0.06)
    assert energy_distance(out, data) < 2 * floor + 5e-4


def test_cps_contracts_the_marginal_more_than_precise_and_keeps_doing_so():
    """Measured by scripts/bench_double_ring.py (5000 samples × 3 seeds; data: std |x| 0.25, inner share 0.5):
    10 NFE: std |x| 0.216 (CPS) vs 0.228 (Precise), inner-ring share 0.751 vs 0.704;
    30 NFE: std |x| 0.237 vs 0.248, inner share 0.659 vs 0.567. At 6 NFE the two are close (0.842 vs 0.833 inner
    share): both contract at few NFE, and CPS's contraction persists as the NFE grows while Precise's shrinks."""
    stats = {(rule, nfe): radial_stats(_sample(rule, nfe)) for rule in ("cps", "precise") for nfe in (10, 30)}
    assert stats["cps", 10]["std"] < stats["precise", 10]["std"] - 0.005 < 0.245 - 0.005
    assert stats["cps", 10]["frac_0.5"] > stats["precise", 10]["frac_0.5"] + 0.02
    assert stats["cps", 30]["std"] < 0.242 < 0.244 < stats["precise", 30]["std"]
    assert stats["cps", 30]["frac_0.5"] > 0.62 > 0.60 > stats["precise", 30]["frac_0.5"]


def test_bench_script_prints_the_table_and_writes_the_plot(tmp_path):
    import os
    import subprocess
    import sys
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    out = tmp_path / "ring.png"
    result = subprocess.run([sys.executable, os.path.join(root, "scripts", "bench_double_ring.py"), "--samples", "200",
                             "--seeds", "1", "--nfe", "4", "6", "--out", str(out)],
                            capture_output=True, text=True, timeout=120, check=True)
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 + 6 * 2 and "noise floor" in rows[1]
    assert out.stat().st_size > 1000


def test_the_samplers_package_exports_the_toy2d_module():
    """``samplers.toy2d`` works after a plain ``import samplers`` (a fresh interpreter: nothing imported the
    submodule by name before), and it is the module samplers/toy2d.py."""
    import subprocess
    import sys
    from pathlib import Path

    import samplers
    import samplers.toy2d
    assert "toy2d" in samplers.__all__ and samplers.toy2d.__file__.endswith("toy2d.py")
    code = ("import samplers, torch; x = samplers.toy2d.double_ring(8, torch.Generator().manual_seed(0)); "
            "print(samplers.toy2d.radial_stats(x)['off_ring'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 1e-12  # every sample lies on a ring
