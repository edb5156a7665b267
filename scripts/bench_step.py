"""Benchmark: one step of each rule against a plain Euler step, measured side by side in one run.

    python scripts/bench_step.py [--repeats 400] [--device cpu]

Latent 1×16×128×128 (an SD3/Flux 1024² latent), float32 and bfloat16. The noise tensor is drawn outside the timed
region for every rule (a sampler draws it once per step whichever rule it runs). The functions are timed in turn at
every repeat; prints the median time per step and the ratio to Euler; target: every stochastic rule ≤ 1.5× Euler.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from training.script_args import HelpFormatter, whole_number  # noqa: E402

import torch  # noqa: E402

from samplers import DEFAULT_ETA, RULES, step  # noqa: E402


def euler_step(x, denoised, t, t_next):
    """k-diffusion's sample_euler update: d = (x − x̂0)/σ; x + d·(σ' − σ)."""
    d = (x - denoised) / t
    return x + d * (t_next - t)


def timed_interleaved(functions, repeats, device):
    """Median seconds per call of each function, calling them in turn so all share the machine's state
    (allocator regime, caches, frequency) at every repeat."""
    for fn in functions.values():
        for _ in range(20):
            fn()
    samples = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def pin_allocator():
    """Re-run this script with glibc's malloc keeping freed buffers (no mmap/trim churn): otherwise every 1 MB
    tensor can cost 256 page faults or none depending on the allocator's history, which swamps the arithmetic."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and sys.platform.startswith("linux"):
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 30), MALLOC_TRIM_THRESHOLD_=str(1 << 30))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main():
    pin_allocator()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--repeats", type=whole_number(1), default=400, help="timed steps per rule")
    parser.add_argument("--device", default="cpu", help="torch device to time on")
    args = parser.parse_args()
    device = torch.device(args.device)
    t, t_next = 0.7073, 0.6022
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, latent 1x16x128x128, "
          f"median of {args.repeats}, interleaved")
    print()
    print("| rule | float32 µs | × Euler | bfloat16 µs | × Euler |")
    print("|---|---:|---:|---:|---:|")
    rows = {}
    for dtype in (torch.float32, torch.bfloat16):
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(1, 16, 128, 128, generator=gen, device=device).to(dtype)
        denoised = torch.randn(1, 16, 128, 128, generator=gen, device=device).to(dtype)
        noise = torch.randn(1, 16, 128, 128, generator=gen, device=device)
        functions = {"euler (baseline)": lambda: euler_step(x, denoised, t, t_next)}
        for rule in RULES:
            functions[rule] = (lambda r: lambda: step(r, x, denoised, t, t_next, eta=DEFAULT_ETA[r], noise=noise))(rule)
        medians = timed_interleaved(functions, args.repeats, device)
        for name, elapsed in medians.items():
            rows.setdefault(name, []).append((elapsed, elapsed / medians["euler (baseline)"]))
    for name, ((f32, r32), (bf16, rbf)) in rows.items():
        print(f"| {name} | {f32 * 1e6:.0f} | {r32:.2f} | {bf16 * 1e6:.0f} | {rbf:.2f} |")


if __name__ == "__main__":
    main()
