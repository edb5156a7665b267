"""The errors a GRPO run raises where it must stop before it can write over good work."""
from __future__ import annotations

from typing import Dict


def _show(value) -> str:
    if isinstance(value, list) and value and all(v == value[0] for v in value) and not isinstance(value[0], str):
        return f"{value[0]!r} on all {len(value)} steps" if len(value) > 1 else repr(value[0])
    return repr(value)


def describe_changes(changes: Dict[str, tuple]) -> str:
    return "; ".join(f"{name} {_show(old)} -> {_show(new)}" for name, (old, new) in changes.items())


class SettingsChanged(ValueError):
    """A checkpoint was trained with other run settings (``changes``: {name: (checkpoint's, now)})."""
    __module__ = "flow_cps"  # ComfyUI shows f"{__module__}.{name}" as the error type; the real one is a folder path

    def __init__(self, path: str, changes: Dict[str, tuple], iteration: int):
        self.path, self.changes, self.iteration = path, changes, iteration
        super().__init__(
            f"{path} ({iteration} iterations) was trained with other settings: {describe_changes(changes)}. "
            "Resuming would continue its history under settings it was not trained with: set them back to the "
            "checkpoint's, or start a new run")


class NonFiniteTraining(FloatingPointError):
    """NaN/inf stopped a GRPO iteration (``iteration``, 0-based) before it could write over good work; ``cause`` is
    where it was found: "rollout" (images/latents), "advantages", "loss", "gradients" or "lora"."""
    __module__ = "flow_cps"  # ComfyUI shows f"{__module__}.{name}" as the error type; the real one is a folder path

    def __init__(self, message: str, iteration: int, cause: str):
        super().__init__(message)
        self.iteration, self.cause = iteration, cause


class NonFiniteLoRA(NonFiniteTraining):
    """A trained iteration produced NaN/inf in the LoRA (``iteration``: that iteration, 0-based)."""
    __module__ = "flow_cps"  # ComfyUI shows f"{__module__}.{name}" as the error type; the real one is a folder path

    def __init__(self, message: str, iteration: int):
        super().__init__(message, iteration, "lora")


__all__ = ["NonFiniteLoRA", "NonFiniteTraining", "SettingsChanged", "describe_changes"]
