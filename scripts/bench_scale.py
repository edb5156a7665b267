"""Memory and speed of GRPO at real width, measured side by side in one run (CPU).

    python scripts/bench_scale.py [--width 1536] [--depth 1] [--groups 4,8,16,32]

The model is the pack's DiT at SD3.5-Medium's hidden size (1536, 24 heads) with few blocks on a 64×64×16 latent
(1024 tokens, what SD3.5 samples at 512²), random weights, rank-8 LoRA on attention and MLP, CFG 1, 2 steps (CPS:
one trained step). Every case runs in a process of its own (glibc set to serve large blocks by mmap, so freed memory
leaves the resident set) and reports its peak resident memory above the process's memory once the model is loaded:

- inference: the rollout alone (what sampling the same images costs), in batches of ``--sample-batch``;
- training, plain: one GRPO iteration with the whole group in one batch and no checkpointing (how it was);
- training, scaled: one iteration with ``sample_batch_size = --sample-batch``, ``train_batch_size = 1`` and
  gradient checkpointing.

Then, for one group size, the iteration time against the pure model compute it contains (the rollout's forwards and
the training forwards and backwards, timed alone on the same tensors; checkpointing's recompute counted as model
compute and shown on its own).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from training.grpo_config import GRPOConfig  # noqa: E402
from training.lora import LoRANetwork  # noqa: E402
from training.policy import VelocityModelPolicy  # noqa: E402
from training.toy.model import ToyDiT  # noqa: E402
from training.toy.prompts import encode_prompts  # noqa: E402
from training.trainer import GRPOTrainer  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_trainer(args, group, scaled):
    torch.manual_seed(0)
    model = ToyDiT(image_size=64, in_channels=16, patch_size=2, hidden_size=args.width, depth=args.depth,
                   num_heads=args.width // 64)
    model.initialize_weights(torch.Generator().manual_seed(0))
    for block in model.blocks:  # adaLN-Zero starts as identity blocks: give them a real forward
        torch.nn.init.normal_(block.adaLN_modulation.weight, std=0.02)
    lora = LoRANetwork(model, rank=8, seed=0)

    def decode(latents):
        return (latents[:, :3].clamp(-1, 1) + 1).movedim(1, -1) / 2

    policy = VelocityModelPolicy(model, lora, encode_prompts, decode, (16, 64, 64))
    # "simple": 1, 0.5, 0, so the one trained step draws real noise (the normal schedule's 1 → 0.001 step is below
    # min_train_std and would leave nothing to train)
    config = GRPOConfig(prompts=["a handwritten 3"], prompts_per_iteration=1, group_size=group, steps=2, rule="cps",
                        schedule="simple", cfg=1.0, iterations=1, lr=1e-4, clip_range=1e-2, seed=0, lora_rank=8,
                        sample_batch_size=args.sample_batch if scaled else None,
                        train_batch_size=1 if scaled else None, gradient_checkpointing=scaled)
    return GRPOTrainer(policy, lambda images, prompts: images.mean(dim=(1, 2, 3)), config)


def run_case(args):
    """One measurement in this process: prints a JSON line."""
    torch.set_num_threads(args.threads)
    scaled = args.case != "plain"
    trainer = make_trainer(args, args.group, scaled)
    base = rss_mb()
    start = time.perf_counter()
    if args.case == "inference":
        trainer.rollout(0)
    else:
        trainer.step()
    print(json.dumps({"case": args.case, "group": args.group, "peak_above_model_mb": peak_mb() - base,
                      "seconds": time.perf_counter() - start}))


def time_iteration(args, group):
    """Iteration wall time vs the model compute inside it, on the same tensors."""
    torch.set_num_threads(args.threads)
    trainer = make_trainer(args, group, scaled=True)
    trainer.step()  # warm-up (allocator, kernels)
    start = time.perf_counter()
    trainer.step()
    iteration = time.perf_counter() - start

    rollout = trainer.rollout(1)
    policy, c = trainer.policy, trainer.config
    steps = trainer.selected_steps(rollout, 1)
    start = time.perf_counter()
    with torch.no_grad():
        for chunk in rollout.chunks:
            for i, x in enumerate(chunk.trajectory.latents):
                policy.denoise(x, float(trainer.times[i]), chunk.cond, c.cfg)
        # the old log-probs recomputed in the training micro-batches (train_batch_size != sample_batch_size)
        for i in steps:
            for rows in trainer.training_batches(rollout):
                policy.denoise(trainer.rows(rollout, "latents", i, rows), float(trainer.times[i]), rollout.cond[rows],
                               c.cfg)
    forwards = time.perf_counter() - start

    def train_compute(checkpointing):
        trainer.config.gradient_checkpointing = checkpointing
        start = time.perf_counter()
        for i in steps:
            for rows in trainer.training_batches(rollout):
                x = trainer.rows(rollout, "latents", i, rows)
                with trainer.train_mode():
                    out = policy.denoise(x, float(trainer.times[i]), rollout.cond[rows], c.cfg)
                    out.float().square().mean().backward()
        trainer.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start
    plain_train = train_compute(False)
    checkpointed_train = train_compute(True)
    trainer.config.gradient_checkpointing = True
    return {"group": group, "iteration_s": iteration, "rollout_forwards_s": forwards,
            "train_fwd_bwd_s": plain_train, "recompute_s": checkpointed_train - plain_train,
            "model_compute_s": forwards + checkpointed_train}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=1536, help="hidden size (default: SD3.5-M's 1536)")
    parser.add_argument("--depth", type=int, default=1, help="number of blocks (default 1)")
    parser.add_argument("--groups", default="4,8,16,32", help="group sizes G (default 4,8,16,32)")
    parser.add_argument("--sample-batch", type=int, default=4, help="sample_batch_size of the scaled runs (4)")
    parser.add_argument("--time-group", type=int, default=8, help="G of the timing comparison (8)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument("--case", choices=["inference", "plain", "scaled"], help=argparse.SUPPRESS)
    parser.add_argument("--group", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        return run_case(args)

    groups = [int(g) for g in args.groups.split(",")]
    print(f"torch {torch.__version__}, {args.threads} threads, DiT width {args.width}, depth {args.depth}, "
          f"64x64x16 latent (1024 tokens), rank-8 LoRA, CFG 1, 2 steps, sample_batch_size {args.sample_batch}\n")
    results = {}
    for group in groups:
        for case in ("inference", "plain", "scaled"):
            command = [sys.executable, os.path.abspath(__file__), "--case", case, "--group", str(group),
                       "--width", str(args.width), "--depth", str(args.depth), "--threads", str(args.threads),
                       "--sample-batch", str(args.sample_batch)]
            # large blocks straight from mmap, returned on free: the resident peak then follows the live tensors
            # instead of glibc's heap, which keeps what the last micro-batch freed
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
            out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
            results[group, case] = json.loads(out.stdout.strip().splitlines()[-1])
    print("| G | inference MB | training, plain MB | × inference | training, scaled MB | × inference |")
    print("|---:|---:|---:|---:|---:|---:|")
    for group in groups:
        inference = results[group, "inference"]["peak_above_model_mb"]
        plain = results[group, "plain"]["peak_above_model_mb"]
        scaled = results[group, "scaled"]["peak_above_model_mb"]
        print(f"| {group} | {inference:.0f} | {plain:.0f} | {plain / inference:.2f} | {scaled:.0f} | "
              f"{scaled / inference:.2f} |")
    first, last = groups[0], groups[-1]
    for case in ("plain", "scaled"):
        growth = results[last, case]["peak_above_model_mb"] / results[first, case]["peak_above_model_mb"] - 1
        print(f"\ntraining, {case}: peak grows {100 * growth:.0f} % from G = {first} to G = {last}", end="")
    print("\n")
    timing = time_iteration(args, args.time_group)
    print(f"timing at G = {timing['group']} (scaled): one iteration {timing['iteration_s']:.2f} s; model compute "
          f"{timing['model_compute_s']:.2f} s = forwards without grad (rollout, old log-probs in the training batches) "
          f"{timing['rollout_forwards_s']:.2f} s + training "
          f"forward/backward {timing['train_fwd_bwd_s']:.2f} s + checkpointing's recompute "
          f"{timing['recompute_s']:.2f} s; ratio {timing['iteration_s'] / timing['model_compute_s']:.2f}")


if __name__ == "__main__":
    main()
