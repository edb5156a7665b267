"""Which steps a GRPO iteration trains: the stochastic ones whose noise is large enough, inside the SDE window, as
``timestep_selection`` picks them; and the refusal, before any rollout, of settings that leave nothing to train.
A mixin of GRPOTrainer (training/trainer.py)."""
from __future__ import annotations

from typing import List

import torch

from ._host import samplers
from .methods.mixgrpo import window_positions
from .rollout import Rollout

SELECTION_STREAM = 0x5E1E


class TrainedStepsMixin:
    """Trained-step selection of GRPOTrainer."""

    def check_trainable_steps(self) -> None:
        """Refuse, before any rollout, a configuration that leaves no stochastic step to train in some iteration; a
        moving window keeps only the positions that have one (``window_positions``)."""
        c = self.config
        self.window_positions = None
        if c.sde_window is None or c.window_schedule == "fixed":
            self._check_window(self.sde_window(0))
            return
        size = c.sde_window[1] - c.sde_window[0]
        positions, reasons = window_positions(c.steps, size, self._check_window)
        if not positions:
            raise ValueError(f"no position of the {c.window_schedule} SDE window of {size} step(s) has a step to "
                             "train: " + reasons[0])
        self.window_positions = positions
        skipped = c.steps - size + 1 - len(positions)
        if skipped:
            self.log(f"the {c.window_schedule} SDE window skips {skipped} position(s) with no step to train; it moves "
                     f"over starts {positions}")

    def _check_window(self, window) -> None:
        c = self.config
        stochastic = samplers.loop.stochastic_steps(self.times, rule=c.rule, eta=self.etas, window=window)
        if not stochastic:
            raise ValueError("GRPO has nothing to train: " + self._no_stochastic_step_reason(window))
        stochastic = self.trainable_steps(stochastic, window)
        if c.timestep_selection == "first":
            self._first_steps(stochastic)

    def _no_stochastic_step_reason(self, window) -> str:
        c = self.config
        first, stop = window if window is not None else (0, c.steps)
        etas = self.etas[first:stop]
        if c.rule == "ode":
            return ("rule 'ode' never draws noise, so no step has a log-probability: choose a stochastic rule ("
                    f"{', '.join(samplers.STOCHASTIC_RULES)})")
        if all(e == 0 for e in etas):
            return f"η is 0 on every step{'' if window is None else f' of the SDE window {tuple(window)}'}: raise η"
        if stop == c.steps and all(e == 0 for e in etas[:-1]) or first == c.steps - 1:
            where = ("the only step" if c.steps == 1 else
                     f"the SDE window {tuple(window)} holds only the last step, which" if first == c.steps - 1
                     else "the only step with η > 0 is the last one, which")
            return (f"{where} ends at t = 0, where '{c.rule}' is deterministic (std = 0) and cannot be trained. "
                    + ("Use steps >= 2 (e.g. 4)" if c.steps == 1 else "Start the SDE window earlier or raise η on "
                       "earlier steps") + " or use 'flow_sde', which keeps noise at the last step")
        return (f"no step of the SDE window {tuple(window)} draws noise with rule '{c.rule}' and η {etas}: widen the "
                "window or raise η")

    def trainable_steps(self, stochastic: List[int], window) -> List[int]:
        """The stochastic steps whose noise std reaches ``config.min_train_std`` (the rest are sampled, not trained)."""
        c = self.config
        stds = samplers.loop.step_stds(self.times, rule=c.rule, eta=self.etas, window=window)
        kept = [i for i in stochastic if stds[i] >= c.min_train_std]
        if not kept:
            raise ValueError(
                f"GRPO has nothing to train: every stochastic step's noise std is below min_train_std "
                f"{c.min_train_std:g} (stds {[round(stds[i], 6) for i in stochastic]} at steps {stochastic}); with "
                "so little noise a step's log-probability is too sharp to train on. Use more steps, raise η, a "
                "schedule whose last step does not end just above 0 (e.g. 'simple' instead of 'normal'), or lower "
                "min_train_std")
        return kept

    def _first_steps(self, stochastic: List[int]) -> List[int]:
        """``timestep_selection = 'first'``: the stochastic steps among range(int(N·fraction))."""
        c = self.config
        limit = int(c.steps * c.timestep_fraction)
        chosen = [i for i in stochastic if i < limit]
        if chosen:
            return chosen
        if limit == 0:
            raise ValueError(f"GRPO has nothing to train: timestep_fraction {c.timestep_fraction} of {c.steps} "
                             f"step(s) selects no step (int({c.steps} × {c.timestep_fraction}) = 0): raise "
                             "timestep_fraction (1.0 trains every stochastic step) or use more steps")
        raise ValueError(f"timestep_fraction {c.timestep_fraction} of {c.steps} steps selects steps "
                         f"0–{limit - 1}, none of them stochastic (stochastic: {stochastic}): raise "
                         "timestep_fraction or move the SDE window earlier")

    def selected_steps(self, rollout: Rollout, iteration: int) -> List[int]:
        """``first``: the steps among the first ⌊N·fraction⌋ of all N steps that are stochastic (what the reference
        trainers train: range(int(N·f)), skipping a deterministic step rather than replacing it). ``random``: that
        fraction of the stochastic steps, drawn per iteration."""
        c = self.config
        candidates = rollout.stochastic_steps
        if not candidates:
            raise ValueError("no stochastic step in the rollout: raise η or widen the SDE window")
        candidates = self.trainable_steps(candidates, self.sde_window(iteration))
        if c.timestep_selection == "first":
            return self._first_steps(candidates)
        count = max(1, round(len(candidates) * c.timestep_fraction))
        generator = torch.Generator().manual_seed(samplers.derive_seed(c.seed, iteration, SELECTION_STREAM))
        order = torch.randperm(len(candidates), generator=generator)[:count].tolist()
        return [candidates[k] for k in sorted(order)]


__all__ = ["SELECTION_STREAM", "TrainedStepsMixin"]
