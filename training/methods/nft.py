"""DiffusionNFT (Zheng et al., arXiv 2509.16117; NVlabs/DiffusionNFT): online RL on the forward process.

Rollouts are sampled by the old policy with any sampler and keep only their final latents x0 (no trajectory, no
log-probability). Each x0 is re-noised, x_t = (1 − t)·x0 + t·ε, at some of the schedule's times, and the LoRA's
velocity v_θ forms two implicit policies with the old one (eq. 8 of the paper)::

    v⁺ = β·v_θ + (1 − β)·v_old          v⁻ = (1 + β)·v_old − β·v_θ

Both are regressed onto the clean sample, weighted by the optimality probability r ∈ [0, 1] of the sample's reward:
L = r·‖x̂0⁺ − x0‖²/w⁺ + (1 − r)·‖x̂0⁻ − x0‖²/w⁻ (divided by β), w = the detached mean |x̂0 − x0| of each sample
(the reference's adaptive weighting; x̂0 = x_t − t·v). Good samples pull v_θ towards themselves, bad ones push it
away, with no likelihood and no ratio. The old policy follows θ by a soft update after every iteration.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List

import torch

from .._host import samplers
from ..ema import LoRAEMA
from ..rollout import STEP_NOISE_STREAM
from ..trainer import GRPOTrainer
from .grpo import group_advantages

_NFT_NOISE_STREAM = 0x4EF7
_NFT_SAMPLER_STREAM = 0x4EF8
_NFT_TIMESTEP_STREAM = 0x4EF9
WEIGHT_FLOOR = 1e-5  # the reference's clip of the adaptive weight
# Schedule times below this are not re-noised at: ComfyUI's normal schedule ends …, 0.001, 0, and at t = 0.001 x_t is
# the sample itself while the velocity's 1/t makes the KL term a million times larger.
MIN_RENOISE_TIME = 0.01


@dataclass
class FinalChunk:
    """One DiffusionNFT rollout micro-batch: only what training needs (the final latents and their seeds)."""

    rows: slice
    cond: torch.Tensor
    final: torch.Tensor
    seeds: List[int]


class OldPolicy(LoRAEMA):
    """The old policy v_old as a copy of the LoRA: ``ema`` follows θ by old ← d·old + (1 − d)·θ with
    d = min(rate·k, cap) after k optimizer steps (the reference's ``return_decay``); ``snapshot`` copies θ (d = 0)."""

    def __init__(self, parameters, kind: str, rate: float, cap: float):
        super().__init__(parameters, 0.5)
        self.kind, self.rate, self.cap = kind, float(rate), float(cap)
        self.optimizer_steps = 0

    def current_decay(self) -> float:
        return 0.0 if self.kind == "snapshot" else min(self.rate * self.optimizer_steps, self.cap)

    def advance(self, optimizer_steps: int) -> float:
        """After an iteration of ``optimizer_steps`` updates; returns the decay used."""
        self.optimizer_steps += int(optimizer_steps)
        decay = self.current_decay()
        self.update()
        return decay

    def update(self) -> None:
        d = self.current_decay()
        with torch.no_grad():
            for shadow, p in zip(self.shadow, self.parameters):
                shadow.mul_(d).add_(p.detach().to(shadow.dtype), alpha=1 - d)
        self.updates += 1

    def state_dict(self):
        state = super().state_dict()
        state["optimizer_steps"] = torch.tensor(self.optimizer_steps)
        return state

    def load_state_dict(self, state) -> None:
        state = dict(state)
        self.optimizer_steps = int(state.pop("optimizer_steps", 0))
        super().load_state_dict(state)


def optimality_probability(advantages: torch.Tensor, clip: float) -> torch.Tensor:
    """r = clip(A / clip / 2 + 1/2, 0, 1): advantages clipped to ±clip map onto [0, 1] (the reference, clip 5)."""
    return (advantages / clip / 2 + 0.5).clamp(0.0, 1.0)


def nft_loss(x0: torch.Tensor, denoised: torch.Tensor, old_denoised: torch.Tensor, r: torch.Tensor,
             beta: float) -> dict:
    """The DiffusionNFT objective per sample [B] in x̂0 form (x̂0 is linear in v at fixed x_t and t, so
    x̂0⁺ = β·x̂0_θ + (1 − β)·x̂0_old and x̂0⁻ = (1 + β)·x̂0_old − β·x̂0_θ)."""
    old = old_denoised.detach().float()
    theta = denoised.float()
    target = x0.float()
    positive = beta * theta + (1 - beta) * old
    negative = (1 + beta) * old - beta * theta
    dims = tuple(range(1, x0.dim()))
    with torch.no_grad():
        w_pos = (positive - target).abs().mean(dim=dims).clamp_min(WEIGHT_FLOOR)
        w_neg = (negative - target).abs().mean(dim=dims).clamp_min(WEIGHT_FLOOR)
    pos_loss = ((positive - target) ** 2).mean(dim=dims) / w_pos
    neg_loss = ((negative - target) ** 2).mean(dim=dims) / w_neg
    r = r.to(pos_loss.device, pos_loss.dtype)
    return {"loss": (r * pos_loss + (1 - r) * neg_loss) / beta, "positive": pos_loss.detach(),
            "negative": neg_loss.detach()}


class NFTTrainer(GRPOTrainer):
    """DiffusionNFT on the GRPO trainer's machinery (prompts, groups, micro-batches, rewards, EMA, monitor,
    checkpoints); ``config.algorithm = "diffusion_nft"``."""

    def __init__(self, policy, reward_fn, config, **kwargs):
        super().__init__(policy, reward_fn, config, **kwargs)
        self.old = OldPolicy(self.params, config.nft_old_policy, config.nft_decay_rate, config.nft_decay_max)
        self.rollout_solver = (self.resolve_solver(config.nft_sampler, deterministic=False)
                               if config.nft_sampler else None)

    def check_trainable_steps(self) -> None:
        """DiffusionNFT needs no stochastic step: any sampler, the ODE included, may make its rollouts."""
        self.window_positions = None
        if self.config.sde_window is not None and self.config.window_schedule != "fixed":
            raise ValueError("DiffusionNFT trains no SDE window: use window_schedule 'fixed' with it")
        eligible = self.renoise_times()
        if int(len(eligible) * self.config.timestep_fraction) < 1:
            raise ValueError(f"DiffusionNFT has no time to re-noise at: timestep_fraction "
                             f"{self.config.timestep_fraction} of the {len(eligible)} schedule time(s) ≥ "
                             f"{MIN_RENOISE_TIME} selects none; raise timestep_fraction or use more steps")

    def renoise_times(self) -> List[int]:
        """The schedule indices whose time t_i ≥ MIN_RENOISE_TIME (every t_i of t_0 … t_{N−1} is > 0)."""
        return [i for i in range(self.config.steps) if float(self.times[i]) >= MIN_RENOISE_TIME]

    # ----- rollout: the old policy, final latents only ----------------------------------------------------
    def sample_chunk(self, iteration: int, rows: slice, cond, seeds: List[int]):
        c = self.config
        x = self.initial_noise(seeds) * (float(self.times[0]) * self.noise_scale)

        def denoise(x_t, t):
            return self.denoise(x_t, t, cond)

        with self.old.applied():
            if self.rollout_solver is not None:
                final = self.rollout_solver(denoise, x, [float(t) for t in self.times],
                                            seed=samplers.derive_seed(seeds[0], _NFT_SAMPLER_STREAM))
            else:
                final = samplers.sample_flow(
                    denoise, x, self.times, rule=c.rule, eta=self.etas, window=self.sde_window(iteration),
                    noise_scale=self.noise_scale, ode_solver=self.ode_solver,
                    noise=samplers.StepNoise([samplers.derive_seed(s, STEP_NOISE_STREAM) for s in seeds]))
        return final, FinalChunk(rows, cond, final.detach(), list(seeds))

    @staticmethod
    def stored_bytes(chunk) -> int:
        return chunk.final.numel() * chunk.final.element_size()

    # ----- training --------------------------------------------------------------------------------------
    def advantages(self, rollout) -> torch.Tensor:
        c = self.config
        everything = self.world.gather(rollout.rewards)
        advantages = group_advantages(everything, c.group_size, std_mode=c.advantage_std, clip=c.advantage_clip,
                                      eps=c.advantage_eps, ddof=c.advantage_std_ddof)
        return advantages[self.local_slice(everything.shape[0])]

    def selected_steps(self, rollout, iteration: int) -> List[int]:
        """The schedule indices this iteration re-noises at: a seeded permutation of the M times ≥ MIN_RENOISE_TIME,
        its first ⌊M·timestep_fraction⌋ (the reference draws one per sample; here the batch shares it, since a
        forward takes one t)."""
        c = self.config
        eligible = self.renoise_times()
        generator = torch.Generator().manual_seed(samplers.derive_seed(c.seed, iteration, _NFT_TIMESTEP_STREAM))
        order = torch.randperm(len(eligible), generator=generator).tolist()
        return [eligible[k] for k in order[:int(len(eligible) * c.timestep_fraction)]]

    def renoised(self, final: torch.Tensor, seeds: List[int], j: int, iteration: int):
        t = float(self.times[j])
        eps = torch.cat([torch.randn((1, *final.shape[1:]), generator=torch.Generator().manual_seed(
            samplers.derive_seed(s, _NFT_NOISE_STREAM, iteration, j))) for s in seeds]).to(final.device)
        x_t = (1 - t) * final.float() + t * self.noise_scale * eps
        return x_t.to(final.dtype), t

    def train_on(self, rollout, advantages: torch.Tensor, steps: List[int]) -> dict:
        c = self.config
        total = len(rollout.prompts)
        r_all = optimality_probability(advantages, c.advantage_clip)
        finals = torch.cat([chunk.final for chunk in rollout.chunks])
        seeds = [s for chunk in rollout.chunks for s in chunk.seeds]
        cond_all = torch.cat([chunk.cond for chunk in rollout.chunks])
        batches = self.training_batches(rollout)
        iteration = self.iteration
        self.optimizer.zero_grad(set_to_none=True)
        self._bad_loss = None
        grad_norms, per_step, trained = [], [], 0
        for _ in range(c.inner_epochs):
            for j in steps:
                stats = {"loss": 0.0, "kl": 0.0, "positive": 0.0, "negative": 0.0, "old_deviation": 0.0}
                for rows in batches:
                    share = (rows.stop - rows.start) / total
                    cond = cond_all[rows]
                    x_t, t = self.renoised(finals[rows], seeds[rows], j, iteration)
                    with torch.no_grad(), self.old.applied():
                        old_denoised = self.denoise(x_t, t, cond)
                    with self.train_mode():
                        denoised = self.denoise(x_t, t, cond)
                        out = nft_loss(finals[rows], denoised, old_denoised, r_all[rows], c.nft_beta)
                        loss = (out["loss"] * c.advantage_clip).mean()
                        kl = torch.zeros(())
                        if c.nft_kl_beta > 0:
                            with torch.no_grad(), self.policy.reference():
                                ref = self.denoise(x_t, t, cond)
                            kl = (((denoised.float() - ref.float()) / t) ** 2).flatten(1).mean(dim=1).mean()
                            loss = loss + c.nft_kl_beta * kl
                        (loss * (share / c.gradient_accumulation)).backward()
                    value = float(loss.detach())
                    if not math.isfinite(value) and self._bad_loss is None:
                        self._bad_loss = f"the DiffusionNFT loss at t = {t:.4g} was {value}"
                    stats["loss"] += value * share
                    stats["kl"] += float(kl.detach()) * share
                    stats["positive"] += float(out["positive"].mean()) * share
                    stats["negative"] += float(out["negative"].mean()) * share
                    stats["old_deviation"] += float(((denoised.detach().float() - old_denoised.float()) / t)
                                                    .pow(2).mean()) * share
                per_step.append(stats)
                trained = self._count_trained_term(trained, grad_norms)
        self._finish_accumulation(trained, grad_norms)
        n = len(per_step)
        return {
            "loss": sum(s["loss"] for s in per_step) / n,
            "kl": sum(s["kl"] for s in per_step) / n if c.nft_kl_beta > 0 else None,
            "clip_fraction": None,
            "nft_positive_loss": sum(s["positive"] for s in per_step) / n,
            "nft_negative_loss": sum(s["negative"] for s in per_step) / n,
            "nft_old_deviation": sum(s["old_deviation"] for s in per_step) / n,
            "nft_optimality_mean": float(r_all.mean()),
            "trained_times": [float(self.times[j]) for j in steps],
            "grad_norm": max(grad_norms) if grad_norms else 0.0,
            "train_micro_batches": len(batches),
        }

    def after_update(self, metrics: dict) -> None:
        metrics["nft_old_decay"] = self.old.advance(self._updates_this_iteration)

    # ----- checkpoints -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {**super().state_dict(), "nft_old": self.old.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        if "nft_old" in state:
            self.old.load_state_dict(state["nft_old"])
        else:  # a GRPO checkpoint continued with DiffusionNFT: the old policy starts at the resumed LoRA
            self.old = OldPolicy(self.params, self.config.nft_old_policy, self.config.nft_decay_rate,
                                 self.config.nft_decay_max)


__all__ = ["NFTTrainer", "OldPolicy", "FinalChunk", "nft_loss", "optimality_probability"]
