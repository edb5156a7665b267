"""Deterministic ODE solvers for the steps outside a stochastic window (MixGRPO-Flash, arXiv 2507.21802 §3.3).

A solver integrates a flow model's probability-flow ODE over a run of steps::

    solver(denoise_fn, x, times, callback=None, seed=None) -> x at times[-1]

``denoise_fn(x, t)`` returns x̂0 for a float flow time t, ``times`` decreases, and ``callback`` receives
``{"x", "i", "sigma", "sigma_hat", "denoised"}`` before step i moves x (k-diffusion's contract), so a caller can
record the latent entering every step. ``seed`` is accepted for the contract (stock stochastic samplers use it);
these solvers ignore it. Inside ComfyUI the trainer uses the host's own samplers instead (nodes/stock_solvers.py).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence

import torch

Solver = Callable[..., torch.Tensor]


def _notify(callback, x, i, t, denoised):
    if callback is not None:
        callback({"x": x, "i": i, "sigma": t, "sigma_hat": t, "denoised": denoised})


@torch.no_grad()
def euler(denoise_fn, x: torch.Tensor, times: Sequence[float], callback: Optional[Callable] = None,
          seed=None) -> torch.Tensor:
    """The flow ODE's Euler step x' = x + (t' − t)·(x − x̂0)/t (the ``ode`` step rule, ComfyUI's ``euler``)."""
    ts = [float(t) for t in times]
    for i, (t, t_next) in enumerate(zip(ts[:-1], ts[1:])):
        denoised = denoise_fn(x, t)
        _notify(callback, x, i, t, denoised)
        x = (x + (t_next - t) * (x - denoised) / t).to(x.dtype)
    return x


@torch.no_grad()
def dpmpp_2m(denoise_fn, x: torch.Tensor, times: Sequence[float], callback: Optional[Callable] = None,
             seed=None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, Alg. 2) in the log-σ time λ = −log t that k-diffusion
    and ComfyUI's ``dpmpp_2m`` use: x' = (t'/t)·x − (e^{−h} − 1)·D with h = λ' − λ, D = x̂0 on the first step and
    into t' = 0, else D = (1 + 1/(2r))·x̂0 − 1/(2r)·x̂0_prev with r = h_prev / h. Its first-order step is Euler's."""
    ts = [float(t) for t in times]
    previous = None
    for i, (t, t_next) in enumerate(zip(ts[:-1], ts[1:])):
        denoised = denoise_fn(x, t)
        _notify(callback, x, i, t, denoised)
        if t_next == 0:
            x = denoised.to(x.dtype)
        else:
            h = math.log(t) - math.log(t_next)
            if previous is None:
                d = denoised
            else:
                r = (math.log(ts[i - 1]) - math.log(t)) / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
            x = ((t_next / t) * x - math.expm1(-h) * d).to(x.dtype)
        previous = denoised
    return x


SOLVERS: Dict[str, Solver] = {"euler": euler, "dpmpp_2m": dpmpp_2m}

# The stock ComfyUI samplers that are deterministic ODE solvers (no noise), so they may integrate outside the SDE
# window; inside ComfyUI any of these the host has can be chosen, outside it only SOLVERS.
DETERMINISTIC_STOCK_SAMPLERS = ("euler", "heun", "heunpp2", "dpm_2", "lms", "dpmpp_2m", "ipndm", "ipndm_v", "deis",
                                "gradient_estimation")


def solver(name: str) -> Solver:
    """The pure-torch solver called ``name`` (a clear error listing the choices otherwise)."""
    if name not in SOLVERS:
        raise ValueError(f"no pure-torch ODE solver {name!r}; outside ComfyUI the choices are {', '.join(SOLVERS)} "
                         "(inside ComfyUI every deterministic stock sampler: "
                         f"{', '.join(DETERMINISTIC_STOCK_SAMPLERS)})")
    return SOLVERS[name]


__all__ = ["SOLVERS", "DETERMINISTIC_STOCK_SAMPLERS", "Solver", "dpmpp_2m", "euler", "solver"]
