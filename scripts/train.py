"""GRPO on the shipped toy digit model with the bold-digit (or the digit-classifier) reward (CPU, no downloads).

    python scripts/train.py --rule cps --iterations 30 --out out/grpo_cps
    python scripts/train.py --rule cps --iterations 60 --out out/grpo_cps --resume   # 30 more iterations
    torchrun --nproc-per-node 2 scripts/train.py --rule cps     # same run spread over 2 processes (gloo)

Writes <out>/metrics.json (the settings actually used, one record per iteration and, after a resume with changed
settings, the segments), <out>/reward_curve.png, <out>/checkpoint.safetensors (resume with --resume) and
<out>/lora.safetensors (ComfyUI LoRA format, loads with LoraLoaderModelOnly on the toy model).
Every file is written atomically (a kill leaves the old file or none, never half of one). A run killed after its last
checkpoint but before its final files is finished by --resume with the same --iterations: it writes the final files
that are missing (or left from an earlier segment) from the checkpoint, bit for bit what the run would have written.
An old <out>/checkpoint.pt (v1) is not read: convert it with scripts/convert_checkpoint_v1.py.
Every argument is checked before anything is loaded or trained; a NaN in training stops the run with an error and
leaves the last good checkpoint as it was.
"""
import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from samplers import DEFAULT_ETA, RULES  # noqa: E402
from training.checkpoint import CHECKPOINT_NAME, CheckpointError, trained_iterations, v1_hint  # noqa: E402
from training.grpo_config import ADVANTAGE_STD_MODES, GRPOConfig, default_lora_alpha  # noqa: E402
from training.run_folders import stale_final_files, write_json, write_reward_curve  # noqa: E402
from training.script_args import HelpFormatter, number, output_folder, whole_number  # noqa: E402
from training.toy.prompts import parse_digit  # noqa: E402

TOY_REWARDS = {"bold_digit": "BoldDigitReward", "digit": "DigitReward"}

ALLOW_FLAG = "--allow-changed-settings"
CONFIG_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
FINAL_FILES = ("metrics.json", "reward_curve.png", "lora.safetensors")  # written after the last checkpoint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--reward", default="bold_digit", choices=sorted(TOY_REWARDS),
                        help="bold_digit: P(requested digit) × stroke width (the toy's style task); digit: "
                             "P(requested digit) alone (the base model already scores ≈ 0.94)")
    parser.add_argument("--rule", default="cps", choices=[r for r in RULES if r != "ode"], help="the step rule")
    parser.add_argument("--eta", type=number(0.0), default=None,
                        help="the rule's η (default: the rule's own, " + ", ".join(
                            f"{r} {e:g}" for r, e in DEFAULT_ETA.items() if r != "ode") + ")")
    parser.add_argument("--iterations", type=whole_number(1), default=30,
                        help="GRPO iterations in total (with --resume: including the checkpoint's)")
    parser.add_argument("--steps", type=whole_number(1), default=4, help="sampling steps per rollout")
    parser.add_argument("--group-size", type=whole_number(2), default=8, help="samples per prompt")
    parser.add_argument("--cfg", type=number(), default=1.0, help="classifier-free guidance scale")
    parser.add_argument("--lr", type=number(0.0, above=True), default=1e-3, help="AdamW learning rate")
    parser.add_argument("--clip-range", type=number(0.0, above=True, infinite=True), default=1e-2,
                        help="PPO ratio clip ε (inf: no clipping)")
    parser.add_argument("--beta", type=number(0.0), default=0.1,
                        help="weight of the KL to the base model (0: no KL term)")
    parser.add_argument("--min-train-std", type=number(0.0), default=CONFIG_DEFAULTS["min_train_std"],
                        help="steps whose noise std is below this are sampled, not trained (0: train every "
                             "stochastic step, as the reference trainers do)")
    parser.add_argument("--advantage-std", choices=ADVANTAGE_STD_MODES, default=CONFIG_DEFAULTS["advantage_std"],
                        help="std normalising the advantages: group (each prompt's group) or global (all samples of "
                             "the iteration, flow_grpo's global_std)")
    parser.add_argument("--monitor-samples", type=whole_number(0), default=16,
                        help="held-out samples the drift monitor (paper haze) scores every 5 iterations (0: off)")
    parser.add_argument("--lora-rank", type=whole_number(1), default=CONFIG_DEFAULTS["lora_rank"], help="LoRA rank")
    parser.add_argument("--lora-alpha", type=number(0.0, above=True), default=None,
                        help="LoRA α (default: 2 × rank)")
    parser.add_argument("--dense", action="store_true", help="DenseGRPO per-step rewards (ODE look-ahead)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the LoRA initialisation and every sample")
    parser.add_argument("--checkpoint-every", type=whole_number(0), default=5,
                        help="iterations between checkpoints (0: only at the end)")
    parser.add_argument("--prompts", default="a handwritten 5,a handwritten 1,a handwritten 8,a handwritten 7",
                        help="comma-separated prompts, each naming one digit")
    parser.add_argument("--out", type=output_folder, default="out/grpo",
                        help="the run folder (created if missing; must not be a file)")
    parser.add_argument("--resume", action="store_true", help=f"continue from <out>/{CHECKPOINT_NAME}")
    parser.add_argument(ALLOW_FLAG, action="store_true",
                        help="with --resume: continue although the checkpoint was trained with other settings (rule, "
                             "η, steps, …); metrics.json then records each segment's settings")
    return parser


