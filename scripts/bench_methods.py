"""Training methods compared on the toy model's bold-digit task, in one run (each training run in a process of its own).

    python scripts/bench_methods.py [--seeds 3] [--iterations 30] [--out docs/images/methods_convergence.png]

Methods: GRPO with CPS and with Precise, MixGRPO (a 1-step window, progressive, the Euler ODE outside it) and
MixGRPO-Flash (DPM-Solver++(2M) outside it), GRPO+CPS with FlowDPPO's trust region (KL mask δ 1e-5 instead of ratio
clipping) and with GRPO-Guard's ratio normalisation, and DiffusionNFT (Euler-ODE rollouts of the old policy). All on
the settings of the main toy workflow (4 prompts × 8 samples, 4 steps of the normal schedule, CFG 1, lr 1e-3, LoRA
rank 8 / α 16, GRPO β 0.1, clip 1e-2; DiffusionNFT its reference's β 1 and KL 1e-4).

Every 2 iterations (and at the end) the LoRA that would be saved (its EMA) is evaluated the same way for every method:
16 fixed held-out seeds sampled with CPS (η 0.8), scored by the reward and by the drift monitor (paper haze). The
evaluation is not counted in the training time. Reported per method, over the seeds: iterations and training seconds
until the held-out reward first reaches the threshold, the final held-out reward and haze, the bytes a rollout keeps
per sample for training, and the process's peak resident memory.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

PROMPTS = ["a handwritten 5", "a handwritten 1", "a handwritten 8", "a handwritten 7"]
THRESHOLD = 1.5  # about half-way from the base model (≈ 1.06 held out) to the best runs
EVAL_EVERY = 2
METHODS = {
    "GRPO + CPS": {},
    "GRPO + Precise": {"rule": "precise"},
    "MixGRPO (window 1, progressive)": {"sde_window": (0, 1), "window_schedule": "progressive",
                                        "window_shift_every": 10},
    "MixGRPO-Flash (+ dpmpp_2m)": {"sde_window": (0, 1), "window_schedule": "progressive", "window_shift_every": 10,
                                   "ode_sampler": "dpmpp_2m"},
    "GRPO + trust region (FlowDPPO)": {"kl_mask_threshold": 1e-5, "clip_range": float("inf")},
    "GRPO + ratio norm (GRPO-Guard)": {"ratio_norm": True},
    "DiffusionNFT (ODE rollouts)": {"algorithm": "diffusion_nft", "rule": "ode"},
}


def config(settings, seed, iterations):
    from training.grpo_config import GRPOConfig
    base = dict(prompts=PROMPTS, prompts_per_iteration=4, group_size=8, steps=4, rule="cps", cfg=1.0, lr=1e-3,
                clip_range=1e-2, beta=0.1, iterations=iterations, seed=seed, lora_rank=8, lora_alpha=16.0)
    return GRPOConfig(**{**base, **settings})


def held_out(trainer, reward, haze, count=16):
    """The held-out reward and paper haze of the LoRA that would be saved, CPS-sampled from fixed seeds."""
    import samplers
    from training.monitor import held_out_prompts, held_out_seeds
    prompts = held_out_prompts(PROMPTS, count)
    seeds = held_out_seeds(1234, count)
    cond = trainer.policy.encode_prompts(prompts)
    times = trainer.times
    with torch.no_grad(), (trainer.ema.applied() if trainer.ema is not None else torch.no_grad()):
        x = trainer.initial_noise(seeds) * float(times[0])
        final = samplers.sample_flow(lambda x_t, t: trainer.policy.denoise(x_t, t, cond, 1.0), x, times, rule="cps",
                                     eta=0.8, noise=samplers.StepNoise([s + 1 for s in seeds]))
        images = trainer.policy.decode(final)
    return float(reward(images, prompts).mean()), float(haze(images, prompts).mean())


def child(name, seed, iterations):
    """One training run; prints its measurements as JSON."""
    from training.methods import make_trainer
    from training.rewards import BoldDigitReward, PaperHaze
    from training.toy.policy import toy_policy
    torch.set_num_threads(2)
    reward, haze = BoldDigitReward(), PaperHaze()
    trainer = make_trainer(toy_policy(rank=8, alpha=16.0, seed=seed), reward, config(METHODS[name], seed, iterations))
    points = [(0, *held_out(trainer, reward, haze), 0.0)]
    seconds = 0.0
    for k in range(iterations):
        start = time.perf_counter()
        metrics = trainer.step()
        seconds += time.perf_counter() - start
        if (k + 1) % EVAL_EVERY == 0 or k + 1 == iterations:
            points.append((k + 1, *held_out(trainer, reward, haze), seconds))
    print(json.dumps({"points": points, "bytes": metrics["rollout_bytes_per_sample"],
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run(seeds, iterations, out):
    from PIL import Image

    from samplers.plots import line_chart
    results = {}
    for name in METHODS:
        results[name] = []
        for seed in range(seeds):
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name, str(seed),
                                   str(iterations)], capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{name}, seed {seed} failed:\n{done.stderr[-3000:]}")
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"## Training methods on the toy bold-digit task ({seeds} seeds, {iterations} iterations, 4 prompts × 8 "
          "samples, 4 steps)\n")
    print(f"Held out: 16 fixed seeds, CPS-sampled, the saved (EMA) LoRA, every {EVAL_EVERY} iterations. Threshold: "
          f"held-out reward ≥ {THRESHOLD}.\n")
    print("| method | iterations to threshold (per seed) | training s to threshold (mean) | s per iteration "
          "| held-out reward, base → final (± spread) | paper haze, final (base) | rollout bytes / sample "
          "| peak RSS MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    series, bands = {}, {}
    for name, runs in results.items():
        reached, reach_seconds = [], []
        for r in runs:
            hit = next((p for p in r["points"] if p[1] >= THRESHOLD), None)
            reached.append("–" if hit is None else str(hit[0]))
            if hit is not None:
                reach_seconds.append(hit[3])
        finals = [r["points"][-1][1] for r in runs]
        base = statistics.mean(r["points"][0][1] for r in runs)
        haze = statistics.mean(r["points"][-1][2] for r in runs)
        haze0 = statistics.mean(r["points"][0][2] for r in runs)
        per_it = statistics.mean(r["points"][-1][3] / iterations for r in runs)
        shown_seconds = f"{statistics.mean(reach_seconds):.1f}" if len(reach_seconds) == len(runs) else (
            f"{statistics.mean(reach_seconds):.1f} ({len(reach_seconds)} of {len(runs)})" if reach_seconds else "–")
        print(f"| {name} | {', '.join(reached)} | {shown_seconds} | {per_it:.2f} | {base:.3f} → "
              f"{statistics.mean(finals):.3f} ± {statistics.pstdev(finals):.3f} | {haze:.4f} ({haze0:.4f}) "
              f"| {runs[0]['bytes']:.0f} | {statistics.mean(r['peak_mb'] for r in runs):.0f} |")
        xs = [p[0] for p in runs[0]["points"]]
        ys = [[r["points"][k][1] for r in runs] for k in range(len(xs))]
        mean = [statistics.mean(v) for v in ys]
        spread = [statistics.pstdev(v) for v in ys]
        series[name] = (xs, mean)
        bands[name] = ([m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)])
    image = line_chart(series, bands=bands, size=(820, 480),
                       title="toy bold digits: held-out reward (CPS-sampled, EMA LoRA), mean ± spread over seeds",
                       x_label="iteration", y_label="P(digit) x stroke width")
    Image.fromarray((image[0] * 255).round().byte().numpy()).save(out)
    print(f"\nwrote {out}")


def main():
    from training.script_args import HelpFormatter, output_file, whole_number
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--seeds", type=whole_number(1), default=3, help="seeds per method")
    parser.add_argument("--iterations", type=whole_number(1), default=30, help="iterations per run")
    parser.add_argument("--out", type=output_file, default="docs/images/methods_convergence.png",
                        help="the chart to write")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, seed, iterations = args.child
        return child(name, int(seed), int(iterations))
    run(args.seeds, args.iterations, args.out)


if __name__ == "__main__":
    main()
