"""The objective half of a GRPO iteration: advantages, the clipped policy loss with its trust-region options and KL,
accumulated over (trained step, micro-batch) terms into full-batch optimizer steps. A mixin of GRPOTrainer
(training/trainer.py); DiffusionNFT (training/methods/nft.py) replaces the loss and keeps the accumulation."""
from __future__ import annotations

import contextlib
import math
from typing import Dict, List

import torch

from ._host import samplers
from .checkpointing import checkpoint_blocks
from .errors import NonFiniteTraining
from .methods.dense import dense_step_rewards
from .methods.grpo import group_advantages, policy_loss_from_log_ratio
from .methods.trust_region import guard_log_ratio, transition_kl, trust_region_keep
from .rollout import Rollout


class ObjectiveMixin:
    """Advantages, losses and optimizer steps of GRPOTrainer."""

    def advantages(self, rollout: Rollout) -> torch.Tensor:
        """[b] per-sample advantages, or [b, N] per-step ones with dense rewards, for this rank's samples."""
        c = self.config
        signal = rollout.rewards if rollout.step_rewards is None else dense_step_rewards(rollout.step_rewards)
        everything = self.world.gather(signal)
        advantages = group_advantages(everything, c.group_size, std_mode=c.advantage_std, clip=c.advantage_clip,
                                      eps=c.advantage_eps, ddof=c.advantage_std_ddof)
        return advantages[self.local_slice(everything.shape[0])]

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


__all__ = ["ObjectiveMixin"]
