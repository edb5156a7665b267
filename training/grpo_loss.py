"""GRPO maths: group-normalised advantages and the clipped policy objective (reference §3)."""
from __future__ import annotations

from typing import Dict, Optional

import torch

ADVANTAGE_EPS = 1e-4


def group_advantages(rewards: torch.Tensor, group_size: int, *, std_mode: str = "group", clip: float = 5.0,
                     eps: float = ADVANTAGE_EPS, global_std: Optional[torch.Tensor] = None,
                     ddof: int = 0) -> torch.Tensor:
    """A = (r − mean_group) / (std + ε), clipped to ±clip. ``rewards`` [B] is laid out group by group.

    ``std_mode="group"`` divides by each group's std (DanceGRPO, Precise); ``"global"`` by the std over the whole
    batch (flow_grpo), or by ``global_std`` when given (e.g. gathered across ranks). ``ddof`` 0 is the population std
    (flow_grpo, Precise: with ε = 1e-4); DanceGRPO uses torch's ``.std()``, i.e. ``ddof=1`` with ε = 1e-8. Computed in
    float64, as the references do in numpy: a group whose rewards are all equal gets exactly 0 (in float32 the mean
    of ≥ 7 equal values is inexact and would leave a small advantage of one sign). Returns float32; works on [B] or
    [B, S] (per-step rewards).
    """
    if group_size < 2:
        raise ValueError("group_size must be >= 2: a group of one sample has no relative advantage")
    if rewards.shape[0] % group_size:
        raise ValueError(f"{rewards.shape[0]} rewards do not split into groups of {group_size}")
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 (population std) or 1 (sample std, DanceGRPO), got {ddof!r}")
    values = rewards.double()
    grouped = values.reshape(-1, group_size, *rewards.shape[1:])
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if std_mode == "group":
        std = grouped.std(dim=1, keepdim=True, correction=ddof)
    elif std_mode == "global":
        std = global_std.double() if global_std is not None else values.std(dim=0, correction=ddof)
    else:
        raise ValueError(f"std_mode must be 'group' or 'global', got {std_mode!r}")
    return (centred / (std + eps)).clamp(-clip, clip).reshape(rewards.shape).float()


def clipped_policy_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                        clip_range: float) -> Dict[str, torch.Tensor]:
    """PPO/GRPO clipped objective: mean(max(−A·r, −A·clip(r, 1−ε, 1+ε))) with r = exp(logp − logp_old).

    Returns the loss and detached statistics (ratio mean/min/max, fraction of clipped terms).
    """
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        clip_fraction = ((ratio - 1.0).abs() > clip_range).float().mean()
    return {"loss": loss, "ratio_mean": ratio.detach().mean(), "ratio_min": ratio.detach().min(),
            "ratio_max": ratio.detach().max(), "clip_fraction": clip_fraction}


def dense_step_rewards(step_rewards: torch.Tensor) -> torch.Tensor:
    """DenseGRPO ΔR: from R[:, i] = reward of the ODE completion of the latent entering step i (i = 0 … N−1) and
    R[:, N] = reward of the final sample, the per-step gain ΔR_i = R[:, i+1] − R[:, i], shape [B, N].
    Their sum telescopes to R_final − R_start."""
    return step_rewards[:, 1:] - step_rewards[:, :-1]


def calibrate_noise(psi: torch.Tensor, delta_rewards: torch.Tensor, *, eps1: float = 2.0, eps2: float = 0.01,
                    minimum: float = 0.0) -> torch.Tensor:
    """One DenseGRPO exploration-calibration update (Alg. 1): per step, if the numbers of positive and negative
    ΔR are balanced (|#pos − #neg| < ε1) the noise ψ(t) grows by ε2, otherwise it shrinks by ε2.
    ``delta_rewards`` is [B, N] (ΔR of B trajectories), ``psi`` [N]. Returns the new ψ (≥ ``minimum``)."""
    positive = (delta_rewards > 0).sum(dim=0).float()
    negative = (delta_rewards < 0).sum(dim=0).float()
    balanced = (positive - negative).abs() < eps1
    return torch.where(balanced, psi + eps2, psi - eps2).clamp_min(minimum)
