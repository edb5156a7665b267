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

import contextlib
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import MISSING, dataclass, fields
from typing import Callable, Dict, List, Optional

import torch

from . import checkpoint as checkpoints
from ._host import plots, samplers
from .checkpointing import checkpoint_blocks
from .ema import LoRAEMA
from .grpo_config import GRPOConfig
from .grpo_loss import (dense_step_rewards, group_advantages, guard_log_ratio, policy_loss_from_log_ratio,
                        transition_kl, trust_region_keep)
from .monitor import evaluate_held_out
from .rewards.base import evaluate_reward

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

_INIT_NOISE_STREAM = 0x1A17
_STEP_NOISE_STREAM = 0x57E9
_SELECTION_STREAM = 0x5E1E
_WINDOW_STREAM = 0x3170


@dataclass
class Chunk:
    """One rollout micro-batch: rows ``rows`` of the rank's samples, sampled together (and so trained together)."""

    rows: slice
    cond: torch.Tensor
    trajectory: "samplers.Trajectory"
    old_log_probs: Dict[int, torch.Tensor]


@dataclass
class Rollout:
    prompts: List[str]
    chunks: List[Chunk]
    images: torch.Tensor
    rewards: torch.Tensor
    step_rewards: Optional[torch.Tensor] = None  # [B, N + 1] with dense rewards
    reward_seconds: float = 0.0  # time spent computing rewards (and, with dense rewards, the look-ahead rollouts)
    blocked_seconds: float = 0.0  # of that, the time sampling waited for it (all of it unless the reward overlaps)

    @property
    def trajectory(self) -> "samplers.Trajectory":
        """The trajectory when the rollout was one batch (``sample_batch_size`` unset or ≥ the batch)."""
        if len(self.chunks) != 1:
            raise ValueError(f"this rollout has {len(self.chunks)} micro-batches: use rollout.chunks")
        return self.chunks[0].trajectory

    @property
    def cond(self) -> torch.Tensor:
        return torch.cat([chunk.cond for chunk in self.chunks])

    @property
    def old_log_probs(self) -> Dict[int, torch.Tensor]:
        """Per step, the rollout's log-probs of all its samples (concatenated over micro-batches)."""
        return {i: torch.cat([chunk.old_log_probs[i] for chunk in self.chunks]) for i in self.stochastic_steps}

    @property
    def stochastic_steps(self) -> List[int]:
        return self.chunks[0].trajectory.stochastic_steps


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

    def total(self, count: int) -> int:
        """The sum of an integer over all ranks (every rank calls it: a collective)."""
        if not self.active:
            return int(count)
        value = torch.tensor([int(count)], dtype=torch.int64)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.SUM)
        return int(value)

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

    def check_trainable_steps(self) -> None:
        """Refuse, before any rollout, a configuration that leaves no stochastic step to train in some iteration; a
        moving window keeps only the positions that have one (``window_positions``)."""
        c = self.config
        self.window_positions = None
        if c.sde_window is None or c.window_schedule == "fixed":
            self._check_window(self.sde_window(0))
            return
        size = c.sde_window[1] - c.sde_window[0]
        positions, reasons = [], []
        for start in range(c.steps - size + 1):
            try:
                self._check_window((start, start + size))
                positions.append(start)
            except ValueError as e:
                reasons.append(f"({start}, {start + size}): {e}")
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
        """The (first, stop) stochastic steps of an iteration under ``config.window_schedule`` (MixGRPO's window
        strategies), None when every step is stochastic."""
        c = self.config
        if c.sde_window is None:
            return None
        first, stop = c.sde_window
        size = stop - first
        positions = self.window_positions
        if c.window_schedule == "fixed" or positions is None:
            return first, stop
        start = next((k for k, p in enumerate(positions) if p >= first), len(positions) - 1)
        moves = (iteration // c.window_shift_every) * c.window_stride
        if c.window_schedule == "sliding":
            index = (start + moves) % len(positions)
        elif c.window_schedule == "progressive":
            index = min(start + moves, len(positions) - 1)
        else:  # random
            generator = torch.Generator().manual_seed(samplers.derive_seed(c.seed, iteration, _WINDOW_STREAM))
            index = int(torch.randint(len(positions), (1,), generator=generator))
        return positions[index], positions[index] + size

    def sample_seeds(self, iteration: int, indices) -> List[int]:
        return [samplers.derive_seed(self.config.seed, iteration, j) for j in indices]

    def initial_noise(self, seeds: List[int]) -> torch.Tensor:
        shape = tuple(self.policy.latent_shape)
        noise = torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(
            samplers.derive_seed(s, _INIT_NOISE_STREAM))) for s in seeds])
        return noise.to(getattr(self.policy, "device", "cpu"), getattr(self.policy, "dtype", torch.float32))

    # ----- rollout -------------------------------------------------------------------------------------------
    def forward_precision(self):
        """Autocast for every model forward (rollouts and training alike, so the first update stays on-policy)."""
        dtype = self.config.train_dtype
        if dtype == "float32":
            return contextlib.nullcontext()
        device = torch.device(getattr(self.policy, "device", "cpu"))
        return torch.autocast(device.type, dtype=getattr(torch, dtype))

    def denoise(self, x: torch.Tensor, t: float, cond: torch.Tensor) -> torch.Tensor:
        with self.forward_precision():
            return self.policy.denoise(x, t, cond, self.config.cfg)

    def micro_batches(self, total: int, size: Optional[int]) -> List[slice]:
        size = size or total
        return [slice(start, min(total, start + size)) for start in range(0, total, size)]

    @torch.no_grad()
    def rollout(self, iteration: int) -> Rollout:
        """Sample this rank's share of the iteration in micro-batches of ``sample_batch_size``; each micro-batch is
        decoded and scored as soon as it is sampled (in a worker thread while the next one samples, where the
        reward allows it). Per-sample seeds make the samples independent of how they are batched."""
        c = self.config
        all_prompts = self.iteration_prompts(iteration)
        mine = self.local_slice(len(all_prompts))
        prompts = all_prompts[mine]
        seeds = self.sample_seeds(iteration, range(mine.start, mine.stop))
        cond_all = self.policy.encode_prompts(prompts)
        overlap = c.overlap_reward and not c.dense_rewards and getattr(self.reward_fn, "thread_safe", False)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flow-cps-reward") if overlap else None
        chunks, images, scored = [], [], []
        blocked = 0.0
        broken = None  # (kind, bad samples, samples so far) of the first micro-batch with NaN/inf
        try:
            for rows in self.micro_batches(len(prompts), c.sample_batch_size):
                cond = cond_all[rows]
                final, chunk = self.sample_chunk(iteration, rows, cond, seeds[rows])
                decoded = self.policy.decode(final)
                broken = self._non_finite_rollout(final, decoded, rows)
                if broken is not None:
                    break  # not scored: a reward must never see NaN images
                chunks.append(chunk)
                images.append(decoded)
                if pool is not None:
                    scored.append(pool.submit(self._timed_reward, decoded, prompts[rows]))
                else:
                    scored.append(self._timed_reward(decoded, prompts[rows]))
                    blocked += scored[-1][1]
                self._restore_model()
            if pool is not None and broken is None:
                wait_start = time.perf_counter()
                scored = [future.result() for future in scored]
                blocked += time.perf_counter() - wait_start
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._raise_if_rollout_broken(iteration, broken)
        rewards = torch.cat([r for r, _ in scored])
        reward_seconds = sum(seconds for _, seconds in scored)
        step_rewards = None
        if c.dense_rewards:
            start = time.perf_counter()
            step_rewards = torch.cat([self._dense_rewards(chunk.trajectory, chunk.cond, prompts[chunk.rows],
                                                          rewards[chunk.rows]) for chunk in chunks])
            reward_seconds += time.perf_counter() - start
            blocked += time.perf_counter() - start
        return Rollout(prompts, chunks, torch.cat(images), rewards, step_rewards, reward_seconds=reward_seconds,
                       blocked_seconds=blocked)

    def sample_chunk(self, iteration: int, rows: slice, cond, seeds: List[int]):
        """(final latents, Chunk) of one rollout micro-batch: the trajectory and its log-probs, for GRPO."""
        c = self.config
        x = self.initial_noise(seeds) * (float(self.times[0]) * self.noise_scale)
        final, trajectory = samplers.sample_flow(
            lambda x_t, t: self.denoise(x_t, t, cond), x, self.times, rule=c.rule, eta=self.etas,
            window=self.sde_window(iteration), record=True, noise_scale=self.noise_scale, ode_solver=self.ode_solver,
            noise=samplers.StepNoise([samplers.derive_seed(s, _STEP_NOISE_STREAM) for s in seeds]))
        old = {i: samplers.log_prob(trajectory.samples[i], trajectory.means[i], trajectory.stds[i],
                                    kind=c.log_prob_kind) for i in trajectory.stochastic_steps}
        return final, Chunk(rows, cond, trajectory, old)

    @staticmethod
    def _non_finite_rollout(final: torch.Tensor, decoded: torch.Tensor, rows: slice):
        """None when the micro-batch's latents and images are finite, else (what, bad count, samples so far)."""
        bad_images = (~torch.isfinite(decoded.float())).flatten(1).any(dim=1)
        bad_latents = (~torch.isfinite(final.float())).flatten(1).any(dim=1)
        if bool(bad_images.any()):
            return "decoded non-finite images", int(bad_images.sum()), rows.stop
        if bool(bad_latents.any()):
            return "sampled non-finite latents", int(bad_latents.sum()), rows.stop
        return None

    def _raise_if_rollout_broken(self, iteration: int, broken) -> None:
        """Every rank calls this once per rollout, so one rank's NaN stops all of them (no rank waits forever)."""
        bad = self.world.total(broken[1] if broken is not None else 0)
        if not bad:
            return
        what, count, seen = broken if broken is not None else ("decoded non-finite images", 0, 0)
        where = f"{count} of {seen}" if not self.world.active else f"{bad} samples over all ranks"
        raise NonFiniteTraining(
            f"iteration {iteration}: the rollout {what} ({where}); check the model/VAE dtype (float16 overflows: "
            "try bfloat16 or float32), the cfg scale and the sampler settings. Nothing of this iteration was trained "
            "or checkpointed; the last checkpoint stays", iteration, "rollout")

    def _timed_reward(self, images, prompts):
        start = time.perf_counter()
        rewards = self._reward(images, prompts)
        return rewards, time.perf_counter() - start

    def _restore_model(self) -> None:
        restore = getattr(self.policy, "restore_model", None)
        if restore is not None:  # always from this (the sampling) thread: host model management is not thread-safe
            restore()

    def _reward(self, images, prompts) -> torch.Tensor:
        return evaluate_reward(self.reward_fn, images, prompts).rewards.cpu()

    def _dense_rewards(self, trajectory, cond, prompts, final_rewards) -> torch.Tensor:
        """R[:, i] = reward of the ODE completion of the latent entering step i; R[:, N] = the final reward."""
        columns = []
        for i, latent in enumerate(trajectory.latents):
            completed = samplers.sample_flow(lambda x_t, t: self.denoise(x_t, t, cond), latent, self.times[i:],
                                             rule="ode", ode_solver=self.ode_solver)
            columns.append(self._reward(self.policy.decode(completed), prompts))
            self._restore_model()
        return torch.stack(columns + [final_rewards], dim=1)

    # ----- advantages ----------------------------------------------------------------------------------------
    def advantages(self, rollout: Rollout) -> torch.Tensor:
        """[b] per-sample advantages, or [b, N] per-step ones with dense rewards, for this rank's samples."""
        c = self.config
        signal = rollout.rewards if rollout.step_rewards is None else dense_step_rewards(rollout.step_rewards)
        everything = self.world.gather(signal)
        advantages = group_advantages(everything, c.group_size, std_mode=c.advantage_std, clip=c.advantage_clip,
                                      eps=c.advantage_eps, ddof=c.advantage_std_ddof)
        return advantages[self.local_slice(everything.shape[0])]

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
        generator = torch.Generator().manual_seed(samplers.derive_seed(c.seed, iteration, _SELECTION_STREAM))
        order = torch.randperm(len(candidates), generator=generator)[:count].tolist()
        return [candidates[k] for k in sorted(order)]

    # ----- training ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def train_mode(self):
        """Around every training forward and backward: the policy's own train mode (e.g. the host's
        differentiable kernels) and, with ``gradient_checkpointing``, its blocks checkpointed."""
        with contextlib.ExitStack() as stack:
            mode = getattr(self.policy, "train_mode", None)
            if mode is not None:
                stack.enter_context(mode())
            if self.config.gradient_checkpointing:
                stack.callback(checkpoint_blocks(self.checkpointed_modules))
            yield

    def training_batches(self, rollout: Rollout) -> List[slice]:
        return self.micro_batches(len(rollout.prompts), self.config.train_batch_size or self.config.sample_batch_size)

    @staticmethod
    def rows(rollout: Rollout, field: str, i: int, rows: slice) -> torch.Tensor:
        """``trajectory.<field>[i]`` of rows ``rows``, gathered from the rollout micro-batches that hold them."""
        parts = []
        for chunk in rollout.chunks:
            lo, hi = max(rows.start, chunk.rows.start), min(rows.stop, chunk.rows.stop)
            if lo < hi:
                value = getattr(chunk.trajectory, field)[i]
                parts.append(value[lo - chunk.rows.start:hi - chunk.rows.start])
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _transition(self, rollout, i, rows, cond):
        """Mean and std of step i for rows ``rows`` under the current policy (differentiable)."""
        traj = rollout.chunks[0].trajectory
        t, t_next = float(self.times[i]), float(self.times[i + 1])
        x = self.rows(rollout, "latents", i, rows)
        denoised = self.denoise(x, t, cond)
        mean, std = samplers.transition_mean(traj.rules[i], x, denoised, t, t_next, eta=traj.etas[i])
        return x, mean, std * self.noise_scale

    def _old_log_probs(self, rollout: Rollout, steps: List[int], batches: List[slice], conds) -> Dict[int, list]:
        """Per trained step and training micro-batch, ``(log-prob, mean)`` of the behaviour policy: the rollout's own
        when the batches are its micro-batches; else recomputed before any update (a model's output can depend on
        the batch it runs in, and the first update must be exactly on-policy)."""
        if [(b.start, b.stop) for b in batches] == [(ch.rows.start, ch.rows.stop) for ch in rollout.chunks]:
            return {i: [(chunk.old_log_probs[i], chunk.trajectory.means[i]) for chunk in rollout.chunks]
                    for i in steps}
        old = {}
        with torch.no_grad(), self.train_mode():
            for i in steps:
                old[i] = []
                for rows, cond in zip(batches, conds):
                    _, mean, std = self._transition(rollout, i, rows, cond)
                    old[i].append((samplers.log_prob(self.rows(rollout, "samples", i, rows), mean, std,
                                                     kind=self.config.log_prob_kind), mean.detach()))
        return old

    def policy_objective(self, sample, mean, std, old_log_prob, old_mean, advantages) -> dict:
        """The clipped objective of one (step, micro-batch), with GRPO-Guard's ratio normalisation and FlowDPPO's
        trust-region mask when they are on."""
        c = self.config
        log_prob = samplers.log_prob(sample, mean, std, kind=c.log_prob_kind)
        log_ratio = (guard_log_ratio(sample, mean, old_mean, std) if c.ratio_norm else log_prob - old_log_prob)
        keep = None
        if c.kl_mask_threshold > 0:
            keep = trust_region_keep(transition_kl(old_mean, mean.detach(), std), log_ratio.detach(), advantages,
                                     c.kl_mask_threshold)
        return policy_loss_from_log_ratio(log_ratio, advantages, c.clip_range, keep)

    def train_on(self, rollout: Rollout, advantages: torch.Tensor, steps: List[int]) -> dict:
        """Gradient accumulation over (trained step, training micro-batch) pairs: each pair's loss is weighted by its
        share of the batch, so an optimizer step (every ``gradient_accumulation`` trained steps) makes exactly the
        full-batch update. Memory holds one micro-batch's activations at a time."""
        c = self.config
        total = len(rollout.prompts)
        batches = self.training_batches(rollout)
        cond_all = torch.cat([chunk.cond for chunk in rollout.chunks])
        conds = [cond_all[rows] for rows in batches]
        old = self._old_log_probs(rollout, steps, batches, conds)
        per_step = []
        trained = 0
        self.optimizer.zero_grad(set_to_none=True)
        grad_norms = []
        self._bad_loss = None  # the first non-finite loss; its NaN gradients stop the optimizer step on every rank
        for _ in range(c.inner_epochs):
            for i in steps:
                step_stats = {"loss": 0.0, "kl": 0.0, "ratio_mean": 0.0, "clip_fraction": 0.0, "masked_fraction": 0.0,
                              "ratio_min": float("inf"), "ratio_max": float("-inf")}
                for k, (rows, cond) in enumerate(zip(batches, conds)):
                    share = (rows.stop - rows.start) / total
                    with self.train_mode():
                        _, mean, std = self._transition(rollout, i, rows, cond)
                        adv = advantages[rows, i] if advantages.dim() == 2 else advantages[rows]
                        old_log_prob, old_mean = old[i][k]
                        out = self.policy_objective(self.rows(rollout, "samples", i, rows), mean, std, old_log_prob,
                                                    old_mean, adv.to(mean.device))
                        loss = out["loss"]
                        kl = torch.zeros(())
                        if c.beta > 0:
                            with torch.no_grad(), self.policy.reference():
                                _, ref_mean, _ = self._transition(rollout, i, rows, cond)
                            kl = samplers.gaussian_kl_equal_std(mean, ref_mean, std, kind=c.kl_kind).mean()
                            loss = loss + c.beta * kl
                        (loss * (share / c.gradient_accumulation)).backward()
                    value = float(loss.detach())
                    if not math.isfinite(value) and self._bad_loss is None:
                        self._bad_loss = (f"the loss at step {i} was {value} (policy loss {float(out['loss'].detach())}, "
                                          f"KL {float(kl)}, ratio {float(out['ratio_min']):.3g}–"
                                          f"{float(out['ratio_max']):.3g})")
                    step_stats["loss"] += value * share
                    step_stats["kl"] += float(kl.detach()) * share
                    step_stats["ratio_mean"] += float(out["ratio_mean"]) * share
                    step_stats["clip_fraction"] += float(out["clip_fraction"]) * share
                    step_stats["masked_fraction"] += float(out["masked_fraction"]) * share
                    step_stats["ratio_min"] = min(step_stats["ratio_min"], float(out["ratio_min"]))
                    step_stats["ratio_max"] = max(step_stats["ratio_max"], float(out["ratio_max"]))
                per_step.append(step_stats)
                trained = self._count_trained_term(trained, grad_norms)
        self._finish_accumulation(trained, grad_norms)
        n = len(per_step)
        measured = c.beta > 0  # with β = 0 no KL is computed: None, not a 0 that looks measured
        return {
            "loss": sum(s["loss"] for s in per_step) / n,
            "kl": sum(s["kl"] for s in per_step) / n if measured else None,
            "ratio_mean": sum(s["ratio_mean"] for s in per_step) / n,
            "ratio_min": min(s["ratio_min"] for s in per_step), "ratio_max": max(s["ratio_max"] for s in per_step),
            "first_ratio_mean": per_step[0]["ratio_mean"], "first_ratio_min": per_step[0]["ratio_min"],
            "first_ratio_max": per_step[0]["ratio_max"], "first_kl": per_step[0]["kl"] if measured else None,
            "clip_fraction": sum(s["clip_fraction"] for s in per_step) / n,
            **({"masked_fraction": sum(s["masked_fraction"] for s in per_step) / n} if c.kl_mask_threshold > 0
               else {}),
            "grad_norm": max(grad_norms) if grad_norms else 0.0,
            "train_micro_batches": len(batches),
        }

    def _count_trained_term(self, trained: int, grad_norms: list) -> int:
        """One more trained (step, all micro-batches) term: an optimizer step every ``gradient_accumulation``."""
        trained += 1
        if trained % self.config.gradient_accumulation == 0:
            grad_norms.append(self._optimizer_step())
        return trained

    def _finish_accumulation(self, trained: int, grad_norms: list) -> None:
        """The optimizer step of a last, incomplete accumulation."""
        if trained % self.config.gradient_accumulation:
            grad_norms.append(self._optimizer_step())

    def _optimizer_step(self) -> float:
        """Average (over ranks), clip and apply the gradients; non-finite ones are dropped and stop the run (the
        averaged gradients are the same on every rank, so every rank stops)."""
        self.world.average_gradients(self.params)
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm))
        bad_losses = self.world.total(self._bad_loss is not None)  # a NaN loss can leave finite (masked) gradients
        if not math.isfinite(norm) or bad_losses:
            self.optimizer.zero_grad(set_to_none=True)
            what = f"non-finite gradients (norm {norm})" if not math.isfinite(norm) else "a non-finite loss"
            cause = self._bad_loss or ("the loss was finite (the model's backward produced them)" if not bad_losses
                                       else "on another rank")
            raise NonFiniteTraining(
                f"iteration {self.iteration}: {what}: {cause}. The LoRA was not updated by them. Lower the learning "
                "rate or clip_range, check the model dtype (float16 overflows), then resume from the last "
                "checkpoint", self.iteration, "gradients" if not math.isfinite(norm) else "loss")
        self.optimizer.step()
        self._updates_this_iteration += 1
        self.optimizer.zero_grad(set_to_none=True)
        return norm

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

    @staticmethod
    def stored_bytes(chunk) -> int:
        """Bytes a rollout micro-batch keeps for training (its trajectory and log-probs)."""
        tensors = [t for field in ("latents", "samples", "means", "stds") for t in getattr(chunk.trajectory, field)]
        tensors += list(chunk.old_log_probs.values())
        unique = {(t.data_ptr(), t.numel() * t.element_size()) for t in tensors}  # samples[i] is latents[i + 1]
        return sum(size for _, size in unique)

    def held_out(self, iteration: Optional[int]) -> Optional[dict]:
        """The drift monitor's scores of what would be saved now, when due (``iteration`` None = the base model, before
        training); the held-out samples become the previews."""
        c = self.config
        if c.monitor_samples < 1 or (iteration is not None and (iteration + 1) % c.monitor_every
                                     and iteration + 1 != c.iterations):
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
            self.monitor_baseline = self.held_out(None)
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

    # ----- checkpoints ---------------------------------------------------------------------------------------
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


def reward_curve(history: List[dict], title: str = "GRPO reward", value_range=None) -> torch.Tensor:
    """The reward mean (± std band) per iteration as an IMAGE [1, H, W, 3], the y-axis inside the reward's known
    ``value_range`` ((low, high), None = unbounded)."""
    return plots.reward_curves_chart([("reward", history)], title=title, value_range=value_range)


__all__ = ["GRPOTrainer", "NonFiniteLoRA", "NonFiniteTraining", "RUN_SETTINGS", "Rollout", "SettingsChanged", "World",
           "describe_changes", "reward_curve"]
