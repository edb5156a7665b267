"""The GRPO objective (reference §3): group-normalised advantages and the clipped policy loss."""
from __future__ import annotations

import math
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
                        clip_range: float, keep: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """PPO/GRPO clipped objective: mean(max(−A·r, −A·clip(r, 1−ε, 1+ε))) with r = exp(logp − logp_old); see
    :func:`policy_loss_from_log_ratio` (``keep``: the trust-region mask)."""
    return policy_loss_from_log_ratio(log_prob - old_log_prob, advantages, clip_range, keep)


def policy_loss_from_log_ratio(log_ratio: torch.Tensor, advantages: torch.Tensor, clip_range: float,
                               keep: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """mean(max(−A·r, −A·clip(r, 1−ε, 1+ε))) with r = exp(log_ratio); ε = inf is no clipping. ``keep`` [B] (bool)
    zeroes the terms it marks False (FlowDPPO's trust region, :func:`trust_region_keep`); they still count in the
    mean, as in UniRL. Returns the loss and detached statistics (ratio mean/min/max, the fraction of clipped terms
    and of masked ones)."""
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    if math.isinf(clip_range):
        terms = unclipped
    else:
        terms = torch.maximum(unclipped, -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range))
    if keep is not None:
        terms = torch.where(keep, terms, torch.zeros_like(terms))
    loss = terms.mean()
    with torch.no_grad():
        clip_fraction = ((ratio - 1.0).abs() > clip_range).float().mean()
        masked = (~keep).float().mean() if keep is not None else torch.zeros(())
    return {"loss": loss, "ratio_mean": ratio.detach().mean(), "ratio_min": ratio.detach().min(),
            "ratio_max": ratio.detach().max(), "clip_fraction": clip_fraction, "masked_fraction": masked}


__all__ = ["ADVANTAGE_EPS", "clipped_policy_loss", "group_advantages", "policy_loss_from_log_ratio"]
