"""What differs between the ComfyUI versions the trainer supports, kept in one place.

No ComfyUI import at module level: the decision logic is unit-tested without a host (tests/test_host_compat.py).
"""
from __future__ import annotations

import contextlib
import inspect


@contextlib.contextmanager
def autograd_kernels(model_management):
    """Run the block with ``model_management.in_training = True``, restored afterwards (also on error or cancel).

    Since about v0.8 the RoPE of Flux, Qwen-Image, Wan, Lumina 2 / Z-Image, … runs through comfy-kitchen kernels
    that have no backward; with the flag set the models take their plain-torch path instead, as the stock trainer
    arranges around its loop. Hosts without the flag (v0.3.x) need nothing: this is then a no-op.
    """
    if not hasattr(model_management, "in_training"):
        yield
        return
    previous = model_management.in_training
    model_management.in_training = True
    try:
        yield
    finally:
        model_management.in_training = previous


DEEPCOPY = "deepcopy"  # clone(force_deepcopy=True): a fresh, non-dynamic copy re-created by the model's loader
SHARED = "shared"      # clone() sharing the loaded weights, whose inference tensors are replaced by ordinary ones


class DynamicModelNotTrainable(ValueError):
    __module__ = "flow_cps"  # ComfyUI shows f"{__module__}.{name}" as the error type; the real one is a folder path


def trainable_copy_strategy(patcher) -> str:
    """How to get a trainable (non-inference, non-dynamic) copy of a ModelPatcher on this host.

    - The host's ``clone`` takes ``force_deepcopy`` (newer ComfyUI) and the model has a cached loader
      (``cached_patcher_init``, set by every stock loader): ``DEEPCOPY``, as the stock TrainLoraNode does. This is
      the only way to train a model that dynamic VRAM (the default on NVIDIA GPUs since early 2026) streams in.
    - Otherwise, for a model that is not dynamic (older hosts, ``--cpu``, ``--disable-dynamic-vram``, models built
      by a custom node such as the toy model): ``SHARED``.
    - A dynamic model without a cached loader cannot be copied: a clear error says what to do.
    """
    clone = getattr(patcher, "clone")
    takes_flag = "force_deepcopy" in inspect.signature(clone).parameters
    cached = getattr(patcher, "cached_patcher_init", None) is not None
    if takes_flag and cached:
        return DEEPCOPY
    is_dynamic = getattr(patcher, "is_dynamic", None)
    if callable(is_dynamic) and is_dynamic():
        raise DynamicModelNotTrainable(
            "this model is loaded with dynamic VRAM and was not made by a stock loader, so no trainable copy of it "
            "can be made (ComfyUI keeps no way to re-create it). Load it with Load Diffusion Model / Load "
            "Checkpoint, or restart ComfyUI with --disable-dynamic-vram.")
    return SHARED


__all__ = ["autograd_kernels", "trainable_copy_strategy", "DEEPCOPY", "SHARED", "DynamicModelNotTrainable"]
