"""Verifiable reward for the toy model: the classifier's probability that the image shows the requested digit."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .digit_classifier import DigitClassifier, classify_images, load_classifier
from .toy_prompts import parse_digit


class DigitReward:
    """``(images [B, H, W, C] in [0, 1], prompts) -> [B]``: P(requested digit) under the shipped classifier."""

    name = "digit"

    def __init__(self, classifier: Optional[DigitClassifier] = None):
        self.classifier = classifier or load_classifier()

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        digits = [parse_digit(p) for p in prompts]
        if any(d is None for d in digits):
            raise ValueError("the digit reward needs every prompt to name a digit (an empty prompt has no target)")
        self.classifier.to(images.device)
        probs = classify_images(images, self.classifier)
        return probs[torch.arange(len(digits)), torch.tensor(digits, device=probs.device)].float()
