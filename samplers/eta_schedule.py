"""A per-step η schedule: what DenseGRPO's exploration calibration produces and the samplers accept."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass(frozen=True)
class EtaSchedule:
    """One η per sampling step (``values[i]`` is used for the step from times[i] to times[i + 1]).

    ``rule`` and ``times`` record what the schedule was made for (the calibration's rule and schedule), so a
    mismatch can be reported instead of silently applying it to other steps.
    """

    values: List[float]
    rule: Optional[str] = None
    times: Optional[List[float]] = field(default=None, compare=False)

    def __post_init__(self):
        if not self.values:
            raise ValueError("an eta schedule needs at least one value")
        if any(not v >= 0 for v in self.values):
            raise ValueError(f"eta schedule values must be >= 0, got {list(self.values)}")

    def for_steps(self, steps: int) -> List[float]:
        """The per-step η list for a run with ``steps`` steps; a length mismatch is an error, not a guess."""
        if len(self.values) != steps:
            raise ValueError(
                f"the eta schedule has {len(self.values)} values but the sampler runs {steps} steps; make the "
                f"schedule for {steps} steps (or set the sampler's steps to {len(self.values)})")
        return list(self.values)

    @classmethod
    def parse(cls, text: str, rule: Optional[str] = None) -> "EtaSchedule":
        """From text such as ``"0.9, 0.8, 0.7, 0, 0"`` (commas, spaces or new lines)."""
        items = [s for s in text.replace(",", " ").split() if s]
        try:
            values = [float(s) for s in items]
        except ValueError as error:
            raise ValueError(f"could not read the eta schedule {text!r}: write numbers separated by commas, "
                             "e.g. '0.9, 0.8, 0.7'") from error
        return cls(values, rule=rule)
