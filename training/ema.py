"""An exponential moving average of the LoRA, flow_grpo-style, for what is saved and previewed.

flow_grpo keeps an EMA of the trainable weights (``EMAModuleWrapper``: decay 0.9 with the warm-up
``min(decay, (1 + k) / (10 + k))``) and evaluates with it: the average of the last updates drifts less than the
last update alone. Here it is updated once per GRPO iteration, after that iteration's optimizer steps.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterable, List

import torch


class LoRAEMA:
    """After iteration k (0-based): e ← d_k·e + (1 − d_k)·θ, d_k = min(decay, (1 + k) / (10 + k))."""

    def __init__(self, parameters: Iterable[torch.nn.Parameter], decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay!r} (0 turns the EMA off in GRPOConfig)")
        self.parameters: List[torch.nn.Parameter] = list(parameters)
        self.decay = float(decay)
        self.shadow = [p.detach().clone() for p in self.parameters]
        self.updates = 0

    def current_decay(self) -> float:
        k = self.updates
        return min(self.decay, (1 + k) / (10 + k))

    @torch.no_grad()
    def update(self) -> None:
        d = self.current_decay()
        for shadow, p in zip(self.shadow, self.parameters):
            shadow.mul_(d).add_(p.detach().to(shadow.dtype), alpha=1 - d)
        self.updates += 1

    @contextlib.contextmanager
    def applied(self):
        """The EMA weights in the parameters inside the block, the trained ones restored after it."""
        saved = [p.detach().clone() for p in self.parameters]
        with torch.no_grad():
            for p, shadow in zip(self.parameters, self.shadow):
                p.copy_(shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, value in zip(self.parameters, saved):
                    p.copy_(value)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        state = {f"{k}": s.detach().clone() for k, s in enumerate(self.shadow)}
        state["updates"] = torch.tensor(self.updates)
        return state

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        if len(state) != len(self.shadow) + 1 or any(str(k) not in state for k in range(len(self.shadow))):
            raise ValueError(f"the checkpoint's EMA has {len(state) - 1} tensors, this LoRA {len(self.shadow)}; "
                             "resume with the settings the run was started with")
        with torch.no_grad():
            for k, shadow in enumerate(self.shadow):
                shadow.copy_(state[str(k)])
        self.updates = int(state["updates"])


__all__ = ["LoRAEMA"]
