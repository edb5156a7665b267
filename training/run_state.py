"""A GRPO run's state on disk: the checkpoint (LoRA, optimizer, EMA, RNG, history), resume with its settings check,
and the finiteness checks that keep a broken LoRA out of it. A mixin of GRPOTrainer (training/trainer.py)."""
from __future__ import annotations

import json
from dataclasses import MISSING, fields
from typing import Dict, Optional

import torch

from . import checkpoint as checkpoints
from ._host import samplers
from .ema import LoRAEMA
from .errors import NonFiniteLoRA, SettingsChanged, describe_changes
from .grpo_config import GRPOConfig

# The settings that define what a run trains (its samples, objective and LoRA). A resumed run with other values would
# label the checkpoint's history with settings it was not trained with, so load_checkpoint refuses them unless allowed.
# Not here, free to change on resume: iterations, checkpoint_every, the optimizer's settings (the ones set now win)
# and the scale settings whose update is the same (batch sizes, gradient checkpointing, reward overlap).
RUN_SETTINGS = ("prompts", "prompts_per_iteration", "group_size", "steps", "shift", "schedule", "rule", "eta",
                "sde_window", "sliding_window", "window_schedule", "window_stride", "window_shift_every",
                "ode_sampler", "cfg", "log_prob_kind", "kl_kind", "beta",
                "clip_range", "advantage_std", "advantage_clip", "advantage_std_ddof", "advantage_eps",
                "timestep_selection", "timestep_fraction", "dense_rewards", "inner_epochs", "gradient_accumulation",
                "train_dtype", "lora_rank", "lora_alpha", "lora_targets", "seed", "kl_mask_threshold", "ratio_norm",
                "algorithm", "nft_beta", "nft_kl_beta", "nft_old_policy", "nft_decay_rate",
                "nft_decay_max", "nft_sampler")


