"""MixGRPO's SDE windows (arXiv 2507.21802; Tencent-Hunyuan/MixGRPO): only the steps inside a window are stochastic
and trained, the rest are integrated by a deterministic solver; the window stays (``fixed``) or moves every
``window_shift_every`` iterations by ``window_stride`` positions (``sliding``, ``progressive``) or to a seeded random
position (``random``)."""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch

from .._host import samplers

WINDOW_STREAM = 0x3170


def window_positions(steps: int, size: int, check: Callable[[Tuple[int, int]], None]) -> Tuple[List[int], List[str]]:
    """The starts of the windows of ``size`` steps among ``steps`` that ``check`` accepts (it raises ValueError for a
    window with nothing to train), and the reasons of those it refused."""
    positions, reasons = [], []
    for start in range(steps - size + 1):
        try:
            check((start, start + size))
            positions.append(start)
        except ValueError as e:
            reasons.append(f"({start}, {start + size}): {e}")
    return positions, reasons


def window_at(config, positions: Optional[List[int]], iteration: int) -> Optional[Tuple[int, int]]:
    """The (first, stop) stochastic steps of an iteration under ``config.window_schedule``, None when every step is
    stochastic (``config.sde_window`` None). ``positions``: the trainable starts (window_positions), None for a
    fixed window."""
    c = config
    if c.sde_window is None:
        return None
    first, stop = c.sde_window
    size = stop - first
    if c.window_schedule == "fixed" or positions is None:
        return first, stop
    start = next((k for k, p in enumerate(positions) if p >= first), len(positions) - 1)
    moves = (iteration // c.window_shift_every) * c.window_stride
    if c.window_schedule == "sliding":
        index = (start + moves) % len(positions)
    elif c.window_schedule == "progressive":
        index = min(start + moves, len(positions) - 1)
    else:  # random
        generator = torch.Generator().manual_seed(samplers.derive_seed(c.seed, iteration, WINDOW_STREAM))
        index = int(torch.randint(len(positions), (1,), generator=generator))
    return positions[index], positions[index] + size


__all__ = ["WINDOW_STREAM", "window_at", "window_positions"]
