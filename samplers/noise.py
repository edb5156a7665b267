"""Reproducible per-step noise that never reuses the initial-noise stream.

ComfyUI draws the initial latent noise with ``torch.manual_seed(seed)``; its ``default_noise_sampler(x, seed)``
starts a generator from the same seed, so the first stochastic step would re-add noise correlated with the
initial noise. ``StepNoise`` seeds a fresh generator per step from a hash of (seed, stream, step) instead.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

_MASK64 = (1 << 64) - 1
_STEP_STREAM = 0x5EED_F10C


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers; distinct inputs give unrelated streams."""
    h = 0
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK64))
    return h >> 1


class StepNoise:
    """Standard-normal noise for step ``i``: ``noise(i, x) -> tensor`` shaped like ``x`` (float32).

    ``seed`` is one int for the batch, or one int per sample so each sample's noise does not depend on which
    other samples share its batch (what a GRPO trainer needs). Generated on ``x``'s device.
    """

    def __init__(self, seed: Union[int, Sequence[int]], stream: int = _STEP_STREAM):
        self.seeds = [int(seed)] if isinstance(seed, int) else [int(s) for s in seed]
        self.per_sample = not isinstance(seed, int)
        self.stream = stream

    def __call__(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if not self.per_sample:
            return self._draw(self.seeds[0], i, tuple(x.shape), x.device)
        if len(self.seeds) != x.shape[0]:
            raise ValueError(f"StepNoise has {len(self.seeds)} per-sample seeds but the batch has {x.shape[0]}")
        return torch.cat([self._draw(s, i, (1, *x.shape[1:]), x.device) for s in self.seeds])

    def _draw(self, seed: int, i: int, shape, device) -> torch.Tensor:
        generator = torch.Generator(device=device)
        generator.manual_seed(derive_seed(seed, self.stream, i))
        return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
