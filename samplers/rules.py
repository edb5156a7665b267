"""One-step transition rules for flow-matching samplers.

Notation (flow time, 1 = noise): x_t = (1 - t) * x0 + t * x1. The model gives x̂0 (``denoised``, ComfyUI's
convention); from it x̂1 = (x_t - (1 - t) * x̂0) / t and v̂ = (x_t - x̂0) / t. A step goes from t to t' < t.

Every rule has the form

    mean = (1 - t') * x̂0 + k * x̂1,        sample = mean + std * noise

and differs only in the x̂1 coefficient ``k`` and the noise ``std``:

==========  ===============================================  ======================================
rule        std                                              k
==========  ===============================================  ======================================
ode         0                                                t'
flow_sde    σ_t √Δt, σ_t = η √(t / (1 - t))  (Flow-GRPO)     t' - σ_t² Δt / (2t)
dance_sde   η √Δt  (σ_t = η, DanceGRPO)                      t' - σ_t² Δt / (2t)
cps         t' sin(ηπ/2)            (CPS eq. 12)             t' cos(ηπ/2)
cpws        min(σ_t √Δt, t')        (CPS eq. 15)             √(t'² - std²)
precise     t' √(1 - ρ²), ρ = (t'(1-t) / (t(1-t')))^(η²/2)   t' ρ
==========  ===============================================  ======================================

The Flow-SDE line is the SDE mean x - [v̂ + σ_t²/(2t) (x + (1 - t) v̂)] Δt of Flow-GRPO (Liu et al. 2025,
arXiv 2505.05470, eq. 9) rewritten in x̂0/x̂1 form. CPS and CPWS are from "Coefficients-Preserving Sampling for
Reinforcement Learning with Flow Matching" (arXiv 2509.05952, eqs. 12 and 15); Precise from arXiv 2605.23522.
For the coefficient-preserving rules k² + std² = t'², so the sample carries exactly the scheduled noise.

At t = 1 the Flow-GRPO σ_t is infinite; like flow_grpo (which puts the schedule's second value there) only the
(1 - t) factor takes t': σ_t = η √(t / (1 - t')).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Union

import torch

RULES = ("ode", "flow_sde", "dance_sde", "cps", "cpws", "precise")
STOCHASTIC_RULES = tuple(r for r in RULES if r != "ode")
DEFAULT_ETA = {"ode": 0.0, "flow_sde": 0.7, "dance_sde": 0.3, "cps": 0.8, "cpws": 0.7, "precise": 1.5}
_UNIT_ETA_RULES = ("cps", "cpws")
# The η range of each stochastic rule, as the sampler nodes and the trainer offer it: CPS/CPWS are defined on [0, 1]
# (check_eta enforces that in the maths); Precise, Flow-SDE and Dance-SDE have no upper bound, their nodes stop
# where more noise only destroys the image.
ETA_RANGE = {"flow_sde": (0.0, 5.0), "dance_sde": (0.0, 5.0), "cps": (0.0, 1.0), "cpws": (0.0, 1.0),
             "precise": (0.0, 4.0)}

Scalar = Union[float, torch.Tensor]


class Transition(NamedTuple):
    """One sampler step: ``sample == mean + std * noise``; ``std`` is float32, broadcastable to ``sample``."""

    sample: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"unknown sampler rule {rule!r}; valid rules are: {', '.join(RULES)}")
    return rule


def check_eta(rule: str, eta: Scalar) -> None:
    """Reject η values the rule cannot use. Tensors off the CPU are not inspected (that would synchronise)."""
    if torch.is_tensor(eta):
        if eta.device.type != "cpu":
            return
        lo, hi = float(eta.min()), float(eta.max())
    else:
        lo = hi = float(eta)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"eta must be finite, got {eta!r}")
    if lo < 0:
        raise ValueError(f"eta must be >= 0 (0 means deterministic), got {lo:g} for rule {rule!r}")
    if rule in _UNIT_ETA_RULES and hi > 1:
        raise ValueError(
            f"rule {rule!r} needs eta in [0, 1] (eta = 1 replaces all predicted noise with fresh noise); got {hi:g}. "
            "Lower eta, or use 'precise', which accepts eta > 1."
        )


def check_eta_range(rule: str, eta) -> None:
    """Reject an η (a float or one value per step) outside ``ETA_RANGE[rule]``, naming the range."""
    lo, hi = ETA_RANGE[rule]
    values = [eta] if isinstance(eta, (int, float)) else list(eta)
    bad = [float(v) for v in values if not lo <= float(v) <= hi]
    if bad:
        what = f"eta = {bad[0]:g}" if len(values) == 1 else f"eta schedule value {bad[0]:g}"
        others = ", ".join(f"{r} [{a:g}, {b:g}]" for r, (a, b) in ETA_RANGE.items() if r != rule)
        raise ValueError(f"{what} is outside the range of rule {rule!r}: [{lo:g}, {hi:g}] (other rules: {others})")


def check_times(t: Scalar, t_next: Scalar) -> None:
    """Require 0 < t <= 1 and 0 <= t' < t. Tensors off the CPU are not inspected (that would synchronise)."""
    if any(torch.is_tensor(v) and v.device.type != "cpu" for v in (t, t_next)):
        return
    ts = t.flatten().tolist() if torch.is_tensor(t) else [t]
    tns = t_next.flatten().tolist() if torch.is_tensor(t_next) else [t_next]
    if len(ts) != len(tns) and 1 not in (len(ts), len(tns)):
        raise ValueError(f"t has {len(ts)} values but t_next has {len(tns)}")
    for a, b in zip(ts * (len(tns) if len(ts) == 1 else 1), tns * (len(ts) if len(tns) == 1 else 1)):
        if not (math.isfinite(a) and math.isfinite(b)):
            raise ValueError("t and t_next must be finite")
        if not 0 < a <= 1:
            raise ValueError(f"t must lie in (0, 1] (flow time, 1 = pure noise); got {a:g}")
        if b < 0:
            raise ValueError(f"t_next must be >= 0; got {b:g}")
        if b >= a:
            raise ValueError(f"t_next must be smaller than t (sampling goes from noise to data); got t={a:g}, "
                             f"t_next={b:g}")


