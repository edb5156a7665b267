"""DenseGRPO (arXiv 2601.20218): per-step rewards ΔR from ODE look-aheads, and its exploration calibration (Alg. 1),
which tunes the per-step noise ψ(t) = σ_t before training so that each step's ΔR is about as often positive as
negative. The look-ahead rollouts themselves are the trainer's (training/rollout.py)."""
from __future__ import annotations

import math
from typing import List, Optional

import torch

from .._host import samplers

SIGMA_RULES = ("flow_sde", "cpws", "dance_sde")


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


def _sigma_scale(rule: str, t: float, t_next: float) -> float:
    """σ_t / η for the rule: √(t/(1−t)) (1−t' at t = 1) for Flow-SDE/CPWS, 1 for Dance-SDE."""
    if rule not in SIGMA_RULES:
        raise ValueError(f"calibration tunes σ_t, which only {', '.join(SIGMA_RULES)} use; got rule {rule!r}")
    return 1.0 if rule == "dance_sde" else math.sqrt(t / (1 - (t_next if t >= 1 else t)))


def sigma_to_eta(rule: str, sigmas: List[float], times) -> List[float]:
    ts = [float(v) for v in times]
    etas = [sigma / _sigma_scale(rule, ts[i], ts[i + 1]) for i, sigma in enumerate(sigmas)]
    return [min(e, 1.0) for e in etas] if rule == "cpws" else etas


def eta_to_sigma(rule: str, etas: List[float], times) -> List[float]:
    ts = [float(v) for v in times]
    return [eta * _sigma_scale(rule, ts[i], ts[i + 1]) for i, eta in enumerate(etas)]


def calibrate_exploration(trainer, iterations: int = 5, eps1: float = 2.0, eps2: float = 0.01,
                          initial_sigma: Optional[List[float]] = None, log=None) -> samplers.EtaSchedule:
    """Run ``iterations`` rollouts with dense rewards, updating ψ(t) per step after each; returns the η schedule
    for the trainer's rule and schedule. The trainer's own settings are restored afterwards."""
    config, times = trainer.config, trainer.times
    sigma = initial_sigma if initial_sigma is not None else eta_to_sigma(config.rule, trainer.etas, times)
    psi = torch.tensor(sigma, dtype=torch.float32)
    saved_etas, saved_dense = trainer.etas, config.dense_rewards
    config.dense_rewards = True
    try:
        for k in range(iterations):
            trainer.etas = sigma_to_eta(config.rule, psi.tolist(), times)
            rollout = trainer.rollout(10_000 + k)  # iteration numbers training never uses: fresh seeds
            psi = calibrate_noise(psi, trainer.world.gather(dense_step_rewards(rollout.step_rewards)),
                                  eps1=eps1, eps2=eps2)
            if log:
                log(f"calibration {k}: sigma {[round(v, 3) for v in psi.tolist()]}")
    finally:
        trainer.etas, config.dense_rewards = saved_etas, saved_dense
    return samplers.EtaSchedule(sigma_to_eta(config.rule, psi.tolist(), times), rule=config.rule,
                                times=[float(v) for v in times])


__all__ = ["SIGMA_RULES", "calibrate_exploration", "calibrate_noise", "dense_step_rewards", "eta_to_sigma",
           "sigma_to_eta"]
