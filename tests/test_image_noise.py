"""The wavelet residual-noise estimate recovers injected noise."""
import math

import pytest
import torch

from samplers.image_noise import estimate_noise, estimate_noise_chw, haar_diagonal


def smooth_image(size=256, channels=3):
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = 0.5 + 0.25 * torch.sin(2 * math.pi * 1.5 * x) * torch.cos(2 * math.pi * y)
    return torch.stack([base, 0.8 * base + 0.1, 1 - base][:channels], dim=-1)[None]


@pytest.mark.parametrize("sigma", [0.01, 0.03, 0.1, 0.2])
def test_recovers_injected_gaussian_noise_within_ten_percent(sigma):
    gen = torch.Generator().manual_seed(3)
    clean = smooth_image()
    noisy = clean + sigma * torch.randn(clean.shape, generator=gen)  # unclipped: the estimate's own accuracy
    assert float(estimate_noise(noisy)[0]) == pytest.approx(sigma, rel=0.1)


def test_clean_images_score_near_zero_and_order_is_kept():
    clean = smooth_image()
    gen = torch.Generator().manual_seed(0)
    batch = torch.cat([clean, (clean + 0.02 * torch.randn(clean.shape, generator=gen)).clamp(0, 1),
                       (clean + 0.08 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)])
    est = estimate_noise(batch)
    assert est.shape == (3,)
    assert float(est[0]) < 1e-3 and float(est[0]) < float(est[1]) < float(est[2])


def test_haar_diagonal_is_orthonormal_on_white_noise_and_cancels_linear_ramps():
    noise = torch.randn(1, 1, 512, 512, generator=torch.Generator().manual_seed(1))
    assert float(haar_diagonal(noise).std()) == pytest.approx(1.0, rel=0.02)
    ramp = torch.linspace(0, 1, 64)[None, None, None, :] + torch.linspace(0, 1, 64)[None, None, :, None]
    assert float(haar_diagonal(ramp).abs().max()) < 1e-6
    assert estimate_noise_chw(noise).shape == (1,)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"IMAGE tensors \[B, H, W, C\]"):
        estimate_noise(torch.zeros(8, 8, 3))
    with pytest.raises(ValueError, match="H, W >= 2"):
        estimate_noise_chw(torch.zeros(1, 1, 1, 8))


def nearest_upscale(x, k):
    return x.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)


def test_nearest_neighbour_upscales_are_measured_at_their_native_resolution():
    from samplers.image_noise import nearest_upscale_factor
    g = torch.Generator().manual_seed(4)
    native = 0.5 + 0.05 * torch.randn(3, 3, 16, 16, generator=g)
    assert [nearest_upscale_factor(nearest_upscale(native[0], k)) for k in (1, 2, 3, 8)] == [1, 2, 3, 8]
    assert nearest_upscale_factor(nearest_upscale(torch.rand(1, 5, 7, generator=g), 3)) == 3  # 15×21, odd factor
    expected = estimate_noise_chw(native)
    torch.testing.assert_close(estimate_noise_chw(nearest_upscale(native, 8)), expected)
    assert float(estimate_noise_chw(nearest_upscale(native, 8), native=False).max()) == 0.0  # what it read before
    assert float(expected.min()) == pytest.approx(0.05, rel=0.25)


def test_a_hazy_toy_image_scores_worse_than_a_clean_one():
    """The toy decode is an 8× nearest-neighbour upscale of 16×16 ink; the haze GRPO can add is a faint, blotchy grey
    on the white paper at latent resolution."""
    from training.rewards import weight_free_reward
    paper = torch.ones(1, 16, 16)
    paper[:, 3:13, 7:9] = 0.0  # a "1"
    haze = 0.04 * torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))
    clean = nearest_upscale(paper, 8)
    hazy = nearest_upscale((paper - haze * (paper > 0.5)).clamp(0, 1), 8)
    images = torch.stack([clean, hazy]).movedim(1, -1).expand(-1, -1, -1, 3)
    sigma = estimate_noise(images)
    assert float(sigma[0]) == 0.0 and float(sigma[1]) > 0.005, sigma
    low_noise = weight_free_reward("low_noise")(images, ["a 1", "a 1"])
    assert float(low_noise[1]) < float(low_noise[0])
