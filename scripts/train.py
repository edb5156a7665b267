"""GRPO on the shipped toy digit model with the digit-classifier reward (CPU, no downloads).

    python scripts/train.py --rule cps --iterations 30 --out out/grpo_cps
    torchrun --nproc-per-node 2 scripts/train.py --rule cps     # same run spread over 2 processes (gloo)

Writes <out>/metrics.json (one record per iteration), <out>/reward_curve.png, <out>/checkpoint.safetensors (resume
with --resume) and <out>/lora.safetensors (ComfyUI LoRA format, loads with LoraLoaderModelOnly on the toy model).
An old <out>/checkpoint.pt (v1) is not read: convert it with scripts/convert_checkpoint_v1.py.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from training.rewards import DigitReward  # noqa: E402
from training.grpo_config import GRPOConfig  # noqa: E402
from training.toy_policy import toy_policy  # noqa: E402
from training.checkpoint import CHECKPOINT_NAME, CheckpointError, v1_hint  # noqa: E402
from training.trainer import GRPOTrainer, reward_curve  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule", default="cps")
    parser.add_argument("--eta", type=float, default=None)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--cfg", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clip-range", type=float, default=1e-2)
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--dense", action="store_true", help="DenseGRPO per-step rewards (ODE look-ahead)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", default="a handwritten 5,a handwritten 1,a handwritten 8,a handwritten 7")
    parser.add_argument("--out", default="out/grpo")
    parser.add_argument("--resume", action="store_true", help=f"continue from <out>/{CHECKPOINT_NAME}")
    args = parser.parse_args()
    torch.set_num_threads(max(1, 2 // int(os.environ.get("WORLD_SIZE", "1"))))
    if "WORLD_SIZE" in os.environ:
        torch.distributed.init_process_group("gloo")
    prompts = [p.strip() for p in args.prompts.split(",") if p.strip()]
    config = GRPOConfig(prompts=prompts, prompts_per_iteration=len(prompts), group_size=args.group_size,
                        steps=args.steps, rule=args.rule, eta=args.eta, cfg=args.cfg, lr=args.lr,
                        clip_range=args.clip_range, beta=args.beta, dense_rewards=args.dense,
                        iterations=args.iterations, seed=args.seed, checkpoint_every=5)
    trainer = GRPOTrainer(toy_policy(seed=args.seed), DigitReward(), config, log=print)
    checkpoint = os.path.join(args.out, CHECKPOINT_NAME)
    if args.resume:
        if not os.path.isfile(checkpoint):
            sys.exit(f"--resume: no checkpoint at {checkpoint}.{v1_hint(args.out)}")
        try:
            trainer.load_checkpoint(checkpoint)
        except CheckpointError as e:
            sys.exit(f"--resume: {e}")
    trainer.train(checkpoint_path=checkpoint)
    if trainer.world.rank == 0:
        from safetensors.torch import save_file
        with open(os.path.join(args.out, "metrics.json"), "w") as handle:
            json.dump({"config": config.to_dict(), "history": trainer.history}, handle, indent=1)
        curve = reward_curve(trainer.history, title=f"GRPO on the toy model, {args.rule}, digit reward")
        Image.fromarray((curve[0] * 255).round().byte().numpy()).save(os.path.join(args.out, "reward_curve.png"))
        save_file(trainer.policy.lora_state_dict(), os.path.join(args.out, "lora.safetensors"),
                  metadata={"base_model": "flow-cps toy DiT", "rule": args.rule, "reward": "digit",
                            "iterations": str(trainer.iteration)})
        for name in ("metrics.json", "reward_curve.png", "lora.safetensors", CHECKPOINT_NAME):
            print(f"wrote {os.path.join(args.out, name)}")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
