"""Trust regions on the GRPO ratio: FlowDPPO's KL mask (UniRL ``flowdppo.py``) and GRPO-Guard's normalised
log-ratio (arXiv 2510.22319)."""
from __future__ import annotations

import torch


def transition_kl(old_mean: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """[B] exact KL(old ‖ new) of two Gaussian steps with equal std, per element (FlowDPPO, UniRL's
    ``flowdppo.py``): mean over elements of (μ_old − μ_θ)²/(2σ²)."""
    per_element = (old_mean.float() - mean.float()) ** 2 / (2 * std.float() ** 2)
    return per_element.flatten(1).mean(dim=1)


def trust_region_keep(kl: torch.Tensor, log_ratio: torch.Tensor, advantages: torch.Tensor,
                      threshold: float) -> torch.Tensor:
    """FlowDPPO's mask [B]: a (sample, step) term whose KL(old ‖ new) reaches ``threshold`` δ is dropped when its
    ratio has already moved the way its advantage pushes (r > 1 with A > 0, r < 1 with A < 0); a term moving back
    towards the old policy is kept whatever its KL (UniRL ``flowdppo.py``)."""
    with torch.no_grad():
        outside = kl >= threshold
        further = ((log_ratio > 0) & (advantages > 0)) | ((log_ratio < 0) & (advantages < 0))
        return ~(outside & further)


def guard_log_ratio(sample: torch.Tensor, mean: torch.Tensor, old_mean: torch.Tensor,
                    std: torch.Tensor) -> torch.Tensor:
    """GRPO-Guard's normalised log-ratio (arXiv 2510.22319, as in Flow-Factory's ``GRPOGuardTrainer``) [B]:
    σ·(log p_θ − log p_old) + mean(Δμ²)/(2σ) for the per-element-mean Gaussian log-prob, which equals
    mean(z ⊙ (μ_θ − μ_old)) with z = (x − μ_old)/σ ~ N(0, 1): the −‖Δμ‖²/(2σ²) shift that pulls every ratio below 1
    is removed and the step's 1/σ scale with it, so one clip range fits every step."""
    z = (sample.float() - old_mean.float()) / std.float()
    return (z * (mean.float() - old_mean.float())).flatten(1).mean(dim=1)


__all__ = ["guard_log_ratio", "transition_kl", "trust_region_keep"]
