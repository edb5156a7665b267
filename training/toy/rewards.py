"""Verifiable reward for the toy model: the shipped classifier's probability that the image shows the requested digit
(GenEval-like: "did it draw what was asked")."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .classifier import DigitClassifier, classify_images, load_classifier
from .prompts import parse_digit
from ..rewards.base import Reward, RewardError
from ..rewards.weight_free import stroke_width


class DigitReward(Reward):
    """P(requested digit) under the shipped 16×16 classifier; details carry the predicted digit."""

    name = "digit"
    thread_safe = True
    value_range = (0.0, 1.0)  # a probability

    def __init__(self, classifier: Optional[DigitClassifier] = None):
        self.classifier = classifier or load_classifier()

    def models(self):
        return [self.classifier]

    def compute(self, images: torch.Tensor, prompts: Sequence[str]):
        try:
            digits = [parse_digit(p) for p in prompts]
        except ValueError as e:
            raise RewardError(f"reward 'digit': {e}") from None
        if any(d is None for d in digits):
            raise RewardError("reward 'digit' needs every prompt to name a digit (an empty prompt has no target)")
        self.classifier.to(images.device)
        probs = classify_images(images, self.classifier)
        target = torch.tensor(digits, device=probs.device)
        return probs[torch.arange(len(digits)), target].float(), {"predicted": probs.argmax(1).tolist()}


class BoldDigitReward(DigitReward):
    """The toy's style task: P(requested digit) × mean stroke width in pixels (``stroke_width``). The base model
    draws thin strokes (≈ 1.2 px), so GRPO has something to learn; the product keeps the digit legible, since a
    blob that no longer reads as the digit scores ≈ 0 however thick it is. details: probability, width."""

    name = "bold_digit"
    value_range = (0.0, None)

    def compute(self, images: torch.Tensor, prompts: Sequence[str]):
        probability, details = super().compute(images, prompts)
        width = stroke_width(images).to(probability.device)
        return probability * width, {**details, "probability": probability.tolist(), "width": width.tolist()}
