"""The rollout half of a GRPO iteration: this rank's samples drawn in micro-batches, decoded, checked for NaN and
scored (the reward overlapping the next micro-batch where it allows), plus DenseGRPO's per-step look-ahead rewards.
A mixin of GRPOTrainer (training/trainer.py), which holds the policy, reward, config and schedule it uses."""
from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from ._host import samplers
from .errors import NonFiniteTraining
from .rewards.evaluate import evaluate_reward

INIT_NOISE_STREAM = 0x1A17
STEP_NOISE_STREAM = 0x57E9


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


class RolloutMixin:
    """Sampling, micro-batches, decoding, rewards and dense rewards of GRPOTrainer."""

    def iteration_prompts(self, iteration: int) -> List[str]:
        """All samples' prompts of an iteration (group by group), before splitting over ranks."""
        c = self.config
        start = iteration * c.prompts_per_iteration
        chosen = [c.prompts[(start + k) % len(c.prompts)] for k in range(c.prompts_per_iteration)]
        return [p for p in chosen for _ in range(c.group_size)]

    def local_slice(self, total: int) -> slice:
        per_rank = total // self.world.size
        return slice(self.world.rank * per_rank, (self.world.rank + 1) * per_rank)

    def sample_seeds(self, iteration: int, indices) -> List[int]:
        return [samplers.derive_seed(self.config.seed, iteration, j) for j in indices]

    def initial_noise(self, seeds: List[int]) -> torch.Tensor:
        shape = tuple(self.policy.latent_shape)
        noise = torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(
            samplers.derive_seed(s, INIT_NOISE_STREAM))) for s in seeds])
        return noise.to(getattr(self.policy, "device", "cpu"), getattr(self.policy, "dtype", torch.float32))

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
            noise=samplers.StepNoise([samplers.derive_seed(s, STEP_NOISE_STREAM) for s in seeds]))
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

    @staticmethod
    def stored_bytes(chunk) -> int:
        """Bytes a rollout micro-batch keeps for training (its trajectory and log-probs)."""
        tensors = [t for field in ("latents", "samples", "means", "stds") for t in getattr(chunk.trajectory, field)]
        tensors += list(chunk.old_log_probs.values())
        unique = {(t.data_ptr(), t.numel() * t.element_size()) for t in tensors}  # samples[i] is latents[i + 1]
        return sum(size for _, size in unique)


__all__ = ["Chunk", "INIT_NOISE_STREAM", "Rollout", "RolloutMixin", "STEP_NOISE_STREAM"]