def parse_args(argv=None):
    """Parse and check every argument (exits with a message naming the argument when one is unusable)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.finish = []  # with --resume of a run whose iterations are all done: the final files to write
    args.prompt_list = [p.strip() for p in args.prompts.split(",") if p.strip()]
    if not args.prompt_list:
        parser.error("argument --prompts: give at least one prompt, e.g. 'a handwritten 5,a handwritten 1'")
    for prompt in args.prompt_list:
        try:
            if parse_digit(prompt) is None:
                raise ValueError(f"{prompt!r} names no digit")
        except ValueError as e:
            parser.error(f"argument --prompts: {e}")
    if args.allow_changed_settings and not args.resume:
        parser.error(f"argument {ALLOW_FLAG}: only means something with --resume")
    try:
        args.config = make_config(args)
    except ValueError as e:
        parser.error(str(e))
    checkpoint = os.path.join(args.out, CHECKPOINT_NAME)
    if args.resume:
        if not os.path.isfile(checkpoint):
            parser.error(f"--resume: no checkpoint at {checkpoint}.{v1_hint(args.out)}")
        try:
            done = trained_iterations(checkpoint)
        except CheckpointError as e:
            parser.error(f"--resume: {e}")
        args.finish = stale_final_files(args.out, FINAL_FILES, done) if done == args.iterations else []
        if done > args.iterations or (done == args.iterations and not args.finish):
            parser.error(f"--resume: {checkpoint} already holds {done} iterations and --iterations is "
                         f"{args.iterations} (the total, not the number to add): nothing left to do"
                         + (" (its final files are all written)" if done == args.iterations else "")
                         + f". Raise --iterations above {done}, e.g. --iterations {done + args.iterations}")
    elif os.path.exists(checkpoint):
        parser.error(f"argument --out: {args.out} already holds a run ({CHECKPOINT_NAME}); pass --resume to continue "
                     "it, or choose another --out (a new run never overwrites an old one)")
    return args


def make_config(args) -> GRPOConfig:
    """The run's settings with η and α resolved to the values actually used (so metrics.json records them)."""
    eta = DEFAULT_ETA[args.rule] if args.eta is None else args.eta
    alpha = default_lora_alpha(args.lora_rank) if args.lora_alpha is None else args.lora_alpha
    return GRPOConfig(prompts=args.prompt_list, prompts_per_iteration=len(args.prompt_list),
                      group_size=args.group_size, steps=args.steps, rule=args.rule, eta=eta, cfg=args.cfg, lr=args.lr,
                      clip_range=args.clip_range, beta=args.beta, dense_rewards=args.dense,
                      min_train_std=args.min_train_std, advantage_std=args.advantage_std,
                      lora_rank=args.lora_rank, lora_alpha=alpha, iterations=args.iterations, seed=args.seed,
                      checkpoint_every=args.checkpoint_every, monitor_samples=args.monitor_samples, monitor_every=5)


