"""The GRPO loop for flow models, written against a small policy interface so the same loop drives the toy model
in tests and ComfyUI's wrapped model inside the trainer node.

A policy provides::

    encode_prompts(prompts) -> cond            # a tensor batch, indexable along dim 0
    denoise(x, t, cond, cfg) -> x̂0             # with the LoRA as currently enabled; t a float
    reference() -> context manager             # LoRA disabled inside (the KL reference)
    trainable_parameters() -> list
    decode(latents) -> images [B, H, W, C] in [0, 1] (a video latent [B, C, T, H, W] may decode to [B, T, H, W, C])
    latent_shape -> (C, H, W) or (C, T, H, W)
    lora_state_dict() / load_lora_state_dict(state)

and optionally::

    noise_scale -> float                       # the noise prior's std (ComfyUI's model_sampling.noise_scale); 1
    train_mode() -> context manager            # around every training forward + backward (not the rollouts)
    checkpoint_modules() -> modules            # the blocks ``gradient_checkpointing`` recomputes in backward
    restore_model()                            # after a decode and its reward: the model back where it samples
                                               # (a host's memory manager may have moved it for the VAE/reward)

A reward is a callable ``(images, prompts) -> tensor [B]`` (training.rewards contract).
"""
from __future__ import annotations
from __future__ import annotations

import contextlib
import time
from typing import Callable, Dict, List, Optional

import torch

from ._host import plots, samplers
from .ema import LoRAEMA
from .errors import NonFiniteLoRA, NonFiniteTraining, SettingsChanged, describe_changes
from .grpo_config import GRPOConfig
from .methods.mixgrpo import window_at
from .monitor import evaluate_held_out
from .objective import ObjectiveMixin
from .rollout import Rollout, RolloutMixin
from .run_state import RUN_SETTINGS, RunStateMixin
from .trained_steps import TrainedStepsMixin
from .world import World


