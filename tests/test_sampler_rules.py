"""Step rules against the reference formulas (../shared/docs/reference.md §1) and their analytic identities."""
import math

import pytest
import torch

import samplers
from samplers import RULES, coefficients, step

SD35_10 = [1.0, 0.9601, 0.9133, 0.8577, 0.7904, 0.7073, 0.6022, 0.4649, 0.2780, 0.0089, 0.0]


def reference_step(rule, x, x0, t, tn, eta):
    """The reference table written out directly (float64), independent of samplers.rules."""
    x1 = (x - (1 - t) * x0) / t
    v = (x - x0) / t
    dt = t - tn
    if rule == "ode":
        return x - v * dt, torch.zeros_like(t)
    if rule in ("flow_sde", "dance_sde", "cpws"):
        if rule == "dance_sde":
            sigma = eta * torch.ones_like(t)
        else:  # flow_grpo: sqrt(sigma / (1 - where(sigma == 1, sigma_max, sigma))) * noise_level
            sigma = eta * torch.sqrt(t / (1 - torch.where(t == 1, tn, t)))
        if rule == "cpws":
            std = torch.minimum(sigma * torch.sqrt(dt), tn)
            return (1 - tn) * x0 + torch.sqrt(tn ** 2 - std ** 2) * x1, std
        # flow_grpo: x * (1 + σ²/(2t) dt') + v * (1 + σ²(1-t)/(2t)) dt' with dt' = t' - t
        mean = x * (1 - sigma ** 2 / (2 * t) * dt) + v * (1 + sigma ** 2 * (1 - t) / (2 * t)) * (-dt)
        return mean, sigma * torch.sqrt(dt)
    if rule == "cps":
        return (1 - tn) * x0 + tn * math.cos(eta * math.pi / 2) * x1, tn * math.sin(eta * math.pi / 2) * torch.ones_like(t)
    if rule == "precise":
        rho = (tn * (1 - t) / (t * (1 - tn))) ** (eta ** 2 / 2)
        return (1 - tn) * x0 + tn * rho * x1, tn * torch.sqrt(1 - rho ** 2)
    raise AssertionError(rule)


def bcast(v, x):
    return v.reshape(-1, *([1] * (x.dim() - 1)))


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_matches_reference_formula_with_per_sample_t(rule):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 6, 6, generator=gen, dtype=torch.float64)
    x0 = torch.randn(5, 3, 6, 6, generator=gen, dtype=torch.float64)
    noise = torch.randn(5, 3, 6, 6, generator=gen, dtype=torch.float64)
    t = torch.tensor([1.0, 0.93, 0.6, 0.31, 0.05], dtype=torch.float64)
    tn = torch.tensor([0.96, 0.8, 0.42, 0.0, 0.01], dtype=torch.float64)
    eta = {"precise": 1.5}.get(rule, 0.7)
    out = step(rule, x, x0, t, tn, eta=eta, noise=noise)
    mean, std = reference_step(rule, x, x0, bcast(t, x), bcast(tn, x), eta)
    torch.testing.assert_close(out.mean, mean, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.std.double().expand(5, 1, 1, 1).flatten(), std.expand(5, 1, 1, 1).flatten(),
                               rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.sample, out.mean + out.std.double() * noise, rtol=1e-6, atol=1e-6)
    # the per-sample call equals five scalar calls
    for b in range(5):
        single = step(rule, x[b:b + 1], x0[b:b + 1], float(t[b]), float(tn[b]), eta=eta, noise=noise[b:b + 1])
        torch.testing.assert_close(single.sample, out.sample[b:b + 1], rtol=1e-9, atol=1e-9)


def test_flow_sde_first_step_matches_flow_grpo_numbers():
    # reference §1: SD3.5, 10 steps, η = 0.7 → std ≈ 0.70 and an x-coefficient (with v as the other variable) ≈ 0.755
    t, tn = SD35_10[0], SD35_10[1]
    _, std = coefficients("flow_sde", t, tn, 0.7)
    assert std == pytest.approx(0.700, abs=2e-3)
    x = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    v = torch.zeros_like(x)  # x̂0 = x - t v
    out = step("flow_sde", x, x - t * v, t, tn, eta=0.7, noise=torch.zeros_like(x))
    assert float(out.mean) == pytest.approx(0.755, abs=1e-3)


@pytest.mark.parametrize("t,tn", [(1.0, 0.96), (0.8, 0.6), (0.3, 0.05), (0.05, 0.0)])
@pytest.mark.parametrize("rule,eta", [("cps", 0.8), ("cps", 1.0), ("cpws", 0.7), ("cpws", 1.0),
                                      ("precise", 1.5), ("precise", 3.0), ("ode", 0.0)])
