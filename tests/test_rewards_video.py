"""Video rewards: an image reward over frames (mean by default), other reductions, whole-video rewards."""
import pytest
import torch

from training.rewards import FrameReward, RewardError, evaluate_reward
from training.rewards.weight_free import weight_free_reward


def brightness(images, prompts):
    return images.mean(dim=(1, 2, 3))


def videos():
    # 2 videos × 3 frames of constant brightness 0.1·(frame + 1) and 0.5
    frames = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]])
    return frames[:, :, None, None, None].expand(2, 3, 4, 4, 3).clone()


def test_an_image_reward_scores_a_video_as_the_mean_over_its_frames():
    result = evaluate_reward(brightness, videos(), ["a", "b"])
    assert torch.allclose(result.rewards, torch.tensor([0.2, 0.5]))
    assert result.rewards.shape == (2,)


@pytest.mark.parametrize("reduction, expected", [("min", [0.1, 0.5]), ("max", [0.3, 0.5]), ("first", [0.1, 0.5]),
                                                 ("middle", [0.2, 0.5]), ("last", [0.3, 0.5])])
def test_frame_reductions(reduction, expected):
    result = FrameReward(brightness, reduction).evaluate(videos(), ["a", "b"])
    assert torch.allclose(result.rewards, torch.tensor(expected))
    assert len(result.details["frame_rewards"]) == 2 and len(result.details["frame_rewards"][0]) == 3


def test_each_frame_is_scored_with_its_videos_prompt():
    seen = []

    def reward(images, prompts):
        seen.extend(prompts)
        return torch.zeros(len(prompts))
    evaluate_reward(reward, videos(), ["cat", "dog"])
    assert seen == ["cat"] * 3 + ["dog"] * 3


def test_a_reward_that_takes_videos_gets_them_whole():
    def motion(clips, prompts):
        return (clips[:, 1:] - clips[:, :-1]).abs().mean(dim=(1, 2, 3, 4))
    motion.accepts_video = True
    result = evaluate_reward(motion, videos(), ["a", "b"])
    assert torch.allclose(result.rewards, torch.tensor([0.1, 0.0]))


def test_stock_rewards_work_on_videos_and_bad_shapes_are_named():
    result = evaluate_reward(weight_free_reward("colorfulness"), videos(), ["a", "b"])
    assert result.rewards.shape == (2,)
    with pytest.raises(RewardError, match="one prompt per video"):
        evaluate_reward(brightness, videos(), ["a"])
    with pytest.raises(ValueError, match="unknown frame reduction"):
        FrameReward(brightness, "median")
