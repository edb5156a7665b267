"""The latent a GRPO run samples, checked against the model before any work (pure Python, no ComfyUI import).

The trainer and the calibration node take a LATENT only for its size. A latent the model cannot take would fail
deep inside the first forward with a message such as "The size of tensor a (1024) must match the size of tensor b
(64)"; these checks say up front which latent to use instead.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple


def rollout_latent_shape(shape: Sequence[int], *, latent_channels: int, latent_dimensions: int = 2,
                         is_empty: bool = True, fixed_size: Optional[Tuple[int, int]] = None,
                         pixels_per_latent: int = 8, model_name: str = "this model",
                         latent_node: str = "Empty Latent Image") -> tuple:
    """Per-sample latent shape ``(C, H, W)`` (or ``(C, T, H, W)`` for a video model) from a LATENT's tensor shape.

    ``latent_channels`` / ``latent_dimensions`` come from the model's latent format (2 = images, 3 = videos).
    An empty (all-zero) latent with another channel count takes the model's, as ComfyUI's samplers do; an image
    latent given to a video model becomes one frame. ``fixed_size`` = the only (H, W) the model takes (the toy
    digit model); ``pixels_per_latent`` turns it into the image size to set on ``latent_node``."""
    shape = tuple(int(v) for v in shape)
    if len(shape) == 4 and latent_dimensions == 3:
        shape = shape[:2] + (1,) + shape[2:]
    expected = 2 + latent_dimensions
    if len(shape) != expected:
        kinds = {4: "an image latent [B, C, H, W]", 5: "a video latent [B, C, T, H, W]"}
        got = kinds.get(len(shape), f"a {len(shape)}-D latent")
        wanted = {2: "an image latent (Empty Latent Image, Empty SD3 Latent Image, …)",
                  3: "a video latent (the model family's empty video latent node)"}.get(latent_dimensions,
                                                                                         f"a {expected}-D latent")
        raise ValueError(f"{model_name} takes {wanted}, but the latent input is {got} (shape {list(shape)})")
    channels = shape[1]
    if channels != latent_channels:
        if not is_empty:
            raise ValueError(f"the latent has {channels} channels but {model_name}'s latents have {latent_channels}: "
                             "it was made for another model family. Only its size is used, so connect an empty "
                             f"latent (e.g. {latent_node}) of the size you want")
        channels = latent_channels
    spatial = shape[-2:]
    if fixed_size is not None and tuple(spatial) != tuple(fixed_size):
        h, w = fixed_size
        p = pixels_per_latent
        raise ValueError(f"{model_name} takes a {h}×{w} latent: set {latent_node} to width {w * p}, height {h * p} "
                         f"(this latent is {spatial[0]}×{spatial[1]}, i.e. a {spatial[1] * p}×{spatial[0] * p} "
                         "image)")
    return (channels,) + shape[2:]
