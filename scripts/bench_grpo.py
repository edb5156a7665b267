"""GRPO benchmarks on the toy model, measured in one run.

    python scripts/bench_grpo.py [--seeds 3] [--iterations 30] [--out docs/images/grpo_convergence.png]

1. Convergence: digit reward per iteration for flow_sde, dance_sde, cps, cpws, precise (default η each), mean ± spread
   over seeds, as a table and one plot.
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
from training.rewards import DigitReward  # noqa: E402
from training.grpo_config import GRPOConfig  # noqa: E402
from training.toy_policy import toy_policy  # noqa: E402
from training.trainer import GRPOTrainer  # noqa: E402

PROMPTS = ["a handwritten 5", "a handwritten 1", "a handwritten 8", "a handwritten 7"]
RULES = ["flow_sde", "dance_sde", "cps", "cpws", "precise"]


def config(rule, seed, iterations):
    return GRPOConfig(prompts=PROMPTS, prompts_per_iteration=4, group_size=8, steps=4, rule=rule, cfg=1.0, lr=1e-3,
                      clip_range=1e-2, iterations=iterations, seed=seed, lora_rank=8)


def convergence(seeds, iterations, out):
    reward = DigitReward()
    series, bands, rows = {}, {}, []
    for rule in RULES:
        curves, times = [], []
        for seed in range(seeds):
            start = time.perf_counter()
            history = GRPOTrainer(toy_policy(seed=seed), reward, config(rule, seed, iterations)).train()
            times.append(time.perf_counter() - start)
            curves.append([h["reward_mean"] for h in history])
        mean = [statistics.mean(v) for v in zip(*curves)]
        spread = [statistics.pstdev(v) for v in zip(*curves)]
        xs = list(range(iterations))
        series[rule] = (xs, mean)
        bands[rule] = ([m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)])
        first = [1 - statistics.mean(c[:6]) for c in curves]
        last = [1 - statistics.mean(c[-6:]) for c in curves]
        rows.append((rule, statistics.mean(first), statistics.mean(last), statistics.pstdev(last),
                     statistics.mean(times)))
    print(f"## Convergence ({seeds} seeds, {iterations} iterations, 4 prompts × 8 samples, 4 steps, CFG 1)\n")
    print("| rule | error first 6 it. | error last 6 it. (± spread) | s per run |")
    print("|---|---:|---:|---:|")
    for rule, first, last, spread, seconds in rows:
        print(f"| {rule} | {first:.4f} | {last:.4f} ± {spread:.4f} | {seconds:.1f} |")
    image = line_chart(series, bands=bands, title="toy GRPO: P(requested digit), mean ± spread over seeds",
                       x_label="iteration", y_label="reward")
    Image.fromarray((image[0] * 255).round().byte().numpy()).save(out)
    print(f"\nwrote {out}")


def overhead(repeats=5):
    reward = DigitReward()
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
          "(includes decoding, the classifier reward, log-probs, the optimizer)")


def memory_child(mode):
    """Run 3 rollouts (``sample``) or 3 GRPO iterations (``train``) and print the peak resident memory in MB."""
    trainer = GRPOTrainer(toy_policy(), DigitReward(), config("cps", 0, 1000))
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