class GRPOTrainer(RolloutMixin, TrainedStepsMixin, ObjectiveMixin, RunStateMixin):
    """Runs GRPO iterations: rollout → rewards → advantages → clipped-objective updates of the LoRA.

    The halves live beside this file: rollout.py (sampling, decoding, rewards), trained_steps.py (which steps train),
    objective.py (advantages, losses, optimizer steps) and run_state.py (checkpoint, resume, finiteness); the
    training methods' own parts in methods/."""

    def __init__(self, policy, reward_fn: Callable, config: GRPOConfig, log: Optional[Callable] = None,
                 times: Optional[torch.Tensor] = None, monitor: Optional[Callable] = None):
        """``times``: the rollout schedule t_0 > … > t_N = 0 (e.g. a ComfyUI model's sigmas); default: the config's
        ``flow_schedule(steps, shift, schedule)``. ``monitor``: a reward callable the held-out drift monitor scores
        with (see training/monitor.py; used when ``config.monitor_samples`` > 0)."""
        self.policy, self.reward_fn, self.config, self.monitor_fn = policy, reward_fn, config, monitor
        self.log = log or (lambda message: None)
        self.world = World()
        self.params = list(policy.trainable_parameters())
        if not self.params:
            raise ValueError("the policy has no trainable parameters (attach a LoRA first)")
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, betas=tuple(config.adam_betas),
                                           weight_decay=config.weight_decay)
        self.ema = LoRAEMA(self.params, config.ema_decay) if config.ema_decay > 0 else None
        self.monitor_baseline: Optional[dict] = None  # the held-out scores of the base model (before iteration 0)
        self.iteration = 0
        self.history: List[dict] = []
        self.last_images: Optional[torch.Tensor] = None  # the latest rollout's decoded images (for previews)
        if times is None:
            self.times = samplers.flow_schedule(config.steps, config.shift, config.schedule)
        else:
            self.times = torch.tensor(samplers.loop.schedule_times(times), dtype=torch.float32)
            if len(self.times) != config.steps + 1 or float(self.times[-1]) != 0.0:
                raise ValueError(f"times must be {config.steps + 1} decreasing values ending at 0 (config.steps = "
                                 f"{config.steps}), got {self.times.tolist()}")
        self.etas = samplers.loop.per_step_eta(config.rule, config.eta, config.steps)
        self.noise_scale = float(getattr(policy, "noise_scale", 1.0))
        self.ode_solver = self.resolve_solver(config.ode_sampler, deterministic=True)
        self.checkpointed_modules = []
        if config.gradient_checkpointing:
            find = getattr(policy, "checkpoint_modules", None)
            self.checkpointed_modules = list(find()) if find is not None else []
            if not self.checkpointed_modules:
                raise ValueError("gradient_checkpointing is on but the policy names no blocks to checkpoint (the model "
                                 "has no ModuleList of blocks): pass checkpoint_modules to the policy or turn it off")
        self.check_trainable_steps()
        self.segments = [{"first_iteration": 0, "settings": self.run_settings()}]
        self._updates_this_iteration, self._bad_loss = 0, None
        self.broken: Optional[str] = None  # why the LoRA and optimizer must not be checkpointed (a half-done update)
        batch = config.prompts_per_iteration * config.group_size
        if batch % self.world.size:
            raise ValueError(f"prompts_per_iteration × group_size = {batch} samples do not split over "
                             f"{self.world.size} ranks")

    def resolve_solver(self, name: str, deterministic: bool):
        """A solver callable for a sampler name (see samplers.solvers): None for ``euler`` when deterministic (the
        ODE rule itself); the policy's ``stock_sampler(name, deterministic)`` when it has one (ComfyUI's samplers),
        else the pure-torch solvers."""
        if deterministic and name == "euler":
            return None
        stock = getattr(self.policy, "stock_sampler", None)
        if stock is not None:
            return stock(name, deterministic=deterministic)
        return samplers.solvers.solver(name)

    def sde_window(self, iteration: int):
        """The (first, stop) stochastic steps of an iteration under ``config.window_schedule`` (MixGRPO's window
        strategies, training/methods/mixgrpo.py), None when every step is stochastic."""
        return window_at(self.config, self.window_positions, iteration)

    def step(self) -> dict:
        """One GRPO iteration; returns (and records) its metrics."""
        iteration = self.iteration
        if self.broken is not None:
            raise RuntimeError(f"this trainer stopped with a half-done update ({self.broken}); resume from the last "
                               "checkpoint in a new trainer")
        start = time.perf_counter()
        rollout = self.rollout(iteration)
        self.last_images = rollout.images.detach()
        rolled = time.perf_counter()
        advantages = self.advantages(rollout)
        if not bool(torch.isfinite(advantages).all()):
            raise NonFiniteTraining(f"iteration {iteration}: non-finite advantages from rewards "
                                    f"{rollout.rewards.tolist()}; nothing of this iteration was trained", iteration,
                                    "advantages")
        steps = self.selected_steps(rollout, iteration)
        self._updates_this_iteration = 0
        try:
            train_stats = self.train_on(rollout, advantages, steps)
        except NonFiniteTraining:
            if self._updates_this_iteration:  # earlier optimizer steps of this iteration already moved the LoRA
                self.broken = f"iteration {iteration} stopped after {self._updates_this_iteration} of its updates"
            raise
        if self.ema is not None:
            self.ema.update()
        self.after_update(train_stats)
        for name in ("kl", "first_kl"):  # each rank measured its own samples: log the mean over all of them
            if train_stats.get(name) is not None:
                train_stats[name] = self.world.mean(train_stats[name])
        done = time.perf_counter()
        held_out = self.held_out(iteration)
        all_rewards = self.world.gather(rollout.rewards)
        metrics = {
            "iteration": iteration, "reward_mean": float(all_rewards.mean()), "reward_std": float(all_rewards.std()),
            "trained_steps": steps, **train_stats, "algorithm": self.config.algorithm,
            "sde_window": list(window) if (window := self.sde_window(iteration)) is not None else None,
            "rollout_bytes_per_sample": sum(self.stored_bytes(ch) for ch in rollout.chunks) / len(rollout.prompts),
            "time_rollout": rolled - start - rollout.blocked_seconds, "time_reward": rollout.reward_seconds,
            "time_train": done - rolled,
        }
        if held_out is not None:
            metrics.update(monitor=held_out["monitor"], held_out_reward=held_out["held_out_reward"],
                           time_monitor=held_out["seconds"])
        if rollout.step_rewards is not None:
            metrics["step_advantage_abs_mean"] = advantages.abs().mean(dim=0).tolist()
            metrics["dense_reward_start"] = float(rollout.step_rewards[:, 0].mean())
            # one ODE look-ahead + reward per step and micro-batch
            metrics["dense_extra_reward_calls"] = sum(len(ch.trajectory.latents) for ch in rollout.chunks)
        self.iteration += 1
        self.history.append(metrics)
        kl = "off (β = 0)" if metrics["kl"] is None else f"{metrics['kl']:.2e}"
        self.log(f"iteration {iteration}: reward {metrics['reward_mean']:.4f} ± {metrics['reward_std']:.4f}, "
                 f"loss {metrics['loss']:.3e}, kl {kl}"
                 + (f", clip {metrics['clip_fraction']:.2f}" if metrics["clip_fraction"] is not None else "")
                 + (f", masked {metrics['masked_fraction']:.2f}" if "masked_fraction" in metrics else "") + ", "
                 f"time rollout/reward/train {metrics['time_rollout']:.2f}/{metrics['time_reward']:.2f}/"
                 f"{metrics['time_train']:.2f} s"
                 + (f", dense rewards: {metrics['dense_extra_reward_calls']} extra ODE rollouts + reward calls"
                    if "dense_extra_reward_calls" in metrics else "")
                 + (f", held-out reward {held_out['held_out_reward']:.4f}"
                    + (f", monitor {held_out['monitor']:.4f}" if held_out["monitor"] is not None else "")
                    if held_out is not None else ""))
        return metrics

    def after_update(self, metrics: dict) -> None:
        """After an iteration's optimizer steps and the EMA update (DiffusionNFT moves its old policy here)."""

    def held_out(self, iteration: Optional[int]) -> Optional[dict]:
        """The drift monitor's scores of what would be saved now, when due (``iteration`` None = the base model, before
        training); the held-out samples become the previews. Rank 0 alone runs it: every rank holds the same LoRA."""
        c = self.config
        due = iteration is None or (iteration + 1) % c.monitor_every == 0 or iteration + 1 == c.iterations
        if c.monitor_samples < 1 or self.world.rank != 0 or not due:
            return None
        start = time.perf_counter()
        result = evaluate_held_out(self, self.monitor_fn)
        self.last_images = result.pop("images").detach()
        result["seconds"] = time.perf_counter() - start
        return result

    def export_lora_state_dict(self) -> Dict[str, torch.Tensor]:
        """The LoRA to save: the EMA when it is on, else the trained weights (copies either way)."""
        with self.ema.applied() if self.ema is not None else contextlib.nullcontext():
            return {k: v.detach().clone() for k, v in self.policy.lora_state_dict().items()}

    def train(self, iterations: Optional[int] = None, checkpoint_path: Optional[str] = None,
              on_iteration: Optional[Callable[[dict], None]] = None) -> List[dict]:
        """Run until ``iterations`` in total (default: config.iterations); checkpoint every config.checkpoint_every
        iterations and at the end when ``checkpoint_path`` is given."""
        target = self.config.iterations if iterations is None else iterations
        if self.iteration == 0 and self.monitor_baseline is None and self.config.monitor_samples > 0:
            self.monitor_baseline = self.held_out(None)  # None on ranks other than 0
            if self.monitor_baseline is not None:
                self.log(f"held-out before training: reward {self.monitor_baseline['held_out_reward']:.4f}"
                         + (f", monitor {self.monitor_baseline['monitor']:.4f}"
                            if self.monitor_baseline["monitor"] is not None else ""))
        while self.iteration < target:
            metrics = self.step()
            self.check_finite()  # before anything reports or checkpoints a broken LoRA
            if on_iteration is not None:
                on_iteration(metrics)
            every = self.config.checkpoint_every
            if checkpoint_path and (self.iteration == target or (every and self.iteration % every == 0)):
                self.save_checkpoint(checkpoint_path)
        return self.history


def reward_curve(history: List[dict], title: str = "GRPO reward", value_range=None) -> torch.Tensor:
    """The reward mean (± std band) per iteration as an IMAGE [1, H, W, 3], the y-axis inside the reward's known
    ``value_range`` ((low, high), None = unbounded)."""
    return plots.reward_curves_chart([("reward", history)], title=title, value_range=value_range)


__all__ = ["GRPOTrainer", "NonFiniteLoRA", "NonFiniteTraining", "RUN_SETTINGS", "Rollout", "SettingsChanged", "World",
           "describe_changes", "reward_curve"]
