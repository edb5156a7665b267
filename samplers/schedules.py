"""Flow-time schedules (1 = noise → 0 = data), matching ComfyUI's flow schedulers and diffusers' SD3 scheduler.

ComfyUI's flow models (``ModelSamplingDiscreteFlow``) keep a table of 1000 shifted times
σ_i = shift(i / 1000), i = 1 … 1000, with shift(t) = s·t / (1 + (s − 1)·t). Its ``normal`` scheduler spaces
timesteps linearly between σ_max·1000 and σ_min·1000 (without undoing the shift of σ_min) and shifts them again;
diffusers' ``FlowMatchEulerDiscreteScheduler`` does the same, so the two agree. ``simple`` picks table entries.
All tables are computed in float32, as the hosts do.
"""
from __future__ import annotations

import torch

SCHEDULES = ("normal", "simple", "sd3", "uniform")


def shift_time(t, shift: float):
    """SD3's time shift: shift·t / (1 + (shift − 1)·t). ``shift`` = 1 leaves t unchanged."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def _check(steps: int, shift: float) -> None:
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift!r}")


def _comfy_table(shift: float, timesteps: int = 1000) -> torch.Tensor:
    return shift_time((torch.arange(1, timesteps + 1, 1) / timesteps * 1000) / 1000, shift)


def comfy_normal(steps: int, shift: float = 1.0) -> torch.Tensor:
    """ComfyUI's ``normal`` scheduler on a flow model with this shift: ``steps + 1`` times ending in 0."""
    _check(steps, shift)
    table = _comfy_table(shift)
    start, end = table[-1] * 1000, table[0] * 1000
    times = [float(shift_time(ts / 1000, shift)) for ts in torch.linspace(start, end, steps)]
    return torch.tensor(times + [0.0], dtype=torch.float32)


def comfy_simple(steps: int, shift: float = 1.0) -> torch.Tensor:
    """ComfyUI's ``simple`` scheduler on a flow model with this shift: ``steps + 1`` times ending in 0."""
    _check(steps, shift)
    table = _comfy_table(shift)
    stride = len(table) / steps
    return torch.tensor([float(table[-(1 + int(i * stride))]) for i in range(steps)] + [0.0], dtype=torch.float32)


def sd3_schedule(steps: int, shift: float = 3.0, num_train_timesteps: int = 1000) -> torch.Tensor:
    """diffusers' ``FlowMatchEulerDiscreteScheduler`` (static shift) as SD3/SD3.5 pipelines use it."""
    _check(steps, shift)
    sigma_min = shift_time(torch.tensor(1.0 / num_train_timesteps, dtype=torch.float32), shift)
    ts = torch.linspace(num_train_timesteps * 1.0, float(sigma_min) * num_train_timesteps, steps, dtype=torch.float64)
    times = shift_time(ts / num_train_timesteps, shift)
    return torch.cat([times.float(), torch.zeros(1)])


def uniform_schedule(steps: int, shift: float = 1.0) -> torch.Tensor:
    """Evenly spaced times 1 … 0 (then shifted): the plain rectified-flow schedule."""
    _check(steps, shift)
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift).float()


def flow_schedule(steps: int, shift: float = 1.0, kind: str = "normal") -> torch.Tensor:
    """``steps + 1`` flow times from 1 to 0 by name: ``normal``, ``simple`` (ComfyUI), ``sd3``, ``uniform``."""
    builders = {"normal": comfy_normal, "simple": comfy_simple, "sd3": sd3_schedule, "uniform": uniform_schedule}
    if kind not in builders:
        raise ValueError(f"unknown schedule {kind!r}; valid schedules are: {', '.join(SCHEDULES)}")
    return builders[kind](steps, shift)
