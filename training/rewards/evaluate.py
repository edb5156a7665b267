"""Scoring with any reward callable, images or videos: the one entry point the trainer, the monitor and the combining
rewards call."""
from __future__ import annotations

from typing import Sequence

import torch

from .base import RewardFn, RewardResult, evaluate_image_reward
from .video import evaluate_video_reward


def evaluate_reward(reward: RewardFn, images: torch.Tensor, prompts: Sequence[str]) -> RewardResult:
    """Score with any reward callable, applying the contract's checks to plain functions too. Videos
    [B, T, H, W, C] go to :func:`video.evaluate_video_reward` (frame by frame, mean, unless the reward takes
    videos)."""
    if isinstance(images, torch.Tensor) and images.dim() == 5:
        return evaluate_video_reward(reward, images, prompts)
    return evaluate_image_reward(reward, images, prompts)


__all__ = ["evaluate_reward"]
