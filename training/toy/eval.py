"""How well the toy model draws the digit it is asked for, judged by the shipped classifier."""
from __future__ import annotations

from typing import Dict

import torch

from .._host import samplers
from .classifier import classify_latents, load_classifier
from .model import DEFAULT_CFG, load_toy_model, make_denoiser, one_hot_context


def toy_quality(per_digit: int = 20, steps: int = 20, cfg: float = DEFAULT_CFG, rule: str = "ode", eta=None,
                seed: int = 0, model=None, classifier=None) -> Dict[str, object]:
    """Sample ``per_digit`` images of each digit and return the classifier-judged accuracy overall and per digit."""
    model = model or load_toy_model()
    classifier = classifier or load_classifier()
    labels = torch.arange(10).repeat_interleave(per_digit)
    x = torch.randn(len(labels), 1, 16, 16, generator=torch.Generator().manual_seed(seed))
    times = samplers.flow_schedule(steps, 1.0, "normal")
    with torch.no_grad():
        latents = samplers.sample_flow(make_denoiser(model, one_hot_context(labels), cfg), x, times, rule=rule,
                                       eta=0.0 if rule == "ode" else eta, seed=seed + 1)
    correct = classify_latents(classifier, latents).argmax(-1) == labels
    return {"accuracy": float(correct.float().mean()),
            "per_digit": [float(correct[labels == d].float().mean()) for d in range(10)], "latents": latents}