class RunStateMixin:
    """Checkpoint, resume, run settings and finiteness of GRPOTrainer."""

    def state_dict(self) -> dict:
        return {"format": checkpoints.FORMAT, "iteration": self.iteration, "history": self.history,
                "config": self.config.to_dict(), "segments": self.segments, "lora": self.policy.lora_state_dict(),
                "optimizer": self.optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
                **({"monitor_baseline": self.monitor_baseline} if self.monitor_baseline is not None else {})}

    def run_settings(self, config: Optional[dict] = None, lora: Optional[dict] = None) -> dict:
        """The RUN_SETTINGS of ``config`` (a GRPOConfig dict; default this trainer's) as JSON values, with the η and
        α actually used: η one value per step (the rule's default filled in), α read from the LoRA when unset."""
        config = self.config.to_dict() if config is None else config
        settings = {name: config[name] if name in config else _json_default(name, config) for name in RUN_SETTINGS}
        try:
            settings["eta"] = samplers.loop.per_step_eta(config["rule"], config.get("eta"), config["steps"])
        except (KeyError, TypeError, ValueError):
            pass  # an η the sampler cannot read (a damaged checkpoint): compared as stored
        if settings["lora_alpha"] is None:
            network = getattr(self.policy, "lora", None)
            if lora is None and isinstance(getattr(network, "alpha", None), (int, float)):
                settings["lora_alpha"] = float(network.alpha)
            else:
                state = self.policy.lora_state_dict() if lora is None else lora
                settings["lora_alpha"] = next((float(v) for k, v in state.items() if k.endswith(".alpha")), None)
        return json.loads(json.dumps(settings, default=str))

    def changed_settings(self, state: dict) -> Dict[str, tuple]:
        """{name: (checkpoint's value, value now)} of the run settings that differ from the checkpoint's latest
        segment."""
        segments = state.get("segments")
        if segments:
            saved = segments[-1]["settings"]
        elif isinstance(state.get("config"), dict):  # written before segments existed
            saved = self.run_settings(state["config"], state.get("lora", {}))
        else:
            return {}
        now = self.run_settings()
        saved = {name: saved[name] if name in saved else _json_default(name, saved) for name in RUN_SETTINGS}
        return {name: (saved[name], now[name]) for name in RUN_SETTINGS if saved[name] != now[name]}

    def non_finite_lora(self, state: Optional[dict] = None) -> Optional[str]:
        """The name of a LoRA tensor holding NaN or ±inf, None when all are finite. Without ``state`` the trainable
        parameters are checked first (cheap) and the LoRA state dict is only read to name the bad tensor."""
        fallback = None
        if state is None:
            if all(bool(torch.isfinite(p.detach()).all()) for p in self.params):
                return None
            state, fallback = self.policy.lora_state_dict(), "a trainable parameter"
        for name, value in state.items():
            if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                return name
        return fallback

    def check_finite(self, state: Optional[dict] = None) -> None:
        """Raise NonFiniteLoRA when the last trained iteration left NaN/inf in the LoRA."""
        bad = self.non_finite_lora(state)
        if bad is not None:
            raise NonFiniteLoRA(
                f"GRPO iteration {self.iteration - 1} left a non-finite LoRA (NaN/inf in {bad}); it was not "
                "checkpointed, the last checkpoint written stays as it was. Lower the learning rate or clip_range, "
                "check the reward for NaN, then resume from the last checkpoint", self.iteration - 1)

    def save_checkpoint(self, path: str) -> None:
        """One safetensors file (tensors + the rest as JSON metadata, see training.checkpoint), written atomically:
        a temporary file in the same folder, fsynced, then renamed over ``path``. A checkpoint always holds at
        least one trained iteration and a finite LoRA."""
        if self.world.rank != 0:
            return
        if self.iteration < 1:
            raise ValueError("no GRPO iteration trained yet: nothing to checkpoint")
        if self.broken is not None:
            raise RuntimeError(f"not checkpointed: the LoRA holds part of an iteration's updates ({self.broken}); "
                               "the last checkpoint written stays as it was")
        state = self.state_dict()
        self.check_finite(state["lora"])
        checkpoints.write_checkpoint(path, state)

    def save_stopped(self, path: str) -> Optional[str]:
        """After cancel or an error: checkpoint what was trained, unless that would be a checkpoint 'latest' must not
        pick. Returns None when saved, else why nothing was written (no trained iteration yet; a non-finite LoRA,
        whose last good checkpoint stays)."""
        if self.iteration < 1:
            return "no iteration was trained"
        if self.broken is not None:
            return f"the LoRA holds part of an iteration's updates ({self.broken})"
        bad = self.non_finite_lora()
        if bad is not None:
            return f"the LoRA is non-finite (NaN/inf in {bad})"
        self.save_checkpoint(path)
        return None

    def load_checkpoint(self, path: str, allow_changed_settings: bool = False) -> None:
        """Resume from a checkpoint: LoRA, optimizer moments, iteration, history and RNG come from the file; the
        optimizer settings set now (lr, weight_decay, betas, eps, …) win over the ones stored in it.

        A checkpoint trained with other RUN_SETTINGS (rule, η, steps, …) raises SettingsChanged, unless
        ``allow_changed_settings``: then the run continues with the settings set now and ``segments`` records from
        which iteration on which settings were used (the history before keeps its own).

        Never unpickles: a v1 ``torch.save`` checkpoint raises CheckpointError saying how to convert it."""
        state = checkpoints.read_checkpoint(path)
        missing = [k for k in ("lora", "optimizer", "iteration", "history", "torch_rng") if k not in state]
        if missing:
            raise checkpoints.CheckpointError(f"{path}: the checkpoint misses {missing}")
        different = self.changed_settings(state)
        if different and not allow_changed_settings:
            raise SettingsChanged(path, different, int(state["iteration"]))
        segments = state.get("segments") or [
            {"first_iteration": 0, "settings": self.run_settings(state["config"], state["lora"])
             if isinstance(state.get("config"), dict) else None}]
        self.policy.load_lora_state_dict(state["lora"])
        now = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, settings in zip(self.optimizer.param_groups, now):
            changed = {k: (group[k], v) for k, v in settings.items() if k in group and group[k] != v}
            if changed:
                self.log("resume: optimizer settings set now replace the checkpoint's: " + ", ".join(
                    f"{k} {old} -> {new}" for k, (old, new) in changed.items()))
            group.update(settings)
        if self.ema is not None:
            if "ema" in state:
                self.ema.load_state_dict(state["ema"])
            else:  # a run started without the EMA: it starts now, from the trained weights
                self.ema = LoRAEMA(self.params, self.config.ema_decay)
                self.log("resume: the checkpoint has no EMA of the LoRA; the EMA starts from the resumed weights")
        self.monitor_baseline = state.get("monitor_baseline")
        self.iteration = int(state["iteration"])
        self.history = list(state["history"])
        self.segments = [dict(segment) for segment in segments]
        if different:
            self.segments.append({"first_iteration": self.iteration, "settings": self.run_settings()})
            self.log(f"resume: from iteration {self.iteration} on the run uses other settings: "
                     + describe_changes(different))
        torch.set_rng_state(state["torch_rng"])
        self.load_extra_state(state)

    def load_extra_state(self, state: dict) -> None:
        """After load_checkpoint: what a subclass keeps beside the LoRA (DiffusionNFT's old policy)."""


def _json_default(name: str, settings: dict):
    """A run setting's default as JSON gives it back: what a checkpoint written before the setting existed used
    (``window_schedule`` then followed ``sliding_window``)."""
    if name == "window_schedule":
        return "sliding" if settings.get("sliding_window") else "fixed"
    item = next(f for f in fields(GRPOConfig) if f.name == name)
    value = item.default_factory() if item.default is MISSING else item.default
    return json.loads(json.dumps(value, default=str))


__all__ = ["RUN_SETTINGS", "RunStateMixin"]
