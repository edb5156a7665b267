"""Rewards for videos ``[B, T, H, W, C]`` (Wan and other video models).

An image reward scores a video frame by frame with the video's prompt; the frames' scores are then reduced per
video, by their mean unless chosen otherwise. A reward that judges whole videos sets ``accepts_video = True`` and
gets the ``[B, T, H, W, C]`` tensor as it is.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .base import (Reward, RewardFn, RewardResult, check_rewards, check_videos, evaluate_image_reward, reward_models,
                   reward_name)

FRAME_REDUCTIONS = ("mean", "min", "max", "first", "middle", "last")


def reduce_frames(scores: torch.Tensor, reduction: str) -> torch.Tensor:
    """[B, T] frame scores → [B]."""
    if reduction == "mean":
        return scores.mean(dim=1)
    if reduction == "min":
        return scores.min(dim=1).values
    if reduction == "max":
        return scores.max(dim=1).values
    index = {"first": 0, "middle": scores.shape[1] // 2, "last": -1}.get(reduction)
    if index is None:
        raise ValueError(f"unknown frame reduction {reduction!r}; choose one of {', '.join(FRAME_REDUCTIONS)}")
    return scores[:, index]


class FrameReward(Reward):
    """Scores videos with an image reward: every frame with its video's prompt, reduced per video."""

    accepts_video = True

    def __init__(self, reward: RewardFn, reduction: str = "mean"):
        if reduction not in FRAME_REDUCTIONS:
            raise ValueError(f"unknown frame reduction {reduction!r}; choose one of {', '.join(FRAME_REDUCTIONS)}")
        self.reward, self.reduction = reward, reduction
        self.name = f"{reward_name(reward)} ({reduction} over frames)"
        self.value_range = getattr(reward, "value_range", None)  # every reduction stays inside the frames' range
        self.noticeable_change = getattr(reward, "noticeable_change", None)

    @property
    def thread_safe(self) -> bool:
        return getattr(self.reward, "thread_safe", False)

    def models(self):
        return reward_models(self.reward)

    def evaluate(self, images: torch.Tensor, prompts: Sequence[str]):
        if images.dim() == 4:  # a plain image batch: score it as the wrapped reward would
            return evaluate_image_reward(self.reward, images, prompts)
        check_videos(images, prompts, self.name)
        batch, frames = images.shape[:2]
        per_frame = evaluate_image_reward(self.reward, images.flatten(0, 1), [p for p in prompts for _ in range(frames)])
        scores = reduce_frames(per_frame.rewards.view(batch, frames), self.reduction)
        details = {"frame_rewards": per_frame.rewards.view(batch, frames).tolist()}
        return RewardResult(check_rewards(scores, batch, self.name), details)


def evaluate_video_reward(reward: RewardFn, videos: torch.Tensor, prompts: Sequence[str]) -> RewardResult:
    """Score videos with any reward: as they are when it ``accepts_video``, else frame by frame (mean)."""
    if not getattr(reward, "accepts_video", False):
        reward = FrameReward(reward)
    if isinstance(reward, Reward):
        return reward.evaluate(videos, prompts)
    name = reward_name(reward)
    check_videos(videos, prompts, name)
    return RewardResult(check_rewards(reward(videos, list(prompts)), videos.shape[0], name))


__all__ = ["FRAME_REDUCTIONS", "FrameReward", "evaluate_video_reward", "reduce_frames", "check_videos"]
