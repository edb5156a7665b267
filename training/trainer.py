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

A reward is a callable ``(images, prompts) -> tensor [B]`` (training.rewards contract).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from . import checkpoint as checkpoints
from ._host import plots, samplers
from .grpo_config import GRPOConfig
from .grpo_loss import clipped_policy_loss, dense_step_rewards, group_advantages
from .rewards.base import evaluate_reward

_INIT_NOISE_STREAM = 0x1A17
_STEP_NOISE_STREAM = 0x57E9
_SELECTION_STREAM = 0x5E1E


@dataclass
class Rollout:
    prompts: List[str]
    cond: torch.Tensor
    trajectory: "samplers.Trajectory"
    images: torch.Tensor
    rewards: torch.Tensor
    old_log_probs: Dict[int, torch.Tensor]
    step_rewards: Optional[torch.Tensor] = None  # [B, N + 1] with dense rewards
    reward_seconds: float = 0.0  # time spent in the reward (and, with dense rewards, the look-ahead rollouts)


class World:
    """Rank and size of a torch.distributed run (1 process when not initialised)."""

    def __init__(self):
        dist = torch.distributed
        self.active = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.active else 0
        self.size = dist.get_world_size() if self.active else 1

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Concatenate equally sized [b, …] tensors of all ranks in rank order."""
        if not self.active:
            return local
        parts = [torch.empty_like(local) for _ in range(self.size)]
        torch.distributed.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    def average_gradients(self, parameters) -> None:
        if not self.active:
            return
        for p in parameters:
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.SUM)
                p.grad /= self.size


class GRPOTrainer:
    """Runs GRPO iterations: rollout → rewards → advantages → clipped-objective updates of the LoRA."""

    def __init__(self, policy, reward_fn: Callable, config: GRPOConfig, log: Optional[Callable] = None,
                 times: Optional[torch.Tensor] = None):
        """``times``: the rollout schedule t_0 > … > t_N = 0 (e.g. a ComfyUI model's sigmas); default: the config's
        ``flow_schedule(steps, shift, schedule)``."""
        self.policy, self.reward_fn, self.config = policy, reward_fn, config
        self.log = log or (lambda message: None)
        self.world = World()
        self.params = list(policy.trainable_parameters())
        if not self.params:
            raise ValueError("the policy has no trainable parameters (attach a LoRA first)")
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, betas=tuple(config.adam_betas),
                                           weight_decay=config.weight_decay)
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
        batch = config.prompts_per_iteration * config.group_size
        if batch % self.world.size:
            raise ValueError(f"prompts_per_iteration × group_size = {batch} samples do not split over "
                             f"{self.world.size} ranks")

    # ----- what one iteration uses -------------------------------------------------------------------------
    def iteration_prompts(self, iteration: int) -> List[str]:
        """All samples' prompts of an iteration (group by group), before splitting over ranks."""
        c = self.config
        start = iteration * c.prompts_per_iteration
        chosen = [c.prompts[(start + k) % len(c.prompts)] for k in range(c.prompts_per_iteration)]
        return [p for p in chosen for _ in range(c.group_size)]

    def local_slice(self, total: int) -> slice:
        per_rank = total // self.world.size
        return slice(self.world.rank * per_rank, (self.world.rank + 1) * per_rank)

    def sde_window(self, iteration: int):
        c = self.config
        if c.sde_window is None:
            return None
        first, stop = c.sde_window
        if not c.sliding_window:
            return first, stop
        size = stop - first
        offset = (first + iteration * c.window_stride) % (c.steps - size + 1)
        return offset, offset + size

    def sample_seeds(self, iteration: int, indices) -> List[int]:
        return [samplers.derive_seed(self.config.seed, iteration, j) for j in indices]

    def initial_noise(self, seeds: List[int]) -> torch.Tensor:
        shape = tuple(self.policy.latent_shape)
        noise = torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(
            samplers.derive_seed(s, _INIT_NOISE_STREAM))) for s in seeds])
        return noise.to(getattr(self.policy, "device", "cpu"))

    # ----- rollout -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def rollout(self, iteration: int) -> Rollout:
        c = self.config
        all_prompts = self.iteration_prompts(iteration)
        mine = self.local_slice(len(all_prompts))
        prompts = all_prompts[mine]
        seeds = self.sample_seeds(iteration, range(mine.start, mine.stop))
        cond = self.policy.encode_prompts(prompts)
        x = self.initial_noise(seeds) * (float(self.times[0]) * self.noise_scale)

        def denoise(x_t, t):
            return self.policy.denoise(x_t, t, cond, c.cfg)

        final, trajectory = samplers.sample_flow(
            denoise, x, self.times, rule=c.rule, eta=self.etas, window=self.sde_window(iteration),
            noise=samplers.StepNoise([samplers.derive_seed(s, _STEP_NOISE_STREAM) for s in seeds]), record=True,
            noise_scale=self.noise_scale)
        images = self.policy.decode(final)
        reward_start = time.perf_counter()
        rewards = self._reward(images, prompts)
        old = {i: samplers.log_prob(trajectory.samples[i], trajectory.means[i], trajectory.stds[i],
                                    kind=c.log_prob_kind) for i in trajectory.stochastic_steps}
        step_rewards = self._dense_rewards(trajectory, cond, prompts, rewards) if c.dense_rewards else None
        return Rollout(prompts, cond, trajectory, images, rewards, old, step_rewards,
                       reward_seconds=time.perf_counter() - reward_start)

    def _reward(self, images, prompts) -> torch.Tensor:
        return evaluate_reward(self.reward_fn, images, prompts).rewards.cpu()

    def _dense_rewards(self, trajectory, cond, prompts, final_rewards) -> torch.Tensor:
        """R[:, i] = reward of the ODE completion of the latent entering step i; R[:, N] = the final reward."""
        columns = []
        for i, latent in enumerate(trajectory.latents):
            completed = samplers.sample_flow(lambda x_t, t: self.policy.denoise(x_t, t, cond, self.config.cfg),
                                             latent, self.times[i:], rule="ode")
            columns.append(self._reward(self.policy.decode(completed), prompts))
        return torch.stack(columns + [final_rewards], dim=1)

    # ----- advantages ----------------------------------------------------------------------------------------
    def advantages(self, rollout: Rollout) -> torch.Tensor:
        """[b] per-sample advantages, or [b, N] per-step ones with dense rewards, for this rank's samples."""
        c = self.config
        signal = rollout.rewards if rollout.step_rewards is None else dense_step_rewards(rollout.step_rewards)
        everything = self.world.gather(signal)
        advantages = group_advantages(everything, c.group_size, std_mode=c.advantage_std, clip=c.advantage_clip)
        return advantages[self.local_slice(everything.shape[0])]

    def selected_steps(self, rollout: Rollout, iteration: int) -> List[int]:
        c = self.config
        candidates = rollout.trajectory.stochastic_steps
        if not candidates:
            raise ValueError("no stochastic step in the rollout: raise η or widen the SDE window")
        count = max(1, int(len(candidates) * c.timestep_fraction)) if c.timestep_selection == "first" \
            else max(1, round(len(candidates) * c.timestep_fraction))
        if c.timestep_selection == "first":
            return candidates[:count]
        generator = torch.Generator().manual_seed(samplers.derive_seed(c.seed, iteration, _SELECTION_STREAM))
        order = torch.randperm(len(candidates), generator=generator)[:count].tolist()
        return [candidates[k] for k in sorted(order)]

    # ----- training ------------------------------------------------------------------------------------------
    def train_mode(self):
        mode = getattr(self.policy, "train_mode", None)
        return mode() if mode is not None else contextlib.nullcontext()

    def train_on(self, rollout: Rollout, advantages: torch.Tensor, steps: List[int]) -> dict:
        c = self.config
        traj = rollout.trajectory
        stats = {"loss": [], "ratio_mean": [], "ratio_min": [], "ratio_max": [], "clip_fraction": [], "kl": [],
                 "grad_norm": []}
        micro = 0
        self.optimizer.zero_grad(set_to_none=True)
        for _ in range(c.inner_epochs):
            for i in steps:
                t, t_next = float(self.times[i]), float(self.times[i + 1])
                x = traj.latents[i]
                with self.train_mode():
                    denoised = self.policy.denoise(x, t, rollout.cond, c.cfg)
                    mean, std = samplers.transition_mean(traj.rules[i], x, denoised, t, t_next, eta=traj.etas[i])
                    std = std * self.noise_scale
                    log_prob = samplers.log_prob(traj.samples[i], mean, std, kind=c.log_prob_kind)
                    adv = advantages[:, i] if advantages.dim() == 2 else advantages
                    out = clipped_policy_loss(log_prob, rollout.old_log_probs[i], adv.to(log_prob.device),
                                              c.clip_range)
                    loss = out["loss"]
                    kl = torch.zeros(())
                    if c.beta > 0:
                        with torch.no_grad(), self.policy.reference():
                            ref = self.policy.denoise(x, t, rollout.cond, c.cfg)
                            ref_mean, _ = samplers.transition_mean(traj.rules[i], x, ref, t, t_next,
                                                                   eta=traj.etas[i])
                        kl = samplers.gaussian_kl_equal_std(mean, ref_mean, std, kind=c.kl_kind).mean()
                        loss = loss + c.beta * kl
                    (loss / c.gradient_accumulation).backward()
                micro += 1
                for key in ("ratio_mean", "ratio_min", "ratio_max", "clip_fraction"):
                    stats[key].append(float(out[key]))
                stats["loss"].append(float(loss.detach()))
                stats["kl"].append(float(kl.detach()))
                if micro % c.gradient_accumulation == 0:
                    stats["grad_norm"].append(self._optimizer_step())
        if micro % c.gradient_accumulation:
            stats["grad_norm"].append(self._optimizer_step())
        return {
            "loss": sum(stats["loss"]) / len(stats["loss"]), "kl": sum(stats["kl"]) / len(stats["kl"]),
            "ratio_mean": sum(stats["ratio_mean"]) / len(stats["ratio_mean"]),
            "ratio_min": min(stats["ratio_min"]), "ratio_max": max(stats["ratio_max"]),
            "first_ratio_mean": stats["ratio_mean"][0], "first_ratio_min": stats["ratio_min"][0],
            "first_ratio_max": stats["ratio_max"][0],
            "clip_fraction": sum(stats["clip_fraction"]) / len(stats["clip_fraction"]),
            "grad_norm": max(stats["grad_norm"]) if stats["grad_norm"] else 0.0,
        }

    def _optimizer_step(self) -> float:
        self.world.average_gradients(self.params)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def step(self) -> dict:
        """One GRPO iteration; returns (and records) its metrics."""
        iteration = self.iteration
        start = time.perf_counter()
        rollout = self.rollout(iteration)
        self.last_images = rollout.images.detach()
        rolled = time.perf_counter()
        advantages = self.advantages(rollout)
        steps = self.selected_steps(rollout, iteration)
        train_stats = self.train_on(rollout, advantages, steps)
        done = time.perf_counter()
        all_rewards = self.world.gather(rollout.rewards)
        metrics = {
            "iteration": iteration, "reward_mean": float(all_rewards.mean()), "reward_std": float(all_rewards.std()),
            "trained_steps": steps, **train_stats,
            "time_rollout": rolled - start - rollout.reward_seconds, "time_reward": rollout.reward_seconds,
            "time_train": done - rolled,
        }
        if rollout.step_rewards is not None:
            metrics["step_advantage_abs_mean"] = advantages.abs().mean(dim=0).tolist()
            metrics["dense_reward_start"] = float(rollout.step_rewards[:, 0].mean())
            metrics["dense_extra_reward_calls"] = len(rollout.trajectory.latents)  # one ODE look-ahead + reward each
        self.iteration += 1
        self.history.append(metrics)
        self.log(f"iteration {iteration}: reward {metrics['reward_mean']:.4f} ± {metrics['reward_std']:.4f}, "
                 f"loss {metrics['loss']:.3e}, kl {metrics['kl']:.2e}, clip {metrics['clip_fraction']:.2f}, "
                 f"time rollout/reward/train {metrics['time_rollout']:.2f}/{metrics['time_reward']:.2f}/"
                 f"{metrics['time_train']:.2f} s"
                 + (f", dense rewards: {metrics['dense_extra_reward_calls']} extra ODE rollouts + reward calls"
                    if "dense_extra_reward_calls" in metrics else ""))
        return metrics

    def train(self, iterations: Optional[int] = None, checkpoint_path: Optional[str] = None,
              on_iteration: Optional[Callable[[dict], None]] = None) -> List[dict]:
        """Run until ``iterations`` in total (default: config.iterations); checkpoint every config.checkpoint_every
        iterations and at the end when ``checkpoint_path`` is given."""
        target = self.config.iterations if iterations is None else iterations
        while self.iteration < target:
            metrics = self.step()
            self.check_finite()  # before anything reports or checkpoints a broken LoRA
            if on_iteration is not None:
                on_iteration(metrics)
            every = self.config.checkpoint_every
            if checkpoint_path and (self.iteration == target or (every and self.iteration % every == 0)):
                self.save_checkpoint(checkpoint_path)
        return self.history

    # ----- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"format": checkpoints.FORMAT, "iteration": self.iteration, "history": self.history,
                "config": self.config.to_dict(), "lora": self.policy.lora_state_dict(),
                "optimizer": self.optimizer.state_dict(), "torch_rng": torch.get_rng_state()}

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
        state = self.state_dict()
        self.check_finite(state["lora"])
        checkpoints.write_checkpoint(path, state)

    def save_stopped(self, path: str) -> Optional[str]:
        """After cancel or an error: checkpoint what was trained, unless that would be a checkpoint 'latest' must not
        pick. Returns None when saved, else why nothing was written (no trained iteration yet; a non-finite LoRA,
        whose last good checkpoint stays)."""
        if self.iteration < 1:
            return "no iteration was trained"
        bad = self.non_finite_lora()
        if bad is not None:
            return f"the LoRA is non-finite (NaN/inf in {bad})"
        self.save_checkpoint(path)
        return None

    def load_checkpoint(self, path: str) -> None:
        """Resume from a checkpoint: LoRA, optimizer moments, iteration, history and RNG come from the file; the
        optimizer settings set now (lr, weight_decay, betas, eps, …) win over the ones stored in it.

        Never unpickles: a v1 ``torch.save`` checkpoint raises CheckpointError saying how to convert it."""
        state = checkpoints.read_checkpoint(path)
        missing = [k for k in ("lora", "optimizer", "iteration", "history", "torch_rng") if k not in state]
        if missing:
            raise checkpoints.CheckpointError(f"{path}: the checkpoint misses {missing}")
        self.policy.load_lora_state_dict(state["lora"])
        now = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, settings in zip(self.optimizer.param_groups, now):
            changed = {k: (group[k], v) for k, v in settings.items() if k in group and group[k] != v}
            if changed:
                self.log("resume: optimizer settings set now replace the checkpoint's: " + ", ".join(
                    f"{k} {old} -> {new}" for k, (old, new) in changed.items()))
            group.update(settings)
        self.iteration = int(state["iteration"])
        self.history = list(state["history"])
        torch.set_rng_state(state["torch_rng"])


class NonFiniteLoRA(FloatingPointError):
    """A trained iteration produced NaN/inf in the LoRA (``iteration``: that iteration, 0-based)."""

    def __init__(self, message: str, iteration: int):
        super().__init__(message)
        self.iteration = iteration


def reward_curve(history: List[dict], title: str = "GRPO reward") -> torch.Tensor:
    """The reward mean (± std band) per iteration as an IMAGE [1, H, W, 3]."""
    xs = [h["iteration"] for h in history]
    mean = [h["reward_mean"] for h in history]
    std = [h["reward_std"] for h in history]
    return plots.line_chart({"reward": (xs, mean)}, title=title, x_label="iteration", y_label="reward",
                                     bands={"reward": ([m - s for m, s in zip(mean, std)],
                                                       [m + s for m, s in zip(mean, std)])})


__all__ = ["GRPOTrainer", "NonFiniteLoRA", "Rollout", "World", "reward_curve"]
