"""GRPO benchmarks on the toy model, measured in one run.

    python scripts/bench_grpo.py [--seeds 3] [--iterations 30] [--out docs/images/grpo_convergence.png]

1. Convergence on the toy's bold-digit task (P(requested digit) × stroke width; the main toy workflow's settings:
   4 steps, CFG 1, lr 1e-3, β 0.1, LoRA rank 8 / α 16) for flow_sde, dance_sde, cps, cpws, precise (default η
   each): the rollout reward per iteration (mean ± spread over seeds, a table and one plot), and on 16 fixed held-out
   seeds sampled with each run's own rule, before and after: the reward, the digit probability (legibility), the
   stroke width and the paper haze (the drift monitor).
2. Overhead: one GRPO iteration's wall time vs the pure model compute it needs (the rollout's forward passes and the
   training forward/backward passes, timed separately on the same tensors).
3. Peak memory of training vs sampling, each in a process of its own.
"""
import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from samplers.plots import line_chart  # noqa: E402
from training.script_args import HelpFormatter, output_file, whole_number  # noqa: E402
from training.rewards import BoldDigitReward, PaperHaze  # noqa: E402
from training.grpo_config import GRPOConfig  # noqa: E402
from training.toy.policy import toy_policy  # noqa: E402
from training.trainer import GRPOTrainer  # noqa: E402

PROMPTS = ["a handwritten 5", "a handwritten 1", "a handwritten 8", "a handwritten 7"]
RULES = ["flow_sde", "dance_sde", "cps", "cpws", "precise"]


def config(rule, seed, iterations, monitor_samples=0):
    return GRPOConfig(prompts=PROMPTS, prompts_per_iteration=4, group_size=8, steps=4, rule=rule, cfg=1.0, lr=1e-3,
                      clip_range=1e-2, beta=0.1, iterations=iterations, seed=seed, lora_rank=8, lora_alpha=16.0,
                      monitor_samples=monitor_samples, monitor_every=iterations)


class HeldOut:
    """The drift monitor's measure (paper haze), also noting the digit probability and width of the same samples."""

    name = "paper_haze"

    def __init__(self, reward):
        self.reward, self.haze, self.scores = reward, PaperHaze(), []

    def __call__(self, images, prompts):
        details = self.reward.evaluate(images, prompts).details
        self.scores.append((statistics.mean(details["probability"]), statistics.mean(details["width"])))
        return self.haze(images, prompts)


def convergence(seeds, iterations, out):
    reward = BoldDigitReward()
    series, bands, rows, held = {}, {}, [], {}
    for rule in RULES:
        curves, times, ends = [], [], []
        for seed in range(seeds):
            start = time.perf_counter()
            monitor = HeldOut(reward)
            trainer = GRPOTrainer(toy_policy(seed=seed), reward, config(rule, seed, iterations, 16), monitor=monitor)
            history = trainer.train()
            times.append(time.perf_counter() - start)
            curves.append([h["reward_mean"] for h in history])
            base, last = trainer.monitor_baseline, history[-1]
            ends.append((base["held_out_reward"], last["held_out_reward"], *monitor.scores[0], *monitor.scores[-1],
                         base["monitor"], last["monitor"]))
        held[rule] = [statistics.mean(v) for v in zip(*ends)]
        mean = [statistics.mean(v) for v in zip(*curves)]
        spread = [statistics.pstdev(v) for v in zip(*curves)]
        xs = list(range(iterations))
        series[rule] = (xs, mean)
        bands[rule] = ([m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)])
        first = [statistics.mean(c[:6]) for c in curves]
        last = [statistics.mean(c[-6:]) for c in curves]
        threshold = 1.5  # about half-way from the base model (≈ 1.05) to the best runs
        reached = [next((k for k, v in enumerate(c) if v >= threshold), None) for c in curves]
        rows.append((rule, statistics.mean(first), statistics.mean(last), statistics.pstdev(last), reached,
                     statistics.mean(times)))
    print(f"## Bold digits ({seeds} seeds, {iterations} iterations, 4 prompts × 8 samples, 4 steps, CFG 1, β 0.1)\n")
    print("| rule | rollout reward, first 6 it. | last 6 it. (± spread over seeds) | first it. ≥ 1.5, per seed "
          "| s per run |")
    print("|---|---:|---:|---|---:|")
    for rule, first, last, spread, reached, seconds in rows:
        shown = ", ".join("–" if k is None else str(k) for k in reached)
        print(f"| {rule} | {first:.3f} | {last:.3f} ± {spread:.3f} | {shown} | {seconds:.1f} |")
    print("\nHeld out (16 fixed seeds, each run's own rule, the saved EMA LoRA), base → trained, mean over seeds:\n")
    print("| rule | bold-digit reward | digit probability | stroke width (px) | paper haze (monitor) |")
    print("|---|---|---|---|---|")
    for rule, v in held.items():
        print(f"| {rule} | {v[0]:.3f} → {v[1]:.3f} | {v[2]:.3f} → {v[4]:.3f} | {v[3]:.2f} → {v[5]:.2f} "
              f"| {v[6]:.4f} → {v[7]:.4f} |")
    image = line_chart(series, bands=bands, title="toy GRPO, bold digits: rollout reward, mean ± spread over seeds",
                       x_label="iteration", y_label="P(digit) x stroke width")
    Image.fromarray((image[0] * 255).round().byte().numpy()).save(out)
    print(f"\nwrote {out}")


