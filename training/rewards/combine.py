"""A weighted combination of rewards, optionally z-normalising each over the batch first (as Precise does)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .base import Reward, RewardError, RewardFn, reward_models, reward_name
from .evaluate import evaluate_reward

EPS = 1e-8


def z_normalise(values: torch.Tensor) -> torch.Tensor:
    """(v − mean) / std over the batch; a constant reward gives zeros (no signal), never NaN."""
    std = values.std(unbiased=False)
    centred = values - values.mean()
    return centred / std if std > EPS else torch.zeros_like(values)


def unique_modules(modules):
    seen, out = set(), []
    for module in modules:
        if id(module) not in seen:
            seen.add(id(module))
            out.append(module)
    return out


class CombinedReward(Reward):
    """Σ_k w_k · r_k, or with ``normalize`` Σ_k w_k · z(r_k), z over the batch (population std).

    A component constant over the batch contributes 0 under ``normalize``; a batch of one image has no batch
    statistics, so ``normalize`` raises RewardError for it rather than guess. Components may be plain callables; a
    repeated name gets ``#k`` appended. details: each component's raw values by its name, and the components' own
    details prefixed ``<name>.``."""

    def __init__(self, rewards: Sequence[RewardFn], weights: Optional[Sequence[float]] = None,
                 normalize: bool = False, name: Optional[str] = None):
        if not rewards:
            raise RewardError("CombinedReward needs at least one reward")
        weights = [1.0] * len(rewards) if weights is None else [float(w) for w in weights]
        if len(weights) != len(rewards):
            raise RewardError(f"CombinedReward got {len(rewards)} rewards but {len(weights)} weights")
        self.rewards, self.weights, self.normalize = list(rewards), weights, bool(normalize)
        names = [reward_name(r) for r in self.rewards]
        self.component_names = [n if names.count(n) == 1 else f"{n}#{k}" for k, n in enumerate(names)]
        self.name = name or "+".join(f"{w:g}·{n}" for w, n in zip(weights, self.component_names))

    @property
    def thread_safe(self) -> bool:
        return all(getattr(r, "thread_safe", False) for r in self.rewards)

    def models(self):
        return unique_modules(m for r in self.rewards for m in reward_models(r))

    def compute(self, images, prompts):
        if self.normalize and images.shape[0] < 2:
            raise RewardError(f"reward '{self.name}' z-normalises over the batch, which needs at least 2 images; "
                              "turn normalize off to score single images")
        total = torch.zeros(images.shape[0], dtype=torch.float32)
        details = {}
        for reward, weight, key in zip(self.rewards, self.weights, self.component_names):
            result = evaluate_reward(reward, images, prompts)
            values = result.rewards.float().cpu()
            details[key] = values.tolist()
            details.update({f"{key}.{k}": v for k, v in result.details.items()})
            total += weight * (z_normalise(values) if self.normalize else values)
        return total, details


__all__ = ["CombinedReward", "z_normalise"]
