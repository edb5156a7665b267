"""A tiny CNN that recognises 16×16 digits: the verifiable reward for the toy model ("did it draw a 7?")."""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F

from .model import WEIGHTS_DIR, image_to_latent

DEFAULT_CLASSIFIER = os.path.join(WEIGHTS_DIR, "digit_classifier.safetensors")


class DigitClassifier(torch.nn.Module):
    """Input [B, 1, 16, 16] ink in [−1, 1] (the toy latent space); output logits [B, 10]."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(64, 64, 3, padding=1)
        self.fc1 = torch.nn.Linear(64 * 4 * 4, 128)
        self.fc2 = torch.nn.Linear(128, 10)
        self.dropout = torch.nn.Dropout(0.3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x))
        return self.fc2(self.dropout(F.relu(self.fc1(x.flatten(1)))))


def load_classifier(path: Optional[str] = None, device="cpu") -> DigitClassifier:
    from safetensors.torch import load_file
    path = path or DEFAULT_CLASSIFIER
    if not os.path.exists(path):
        raise FileNotFoundError(f"digit classifier weights not found at {path}; run "
                                "`python scripts/train_digit_classifier.py` to recreate them")
    model = DigitClassifier()
    model.load_state_dict({k: v.float() for k, v in load_file(path).items()})
    return model.to(device).eval().requires_grad_(False)


def classify_latents(model: DigitClassifier, latents: torch.Tensor) -> torch.Tensor:
    """Class probabilities [B, 10] for toy latents [B, 1, 16, 16]."""
    with torch.no_grad():
        return F.softmax(model(latents.float().clamp(-1, 1)), dim=-1)


def classify_images(images: torch.Tensor, model: Optional[DigitClassifier] = None) -> torch.Tensor:
    """Class probabilities [B, 10] for ComfyUI IMAGE tensors [B, H, W, C] in [0, 1] (dark ink on light paper)."""
    model = model or load_classifier(device=images.device)
    return classify_latents(model, image_to_latent(images))
