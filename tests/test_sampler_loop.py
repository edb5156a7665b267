"""The sampling loop on analytic models: point masses, Gaussians and Gaussian mixtures with closed-form x̂0."""
import math

import pytest
import torch

from samplers import (DEFAULT_ETA, StepNoise, comfy_normal, flow_schedule, log_prob, noise_levels, sample_flow,
                      sd3_schedule, step)


def point_mass(x0):
    return lambda x, t: x0.expand_as(x).to(x.dtype)


def gaussian_posterior_mean(mean, var):
    """E[x0 | x_t] for x0 ~ N(mean, diag(var)) and x_t = (1 - t) x0 + t ε (per-dimension, last axis)."""
    def denoise(x, t):
        a = 1 - t
        gain = var * a / (a * a * var + t * t)
        return mean + gain * (x - a * mean)
    return denoise


def mixture_posterior_mean(points, weights=None):
    """E[x0 | x_t] for data = the given points (rows), exact softmax over ‖x_t − (1 − t) d_i‖² / (2t²)."""
    log_w = torch.zeros(len(points), dtype=points.dtype) if weights is None else weights.log()

    def denoise(x, t):
        d2 = ((x[:, None, :] - (1 - t) * points[None]) ** 2).sum(-1)
        w = torch.softmax(log_w - d2 / (2 * t * t), dim=1)
        return w @ points
    return denoise


@pytest.mark.parametrize("rule", ["ode", "cps", "cpws", "precise", "flow_sde", "dance_sde"])
@pytest.mark.parametrize("steps", [4, 10, 25])
def test_point_mass_residual_noise_matches_the_analytic_recursion(rule, steps):
    x0 = torch.full((1, 1, 128, 128), 0.3, dtype=torch.float64)
    times = comfy_normal(steps, shift=3.0).double()
    eta = {"ode": 0.0}.get(rule, DEFAULT_ETA[rule])
    x = (1 - times[0]) * x0 + times[0] * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1),
                                                     dtype=torch.float64)
    final, traj = sample_flow(point_mass(x0), x, times, rule=rule, eta=eta, seed=7, record=True,
                              denoise_last_step=False)
    levels = noise_levels(rule, times, eta)
    for i, sample in enumerate(traj.samples):
        residual = sample - (1 - traj.times[i + 1]) * x0
        expected = levels.accumulated[i]
        if expected == 0:
            assert float(residual.abs().max()) < 1e-12
        else:
            assert float(residual.std()) == pytest.approx(expected, rel=0.02), (i, expected)
    residual = float((final - x0).std())
    if rule in ("ode", "cps", "cpws", "precise"):
        assert residual < 1e-12
    else:
        assert residual > 1e-3 and residual == pytest.approx(levels.accumulated[-1], rel=0.02)


def test_dance_sde_ends_with_denoised_by_default_and_flow_sde_keeps_its_residual():
    x0 = torch.full((1, 1, 64, 64), -0.2)
    times = comfy_normal(10)
    x = torch.randn(1, 1, 64, 64)
    final, traj = sample_flow(point_mass(x0), x, times, rule="dance_sde", seed=3, record=True)
    torch.testing.assert_close(final, x0)
    assert traj.rules[-1] == "ode" and traj.stochastic_steps == list(range(9))
    final_raw = sample_flow(point_mass(x0), x, times, rule="dance_sde", seed=3, denoise_last_step=False)
    assert float((final_raw - x0).std()) > 1.0  # reference §6: the σ²/(2t) term amplifies what noise is left
    final_sde = sample_flow(point_mass(x0), x, times, rule="flow_sde", seed=3)
    assert 0.005 < float((final_sde - x0).std()) < 0.05  # reference §6: ≈ 0.02, kept on purpose


def run_gaussian(rule, eta, steps, n=20000, seed=0, schedule="normal", shift=1.0):
    mean = torch.tensor([0.5, -0.3], dtype=torch.float64)
    var = torch.tensor([0.25, 0.09], dtype=torch.float64)
    times = flow_schedule(steps, shift, schedule).double()
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = sample_flow(gaussian_posterior_mean(mean, var), x, times, rule=rule, eta=eta, seed=seed + 1)
    return out, mean, var


@pytest.mark.parametrize("rule,eta,steps", [("ode", 0.0, 200), ("cps", 0.15, 200), ("precise", 1.5, 200),
                                            ("precise", math.sqrt(2), 200), ("cpws", 0.7, 200)])
