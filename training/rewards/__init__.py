"""Rewards for GRPO: ``reward(images [B, H, W, C] in [0, 1], prompts) -> float32 [B]`` (see base.py).

Optional-dependency rewards (OCR, CLIP family) import their libraries only when constructed.
"""
from .base import Reward, RewardError, RewardFn, RewardResult, evaluate_reward, reward_name
from .digit import DigitReward

__all__ = ["Reward", "RewardError", "RewardFn", "RewardResult", "evaluate_reward", "reward_name", "DigitReward"]
