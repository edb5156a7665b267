"""Weighted reward combination on hand-computed numbers."""
import pytest
import torch

from training.rewards import CombinedReward, Reward, RewardError, z_normalise


def constant(value):
    def reward(images, prompts):
        return torch.full((images.shape[0],), float(value))
    reward.name = f"const{value}"
    return reward


def listed(values, name):
    def reward(images, prompts):
        return torch.tensor(values, dtype=torch.float32)
    reward.name = name
    return reward


IMAGES = torch.zeros(3, 4, 4, 3)


def test_weighted_sum_and_details():
    combined = CombinedReward([listed([1.0, 2.0, 3.0], "a"), listed([10.0, 0.0, -10.0], "b")], [2.0, 0.5])
    result = combined.evaluate(IMAGES, ["", "", ""])
    assert result.rewards.tolist() == pytest.approx([7.0, 4.0, 1.0])
    assert result.details == {"a": [1.0, 2.0, 3.0], "b": [10.0, 0.0, -10.0]}
    assert combined.name == "2·a+0.5·b"


class Counted(Reward):
    """A Reward subclass with details, to check they pass through prefixed."""

    name = "counted"

    def compute(self, images, prompts):
        return torch.tensor([0.5, 1.5, 2.5]), {"label": ["x", "y", "z"]}


def test_component_details_pass_through_prefixed_and_the_name_can_be_set():
    combined = CombinedReward([Counted(), listed([1.0, 1.0, 1.0], "a")], [4.0, -1.0], name="mix")
    result = combined.evaluate(IMAGES, ["", "", ""])
    assert combined.name == "mix"
    assert result.rewards.tolist() == pytest.approx([1.0, 5.0, 9.0])
    assert result.details == {"counted": [0.5, 1.5, 2.5], "counted.label": ["x", "y", "z"], "a": [1.0, 1.0, 1.0]}


def test_z_normalised_combination_by_hand():
    combined = CombinedReward([listed([1.0, 2.0, 3.0], "a"), listed([10.0, 0.0, -10.0], "b")], [1.0, 1.0],
                              normalize=True)
    # a: mean 2, population std √(2/3) → ±1.2247; b: mean 0, std √(200/3) → ∓1.2247 → sums 0
    assert combined(IMAGES, ["", "", ""]).tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)
    uneven = CombinedReward([listed([1.0, 2.0, 3.0], "a"), listed([0.0, 0.0, 3.0], "b")], [1.0, 2.0], normalize=True)
    za = [-1.2247449, 0.0, 1.2247449]
    zb = [-0.7071068, -0.7071068, 1.4142136]
    assert uneven(IMAGES, ["", "", ""]).tolist() == pytest.approx([a + 2 * b for a, b in zip(za, zb)], abs=1e-5)


def test_constant_reward_normalises_to_zero_not_nan_and_batch_of_one_is_an_error():
    assert z_normalise(torch.tensor([5.0, 5.0, 5.0])).tolist() == [0.0, 0.0, 0.0]
    combined = CombinedReward([constant(5), listed([1.0, 2.0, 3.0], "a")], normalize=True)
    values = combined(IMAGES, ["", "", ""])
    assert torch.isfinite(values).all() and values.tolist() == pytest.approx([-1.2247449, 0.0, 1.2247449], abs=1e-5)
    with pytest.raises(RewardError, match="at least 2 images"):
        combined(IMAGES[:1], [""])


def test_combination_errors_and_duplicate_names():
    with pytest.raises(RewardError, match="2 rewards but 1 weights"):
        CombinedReward([constant(1), constant(2)], [1.0])
    with pytest.raises(RewardError, match="at least one reward"):
        CombinedReward([])
    twice = CombinedReward([constant(1), constant(1)])
    assert set(twice.evaluate(IMAGES, ["", "", ""]).details) == {"const1#0", "const1#1"}
    nan = CombinedReward([listed([0.0, float("nan"), 1.0], "bad")])
    with pytest.raises(RewardError, match="'bad' produced a non-finite value"):
        nan(IMAGES, ["", "", ""])
