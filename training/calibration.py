"""DenseGRPO's exploration calibration (arXiv 2601.20218, Alg. 1): tune the per-step noise ψ(t) = σ_t before
training so that each step's ΔR is about as often positive as negative."""
from __future__ import annotations

import math
from typing import List, Optional

import torch

from ._host import samplers
from .grpo_loss import calibrate_noise, dense_step_rewards

SIGMA_RULES = ("flow_sde", "cpws", "dance_sde")


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
