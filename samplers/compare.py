"""Sampler comparisons: parsing sampler/η lists and the CPS paper's Fig. 2 (noise level per step) as an image."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from .noise_level import noise_levels
from .plots import line_chart
from .rules import DEFAULT_ETA, RULES

# ComfyUI KSampler dropdown names of the flow samplers → step rules
COMFY_SAMPLER_RULES = {"flow_cps": "cps", "flow_cpws": "cpws", "flow_precise": "precise", "flow_sde": "flow_sde",
                       "dance_sde": "dance_sde"}


def parse_names(text: str) -> List[str]:
    """Comma- or newline-separated names, stripped, empties dropped, order kept."""
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def parse_floats(text: str, what: str = "values") -> List[float]:
    try:
        return [float(part) for part in parse_names(text)]
    except ValueError as error:
        raise ValueError(f"could not read the {what} {text!r}: write numbers separated by commas, e.g. '0.5, 0.8'") \
            from error


def parse_rule_specs(text: str) -> List[Tuple[str, str, float]]:
    """``"flow_sde=0.7, cps, precise=1.5"`` → [(label, rule, η)]; a missing η takes the rule's default.

    Rule names (``cps``) and KSampler names (``flow_cps``) are both accepted.
    """
    specs = []
    for item in parse_names(text):
        name, _, eta_text = item.partition("=")
        name = name.strip()
        rule = COMFY_SAMPLER_RULES.get(name, name)
        if rule not in RULES:
            raise ValueError(f"unknown sampler {name!r}; use one of: {', '.join(RULES)} "
                             f"(or {', '.join(COMFY_SAMPLER_RULES)})")
        try:
            eta = float(eta_text) if eta_text.strip() else DEFAULT_ETA[rule]
        except ValueError as error:
            raise ValueError(f"could not read η in {item!r}: write e.g. 'cps=0.8'") from error
        specs.append((f"{rule} eta={eta:g}" if rule != "ode" else "ode", rule, eta))
    if not specs:
        raise ValueError("name at least one sampler, e.g. 'flow_sde=0.7, cps=0.8, precise'")
    return specs


def noise_level_chart(specs: Sequence[Tuple[str, str, float]], times, title: str = "") -> torch.Tensor:
    """Fig. 2 of the CPS paper for a schedule: the scheduled noise t' (dashed) and, per rule, the noise std a step
    really leaves when its input is on schedule (perfect model). Returns an IMAGE [1, H, W, 3]."""
    series = {}
    ideal = None
    for label, rule, eta in specs:
        levels = noise_levels(rule, times, eta)
        steps = list(range(1, len(levels.ideal) + 1))
        ideal = (steps, levels.ideal)
        series[label] = (steps, levels.one_step)
    series = {"scheduled t'": ideal, **series}
    return line_chart(series, dashed=("scheduled t'",), title=title or "noise std after each step (perfect model)",
                      x_label="step", y_label="noise std")
