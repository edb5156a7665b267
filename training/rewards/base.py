"""The reward contract: ``reward(images, prompts) -> float32 tensor [B]``.

Images are ComfyUI IMAGE tensors ``[B, H, W, C]`` (C = 1, 3 or 4; float in [0, 1]); prompts are B strings. Videos
``[B, T, H, W, C]`` are scored frame by frame and reduced per video (see video.py) unless the reward sets
``accepts_video``. Like TRL's
reward functions a reward is a plain callable, so a lambda or any function with that signature works wherever a
reward is accepted. Subclasses of :class:`Reward` get input checks, a NaN guard and per-image details for free:
they implement ``compute`` only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence, Tuple, Union

import torch

RewardFn = Callable[[torch.Tensor, Sequence[str]], torch.Tensor]
Details = Dict[str, List]


class RewardError(ValueError):
    """A reward got input it cannot score or produced a non-finite value. The message names the reward."""
    __module__ = "flow_cps"  # ComfyUI shows f"{__module__}.{name}" as the error type; the real one is a folder path


class RewardDependencyMissing(RewardError, ImportError):
    """An optional package (transformers, rapidocr) is not installed; the message has the pip command."""
    __module__ = "flow_cps"  # ComfyUI shows f"{__module__}.{name}" as the error type; the real one is a folder path


@dataclass
class RewardResult:
    rewards: torch.Tensor  # float32 [B]
    details: Details = field(default_factory=dict)  # per-image extras, each list of length B (e.g. recognised text)


def check_images(images: torch.Tensor, prompts: Sequence[str], name: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[-1] not in (1, 3, 4):
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise RewardError(f"reward '{name}' needs IMAGE tensors [B, H, W, C] with C in (1, 3, 4), got {shape}")
    if isinstance(prompts, str):
        raise RewardError(f"reward '{name}' needs a list of prompts (one per image), got a single string")
    if len(prompts) != images.shape[0]:
        raise RewardError(f"reward '{name}' got {images.shape[0]} images but {len(prompts)} prompts; pass one prompt "
                          "per image (repeat the prompt for a batch of one prompt)")
    check_finite_inputs(images, name, "image")


def non_finite_rows(batch: torch.Tensor) -> list:
    """Indices along dim 0 of the rows holding NaN or ±inf."""
    if not batch.is_floating_point() and not batch.is_complex():
        return []
    return (~torch.isfinite(batch)).flatten(1).any(dim=1).nonzero().flatten().tolist()


def check_finite_inputs(batch: torch.Tensor, name: str, kind: str) -> None:
    """Reject NaN/inf images (or videos): many rewards (JPEG size, OCR) would score them as ordinary values."""
    bad = non_finite_rows(batch)
    if bad:
        raise RewardError(f"reward '{name}' got non-finite values (NaN/inf) in {kind}(s) {bad} of {batch.shape[0]}; "
                          "they cannot be scored. The model or VAE produced them: check its dtype (fp16 overflows) "
                          "and the sampler settings")


def check_videos(videos: torch.Tensor, prompts: Sequence[str], name: str) -> None:
    if not isinstance(videos, torch.Tensor) or videos.dim() != 5 or videos.shape[-1] not in (1, 3, 4):
        shape = list(videos.shape) if isinstance(videos, torch.Tensor) else type(videos).__name__
        raise RewardError(f"reward '{name}' needs videos [B, T, H, W, C] with C in (1, 3, 4), got {shape}")
    if isinstance(prompts, str) or len(prompts) != videos.shape[0]:
        raise RewardError(f"reward '{name}' got {videos.shape[0]} videos but "
                          f"{'a single string' if isinstance(prompts, str) else len(prompts)} prompts; pass one "
                          "prompt per video")
    check_finite_inputs(videos, name, "video")


def check_rewards(rewards: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if rewards is None:
        raise RewardError(f"reward '{name}' returned None; it must return a tensor of {batch} rewards, one per image "
                          "(check that the function ends with a return statement)")
    try:
        rewards = torch.as_tensor(rewards)
    except (TypeError, ValueError, RuntimeError) as e:
        raise RewardError(f"reward '{name}' returned {type(rewards).__name__}, which is not a tensor of {batch} "
                          f"numbers ({e})") from None
    if rewards.shape != (batch,):
        raise RewardError(f"reward '{name}' returned shape {list(rewards.shape)}, expected [{batch}]")
    bad = ~torch.isfinite(rewards)
    if bad.any():
        raise RewardError(f"reward '{name}' produced a non-finite value for image(s) "
                          f"{bad.nonzero().flatten().tolist()}; check the model files and the input images")
    return rewards.float()


def rgb(images: torch.Tensor) -> torch.Tensor:
    """[B, H, W, C] -> [B, H, W, 3]: grey is repeated, alpha dropped, values clamped to [0, 1]."""
    if images.shape[-1] == 1:
        images = images.expand(*images.shape[:-1], 3)
    return images[..., :3].clamp(0, 1)


class Reward:
    """Base class: subclasses set ``name`` and implement ``compute(images, prompts)``.

    ``compute`` returns a tensor [B] or ``(tensor, details)``. ``__call__`` returns the checked float32 tensor,
    ``evaluate`` also the details. A reward keeps no state between calls.
    """

    name = "reward"
    accepts_video = False  # True: evaluate() also takes videos [B, T, H, W, C] and scores each as a whole
    # True: may score in a worker thread while the sampler samples (it uses nothing the sampling thread uses)
    thread_safe = False
    value_range = None  # (low, high) the reward can take when known, None = unbounded side (e.g. charts' y-axis)
    noticeable_change = None  # the smallest change that matters (the live chart draws a monitor at least ± this)

    def models(self) -> List[torch.nn.Module]:
        """The torch modules this reward computes with, for a host to place on a device (see managed.py). A reward
        whose models are placed already (a ManagedReward) lists none, so nothing is placed twice."""
        return []

    def compute(self, images: torch.Tensor, prompts: Sequence[str]) -> Union[torch.Tensor, Tuple[torch.Tensor, Details]]:
        raise NotImplementedError

    def evaluate(self, images: torch.Tensor, prompts: Sequence[str]) -> RewardResult:
        if self.accepts_video and isinstance(images, torch.Tensor) and images.dim() == 5:
            check_videos(images, prompts, self.name)
        else:
            check_images(images, prompts, self.name)
        out = self.compute(images, list(prompts))
        rewards, details = out if isinstance(out, tuple) else (out, {})
        return RewardResult(check_rewards(rewards, images.shape[0], self.name), dict(details))

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return self.evaluate(images, prompts).rewards

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def evaluate_image_reward(reward: RewardFn, images: torch.Tensor, prompts: Sequence[str]) -> RewardResult:
    """Score images [B, H, W, C] with any reward callable, applying the contract's checks to plain functions too
    (``evaluate.evaluate_reward`` also takes videos)."""
    if isinstance(reward, Reward):
        return reward.evaluate(images, prompts)
    name = reward_name(reward)
    check_images(images, prompts, name)
    return RewardResult(check_rewards(reward(images, list(prompts)), images.shape[0], name))


def reward_models(reward: RewardFn) -> List[torch.nn.Module]:
    """``reward.models()`` for a Reward; none for a plain callable (its modules are unknown)."""
    return list(reward.models()) if isinstance(reward, Reward) else []


def reward_name(reward: RewardFn) -> str:
    return getattr(reward, "name", getattr(reward, "__name__", type(reward).__name__))
