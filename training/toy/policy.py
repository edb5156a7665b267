"""The shipped toy model as a GRPO policy (LoRA on its attention and MLP layers)."""
from __future__ import annotations

from ..lora import DEFAULT_TARGETS, LoRANetwork
from ..policy import VelocityModelPolicy
from .model import latent_to_image, load_toy_model
from .prompts import encode_prompts


def toy_policy(rank: int = 8, alpha=None, targets=DEFAULT_TARGETS, seed: int = 0) -> VelocityModelPolicy:
    model = load_toy_model()
    lora = LoRANetwork(model, targets=targets, rank=rank, alpha=alpha, seed=seed)
    return VelocityModelPolicy(model, lora, encode_prompts, latent_to_image, (1, 16, 16))