def test_gaussian_data_statistics_are_recovered(rule, eta, steps):
    out, mean, var = run_gaussian(rule, eta, steps)
    torch.testing.assert_close(out.mean(0), mean, atol=0.015, rtol=0)
    torch.testing.assert_close(out.var(0), var, atol=0.0, rtol=0.06)


def test_cps_contracts_the_marginal_on_gaussian_data():
    """Reference §6: at 10 normal steps the final variance (data: 0.25) is ≈ 0.12 for CPS η=0.8, ≈ 0.14 for
    CPWS 0.7 and Precise 1.5, and ≈ 0.23 for Flow-SDE 0.7."""
    got = {rule: float(run_gaussian(rule, eta, 10)[0][:, 0].var())
           for rule, eta in [("cps", 0.8), ("cpws", 0.7), ("precise", 1.5), ("flow_sde", 0.7)]}
    assert got["cps"] == pytest.approx(0.12, abs=0.02)
    assert got["cpws"] == pytest.approx(0.14, abs=0.02)
    assert got["precise"] == pytest.approx(0.14, abs=0.02)
    assert got["flow_sde"] == pytest.approx(0.23, abs=0.025)
    assert got["cps"] < got["precise"] < got["flow_sde"]


def test_mixture_data_ode_and_precise_find_the_modes():
    points = torch.tensor([[1.0, 1.0], [-1.0, 0.5], [0.0, -1.2]], dtype=torch.float64)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    times = comfy_normal(60).double()
    x = torch.randn(6000, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for rule, eta in [("ode", 0.0), ("precise", 1.5), ("cps", 0.5)]:
        out = sample_flow(mixture_posterior_mean(points, weights), x, times, rule=rule, eta=eta, seed=9)
        nearest = torch.cdist(out, points).min(dim=1)
        assert float(nearest.values.max()) < 0.05, rule  # every sample lands on a data point
        freq = torch.bincount(nearest.indices, minlength=3).double() / len(out)
        torch.testing.assert_close(freq, weights, atol=0.03, rtol=0)


def test_log_prob_expectation_is_minus_the_gaussian_entropy():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 128, 128, dtype=torch.float64, generator=gen)
    x0 = torch.randn(4, 3, 128, 128, dtype=torch.float64, generator=gen)
    for rule, t, tn in [("cps", 0.8, 0.6), ("flow_sde", 0.5, 0.4), ("precise", 0.3, 0.1)]:
        # the per-element mean of z²/2 has std √(0.5 / 49152) ≈ 0.0032: 0.015 is a 4.7σ band
        out = step(rule, x, x0, t, tn, eta=0.7, noise=torch.randn(x.shape, dtype=x.dtype, generator=gen))
        lp = log_prob(out.sample, out.mean, out.std)
        entropy = 0.5 * math.log(2 * math.pi * math.e) + math.log(float(out.std))
        torch.testing.assert_close(lp, torch.full((4,), -entropy, dtype=torch.float64), atol=0.015, rtol=0)


def test_same_seed_same_samples_and_different_seed_differs():
    x0 = torch.randn(2, 4, 16, 16)
    x = torch.randn(2, 4, 16, 16)
    times = comfy_normal(8, 3.0)
    a = sample_flow(point_mass(x0 * 0.1), x, times, rule="cps", seed=123)
    b = sample_flow(point_mass(x0 * 0.1), x, times, rule="cps", seed=123)
    assert torch.equal(a, b)
    _, ta = sample_flow(point_mass(x0), x, times, rule="cps", seed=123, record=True)
    _, tc = sample_flow(point_mass(x0), x, times, rule="cps", seed=124, record=True)
    assert not torch.allclose(ta.samples[0], tc.samples[0])  # the path depends on the seed


def test_step_noise_is_independent_of_the_initial_noise_stream():
    seed, shape = 42, (1, 4, 64, 64)
    torch.manual_seed(seed)
    initial = torch.randn(shape)  # how ComfyUI draws the initial latent noise
    naive = torch.randn(shape, generator=torch.Generator().manual_seed(seed))  # default_noise_sampler's first draw
    assert torch.equal(initial, naive)  # the pitfall this guards against is real
    noise = StepNoise(seed)
    like = torch.empty(shape)
    for i in range(3):
        corr = torch.corrcoef(torch.stack([initial.flatten(), noise(i, like).flatten()]))[0, 1]
        assert abs(float(corr)) < 0.02
    assert torch.equal(noise(0, like), StepNoise(seed)(0, like))
    assert not torch.allclose(noise(0, like), noise(1, like))


