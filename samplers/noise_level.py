"""How much noise each rule really leaves in the sample (CPS paper §4.2, Fig. 2 and Theorem 1).

With a perfect model on point-mass data (x̂0 = x0 exactly) the sample after a step is
(1 − t')·x0 + k·x̂1 + std·ε with x̂1 pure noise, so its noise std is √(k² + std²) when the input carried the
scheduled noise t. The schedule asks for t'. Coefficient-preserving rules (cps, cpws, precise, ode) give exactly t';
Flow-SDE gives √((t' − σ_t²Δt/(2t))² + σ_t²Δt) > t', which is the visible noise the CPS paper removes.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from .loop import check_window, per_step_eta, schedule_times
from .rules import check_rule, coefficients


class NoiseLevels(NamedTuple):
    """Per-step noise levels; index i is the step from ``times[i]`` to ``times[i + 1]``.

    ``ideal``: the schedule's t'. ``one_step``: the noise std after the step when its input had exactly the
    scheduled noise (the paper's Fig. 2). ``accumulated``: the noise std after the step when every earlier step
    also ran with this rule, starting from ``times[0]`` (what the final image carries). ``ratio``: one_step/ideal
    (nan where ideal = 0).
    """

    times: list
    ideal: list
    one_step: list
    accumulated: list
    ratio: list


def noise_levels(rule: str, times, eta=None, *, window=None) -> NoiseLevels:
    """Ideal vs actual noise std per step for ``rule`` on a schedule (floats, exact).

    Mirrors :func:`samplers.loop.sample_flow`'s handling of η and the SDE window; the last step is analysed
    as the rule defines it (no ``denoise_last_step``).
    """
    check_rule(rule)
    ts = schedule_times(times)
    steps = len(ts) - 1
    etas = per_step_eta(rule, eta, steps)
    first, stop = check_window(window, steps)
    ideal, one_step, accumulated = [], [], []
    level = ts[0]
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        step_rule = rule if first <= i < stop else "ode"
        k, std = coefficients(step_rule, t, t_next, etas[i])
        ideal.append(t_next)
        one_step.append(math.hypot(k, std))
        level = math.hypot(k * level / t, std)
        accumulated.append(level)
    ratio = [o / d if d > 0 else math.nan for o, d in zip(one_step, ideal)]
    return NoiseLevels(ts, ideal, one_step, accumulated, ratio)