def settings_label(trainer) -> str:
    labels = []
    for segment in trainer.segments:
        settings = segment.get("settings") or {}
        label = f"{settings.get('rule')}"
        if not labels or labels[-1] != label:
            labels.append(label)
    return " → ".join(labels)


def write_outputs(trainer, out: str, names=FINAL_FILES) -> None:
    """The final files (``names``: all of FINAL_FILES, or the ones a finishing resume lacks), each atomically and
    each recording the iterations it holds (training.run_folders.stale_final_files reads that)."""
    from safetensors.torch import save_file

    from training.checkpoint import atomic_write
    from training.trainer import reward_curve

    reward = trainer.reward_fn.name
    if "metrics.json" in names:
        write_json(os.path.join(out, "metrics.json"), {
            "config": trainer.config.to_dict(), "reward": reward, "monitor": "paper_haze",
            "monitor_baseline": trainer.monitor_baseline, "segments": trainer.segments,
            "iterations": trainer.iteration, "history": trainer.history})
    if "reward_curve.png" in names:
        curve = reward_curve(trainer.history, value_range=trainer.reward_fn.value_range,
                             title=f"GRPO on the toy model, {settings_label(trainer)}, {reward} reward")
        write_reward_curve(os.path.join(out, "reward_curve.png"), curve, trainer.iteration)
    if "lora.safetensors" in names:
        lora = trainer.export_lora_state_dict()  # the EMA when it is on
        metadata = {"base_model": "flow-cps toy DiT", "rule": trainer.config.rule, "reward": reward,
                    "iterations": str(trainer.iteration)}
        atomic_write(os.path.join(out, "lora.safetensors"),
                     lambda temporary: save_file(lora, temporary, metadata=metadata))
    for name in FINAL_FILES:
        if name in names:
            print(f"wrote {os.path.join(out, name)}")


def main(argv=None) -> int:
    args = parse_args(argv)
    import training.rewards
    from training.rewards import PaperHaze
    from training.toy.policy import toy_policy
    from training.trainer import GRPOTrainer, NonFiniteTraining, SettingsChanged

    torch.set_num_threads(max(1, 2 // int(os.environ.get("WORLD_SIZE", "1"))))
    if "WORLD_SIZE" in os.environ:
        torch.distributed.init_process_group("gloo")
    try:
        config = args.config
        policy = toy_policy(rank=config.lora_rank, alpha=config.lora_alpha, seed=args.seed)
        try:
            reward = getattr(training.rewards, TOY_REWARDS[args.reward])()
            trainer = GRPOTrainer(policy, reward, config, log=print, monitor=PaperHaze())
        except ValueError as e:
            sys.exit(f"train.py: error: {e}")
        checkpoint = os.path.join(args.out, CHECKPOINT_NAME)
        if args.resume:
            try:
                trainer.load_checkpoint(checkpoint, allow_changed_settings=args.allow_changed_settings)
            except SettingsChanged as e:
                sys.exit(f"--resume: {e}, or pass {ALLOW_FLAG} to continue with the new settings (metrics.json "
                         "then records which iterations used which)")
            except CheckpointError as e:
                sys.exit(f"--resume: {e}")
        if args.finish:  # killed after its last checkpoint: nothing to train, the final files to write
            if trainer.world.rank == 0:
                print(f"{checkpoint} already holds all {trainer.iteration} iterations; the run stopped before "
                      f"writing {', '.join(args.finish)}: writing them from the checkpoint")
                write_outputs(trainer, args.out, args.finish)
            return 0
        os.makedirs(args.out, exist_ok=True)
        try:
            trainer.train(checkpoint_path=checkpoint)
        except NonFiniteTraining as e:
            sys.exit(f"training stopped: {e}")
        if trainer.world.rank == 0:
            write_outputs(trainer, args.out)
            print(f"wrote {checkpoint}")
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
