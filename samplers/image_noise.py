"""Residual-noise estimate of images: Donoho's wavelet MAD on the finest Haar diagonal band.

For i.i.d. Gaussian noise of std σ the orthonormal Haar diagonal (HH) coefficients of the finest scale have std σ,
and on natural images that band is dominated by noise, so σ̂ = median(|HH|) / 0.6745 (Donoho & Johnstone 1994).
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


def estimate_noise_chw(x: torch.Tensor) -> torch.Tensor:
    """σ̂ per item of a [B, C, H, W] tensor (latents or images), pooled over channels. Shape [B]."""
    if x.dim() != 4 or x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"estimate_noise needs [B, C, H, W] with H, W >= 2, got {list(x.shape)}")
    hh = haar_diagonal(x).flatten(1)
    return hh.abs().median(dim=1).values / _MAD_TO_STD


def estimate_noise(images: torch.Tensor) -> torch.Tensor:
    """σ̂ per image of ComfyUI IMAGE tensors [B, H, W, C] in [0, 1], pooled over channels. Shape [B]."""
    if images.dim() != 4:
        raise ValueError(f"estimate_noise needs IMAGE tensors [B, H, W, C], got shape {list(images.shape)}")
    return estimate_noise_chw(images.movedim(-1, 1))
