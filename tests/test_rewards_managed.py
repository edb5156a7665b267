"""Rewards a host places (ComfyUI model management): placement before every score, the same scores, never scored
in a worker thread; and the trainer hands the model back to the sampler, from the sampling thread, after every
decode and reward."""
import threading

import pytest
import torch

from grpo_fixtures import brightness, make_trainer
from training.rewards import (CombinedReward, DigitReward, FrameReward, ManagedReward, evaluate_reward,
                              reward_models, weight_free_reward)


def digit_images(seed=0, batch=3):
    return torch.rand(batch, 16, 16, 3, generator=torch.Generator().manual_seed(seed))


def test_a_managed_reward_places_its_models_before_every_score_and_scores_the_same():
    inner = DigitReward()
    places = []
    managed = ManagedReward(inner, lambda: places.append(1) or torch.device("cpu"))
    images, prompts = digit_images(), ["a 3", "a 5", "a 7"]
    for call in range(1, 3):
        result = evaluate_reward(managed, images, prompts)
        assert len(places) == call
        assert torch.equal(result.rewards, inner(images, prompts))
        assert result.details["predicted"] == inner.evaluate(images, prompts).details["predicted"]
    videos = torch.rand(2, 4, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    frame_scores = evaluate_reward(managed, videos, ["a 1", "a 2"]).rewards
    assert len(places) == 3  # once per call, not once per frame
    torch.testing.assert_close(frame_scores, evaluate_reward(inner, videos, ["a 1", "a 2"]).rewards)
    assert managed.name == "digit" and not managed.thread_safe and managed.models() == []


def test_thread_safety_and_models_compose_through_combinations_and_frames():
    digit, jpeg = DigitReward(), weight_free_reward("jpeg_compressibility")
    assert digit.thread_safe and jpeg.thread_safe and weight_free_reward("low_noise").thread_safe
    assert CombinedReward([digit, jpeg]).thread_safe and FrameReward(digit).thread_safe
    assert not CombinedReward([jpeg, brightness]).thread_safe  # a plain function may touch anything
    managed = ManagedReward(digit, lambda: torch.device("cpu"))
    assert not CombinedReward([jpeg, managed]).thread_safe and not FrameReward(managed).thread_safe
    assert reward_models(CombinedReward([digit, jpeg, digit])) == [digit.classifier]  # each module once
    assert reward_models(FrameReward(digit)) == [digit.classifier]
    assert reward_models(CombinedReward([managed, jpeg])) == []  # placed already: never placed twice
    assert reward_models(brightness) == [] and reward_models(jpeg) == []


class RestoringPolicy:
    """The toy policy, recording decode / restore_model calls and the threads they come from."""

    def __init__(self, policy, events):
        self._policy, self.events = policy, events

    def __getattr__(self, name):
        return getattr(self._policy, name)

    def decode(self, latents):
        self.events.append(("decode", threading.current_thread().name))
        return self._policy.decode(latents)

    def restore_model(self):
        self.events.append(("restore", threading.current_thread().name))


@pytest.mark.parametrize("overlap, dense", [(False, False), (True, False), (False, True)])
def test_the_trainer_restores_the_model_after_every_decode_from_the_sampling_thread(overlap, dense):
    events, rewarded = [], []

    class Reward:
        thread_safe = overlap

        def __call__(self, images, prompts):
            rewarded.append(threading.current_thread().name)
            return brightness(images, prompts)
    trainer = make_trainer(iterations=1, sample_batch_size=3, steps=4, overlap_reward=overlap, dense_rewards=dense)
    trainer.reward_fn = Reward()
    trainer.policy = RestoringPolicy(trainer.policy, events)
    trainer.rollout(0)
    main = threading.current_thread().name
    decodes = [k for k, (kind, _) in enumerate(events) if kind == "decode"]
    micro_batches, look_aheads = 3, (3 * 4 if dense else 0)
    assert len(decodes) == micro_batches + look_aheads and all(thread == main for _, thread in events)
    for k in decodes:  # each decode is followed by a restore before anything else samples or decodes
        assert events[k + 1][0] == "restore"
    assert len(events) == 2 * len(decodes)
    assert any(name != main for name in rewarded) == overlap