def test_per_sample_seeds_do_not_depend_on_batch_composition():
    like = torch.empty(3, 2, 8, 8)
    batch = StepNoise([11, 12, 13])(4, like)
    alone = StepNoise([12])(4, like[:1])
    torch.testing.assert_close(batch[1:2], alone)
    with pytest.raises(ValueError, match="3 per-sample seeds but the batch has 2"):
        StepNoise([1, 2, 3])(0, like[:2])


def test_sde_window_runs_ode_outside_and_records_rules():
    x0 = torch.randn(1, 2, 8, 8)
    x = torch.randn(1, 2, 8, 8)
    times = comfy_normal(10, 3.0)
    _, traj = sample_flow(point_mass(x0), x, times, rule="flow_sde", eta=0.7, window=(2, 5), seed=1, record=True)
    assert traj.rules == ["ode"] * 2 + ["flow_sde"] * 3 + ["ode"] * 5
    assert traj.stochastic_steps == [2, 3, 4]
    assert [float(s) for s in traj.stds[:2]] == [0.0, 0.0]
    ode_part = sample_flow(point_mass(x0), x, times[:3], rule="ode")
    torch.testing.assert_close(traj.samples[1], ode_part)
    assert traj.log_probs().shape == (3, 1)
    with pytest.raises(ValueError, match="SDE window"):
        sample_flow(point_mass(x0), x, times, rule="cps", window=(5, 11))


def test_per_step_eta_is_used_step_by_step():
    x0 = torch.randn(2, 2, 8, 8)
    x = torch.randn(2, 2, 8, 8)
    times = comfy_normal(4, 3.0)
    etas = [0.9, 0.0, 0.3, 0.5]
    out, traj = sample_flow(point_mass(x0), x, times, rule="cps", eta=etas, seed=5, record=True)
    noise = StepNoise(5)
    manual = x
    for i in range(4):
        manual = step("cps", manual, x0, float(times[i]), float(times[i + 1]), eta=etas[i],
                      noise=noise(i, manual)).sample
    torch.testing.assert_close(out, manual)
    assert traj.rules == ["cps", "ode", "cps", "cps"] and traj.etas == [0.9, 0.0, 0.3, 0.5]
    with pytest.raises(ValueError, match="per-step eta has 3 values but the schedule has 4 steps"):
        sample_flow(point_mass(x0), x, times, rule="cps", eta=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"eta in \[0, 1\]"):
        sample_flow(point_mass(x0), x, times, rule="cps", eta=[0.1, 0.2, 1.3, 0.1])


def test_bf16_loop_keeps_dtype_and_records_float32_means():
    x0 = torch.randn(2, 4, 8, 8).bfloat16()
    x = torch.randn(2, 4, 8, 8).bfloat16()
    out, traj = sample_flow(point_mass(x0), x, sd3_schedule(6), rule="precise", seed=0, record=True)
    assert out.dtype == torch.bfloat16 and all(s.dtype == torch.bfloat16 for s in traj.samples)
    assert all(m.dtype == torch.float32 for m in traj.means)
    assert torch.isfinite(traj.log_probs()).all()


def test_callback_gets_k_diffusion_keys_every_step():
    seen = []
    x = torch.randn(1, 1, 4, 4)
    sample_flow(point_mass(torch.zeros(1, 1, 4, 4)), x, comfy_normal(5), rule="cps", seed=0,
                callback=lambda d: seen.append((d["i"], d["sigma"], tuple(d["x"].shape), d["denoised"].shape)))
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4]
    assert seen[0][1] == 1.0


@pytest.mark.parametrize("times,match", [([1.0], "at least two"), ([1.0, 1.0, 0.0], "decrease strictly"),
                                         ([1.5, 0.5, 0.0], r"start in \(0, 1\]"), ([0.9, 0.5, -0.1], "end >= 0")])
def test_schedule_validation(times, match):
    with pytest.raises(ValueError, match=match):
        sample_flow(point_mass(torch.zeros(1, 1, 2, 2)), torch.randn(1, 1, 2, 2), times, rule="ode")