def _sqrt(v):
    return v.sqrt() if torch.is_tensor(v) else math.sqrt(v)


def _flow_grpo_sigma_sq(t, t_next, eta):
    """σ_t² = η² t / (1 - t), with 1 - t' in the denominator where t = 1 (flow_grpo's convention)."""
    if torch.is_tensor(t) or torch.is_tensor(t_next):
        t, t_next = torch.as_tensor(t), torch.as_tensor(t_next)
        one_minus = torch.where(t >= 1, 1 - t_next, 1 - t)
    else:
        one_minus = 1 - t_next if t >= 1 else 1 - t
    return eta * eta * t / one_minus


def coefficients(rule: str, t: Scalar, t_next: Scalar, eta: Scalar):
    """Return ``(k, std)`` of a rule: ``mean = (1 - t') x̂0 + k x̂1`` and ``sample = mean + std * noise``.

    Works on Python floats (exact float64 maths) and on tensors (elementwise, no host synchronisation).
    """
    dt = t - t_next
    if rule == "ode":
        return t_next, t_next * 0.0
    if rule in ("flow_sde", "dance_sde"):
        sigma_sq = _flow_grpo_sigma_sq(t, t_next, eta) if rule == "flow_sde" else eta * eta + t * 0.0
        return t_next - sigma_sq * dt / (2 * t), _sqrt(sigma_sq * dt)
    if rule == "cps":
        angle = eta * (math.pi / 2)
        if torch.is_tensor(angle):
            return t_next * torch.cos(angle), t_next * torch.sin(angle)
        return t_next * math.cos(angle), t_next * math.sin(angle)
    if rule == "cpws":
        std = _sqrt(_flow_grpo_sigma_sq(t, t_next, eta) * dt)
        if torch.is_tensor(t_next):
            std = torch.minimum(std, t_next.to(std.dtype))
        else:
            std = std.clamp(max=t_next) if torch.is_tensor(std) else min(std, t_next)
        radicand = t_next * t_next - std * std
        radicand = radicand.clamp_min(0) if torch.is_tensor(radicand) else max(radicand, 0.0)
        return _sqrt(radicand), std
    if rule == "precise":
        snr_ratio = t_next * (1 - t) / (t * (1 - t_next))
        rho = snr_ratio ** (eta * eta / 2)
        one_minus_rho_sq = 1 - rho * rho
        one_minus_rho_sq = one_minus_rho_sq.clamp_min(0) if torch.is_tensor(one_minus_rho_sq) else max(one_minus_rho_sq, 0.0)
        return t_next * rho, t_next * _sqrt(one_minus_rho_sq)
    check_rule(rule)
    raise AssertionError("unreachable")


