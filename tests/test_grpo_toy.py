"""Learning works: GRPO with CPS on the shipped toy model raises the digit reward (several seeds)."""
import torch

from training.rewards import DigitReward
from training.grpo_config import GRPOConfig
from training.toy_model import latent_to_image
from training.toy_policy import toy_policy
from training.trainer import GRPOTrainer

PROMPTS = ["a handwritten 5", "a handwritten 1", "a handwritten 8", "a handwritten 7"]


def test_digit_reward_scores_the_requested_digit():
    reward = DigitReward()
    from training.toy_data import load_digits_16
    images, labels = load_digits_16("heldout")
    scores = reward(latent_to_image(images[:20]), [f"a {int(d)}" for d in labels[:20]])
    assert scores.shape == (20,) and float(scores.mean()) > 0.9
    wrong = reward(latent_to_image(images[:20]), [f"a {(int(d) + 1) % 10}" for d in labels[:20]])
    assert float(wrong.mean()) < 0.1


def test_grpo_with_cps_raises_the_digit_reward():
    torch.set_num_threads(2)
    reward = DigitReward()
    first, last = [], []
    for seed in (0, 1, 2):
        config = GRPOConfig(prompts=PROMPTS, prompts_per_iteration=4, group_size=8, steps=4, rule="cps", eta=0.8,
                            cfg=1.0, lr=1e-3, clip_range=1e-2, iterations=30, seed=seed, lora_rank=8)
        history = GRPOTrainer(toy_policy(seed=seed), reward, config).train()
        rewards = [h["reward_mean"] for h in history]
        first.append(1 - sum(rewards[:6]) / 6)  # error rate: 1 − P(requested digit)
        last.append(1 - sum(rewards[-6:]) / 6)
    assert all(b < a for a, b in zip(first, last)), (first, last)
    assert sum(last) <= 0.5 * sum(first), (first, last)  # measured: 0.071 → 0.015 summed over the three seeds


def test_train_cli_writes_metrics_curve_lora_and_resumes(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, os.path.join(root, "scripts", "train.py"), "--iterations", "2", "--out", str(tmp_path),
               "--group-size", "4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = subprocess.run(command[:2] + ["--iterations", "3"] + command[4:] + ["--resume"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert [h["iteration"] for h in history] == [0, 1, 2]
    assert (tmp_path / "reward_curve.png").stat().st_size > 1000
    lora = load_file(str(tmp_path / "lora.safetensors"))
    assert "diffusion_model.blocks.0.attn.qkv.lora_up.weight" in lora and "diffusion_model.blocks.0.attn.qkv.alpha" in lora
