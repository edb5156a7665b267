"""Weight-free rewards on constructed images with known answers."""
import io

import pytest
import torch
from PIL import Image

from training.rewards import (Colorfulness, JpegCompressibility, JpegIncompressibility, LowNoise, RewardError,
                              Sharpness, evaluate_reward)


def smooth_image(size=128, channels=3):
    """A gentle diagonal gradient: almost no energy in the finest Haar band."""
    ramp = torch.linspace(0.2, 0.8, size)
    grey = (ramp[:, None] + ramp[None, :]) / 2
    return grey[..., None].expand(size, size, channels).clone()


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.1])
def test_low_noise_recovers_injected_sigma_within_ten_percent(sigma):
    generator = torch.Generator().manual_seed(0)
    clean = smooth_image(256)
    noisy = clean + sigma * torch.randn(clean.shape, generator=generator)  # unclipped: the estimate's own domain
    result = LowNoise().evaluate(noisy[None], [""])
    estimate = result.details["sigma"][0]
    assert abs(estimate - sigma) / sigma < 0.10, (estimate, sigma)
    assert result.rewards[0] == pytest.approx(-estimate)


def test_jpeg_rewards_order_smooth_below_noisy_and_match_the_byte_count():
    generator = torch.Generator().manual_seed(1)
    smooth = smooth_image(128)
    noisy = (smooth + 0.2 * torch.randn(smooth.shape, generator=generator)).clamp(0, 1)
    images = torch.stack([smooth, noisy])
    incompressible = JpegIncompressibility().evaluate(images, ["", ""])
    compressible = JpegCompressibility()(images, ["", ""])
    assert incompressible.rewards[0] < incompressible.rewards[1]
    assert compressible[0] > compressible[1]
    assert torch.equal(compressible, -incompressible.rewards)
    buffer = io.BytesIO()
    array = (noisy * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    assert incompressible.rewards[1].item() == pytest.approx(len(buffer.getvalue()) / 1000, abs=1e-6)


def test_colorfulness_is_zero_on_grey_and_matches_a_hand_computation():
    assert Colorfulness()(smooth_image(32)[None], [""]).item() == pytest.approx(0.0, abs=1e-4)
    image = torch.zeros(2, 2, 3)
    image[0, :] = torch.tensor([1.0, 0.0, 0.0])  # red row
    image[1, :] = torch.tensor([0.0, 0.0, 1.0])  # blue row
    # 0–255: red rg=255, yb=127.5; blue rg=0, yb=−255 → σrg=127.5, σyb=191.25, μrg=127.5, μyb=−63.75
    expected = (127.5 ** 2 + 191.25 ** 2) ** 0.5 + 0.3 * (127.5 ** 2 + 63.75 ** 2) ** 0.5
    assert Colorfulness()(image[None], [""]).item() == pytest.approx(expected, rel=1e-5)


def test_sharpness_prefers_a_sharp_edge_and_matches_a_hand_computation():
    edge = torch.zeros(1, 8, 8, 1)
    edge[:, :, 4:] = 1.0
    blurred = edge.clone()
    blurred[:, :, 3] = 1 / 3
    blurred[:, :, 4] = 2 / 3
    sharp_value, blurred_value = Sharpness()(torch.cat([edge, blurred]), ["", ""]).tolist()
    assert sharp_value > blurred_value > 0
    # valid 6×6 Laplacian of the step: column 3 → +1 (left of the edge), column 4 → −1, others 0 → var = 2/6
    assert sharp_value == pytest.approx(1000 * 2 / 6, rel=1e-5)
    assert Sharpness()(torch.full((1, 8, 8, 3), 0.5), [""]).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("reward", [JpegCompressibility(), Colorfulness(), Sharpness(), LowNoise()],
                         ids=lambda r: r.name)
def test_batch_equals_one_by_one_and_grey_and_rgba_inputs_work(reward):
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(3, 48, 40, 3, generator=generator)
    batch = reward(images, ["a", "b", "c"])
    single = torch.cat([reward(images[i:i + 1], ["a"]) for i in range(3)])
    assert torch.allclose(batch, single, atol=1e-5)
    grey = images[..., :1]
    assert torch.allclose(reward(grey, ["", "", ""]), reward(grey.expand(-1, -1, -1, 3), ["", "", ""]), atol=1e-5)
    rgba = torch.cat([images, torch.ones_like(images[..., :1])], dim=-1)
    assert torch.allclose(reward(rgba, ["", "", ""]), batch, atol=1e-5)


def test_contract_errors_name_the_reward():
    with pytest.raises(RewardError, match="'sharpness'.*2 images but 1 prompts"):
        Sharpness()(torch.rand(2, 8, 8, 3), ["one"])
    with pytest.raises(RewardError, match="'sharpness'.*IMAGE tensors"):
        Sharpness()(torch.rand(2, 3, 8, 8), ["", ""])

    def broken(images, prompts):
        return torch.tensor([0.5, float("nan")])

    with pytest.raises(RewardError, match=r"'broken' produced a non-finite value for image\(s\) \[1\]"):
        evaluate_reward(broken, torch.rand(2, 8, 8, 3), ["", ""])