def overhead(repeats=5):
    reward = BoldDigitReward()
    trainer = GRPOTrainer(toy_policy(), reward, config("cps", 0, 1000))
    policy, c = trainer.policy, trainer.config
    iteration_times, model_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        trainer.step()
        iteration_times.append(time.perf_counter() - start)
        rollout = trainer.rollout(trainer.iteration)  # same tensors as an iteration, to time the model alone
        steps = trainer.selected_steps(rollout, trainer.iteration)
        start = time.perf_counter()
        with torch.no_grad():
            for i, x in enumerate(rollout.trajectory.latents):
                policy.denoise(x, float(trainer.times[i]), rollout.cond, c.cfg)
        for i in steps:
            out = policy.denoise(rollout.trajectory.latents[i], float(trainer.times[i]), rollout.cond, c.cfg)
            out.square().mean().backward()
        model_times.append(time.perf_counter() - start)
        trainer.optimizer.zero_grad(set_to_none=True)
    ratio = statistics.median(iteration_times) / statistics.median(model_times)
    print("\n## Overhead (cps, 32 samples, 4 steps, median of 5)\n")
    print(f"one GRPO iteration: {statistics.median(iteration_times) * 1000:.0f} ms; model forwards + training "
          f"forward/backward alone: {statistics.median(model_times) * 1000:.0f} ms; ratio {ratio:.2f} "
          "(includes decoding, the reward, log-probs, the KL's reference forward, the optimizer)")


def memory_child(mode):
    """Run 3 rollouts (``sample``) or 3 GRPO iterations (``train``) and print the peak resident memory in MB."""
    trainer = GRPOTrainer(toy_policy(), BoldDigitReward(), config("cps", 0, 1000))
    for k in range(3):
        trainer.rollout(k) if mode == "sample" else trainer.step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def memory():
    import subprocess
    peaks = {}
    for mode in ("sample", "train"):
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child", mode], capture_output=True,
                              text=True, check=True)
        peaks[mode] = float(done.stdout.strip().splitlines()[-1])
    print(f"peak resident memory (separate processes, incl. torch itself): sampling {peaks['sample']:.0f} MB, "
          f"training {peaks['train']:.0f} MB, ratio {peaks['train'] / peaks['sample']:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--seeds", type=whole_number(1), default=3, help="seeds per rule")
    parser.add_argument("--iterations", type=whole_number(1), default=30, help="GRPO iterations per run")
    parser.add_argument("--out", type=output_file, default="docs/images/grpo_convergence.png", help="the chart to write")
    parser.add_argument("--memory-child", choices=["sample", "train"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.memory_child:
        return memory_child(args.memory_child)
    convergence(args.seeds, args.iterations, args.out)
    overhead()
    memory()


if __name__ == "__main__":
    main()
