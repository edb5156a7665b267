"""log_prob, KL, schedules and the noise-level analysis."""
import math

import pytest
import torch

from samplers import (comfy_normal, comfy_simple, flow_schedule, gaussian_kl_equal_std, log_prob, noise_levels,
                      sd3_schedule, shift_time, step, uniform_schedule)

SD35_10 = [1.0, 0.9601, 0.9133, 0.8577, 0.7904, 0.7073, 0.6022, 0.4649, 0.2780, 0.0089, 0.0]


def test_gaussian_log_prob_is_the_per_element_mean_of_the_normal_density():
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 2, 5, 5, generator=gen)
    sample = mean + 0.3 * torch.randn(3, 2, 5, 5, generator=gen)
    std = torch.tensor([0.2, 0.3, 0.5]).reshape(3, 1, 1, 1)
    expected = torch.distributions.Normal(mean, std.expand_as(mean)).log_prob(sample).mean(dim=(1, 2, 3))
    torch.testing.assert_close(log_prob(sample, mean, std), expected)
    torch.testing.assert_close(log_prob(sample, mean, 0.3),
                               torch.distributions.Normal(mean, 0.3).log_prob(sample).mean(dim=(1, 2, 3)))
    elementwise_std = 0.1 + torch.rand(3, 2, 5, 5, generator=gen)
    torch.testing.assert_close(log_prob(sample, mean, elementwise_std),
                               torch.distributions.Normal(mean, elementwise_std).log_prob(sample).mean(dim=(1, 2, 3)))


def test_cps_eq14_drops_constants_and_the_variance_factor():
    mean = torch.zeros(2, 4)
    sample = torch.tensor([[1.0, -1.0, 2.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
    torch.testing.assert_close(log_prob(sample, mean, 0.01, kind="cps_eq14"), torch.tensor([-1.5, -0.25]))
    # the log-ratio between two means under eq. 14 is the Gaussian one times 2σ² (reference §2)
    std = 0.2
    other = mean + 0.1
    g = log_prob(sample, mean, std) - log_prob(sample, other, std)
    e = log_prob(sample, mean, std, kind="cps_eq14") - log_prob(sample, other, std, kind="cps_eq14")
    torch.testing.assert_close(e, g * 2 * std ** 2)


def test_log_prob_rejects_deterministic_steps_and_unknown_kinds():
    x = torch.randn(2, 3, 4, 4)
    out = step("cps", x, torch.zeros_like(x), 0.1, 0.0, eta=0.8, noise=torch.randn_like(x))
    with pytest.raises(ValueError, match="deterministic transition"):
        log_prob(out.sample, out.mean, out.std)
    with pytest.raises(ValueError, match="deterministic transition"):
        log_prob(out.sample, out.mean, out.std, kind="cps_eq14")
    with pytest.raises(ValueError, match="valid kinds are: gaussian, cps_eq14"):
        log_prob(x, x, 1.0, kind="sum")


def test_kl_equal_std_matches_torch_distributions():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 3, 8, generator=gen), torch.randn(2, 3, 8, generator=gen)
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(a, 0.4),
                                                 torch.distributions.Normal(b, 0.4)).mean(dim=(1, 2))
    torch.testing.assert_close(gaussian_kl_equal_std(a, b, 0.4), expected)
    torch.testing.assert_close(gaussian_kl_equal_std(a, b, 0.4, kind="mse"), (a - b).square().mean(dim=(1, 2)))
    assert torch.equal(gaussian_kl_equal_std(a, a, 0.4), torch.zeros(2))


def test_comfy_normal_and_sd3_reproduce_the_sd35_schedule():
    torch.testing.assert_close(sd3_schedule(10, 3.0), torch.tensor(SD35_10), atol=6e-5, rtol=0)
    torch.testing.assert_close(comfy_normal(10, 3.0), torch.tensor(SD35_10), atol=6e-5, rtol=0)
    torch.testing.assert_close(comfy_normal(28, 3.0), sd3_schedule(28, 3.0), atol=1e-6, rtol=0)


def test_comfy_simple_differs_and_ends_at_quarter():
    simple = comfy_simple(10, 3.0)
    assert float(simple[-2]) == pytest.approx(0.25, abs=1e-6) and float(simple[-1]) == 0.0
    assert float(simple[0]) == 1.0 and len(simple) == 11


def test_shift_and_uniform_schedules():
    assert shift_time(0.5, 3.0) == pytest.approx(0.75)
    assert shift_time(0.5, 1.0) == 0.5
    torch.testing.assert_close(uniform_schedule(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    # shift 1: ComfyUI's normal schedule is linear in t from 1 to 0.001
    torch.testing.assert_close(comfy_normal(4, 1.0)[:-1], torch.linspace(1.0, 0.001, 4), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="valid schedules are: normal, simple, sd3, uniform"):
        flow_schedule(10, 1.0, "karras")
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        flow_schedule(0)
    with pytest.raises(ValueError, match="shift must be > 0"):
        flow_schedule(5, 0.0)


def test_noise_levels_reproduce_the_papers_flow_sde_ratios():
    levels = noise_levels("flow_sde", SD35_10, 0.7)
    expected = [1.04, 1.06, 1.03, 1.02, 1.03, 1.04, 1.07, 1.23, 26.9]
    assert [round(r, 2) for r in levels.ratio[:8]] == pytest.approx(expected[:8], abs=0.011)
    assert levels.ratio[8] == pytest.approx(26.9, abs=0.1)
    assert math.isnan(levels.ratio[9])
    assert levels.ideal == SD35_10[1:]


@pytest.mark.parametrize("rule,eta", [("cps", 0.8), ("cpws", 0.7), ("precise", 1.5), ("ode", 0.0)])
def test_noise_levels_are_on_schedule_for_preserving_rules(rule, eta):
    levels = noise_levels(rule, comfy_normal(12, 3.0), eta)
    assert levels.one_step == pytest.approx(levels.ideal, abs=1e-12)
    assert levels.accumulated == pytest.approx(levels.ideal, abs=1e-12)


def test_noise_levels_window_and_accumulation():
    times = comfy_normal(10, 1.0)
    full = noise_levels("flow_sde", times, 0.7)
    windowed = noise_levels("flow_sde", times, 0.7, window=(0, 3))
    assert windowed.one_step[3:] == pytest.approx(windowed.ideal[3:], abs=1e-12)
    assert full.accumulated[-1] > 0 and windowed.accumulated[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= i for a, i in zip(full.accumulated, full.ideal))
