"""Rewards for GRPO: ``reward(images [B, H, W, C] in [0, 1], prompts) -> float32 [B]`` (see base.py).

Optional-dependency rewards (OCR, CLIP family) import their libraries only when constructed. The toy's digit rewards
live in training/toy/rewards.py and are imported from there on first use of their names, so importing the rewards
loads no toy module.
"""
import importlib
from .base import Reward, RewardError, RewardFn, RewardResult, reward_models, reward_name
from .evaluate import evaluate_reward
from .clip_family import (AestheticReward, CLIPScoreReward, HPSv2Reward, PickScoreReward, RewardDependencyMissing,
                          RewardModelNotFound, find_reward_model, load_clip_reward, reward_model_layout)
from .combine import CombinedReward, z_normalise
from .managed import ManagedReward
from .video import FRAME_REDUCTIONS, FrameReward, evaluate_video_reward
from .ocr import OCRReward
from .weight_free import (WEIGHT_FREE_REWARDS, Colorfulness, JpegCompressibility, JpegIncompressibility, LowNoise,
                          PaperHaze, Sharpness, StrokeWidth, weight_free_reward)

__all__ = ["Reward", "RewardError", "RewardFn", "RewardResult", "evaluate_reward", "reward_models", "reward_name",
           "ManagedReward", "DigitReward", "BoldDigitReward",
           "PickScoreReward", "CLIPScoreReward", "AestheticReward", "HPSv2Reward", "RewardModelNotFound",
           "RewardDependencyMissing", "find_reward_model", "load_clip_reward", "reward_model_layout",
           "CombinedReward", "z_normalise", "OCRReward", "WEIGHT_FREE_REWARDS", "weight_free_reward", "PaperHaze",
           "StrokeWidth",
           "JpegCompressibility", "JpegIncompressibility", "Colorfulness", "Sharpness", "LowNoise",
           "FRAME_REDUCTIONS", "FrameReward", "evaluate_video_reward"]

_TOY_REWARDS = ("DigitReward", "BoldDigitReward")


def __getattr__(name):
    if name in _TOY_REWARDS:
        return getattr(importlib.import_module("..toy.rewards", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
