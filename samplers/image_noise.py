"""Residual-noise estimate of images: Donoho's wavelet MAD on the finest Haar diagonal band.

For i.i.d. Gaussian noise of std σ the orthonormal Haar diagonal (HH) coefficients of the finest scale have std σ,
and on natural images that band is dominated by noise, so σ̂ = median(|HH|) / 0.6745 (Donoho & Johnstone 1994).

An image that is a nearest-neighbour upscale (the toy model's 8× decode, pixel-art enlargements) has an exactly zero
finest band whatever its noise, so each image is first brought back to its native resolution: the largest k for
which every k×k block is constant, one pixel per block.
"""
from __future__ import annotations

import torch

_MAD_TO_STD = 0.6744897501960817  # Φ⁻¹(3/4)


def haar_diagonal(x: torch.Tensor) -> torch.Tensor:
    """Finest-scale orthonormal Haar HH coefficients of [B, C, H, W] (odd edges are cropped)."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w].float()
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return (a - b - c + d) / 2


def nearest_upscale_factor(x: torch.Tensor, atol: float = 1e-6) -> int:
    """The largest k such that [C, H, W] ``x`` is a k× nearest-neighbour upscale (every k×k block constant, the
    native image keeping at least 2×2 pixels); 1 for an ordinary image."""
    height, width = x.shape[-2:]
    for k in range(min(height, width) // 2, 1, -1):
        if height % k or width % k:
            continue
        blocks = x.unflatten(-2, (height // k, k)).unflatten(-1, (width // k, k))  # [C, h, k, w, k]
        if bool(((blocks - blocks[:, :, :1, :, :1]).abs() <= atol).all()):
            return k
    return 1


def native_resolution(x: torch.Tensor) -> torch.Tensor:
    """[C, H, W] ``x`` with a nearest-neighbour upscale undone (one pixel per constant k×k block)."""
    k = nearest_upscale_factor(x)
    return x[:, ::k, ::k] if k > 1 else x


def estimate_noise_chw(x: torch.Tensor, native: bool = True) -> torch.Tensor:
    """σ̂ per item of a [B, C, H, W] tensor (latents or images), pooled over channels. Shape [B]. With ``native``,
    each item is measured at its native resolution (see :func:`native_resolution`)."""
    if x.dim() != 4 or x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"estimate_noise needs [B, C, H, W] with H, W >= 2, got {list(x.shape)}")
    if not native:
        return haar_diagonal(x).flatten(1).abs().median(dim=1).values / _MAD_TO_STD
    items = [native_resolution(item.float()) for item in x]
    return torch.stack([haar_diagonal(item[None]).abs().median() for item in items]) / _MAD_TO_STD


def estimate_noise(images: torch.Tensor, native: bool = True) -> torch.Tensor:
    """σ̂ per image of ComfyUI IMAGE tensors [B, H, W, C] in [0, 1], pooled over channels, at each image's native
    resolution unless ``native`` is False. Shape [B]."""
    if images.dim() != 4:
        raise ValueError(f"estimate_noise needs IMAGE tensors [B, H, W, C], got shape {list(images.shape)}")
    return estimate_noise_chw(images.movedim(-1, 1), native=native)
