"""The shipped toy model as a GRPO policy (LoRA on its attention and MLP layers)."""
from __future__ import annotations

from ..grpo_config import default_lora_alpha
from ..lora import DEFAULT_TARGETS, LoRANetwork
from ..policy import VelocityModelPolicy
from .model import latent_to_image, load_toy_model
from .prompts import encode_prompts


def toy_policy(rank: int = 8, alpha=None, targets=DEFAULT_TARGETS, seed: int = 0) -> VelocityModelPolicy:
    """``alpha`` None = grpo_config.default_lora_alpha(rank) (2 × rank)."""
    model = load_toy_model()
    alpha = default_lora_alpha(rank) if alpha is None else alpha
    lora = LoRANetwork(model, targets=targets, rank=rank, alpha=alpha, seed=seed)
    return VelocityModelPolicy(model, lora, encode_prompts, latent_to_image, (1, 16, 16))