def test_coefficient_preservation(rule, eta, t, tn):
    x0 = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    u = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    # x̂1 = 0 exactly when x = (1 - t) x̂0: the mean must then be (1 - t') x̂0
    out0 = step(rule, (1 - t) * x0, x0, t, tn, eta=eta, noise=torch.zeros_like(x0))
    torch.testing.assert_close(out0.mean, (1 - tn) * x0, rtol=1e-12, atol=1e-12)
    # x̂0 = 0 and x = t u give x̂1 = u: mean = k u, and k² + std² must equal t'²
    out1 = step(rule, t * u, torch.zeros_like(u), t, tn, eta=eta, noise=torch.zeros_like(u))
    k = float((out1.mean * u).sum() / (u * u).sum())
    assert k ** 2 + float(out1.std) ** 2 == pytest.approx(tn ** 2, abs=1e-7)


@pytest.mark.parametrize("t,tn", [(0.9, 0.8), (0.5, 0.3), (0.3, 0.05), (1.0, 0.9601)])
def test_flow_sde_violates_preservation_by_theorem_1_excess(t, tn):
    eta = 0.7
    k, std = coefficients("flow_sde", t, tn, eta)
    sigma_sq = eta ** 2 * t / (1 - (tn if t == 1 else t))
    dt = t - tn
    excess = sigma_sq * dt * dt / t + sigma_sq ** 2 * dt * dt / (4 * t * t)
    assert k ** 2 + std ** 2 - tn ** 2 == pytest.approx(excess, rel=1e-9)
    assert excess > 0
    assert math.hypot(k, std) == pytest.approx(math.sqrt((tn - sigma_sq * dt / (2 * t)) ** 2 + sigma_sq * dt), rel=1e-12)


def test_precise_sqrt2_equals_ddim_eta1_posterior():
    """Precise at η = √2 is DDIM(η = 1): the exact DDPM posterior q(x_t' | x_t, x0), derived here in VP form."""
    eta = math.sqrt(2)
    x0 = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    xt_noise = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    for t, s in [(0.9, 0.7), (0.5, 0.45), (0.3, 0.02), (1.0, 0.8)]:
        x = (1 - t) * x0 + t * xt_noise
        out = step("precise", x, x0, t, s, eta=eta, noise=torch.zeros_like(x))
        scale_t, scale_s = math.hypot(1 - t, t), math.hypot(1 - s, s)
        abar_t, abar_s = ((1 - t) / scale_t) ** 2, ((1 - s) / scale_s) ** 2
        beta = 1 - abar_t / abar_s
        mean_vp = (math.sqrt(abar_s) * beta / (1 - abar_t)) * x0 + \
            (math.sqrt(abar_t / abar_s) * (1 - abar_s) / (1 - abar_t)) * (x / scale_t)
        var_vp = beta * (1 - abar_s) / (1 - abar_t)
        torch.testing.assert_close(out.mean, mean_vp * scale_s, rtol=1e-10, atol=1e-10)
        assert float(out.std) == pytest.approx(math.sqrt(var_vp) * scale_s, rel=1e-6)
        rho_snr = s * (1 - t) / (t * (1 - s))
        assert coefficients("precise", t, s, eta)[0] == pytest.approx(s * rho_snr, rel=1e-12)


def test_flow_sde_converges_to_cpws_at_second_order():
    """CPS Theorem 1: Flow-SDE is CPWS's first-order Taylor expansion, so their means differ by O(Δt²)."""
    t, eta = 0.6, 0.7
    gaps = []
    for dt in [0.04, 0.02, 0.01, 0.005, 0.0025]:
        k_sde, s_sde = coefficients("flow_sde", t, t - dt, eta)
        k_cpws, s_cpws = coefficients("cpws", t, t - dt, eta)
        assert s_sde == pytest.approx(s_cpws, rel=1e-12)  # same injected noise
        gaps.append(abs(k_sde - k_cpws))
    ratios = [a / b for a, b in zip(gaps, gaps[1:])]
    assert all(3.6 < r < 4.4 for r in ratios), ratios
    # leading term: with a = σ²Δt, √(t'² − a) = t' − a/(2t') − a²/(8t'³) + …, so the gap is
    # σ²Δt²/(2 t t') + σ⁴Δt²/(8 t'³) + O(Δt³)
    sigma_sq = eta ** 2 * t / (1 - t)
    dt = 0.0025
    tn = t - dt
    leading = sigma_sq * dt * dt / (2 * t * tn) + sigma_sq ** 2 * dt * dt / (8 * tn ** 3)
    assert gaps[-1] == pytest.approx(leading, rel=0.01)


def test_last_step_edge_cases():
    x = torch.randn(2, 3, 4, 4)
    x0 = torch.randn(2, 3, 4, 4)
    noise = torch.randn(2, 3, 4, 4)
    for rule in ("cps", "cpws", "precise", "ode"):
        out = step(rule, x, x0, 0.05, 0.0, eta=samplers.DEFAULT_ETA[rule], noise=noise)
        assert float(out.std) == 0
        torch.testing.assert_close(out.sample, x0, rtol=1e-5, atol=1e-5)
    out = step("flow_sde", x, x0, 0.05, 0.0, eta=0.7, noise=noise)
    assert float(out.std) == pytest.approx(0.7 * math.sqrt(0.05 / 0.95) * math.sqrt(0.05), rel=1e-6)
    # Precise at t = 1: ρ = 0, fresh noise replaces x̂1 entirely
    out = step("precise", x, x0, 1.0, 0.9, eta=1.5, noise=noise)
    assert float(out.std) == pytest.approx(0.9, rel=1e-6)
    torch.testing.assert_close(out.mean, 0.1 * x0, rtol=1e-5, atol=1e-6)