def test_partial_schedule_like_denoise_below_one():
    x0 = torch.randn(1, 2, 8, 8)
    times = comfy_normal(10)[4:]
    x = (1 - times[0]) * x0 + times[0] * torch.randn(1, 2, 8, 8)
    out = sample_flow(point_mass(x0), x, times, rule="cps", seed=2)
    torch.testing.assert_close(out, x0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rule", ["cps", "cpws", "precise", "flow_sde"])
def test_noise_scale_multiplies_the_fresh_noise_and_the_recorded_std(rule):
    """ComfyUI's model_sampling.noise_scale s: noise ~ N(0, s²). The step's std (and its noise) scale by s, the mean
    does not; with the same noise stream, sample − mean is exactly s times the unscaled one."""
    torch.manual_seed(0)
    times = comfy_normal(6, shift=3.0).double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    denoise = gaussian_posterior_mean(torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.25, dtype=torch.float64))
    _, plain = sample_flow(denoise, x, times, rule=rule, seed=5, record=True)
    _, scaled = sample_flow(denoise, x, times, rule=rule, seed=5, record=True, noise_scale=2.5)
    i = 0  # the first step starts from the same x, so its mean is the same
    assert torch.equal(scaled.means[i], plain.means[i])
    assert torch.allclose(scaled.stds[i], 2.5 * plain.stds[i], rtol=0, atol=0)
    assert torch.allclose(scaled.samples[i] - scaled.means[i], 2.5 * (plain.samples[i] - plain.means[i]),
                          rtol=1e-6, atol=1e-7)  # the float32 noise times s is rounded once


@pytest.mark.parametrize("rule", ["cps", "cpws", "precise"])
def test_coefficient_preserving_rules_keep_the_scaled_noise_level_on_schedule(rule):
    """Point mass at 0 with noise prior N(0, s²): x_t = t·s·ε, so a coefficient-preserving step must leave exactly
    t'·s of noise."""
    s = 0.6
    times = comfy_normal(5, shift=1.0).double()
    x = times[0] * s * torch.randn((1, 1, 256, 256), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    _, traj = sample_flow(point_mass(torch.zeros(1, dtype=torch.float64)), x, times, rule=rule, seed=9,
                          record=True, noise_scale=s)
    for i, sample in enumerate(traj.samples[:-1]):
        assert float(sample.std()) == pytest.approx(float(times[i + 1]) * s, rel=0.01), i


def test_noise_scale_must_be_positive():
    with pytest.raises(ValueError, match="noise_scale"):
        sample_flow(point_mass(torch.zeros(1)), torch.zeros(1, 1, 2, 2), [1.0, 0.0], rule="cps", noise_scale=0.0)


@pytest.mark.parametrize("rule", ["ode", "flow_sde", "dance_sde", "cps", "cpws", "precise"])
def test_stochastic_steps_known_before_sampling_match_the_trajectory(rule):
    from samplers.loop import stochastic_steps
    x0 = torch.full((2, 3), 0.25)
    cases = [(flow_schedule(1, 1.0, "normal"), None, None), (flow_schedule(2, 3.0, "normal"), None, None),
             (flow_schedule(6, 1.0, "normal"), (2, 6), None), (flow_schedule(6, 1.0, "normal"), None,
                                                                [0.5, 0.0, 0.5, 0.5, 0.0, 0.5])]
    seen = set()
    for times, window, eta in cases:
        if eta is not None and rule in ("cps", "cpws"):
            eta = [min(e, 1.0) for e in eta]
        x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0)) * float(times[0])
        _, trajectory = sample_flow(point_mass(x0), x, times, rule=rule, eta=eta, window=window, seed=1, record=True)
        planned = stochastic_steps(times, rule=rule, eta=eta, window=window)
        assert planned == trajectory.stochastic_steps, (times.tolist(), window, eta)
        seen.add(tuple(planned))
    n = len(flow_schedule(6, 1.0, "normal")) - 1
    expected_last = {"ode": [], "flow_sde": [0], "dance_sde": [], "cps": [], "cpws": [], "precise": []}
    assert stochastic_steps(flow_schedule(1, 1.0, "normal"), rule=rule) == expected_last[rule]  # one step into t' = 0
    if rule != "ode":
        last = n - 1 if rule == "flow_sde" else n - 2
        assert stochastic_steps(flow_schedule(6, 1.0, "normal"), rule=rule)[-1] == last
    assert len(seen) >= (1 if rule == "ode" else 3)
