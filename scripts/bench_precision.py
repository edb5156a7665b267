"""How far the first update's probability ratio is from 1 per training precision, measured in one run.

    python scripts/bench_precision.py

On the shipped toy model (4 prompts × 8 samples, 4 steps, CPS): for each ``train_dtype`` the ratio of the first
trained step, (a) as the trainer runs it (rollouts and training forwards in the same precision), and (b) if the
rollout had run in float32 and only the training forward in the reduced precision — the mismatch that makes a
trainer start off-policy. The log-probs are per-element means (flow_grpo's), so their PPO clip ranges apply.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from training.grpo_config import GRPOConfig  # noqa: E402
from training.rewards import DigitReward  # noqa: E402
from training.toy.policy import toy_policy  # noqa: E402
from training.trainer import GRPOTrainer  # noqa: E402

PROMPTS = ["a handwritten 5", "a handwritten 1", "a handwritten 8", "a handwritten 7"]


def first_ratio_deviation(dtype, mismatched):
    config = GRPOConfig(prompts=PROMPTS, prompts_per_iteration=4, group_size=8, steps=4, rule="cps", cfg=1.0,
                        iterations=1, seed=0, train_dtype="float32" if mismatched else dtype)
    trainer = GRPOTrainer(toy_policy(seed=0), DigitReward(), config)
    rollout = trainer.rollout(0)
    trainer.config.train_dtype = dtype  # the training forward in the reduced precision
    steps = trainer.selected_steps(rollout, 0)
    metrics = trainer.train_on(rollout, trainer.advantages(rollout), steps)
    return max(abs(metrics["first_ratio_min"] - 1), abs(metrics["first_ratio_max"] - 1))


def main():
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, toy model, 32 samples, 4 steps, CPS, first trained step\n")
    print("| train_dtype | max abs(ratio − 1), rollouts in the same precision | rollouts in float32 |")
    print("|---|---:|---:|")
    for dtype in ("float32", "bfloat16", "float16"):
        same = first_ratio_deviation(dtype, mismatched=False)
        mixed = first_ratio_deviation(dtype, mismatched=True)
        print(f"| {dtype} | {same:.2e} | {mixed:.2e} |")


if __name__ == "__main__":
    main()
