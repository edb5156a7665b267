"""Benchmark: one step of each rule against a plain Euler step, measured side by side in one run.

    python scripts/bench_step.py [--repeats 400] [--device cpu]

Latent 1×16×128×128 (an SD3/Flux 1024² latent), float32 and bfloat16. The noise tensor is drawn outside the timed
region for every rule (a sampler draws it once per step whichever rule it runs). Prints the median time per step
and the ratio to Euler; target: every stochastic rule ≤ 1.5× Euler.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from samplers import DEFAULT_ETA, RULES, step  # noqa: E402


def euler_step(x, denoised, t, t_next):
    """k-diffusion's sample_euler update: d = (x − x̂0)/σ; x + d·(σ' − σ)."""
    d = (x - denoised) / t
    return x + d * (t_next - t)


def timed(fn, repeats, device):
    for _ in range(20):
        fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    t, t_next = 0.7073, 0.6022
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, latent 1x16x128x128, "
          f"median of {args.repeats}")
    print()
    print("| rule | float32 µs | × Euler | bfloat16 µs | × Euler |")
    print("|---|---:|---:|---:|---:|")
    rows = {}
    for dtype in (torch.float32, torch.bfloat16):
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(1, 16, 128, 128, generator=gen, device=device).to(dtype)
        denoised = torch.randn(1, 16, 128, 128, generator=gen, device=device).to(dtype)
        noise = torch.randn(1, 16, 128, 128, generator=gen, device=device)
        base = timed(lambda: euler_step(x, denoised, t, t_next), args.repeats, device)
        rows.setdefault("euler (baseline)", []).append((base, 1.0))
        for rule in RULES:
            eta = DEFAULT_ETA[rule]
            elapsed = timed(lambda: step(rule, x, denoised, t, t_next, eta=eta, noise=noise), args.repeats, device)
            rows.setdefault(rule, []).append((elapsed, elapsed / base))
    for name, ((f32, r32), (bf16, rbf)) in rows.items():
        print(f"| {name} | {f32 * 1e6:.0f} | {r32:.2f} | {bf16 * 1e6:.0f} | {rbf:.2f} |")


if __name__ == "__main__":
    main()
