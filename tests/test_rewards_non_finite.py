"""Every reward refuses NaN/inf images (naming the reward and the images) instead of scoring them, and a reward that
returns None or something that is not a tensor gets a clear error. Without the guard the JPEG rewards score a NaN
image as an ordinary value (the first test shows it), so training would go on with NaN advantages."""
import importlib.util

import pytest
import torch

from training.rewards import (CombinedReward, DigitReward, FrameReward, RewardError, WEIGHT_FREE_REWARDS,
                              evaluate_reward, evaluate_video_reward, weight_free_reward)
from training.rewards.weight_free import JpegCompressibility

HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
HAS_RAPIDOCR = importlib.util.find_spec("rapidocr") is not None


def broken_batch(h=32, w=32, channels=3):
    """Four images; 1 holds a NaN pixel, 3 an inf one."""
    images = torch.rand(4, h, w, channels, generator=torch.Generator().manual_seed(0))
    images[1, 3, 4, 0] = float("nan")
    images[3, 0, 0, -1] = float("inf")
    return images


def test_without_the_guard_a_jpeg_reward_scores_nan_images_as_ordinary_values():
    images = broken_batch()
    raw, _ = JpegCompressibility().compute(images, ["x"] * 4)
    assert torch.isfinite(raw).all()  # this is why the contract has to check the images itself
    with pytest.raises(RewardError, match=r"reward 'jpeg_compressibility' got non-finite .* image\(s\) \[1, 3\] of 4"):
        JpegCompressibility()(images, ["x"] * 4)


def counting(reward):
    calls = []

    def compute(images, prompts):
        calls.append(len(prompts))
        return reward.__class__.compute(reward, images, prompts)

    reward.compute = compute
    return reward, calls


def shipped_rewards(tmp_path_factory):
    rewards = [weight_free_reward(name) for name in WEIGHT_FREE_REWARDS]
    rewards.append(DigitReward())
    if HAS_TRANSFORMERS:
        from clip_fixtures import make_tiny_reward_models
        from training.rewards import load_clip_reward
        root = tmp_path_factory.mktemp("reward_models")
        make_tiny_reward_models(root)
        rewards += [load_clip_reward(name, root) for name in ("pickscore", "clipscore", "aesthetic", "hpsv2")]
    if HAS_RAPIDOCR:
        from training.rewards import OCRReward
        rewards.append(OCRReward())
    rewards.append(CombinedReward([weight_free_reward("colorfulness"), lambda images, prompts: images.mean((1, 2, 3))],
                                  weights=[1.0, 0.5]))
    return rewards


@pytest.fixture(scope="module")
def rewards(tmp_path_factory):
    return shipped_rewards(tmp_path_factory)


def test_every_shipped_reward_rejects_non_finite_images_before_scoring(rewards):
    names = [r.name for r in rewards]
    assert len(names) >= 7 + 4 * HAS_TRANSFORMERS + HAS_RAPIDOCR, names
    images, prompts = broken_batch(), ['a handwritten 3 "HI"'] * 4
    for reward in rewards:
        reward, calls = counting(reward)
        for score in (reward, reward.evaluate, lambda i, p, r=reward: evaluate_reward(r, i, p)):
            with pytest.raises(RewardError) as error:
                score(images, prompts)
            message = str(error.value)
            assert f"reward '{reward.name}'" in message and "image(s) [1, 3] of 4" in message, message
        assert calls == []  # refused before compute ran
        good = reward.evaluate(images[[0, 2]], prompts[:2]).rewards  # the finite images still score
        assert good.shape == (2,) and torch.isfinite(good).all() and calls == [2]


def test_plain_callables_and_videos_are_checked_too():
    calls = []

    def mean_brightness(images, prompts):
        calls.append(images.shape)
        return images.mean(dim=(1, 2, 3))

    images = broken_batch()
    with pytest.raises(RewardError, match=r"reward 'mean_brightness' got non-finite .* image\(s\) \[1, 3\] of 4"):
        evaluate_reward(mean_brightness, images, ["a"] * 4)
    with pytest.raises(RewardError, match=r"reward '<lambda>' got non-finite"):
        evaluate_reward(lambda i, p: torch.zeros(len(p)), images, ["a"] * 4)
    videos = torch.rand(3, 5, 8, 8, 3, generator=torch.Generator().manual_seed(1))
    videos[2, 4, 0, 0, 0] = float("nan")  # the last frame of the last video
    for score in (lambda: evaluate_video_reward(mean_brightness, videos, ["a"] * 3),
                  lambda: FrameReward(weight_free_reward("sharpness"), "first")(videos, ["a"] * 3),
                  lambda: FrameReward(mean_brightness).evaluate(videos, ["a"] * 3)):
        with pytest.raises(RewardError, match=r"got non-finite values \(NaN/inf\) in video\(s\) \[2\] of 3"):
            score()
    assert calls == []
    scores = evaluate_video_reward(mean_brightness, videos[:2], ["a"] * 2).rewards
    torch.testing.assert_close(scores, videos[:2].mean(dim=(1, 2, 3, 4)))


def test_a_reward_returning_none_or_no_numbers_gets_a_clear_error():
    images = torch.rand(2, 4, 4, 3)

    def forgot_return(images, prompts):
        images.mean()

    with pytest.raises(RewardError, match=r"reward 'forgot_return' returned None; it must return a tensor of 2"):
        evaluate_reward(forgot_return, images, ["a", "b"])
    with pytest.raises(RewardError, match=r"reward '<lambda>' returned list, which is not a tensor of 2 numbers"):
        evaluate_reward(lambda i, p: [None, 1.0], images, ["a", "b"])
    with pytest.raises(RewardError, match=r"returned None"):
        evaluate_video_reward(type("Whole", (), {"accepts_video": True, "name": "whole",
                                                 "__call__": lambda self, v, p: None})(),
                              torch.rand(2, 3, 4, 4, 3), ["a", "b"])
    assert evaluate_reward(lambda i, p: [0.5, 1.0], images, ["a", "b"]).rewards.tolist() == [0.5, 1.0]
