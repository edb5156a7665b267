"""Pure-torch flow-matching samplers: CPS, CPWS, Precise, Flow-SDE, Dance-SDE and ODE.

No ComfyUI imports: this package is used by the ComfyUI nodes, the GRPO trainer and the tests alike.
"""
from .logprob import LOG_PROB_KINDS, gaussian_kl_equal_std, log_prob
from .eta_schedule import EtaSchedule
from .image_noise import estimate_noise, estimate_noise_chw
from . import solvers, toy2d
from .loop import Trajectory, sample_flow
from .noise import StepNoise, derive_seed
from .noise_level import NoiseLevels, noise_levels
from .rules import (DEFAULT_ETA, ETA_RANGE, RULES, STOCHASTIC_RULES, Transition, check_eta_range, coefficients, step,
                    transition_mean)
from .schedules import SCHEDULES, comfy_normal, comfy_simple, flow_schedule, sd3_schedule, shift_time, uniform_schedule

__all__ = [
    "RULES", "STOCHASTIC_RULES", "DEFAULT_ETA", "ETA_RANGE", "check_eta_range", "Transition", "step", "transition_mean",
    "coefficients",
    "LOG_PROB_KINDS", "log_prob", "gaussian_kl_equal_std",
    "solvers", "toy2d", "EtaSchedule", "estimate_noise", "estimate_noise_chw", "Trajectory", "sample_flow", "StepNoise", "derive_seed",
    "NoiseLevels", "noise_levels",
    "SCHEDULES", "flow_schedule", "comfy_normal", "comfy_simple", "sd3_schedule", "uniform_schedule", "shift_time",
]
