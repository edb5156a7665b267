"""Log-probabilities of sampler transitions, as GRPO trainers use them."""
from __future__ import annotations

import math

import torch

LOG_PROB_KINDS = ("gaussian", "cps_eq14")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def log_prob(sample: torch.Tensor, mean: torch.Tensor, std, *, kind: str = "gaussian") -> torch.Tensor:
    """Per-sample log-probability of ``sample`` under N(mean, std²), shape [B].

    ``kind="gaussian"``: the Gaussian log-density −(x' − μ)²/(2σ²) − log σ − log √(2π) **averaged** over all
    non-batch elements (not summed), as flow_grpo, DanceGRPO and Precise compute it; their clip ranges are
    calibrated to this per-element mean.

    ``kind="cps_eq14"``: −mean((x' − μ)²), eq. 14 of the CPS paper (arXiv 2509.05952) and the FlowCPS code. It
    drops the constants and the 1/(2σ²) factor, which rescales each step's log-ratio by 2σ².

    ``std`` is a float or a tensor broadcastable to ``sample`` (per-sample [B, 1, ...] or 0-d). A deterministic
    transition (std == 0) has no density and raises ValueError for either kind: such steps cannot be trained.
    Computed in float32 (float64 if the inputs are float64).
    """
    if kind not in LOG_PROB_KINDS:
        raise ValueError(f"unknown log-prob kind {kind!r}; valid kinds are: {', '.join(LOG_PROB_KINDS)}")
    if sample.shape != mean.shape:
        raise ValueError(f"sample has shape {list(sample.shape)} but mean has {list(mean.shape)}")
    dtype = torch.float64 if torch.float64 in (sample.dtype, mean.dtype) else torch.float32
    std = torch.as_tensor(std, dtype=dtype)
    _require_positive(std)
    diff = sample.to(dtype) - mean.to(dtype)
    dims = tuple(range(1, diff.dim()))
    if kind == "cps_eq14":
        return -diff.square().mean(dim=dims)
    if std.numel() == 1 or std.numel() == diff.shape[0]:
        # σ is constant within each sample: average the squared error first (cheaper, same value)
        std_b = std.to(diff.device).reshape(-1)
        return -diff.square().mean(dim=dims) / (2 * std_b.square()) - std_b.log() - _HALF_LOG_2PI
    std = std.to(diff.device)
    elementwise = -diff.square() / (2 * std.square()) - std.log() - _HALF_LOG_2PI
    return elementwise.expand_as(diff).mean(dim=dims)


def _require_positive(std: torch.Tensor) -> None:
    message = ("log_prob of a deterministic transition (std == 0): this step adds no noise and cannot be "
               "trained; select only stochastic steps (e.g. an SDE window that excludes it)")
    if std.device.type == "cpu":
        if bool((std <= 0).any()) or not bool(torch.isfinite(std).all()):
            raise ValueError(message)
    else:
        torch._assert_async((std > 0).all(), message)


def gaussian_kl_equal_std(mean_a: torch.Tensor, mean_b: torch.Tensor, std, *, kind: str = "gaussian") -> torch.Tensor:
    """Per-sample KL(N(μ_a, σ²) ‖ N(μ_b, σ²)) averaged over elements, shape [B].

    ``kind="gaussian"``: mean((μ_a − μ_b)²) / (2σ²), the exact per-element KL for equal stds.
    ``kind="mse"``: mean((μ_a − μ_b)²), as FlowCPS and Precise use it.
    """
    diff_sq = (mean_a.float() - mean_b.float()).square().mean(dim=tuple(range(1, mean_a.dim())))
    if kind == "mse":
        return diff_sq
    if kind != "gaussian":
        raise ValueError(f"unknown KL kind {kind!r}; valid kinds are: gaussian, mse")
    std = torch.as_tensor(std, dtype=torch.float32)
    _require_positive(std)
    return diff_sq / (2 * std.to(diff_sq.device).reshape(-1).square())
