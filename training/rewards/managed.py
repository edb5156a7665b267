"""Rewards whose models a host places, not the reward itself.

Inside ComfyUI the diffusion model, the VAE and a reward model share one GPU. A :class:`ManagedReward` asks the
host to place the reward's models before every scoring call (ComfyUI: ``load_models_gpu``, which moves other models
off the GPU when they do not all fit) and hands the reward its images on that device. The host's placement is not
thread-safe, so a managed reward always scores in the sampling thread (``thread_safe = False``); the trainer then
asks its policy to put the diffusion model back before it samples again.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .base import Reward, RewardFn, RewardResult, reward_name
from .evaluate import evaluate_reward


class ManagedReward(Reward):
    """``reward`` scored on the device ``place()`` returns after placing the reward's models there."""

    accepts_video = True  # videos go on to the wrapped reward as they are (it scores them frame by frame or whole)
    thread_safe = False

    def __init__(self, reward: RewardFn, place: Callable[[], torch.device]):
        self.reward, self.place = reward, place
        self.name = reward_name(reward)
        self.value_range = getattr(reward, "value_range", None)
        self.noticeable_change = getattr(reward, "noticeable_change", None)

    def evaluate(self, images: torch.Tensor, prompts: Sequence[str]) -> RewardResult:
        device = self.place()
        return evaluate_reward(self.reward, images.to(device) if torch.is_tensor(images) else images, prompts)


__all__ = ["ManagedReward"]
