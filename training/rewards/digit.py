"""Verifiable reward for the toy model: the shipped classifier's probability that the image shows the requested digit
(GenEval-like: "did it draw what was asked")."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..digit_classifier import DigitClassifier, classify_images, load_classifier
from ..toy_prompts import parse_digit
from .base import Reward, RewardError


class DigitReward(Reward):
    """P(requested digit) under the shipped 16×16 classifier; details carry the predicted digit."""

    name = "digit"
    thread_safe = True

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