def test_cpws_std_is_capped_at_t_next():
    k, std = coefficients("cpws", 0.5, 0.45, 1.0)  # σ_t√Δt = √(0.05) ≈ 0.224 < 0.45: not capped
    assert std == pytest.approx(math.sqrt(0.05), rel=1e-12)
    k, std = coefficients("cpws", 0.99, 0.01, 1.0)  # σ_t√Δt is huge: capped at t'
    assert std == pytest.approx(0.01) and k == 0.0


@pytest.mark.parametrize("rule", RULES)
def test_no_nan_or_inf_anywhere_on_the_time_grid(rule):
    x = torch.randn(1, 2, 4, 4)
    x0 = torch.randn(1, 2, 4, 4)
    grid = [1.0, 0.999, 0.9, 0.5, 0.1, 1e-3, 1e-6]
    for t in grid:
        for tn in [v for v in grid if v < t] + [0.0]:
            out = step(rule, x, x0, t, tn, eta=1.0, noise=torch.randn_like(x))
            assert torch.isfinite(out.sample).all() and torch.isfinite(out.mean).all(), (t, tn)
            assert torch.isfinite(out.std).all()


def test_bf16_input_returns_bf16_computed_in_float32():
    x = torch.randn(2, 4, 8, 8)
    x0 = torch.randn(2, 4, 8, 8)
    noise = torch.randn(2, 4, 8, 8)
    ref = step("cps", x.bfloat16().float(), x0.bfloat16().float(), 0.7, 0.6, eta=0.8, noise=noise)
    out = step("cps", x.bfloat16(), x0.bfloat16(), 0.7, 0.6, eta=0.8, noise=noise)
    assert out.sample.dtype == torch.bfloat16 and out.mean.dtype == torch.bfloat16
    assert out.std.dtype == torch.float32
    torch.testing.assert_close(out.sample.float(), ref.sample.bfloat16().float())


def test_eta_as_zero_dim_tensor_and_float32_tensor_t():
    x, x0, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    a = step("precise", x, x0, 0.7, 0.5, eta=1.5, noise=noise)
    b = step("precise", x, x0, torch.tensor(0.7), torch.tensor(0.5), eta=torch.tensor(1.5), noise=noise)
    c = step("precise", x, x0, torch.full((3,), 0.7), torch.full((3,), 0.5), eta=1.5, noise=noise)
    torch.testing.assert_close(a.sample, b.sample)
    torch.testing.assert_close(a.sample, c.sample)


@pytest.mark.parametrize("kwargs,match", [
    (dict(rule="ddim"), "valid rules are: ode, flow_sde, dance_sde, cps, cpws, precise"),
    (dict(rule="cps", eta=1.2), r"eta in \[0, 1\]"),
    (dict(rule="cpws", eta=1.01), r"eta in \[0, 1\]"),
    (dict(rule="precise", eta=-0.1), "eta must be >= 0"),
    (dict(rule="flow_sde", eta=float("nan")), "finite"),
    (dict(t=0.5, t_next=0.5), "t_next must be smaller than t"),
    (dict(t=0.5, t_next=0.7), "t_next must be smaller than t"),
    (dict(t=1.2, t_next=0.5), r"t must lie in \(0, 1\]"),
    (dict(t=0.0, t_next=0.0), r"t must lie in \(0, 1\]"),
    (dict(t=0.5, t_next=-0.1), "t_next must be >= 0"),
    (dict(t=torch.tensor([0.5, 0.4]), t_next=torch.tensor([0.3, 0.45])), "t_next must be smaller than t"),
    (dict(noise=None), "rule 'cps' is stochastic"),
])
def test_validation_errors(kwargs, match):
    x = torch.randn(2, 2, 4, 4)
    args = dict(rule="cps", t=0.8, t_next=0.6, eta=0.5, noise=torch.randn_like(x))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        step(args["rule"], x, torch.zeros_like(x), args["t"], args["t_next"], eta=args["eta"], noise=args["noise"])


def test_shape_errors():
    x = torch.randn(2, 2, 4, 4)
    with pytest.raises(ValueError, match="denoised has shape"):
        step("ode", x, torch.zeros(2, 2, 4, 3), 0.5, 0.4, eta=0.0)
    with pytest.raises(ValueError, match=r"per-sample t/eta must have shape \[B\] = \[2\]"):
        step("ode", x, x, torch.tensor([0.5, 0.5, 0.5]), 0.4, eta=0.0)
    with pytest.raises(ValueError, match="noise has shape"):
        step("cps", x, x, 0.5, 0.4, eta=0.5, noise=torch.zeros(2, 2, 4, 5))