def _as_batch_scalar(v, x: torch.Tensor, dtype: torch.dtype):
    """Floats stay floats; 0-d tensors become floats on the CPU only; [B] tensors become [B, 1, ...] tensors."""
    if not torch.is_tensor(v):
        return float(v)
    if v.dim() == 0:
        return float(v) if v.device.type == "cpu" else v.to(dtype)
    if v.dim() != 1 or v.shape[0] != x.shape[0]:
        raise ValueError(f"per-sample t/eta must have shape [B] = [{x.shape[0]}], got {list(v.shape)}")
    return v.to(device=x.device, dtype=torch.float64 if dtype == torch.float64 else torch.float32).reshape(
        -1, *([1] * (x.dim() - 1)))


def step(rule: str, x: torch.Tensor, denoised: torch.Tensor, t: Scalar, t_next: Scalar, *, eta: Scalar,
         noise: torch.Tensor | None = None) -> Transition:
    """Take one step of ``rule`` from flow time ``t`` to ``t_next`` given the model's x̂0 (``denoised``).

    ``t``/``t_next`` are floats, 0-d tensors or per-sample tensors of shape [B]; ``eta`` a float or 0-d tensor.
    ``noise`` (standard normal, shape of ``x``) is required for every rule but ``ode``. The maths runs in
    float32 (float64 for float64 inputs); ``sample`` and ``mean`` come back in the dtype of ``x``, ``std`` as a
    float32 tensor that broadcasts against them. See the module docstring for the equations.
    """
    sample, mean, std = _step_compute(rule, x, denoised, t, t_next, eta=eta, noise=noise)
    return Transition(sample.to(x.dtype), mean.to(x.dtype), std)


def transition_mean(rule: str, x: torch.Tensor, denoised: torch.Tensor, t: Scalar, t_next: Scalar, *,
                    eta: Scalar):
    """``(mean, std)`` of a step in float32 (float64 for float64 inputs), differentiable in ``denoised``.

    What a trainer recomputes with gradients to get the log-probability of a recorded sample.
    """
    _, mean, std = _step_compute(rule, x, denoised, t, t_next, eta=eta, noise=None, sample=False)
    return mean, std


def _step_compute(rule, x, denoised, t, t_next, *, eta, noise, sample=True):
    """:func:`step` in compute precision: returns float32/float64 ``sample`` and ``mean``."""
    check_rule(rule)
    check_eta(rule, eta)
    check_times(t, t_next)
    if denoised.shape != x.shape:
        raise ValueError(f"denoised has shape {list(denoised.shape)} but x has {list(x.shape)}")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    t = _as_batch_scalar(t, x, dtype)
    t_next = _as_batch_scalar(t_next, x, dtype)
    if torch.is_tensor(eta) and eta.dim() != 0:
        raise ValueError(f"eta must be a float or a 0-d tensor, got shape {list(eta.shape)}")
    eta = _as_batch_scalar(eta, x, dtype)

    k, std = coefficients(rule, t, t_next, eta)
    c_x = k / t
    c_0 = (1 - t_next) - k * (1 - t) / t
    # mean = (1 - t') x̂0 + k (x - (1 - t) x̂0) / t, expanded so that x̂1 is never materialised; in-place ops on
    # fresh buffers keep a step at two full-size allocations (a plain Euler step makes four)
    if torch.is_tensor(c_x) or torch.is_tensor(c_0):
        mean = torch.mul(x.to(dtype), c_x)
        mean.addcmul_(denoised.to(dtype), torch.as_tensor(c_0, dtype=dtype, device=x.device))
    else:
        mean = x.to(dtype)
        mean = mean.mul_(c_x) if mean is not x else torch.mul(x, c_x)
        mean.add_(denoised, alpha=c_0)
    std_t = torch.as_tensor(std, dtype=torch.float32)
    if rule == "ode" or not sample:
        return mean, mean, std_t
    if noise is None:
        raise ValueError(f"rule {rule!r} is stochastic: pass noise=torch.randn_like(x) (or use a StepNoise)")
    if noise.shape != x.shape:
        raise ValueError(f"noise has shape {list(noise.shape)} but x has {list(x.shape)}")
    if torch.is_tensor(std):
        sample = torch.addcmul(mean, std.to(dtype), noise.to(dtype))
    else:
        sample = torch.add(mean, noise, alpha=std) if noise.dtype == dtype else torch.add(mean, noise.to(dtype), alpha=std)
    return sample, mean, std_t
