"""The held-out drift monitor: does the LoRA that will be saved still make good images by a measure the reward does
not see?

Every ``monitor_every`` iterations (and once before training, for the base model) the trainer samples a fixed set of
held-out seeds (initial and step noise fixed for the whole run, so the samples change only as the LoRA does) with
the rollouts' rule and η and the EMA LoRA when the EMA is on, i.e. what gets saved; it decodes them and scores them
with the monitor (any reward callable, e.g. the toy's paper haze or the residual-noise estimate) and
with the training reward. A reward that rises while the monitor falls is reward hacking (flow_grpo #233); the held-out
samples are also the previews, so what is shown is what is saved.
"""
from __future__ import annotations

import contextlib
from typing import Callable, List, Optional

import torch

from ._host import samplers
from .rewards.evaluate import evaluate_reward

MONITOR_STREAM = 0x40D1


def held_out_prompts(prompts: List[str], count: int) -> List[str]:
    return [prompts[k % len(prompts)] for k in range(count)]


def held_out_seeds(seed: int, count: int) -> List[int]:
    """Fixed for the whole run and disjoint from the rollouts' seeds (another derivation stream)."""
    return [samplers.derive_seed(seed, MONITOR_STREAM, k) for k in range(count)]


@torch.no_grad()
def evaluate_held_out(trainer, monitor_fn: Optional[Callable]) -> dict:
    """``{"monitor": mean or None, "held_out_reward": mean, "images": decoded}`` for the trainer's current LoRA
    (its EMA when on). Runs in the sampling thread; the policy's model is restored after decoding and scoring."""
    c = trainer.config
    prompts = held_out_prompts(c.prompts, c.monitor_samples)
    cond_all = trainer.policy.encode_prompts(prompts)
    seeds = held_out_seeds(c.seed, c.monitor_samples)
    ema = trainer.ema.applied() if trainer.ema is not None else contextlib.nullcontext()
    images, monitor, reward = [], [], []
    with ema:
        for rows in trainer.micro_batches(len(prompts), c.sample_batch_size):
            cond = cond_all[rows]
            x = trainer.initial_noise(seeds[rows]) * (float(trainer.times[0]) * trainer.noise_scale)
            noise = samplers.StepNoise([samplers.derive_seed(s, MONITOR_STREAM) for s in seeds[rows]])
            final = samplers.sample_flow(lambda x_t, t: trainer.denoise(x_t, t, cond), x, trainer.times,
                                         rule=c.rule, eta=trainer.etas, window=trainer.sde_window(0), noise=noise,
                                         ode_solver=trainer.ode_solver)
            decoded = trainer.policy.decode(final)
            images.append(decoded)
            reward.append(evaluate_reward(trainer.reward_fn, decoded, prompts[rows]).rewards.float().cpu())
            if monitor_fn is not None:
                monitor.append(evaluate_reward(monitor_fn, decoded, prompts[rows]).rewards.float().cpu())
            trainer._restore_model()
    return {"monitor": float(torch.cat(monitor).mean()) if monitor else None,
            "held_out_reward": float(torch.cat(reward).mean()), "images": torch.cat(images)}


__all__ = ["evaluate_held_out", "held_out_prompts", "held_out_seeds", "MONITOR_STREAM"]
