"""Reward models under ComfyUI's model management: loaded to the GPU to score, moved off it when the diffusion
model (or anything else) needs the memory, exactly like the VAE and the text encoders."""
from __future__ import annotations

import comfy.model_management
import comfy.model_patcher
import torch

from ..training.rewards import ManagedReward, reward_models


CACHE = "_flow_cps_comfy_managed"


class RewardModels(torch.nn.Module):
    """A reward's torch modules as one module a ModelPatcher can hold (transformers models have a read-only
    ``device``, which ModelPatcher would set)."""

    def __init__(self, modules):
        super().__init__()
        self.parts = torch.nn.ModuleList(modules)


def managed_by_comfy(reward):
    """``reward`` with its models placed by ComfyUI's model management before every scoring call; a reward without
    models (weight-free, OCR, plain functions) or one already managed is returned as it is."""
    cached = getattr(reward, CACHE, None)
    if cached is not None:  # one patcher per reward for its lifetime: model management tracks what it placed
        return cached
    modules = reward_models(reward)
    if not modules:
        return reward
    patcher = comfy.model_patcher.ModelPatcher(RewardModels(modules),
                                               load_device=comfy.model_management.get_torch_device(),
                                               offload_device=comfy.model_management.unet_offload_device())

    def place() -> torch.device:
        # full load: transformers layers are no comfy.ops layers, so they cannot run partially offloaded
        comfy.model_management.load_models_gpu([patcher], force_full_load=True)
        return torch.device(patcher.load_device)

    managed = ManagedReward(reward, place)
    setattr(reward, CACHE, managed)  # dies with the reward (ComfyUI's output cache holds the loader's REWARD)
    return managed
