"""GRPO-train a LoRA of any model ComfyUI loads, from the command line: the trainer node's own code path, on one
process or one process per GPU under torchrun.

    # a run prototyped in the browser (Workflow → Export (API)), prompts from a file, settings as in the workflow
    python scripts/train_comfy.py --comfyui ~/ComfyUI --workflow my_run_api.json --prompts prompts.txt
    # the same on 8 GPUs: one process per GPU, the samples of every iteration shared among them
    torchrun --nproc-per-node 8 scripts/train_comfy.py --comfyui ~/ComfyUI --workflow my_run_api.json
    # or from flags alone: a checkpoint (or --diffusion-model + --text-encoder + --clip-type + --vae) and a reward
    python scripts/train_comfy.py --checkpoint sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors \\
        --reward pickscore --prompts prompts.txt --width 512 --height 512 --iterations 300 --run-name sd35_pick

ComfyUI is imported as a library from --comfyui (or $COMFYUI_PATH) and runs the workflow with its own executor and
loaders (models by file name from its model folders, or by path). Every trainer-node setting has a flag; a flag
given wins over the workflow's value, the rest keep it (or the node's default). The run goes to
<output>/flow_cps_grpo/<run name>/ exactly as from the node: checkpoint.safetensors (atomic, every
--checkpoint-every iterations; --resume continues it, also after a kill), lora_final.safetensors (ComfyUI's LoRA
format with the Save LoRA node's metadata: load it with LoraLoaderModelOnly), metrics.json and reward_curve.png,
all written atomically by rank 0. A run killed after its last checkpoint but before those final files is finished
by --resume with the same --iterations (it writes the missing ones from the checkpoint). Every argument is checked
before any model is loaded.
"""
import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # its modules, also when loaded by path (tests)
from comfy_library import import_comfyui, pack_file_module, pack_module  # noqa: E402
from run_checks import check_before_loading, refuse_if, run_problems  # noqa: E402

TRAINER = "FlowCPS_GRPOTrainLoRA"
# (flag, trainer input, type, help): every trainer-node setting; None = keep the workflow's value or the default
SETTINGS = [
    ("--cfg", "cfg", float, "classifier-free guidance scale"),
    ("--rule", "rule", str, "step rule of the rollouts: cps, cpws, precise, flow_sde, dance_sde"),
    ("--eta", "eta", float, "η of the rule"),
    ("--steps", "steps", int, "sampling steps per rollout"),
    ("--scheduler", "scheduler", str, "the model's sigma schedule, as in KSampler (normal, simple, …)"),
    ("--sde-start-step", "sde_start_step", int, "first stochastic (trained) step"),
    ("--sde-end-step", "sde_end_step", int, "stochastic steps stop before this one"),
    ("--group-size", "group_size", int, "images per prompt per iteration (independent of the number of GPUs)"),
    ("--prompts-per-iteration", "prompts_per_iteration", int, "prompts per iteration, taken in turn"),
    ("--iterations", "iterations", int, "GRPO iterations in total (with --resume: including the checkpoint's)"),
    ("--lora-rank", "lora_rank", int, "LoRA rank"),
    ("--lora-alpha", "lora_alpha", float, "LoRA α (scale α / rank; from flags alone 2 × --lora-rank, the "
                                          "references' convention and scripts/train.py's)"),
    ("--lora-targets", "lora_targets", str, "'auto' or fnmatch patterns of module paths, comma-separated"),
    ("--learning-rate", "learning_rate", float, "AdamW learning rate"),
    ("--beta", "beta", float, "weight of the KL to the base model (0: off)"),
    ("--clip-range", "clip_range", float, "PPO ratio clip ε"),
    ("--log-prob-kind", "log_prob_kind", str, "gaussian or cps_eq14"),
    ("--dense-rewards", "dense_rewards", bool, "DenseGRPO per-step rewards: true or false"),
    ("--seed", "seed", int, "seed of the LoRA init, the rollouts and the step selection"),
    ("--checkpoint-every", "checkpoint_every", int, "iterations between checkpoints (0: only at the end)"),
    ("--sample-batch-size", "sample_batch_size", int, "samples per rollout forward (per process)"),
    ("--train-batch-size", "train_batch_size", int, "samples per training forward/backward (per process)"),
    ("--gradient-checkpointing", "gradient_checkpointing", str, "auto, on or off"),
    ("--train-dtype", "train_dtype", str, "float32, bfloat16 or float16"),
]
# the same for the trainer's optional widgets (an API workflow exported before they existed runs with their defaults)
OPTIONAL_SETTINGS = [
    ("--min-train-std", "min_train_std", float, "steps whose noise std is below this are sampled, not trained (0: "
                                                "train every stochastic step, as the references)"),
    ("--advantage-std", "advantage_std", str, "std normalising the advantages: group (per prompt) or global (the "
                                              "whole iteration, flow_grpo's global_std)"),
]
# (flag, method node, input, type, help): every method node's setting; a flag given adds that node before the trainer
# (or sets the workflow's own one); --method NAME adds a node with its defaults
METHOD_NODES = {"mixgrpo": "FlowCPS_MethodMixGRPO", "trust_region": "FlowCPS_MethodTrustRegion",
                "diffusion_nft": "FlowCPS_MethodDiffusionNFT"}
METHOD_SETTINGS = [
    ("--window-start", "mixgrpo", "window_start", int, "MixGRPO: first step of the stochastic window"),
    ("--window-size", "mixgrpo", "window_size", int, "MixGRPO: steps in the window"),
    ("--window-schedule", "mixgrpo", "window_schedule", str, "MixGRPO: fixed, progressive, sliding or random"),
    ("--window-shift-every", "mixgrpo", "shift_every", int, "MixGRPO: iterations before the window moves (τ)"),
    ("--window-stride", "mixgrpo", "window_stride", int, "MixGRPO: steps the window moves by"),
    ("--ode-sampler", "mixgrpo", "ode_sampler", str, "MixGRPO: deterministic stock sampler outside the window "
                                                     "(euler; dpmpp_2m = MixGRPO-Flash)"),
    ("--kl-threshold", "trust_region", "kl_threshold", float, "trust region: FlowDPPO's KL mask δ (0: no mask)"),
    ("--ratio-clipping", "trust_region", "ratio_clipping", bool, "trust region: keep the PPO ratio clip beside "
                                                                 "the mask: true or false"),
    ("--ratio-norm", "trust_region", "ratio_norm", bool, "trust region: GRPO-Guard ratio normalisation"),
    ("--nft-sampler", "diffusion_nft", "sampler", str, "DiffusionNFT: 'trainer rule' or a stock sampler name"),
    ("--nft-beta", "diffusion_nft", "nft_beta", float, "DiffusionNFT: β of the implicit policies"),
    ("--nft-kl-beta", "diffusion_nft", "kl_beta", float, "DiffusionNFT: weight of the velocity KL to the base"),
    ("--nft-old-policy", "diffusion_nft", "old_policy", str, "DiffusionNFT: ema or snapshot"),
    ("--nft-decay-rate", "diffusion_nft", "decay_rate", float, "DiffusionNFT: old-policy decay per optimizer step"),
    ("--nft-decay-max", "diffusion_nft", "decay_max", float, "DiffusionNFT: cap of the old-policy decay"),
    ("--nft-timestep-fraction", "diffusion_nft", "timestep_fraction", float,
     "DiffusionNFT: share of the schedule's times each sample is re-noised at"),
]
WEIGHT_FREE = ("jpeg_compressibility", "jpeg_incompressibility", "colorfulness", "sharpness", "low_noise",
               "paper_haze", "stroke_width")
CLIP_REWARDS = ("pickscore", "clipscore", "aesthetic", "hpsv2")
REWARD_NAMES = ("digit", "bold_digit", "ocr") + WEIGHT_FREE + CLIP_REWARDS


def boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    host = parser.add_argument_group("ComfyUI")
    host.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"),
                      help="the ComfyUI folder (default: $COMFYUI_PATH)")
    host.add_argument("--output-directory", help="ComfyUI's output folder (default: its own output/)")
    host.add_argument("--extra-model-paths-config", action="append", default=[], metavar="YAML",
                      help="ComfyUI's extra_model_paths.yaml format: more model folders (repeatable)")
    host.add_argument("--custom-node", action="append", default=[], metavar="DIR",
                      help="load this node pack too, for nodes the workflow uses (repeatable)")
    host.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is there (gloo)")
    host.add_argument("--verbose", action="store_true", help="show ComfyUI's log (model loading etc.) on rank 0")
    source = parser.add_argument_group("what to train")
    source.add_argument("--workflow", help="a workflow exported with Workflow → Export (API)")
    source.add_argument("--node", help="the trainer node's id in --workflow when it has several")
    source.add_argument("--checkpoint", help="a checkpoint with text encoders and VAE (CheckpointLoaderSimple): "
                                             "a file name in models/checkpoints or a path")
    source.add_argument("--diffusion-model", help="a diffusion model alone (UNETLoader): name or path")
    source.add_argument("--weight-dtype", default="default", help="UNETLoader's weight_dtype (default: default)")
    source.add_argument("--text-encoder", action="append", default=[], metavar="NAME",
                        help="text encoder file(s) for --diffusion-model: 1 (CLIPLoader), 2 or 3 (Dual/Triple)")
    source.add_argument("--clip-type", help="the text encoders' type, as in CLIPLoader (e.g. sd3, flux, wan)")
    source.add_argument("--vae", help="the VAE for --diffusion-model (VAELoader): name or path")
    source.add_argument("--width", type=int, default=None, help="image width of the rollouts (flags: 1024)")
    source.add_argument("--height", type=int, default=None, help="image height of the rollouts (flags: 1024)")
    source.add_argument("--reward", choices=REWARD_NAMES, help="the reward (flags; a workflow brings its own)")
    source.add_argument("--reward-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an input of the reward's node, e.g. path=/models/pickscore or dtype=bfloat16")
    source.add_argument("--monitor", choices=REWARD_NAMES, help="a drift monitor (a reward the training does "
                                                                "not see, e.g. low_noise)")
    run = parser.add_argument_group("the run")
    run.add_argument("--prompts", metavar="FILE", help="training prompts, one per line (shared among the ranks)")
    run.add_argument("--negative", help="the negative prompt")
    run.add_argument("--run-name", default=None, help="the run folder under <output>/flow_cps_grpo/ (default: the "
                                                      "workflow's run_name, else grpo)")
    run.add_argument("--resume", action="store_true", help="continue the run folder's checkpoint")
    settings = parser.add_argument_group("trainer settings (default: the workflow's value, else the node's)")
    for flag, _, kind, text in SETTINGS + OPTIONAL_SETTINGS:
        settings.add_argument(flag, type=boolean if kind is bool else kind, default=None, help=text)
    methods = parser.add_argument_group("training methods (method nodes before the trainer)")
    methods.add_argument("--method", action="append", default=[], choices=sorted(METHOD_NODES),
                         help="add this method node with its defaults (repeatable: mixgrpo and trust_region combine)")
    for flag, _, _, kind, text in METHOD_SETTINGS:
        methods.add_argument(flag, type=boolean if kind is bool else kind, default=None, help=text)
    return parser


def parse_args(argv=None):
    """Everything that can be checked without ComfyUI: exits with a message naming the argument to change."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.comfyui or not os.path.isfile(os.path.join(args.comfyui, "main.py")):
        parser.error(f"--comfyui: {args.comfyui!r} is no ComfyUI folder (no main.py there); pass --comfyui PATH or "
                     "set COMFYUI_PATH")
    sources = [name for name in ("workflow", "checkpoint", "diffusion_model") if getattr(args, name)]
    if len(sources) != 1:
        parser.error("give exactly one of --workflow, --checkpoint or --diffusion-model" +
                     (f" (got {', '.join('--' + s.replace('_', '-') for s in sources)})" if sources else ""))
    if args.workflow:
        if not os.path.isfile(args.workflow):
            parser.error(f"--workflow: no such file: {args.workflow}")
        try:
            with open(args.workflow, encoding="utf-8") as handle:
                args.graph = json.load(handle)
        except (OSError, ValueError) as e:
            parser.error(f"--workflow: {args.workflow} is not JSON: {e}")
        for flag in ("checkpoint", "vae", "clip_type", "reward"):
            if getattr(args, flag):
                parser.error(f"--{flag.replace('_', '-')}: the workflow brings its own loaders and reward; edit "
                             "them there, or build the run from flags without --workflow")
    else:
        if args.diffusion_model and (not args.text_encoder or not args.vae or not args.clip_type):
            parser.error("--diffusion-model also needs --text-encoder (1–3), --clip-type and --vae")
        if len(args.text_encoder) > 3:
            parser.error("--text-encoder: at most 3 (TripleCLIPLoader)")
        if not args.reward:
            parser.error("--reward: name the reward (" + ", ".join(REWARD_NAMES) + ")")
        if not args.prompts:
            parser.error("--prompts: give a prompts file (one prompt per line)")
    for path in args.custom_node:
        if not os.path.isdir(path):
            parser.error(f"--custom-node: no such folder: {path}")
    args.custom_node = [os.path.abspath(path) for path in args.custom_node]
    for path in args.extra_model_paths_config:
        if not os.path.isfile(path):
            parser.error(f"--extra-model-paths-config: no such file: {path}")
    args.prompt_text = None
    if args.prompts:
        if not os.path.isfile(args.prompts):
            parser.error(f"--prompts: no such file: {args.prompts}")
        with open(args.prompts, encoding="utf-8") as handle:
            args.prompt_text = handle.read()
        if not any(line.strip() for line in args.prompt_text.splitlines()):
            parser.error(f"--prompts: {args.prompts} holds no prompt (one per line)")
    args.options = {}
    for item in args.reward_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--reward-option: {item!r} is not KEY=VALUE")
        args.options[key] = value
    args.world_size = int(os.environ.get("WORLD_SIZE", "1"))
    args.rank = int(os.environ.get("RANK", "0"))
    args.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return parser, args


def reward_node(name: str, options: dict) -> dict:
    if name == "digit":
        return {"class_type": "FlowCPS_RewardDigit", "inputs": dict(options)}
    if name == "bold_digit":
        return {"class_type": "FlowCPS_RewardBoldDigit", "inputs": dict(options)}
    if name == "ocr":
        return {"class_type": "FlowCPS_RewardOCR", "inputs": dict(options)}
    if name in WEIGHT_FREE:
        return {"class_type": "FlowCPS_RewardWeightFree", "inputs": {"kind": name, **options}}
    return {"class_type": "FlowCPS_RewardCLIP", "inputs": {"model": name, **options}}


def graph_from_flags(args) -> dict:
    """The API graph the flags describe: loaders, the reward (and monitor), an empty latent and the trainer. Only
    what the flags set: with_defaults fills in the rest once ComfyUI is imported."""
    def node(class_type, **inputs):
        return {"class_type": class_type, "inputs": inputs}

    graph = {}
    if args.checkpoint:
        graph["1"] = node("CheckpointLoaderSimple", ckpt_name=args.checkpoint)
        model, clip, vae = ["1", 0], ["1", 1], ["1", 2]
    else:
        graph["1"] = node("UNETLoader", unet_name=args.diffusion_model, weight_dtype=args.weight_dtype)
        loader = {1: "CLIPLoader", 2: "DualCLIPLoader", 3: "TripleCLIPLoader"}[len(args.text_encoder)]
        names = ({"clip_name": args.text_encoder[0]} if len(args.text_encoder) == 1 else
                 {f"clip_name{k + 1}": n for k, n in enumerate(args.text_encoder)})
        graph["2"] = node(loader, **names, **({"type": args.clip_type} if loader != "TripleCLIPLoader" else {}))
        graph["3"] = node("VAELoader", vae_name=args.vae)
        model, clip, vae = ["1", 0], ["2", 0], ["3", 0]
    graph["4"] = reward_node(args.reward, args.options)
    graph["5"] = node("EmptyLatentImage", width=args.width or 1024, height=args.height or 1024, batch_size=1)
    trainer = node(TRAINER, model=model, vae=vae, reward=["4", 0], latent=["5", 0], clip=clip)
    if args.monitor:
        graph["6"] = reward_node(args.monitor, {})
        trainer["inputs"]["monitor"] = ["6", 0]
    graph["10"] = trainer
    return graph


def with_defaults(graph: dict, nodes_module, headless) -> dict:
    """graph_from_flags's nodes with every input the flags left out at the node's default."""
    return {node_id: {"class_type": node["class_type"], "inputs": {
        **headless.input_defaults(nodes_module.NODE_CLASS_MAPPINGS[node["class_type"]]), **node["inputs"]}}
        for node_id, node in graph.items()}


def apply_flags(args, graph: dict, trainer_id: str) -> dict:
    """The flags given win over the workflow's trainer inputs."""
    inputs = graph[trainer_id]["inputs"]
    for flag, name, _, _ in SETTINGS + OPTIONAL_SETTINGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            inputs[name] = value
    if not args.workflow and args.lora_alpha is None:  # from flags alone: α follows the rank, as in scripts/train.py
        inputs["lora_alpha"] = default_lora_alpha(int(inputs["lora_rank"]))
    if args.prompt_text is not None:
        inputs["prompts"] = args.prompt_text
    if args.negative is not None:
        inputs["negative"] = args.negative
    if args.workflow and (args.width or args.height):
        latent = inputs.get("latent")
        target = graph.get(latent[0]) if isinstance(latent, list) else None
        if target is None or not {"width", "height"} <= set(target["inputs"]):
            raise SystemExit("train_comfy.py: error: --width/--height: the workflow's latent does not come from an "
                             "empty-latent node with width and height; set the size in the workflow")
        target["inputs"].update({k: v for k, v in (("width", args.width), ("height", args.height)) if v})
    args.run_name = args.run_name or inputs.get("run_name") or "grpo"
    inputs["run_name"] = args.run_name
    return inputs


def method_chain(graph: dict, trainer_id: str) -> dict:
    """{method name: node id} of the method nodes chained into the trainer's method input."""
    found, link = {}, graph[trainer_id]["inputs"].get("method")
    names = {class_type: name for name, class_type in METHOD_NODES.items()}
    while isinstance(link, list) and link and str(link[0]) in graph:
        node = graph[str(link[0])]
        if node.get("class_type") in names:
            found.setdefault(names[node["class_type"]], str(link[0]))
        link = node.get("inputs", {}).get("method")
    return found


def apply_method_flags(args, graph: dict, trainer_id: str, nodes_module, headless) -> None:
    """The method flags given set the workflow's method node of that kind, or add one at the head of the chain."""
    wanted = {name: {} for name in args.method}
    for flag, name, key, _, _ in METHOD_SETTINGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            wanted.setdefault(name, {})[key] = value
    chain = method_chain(graph, trainer_id)
    for name in sorted(wanted, key=list(METHOD_NODES).index):
        if name not in chain:
            node_id = str(max([int(k) for k in graph if str(k).isdigit()] + [0]) + 1)
            class_type = METHOD_NODES[name]
            inputs = headless.input_defaults(nodes_module.NODE_CLASS_MAPPINGS[class_type])
            upstream = graph[trainer_id]["inputs"].get("method")
            if upstream is not None:
                inputs["method"] = upstream
            graph[node_id] = {"class_type": class_type, "inputs": inputs}
            graph[trainer_id]["inputs"]["method"] = [node_id, 0]
            chain[name] = node_id
        graph[chain[name]]["inputs"].update(wanted[name])


def check_workflow_early(parser, args):
    """A workflow's graph, trainer and run folder, checked before ComfyUI is imported (its start-up takes ~10 s of a
    CPU per process): returns (graph, trainer id) with the flags applied."""
    api_graph = pack_file_module("nodes/api_graph.py")
    try:
        graph = api_graph.check_api_workflow(args.graph)
        trainer_id = api_graph.find_trainer(graph, args.node)
        graph = api_graph.upstream(graph, trainer_id)
    except api_graph.WorkflowError as e:
        parser.error(f"--workflow: {e}")
    apply_flags(args, graph, trainer_id)
    # ComfyUI's default output folder (folder_paths): <its folder>/output; checked again once ComfyUI is imported
    output = os.path.abspath(args.output_directory or os.path.join(os.path.realpath(args.comfyui), "output"))
    refuse_if(run_problems(args, graph[trainer_id]["inputs"], output))
    return graph, trainer_id


def default_lora_alpha(rank: int) -> float:
    """training.grpo_config.default_lora_alpha (2 × rank), before ComfyUI is imported."""
    return pack_module("training.grpo_config").default_lora_alpha(rank)


def progress_printer(rank: int):
    """One line per iteration on rank 0, from the chart events the trainer node sends the browser."""
    shown = set()

    def send_event(event, data):
        history = data.get("history") or []
        if rank or event != "flow_cps.grpo" or not history or data.get("stopped"):
            return
        iteration, mean, std = history[-1]
        if iteration in shown:
            return
        shown.add(iteration)
        line = f"iteration {iteration + 1}/{data.get('iterations')}: reward {mean:.4f} ± {std:.4f}"
        if data.get("kl") is not None:
            line += f", kl {data['kl']:.2e}"
        monitor = data.get("monitor") or {}
        points = monitor.get("points") or []
        if points and points[-1][0] == iteration:
            line += f", held-out reward {points[-1][1]:.4f}"
            if points[-1][2] is not None:
                line += f", {monitor.get('name')} {points[-1][2]:.4f}"
        print(line, flush=True)
    return send_event


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.rank == 0 and args.verbose else logging.WARNING,
                        format="%(message)s")
    if args.workflow:
        graph, trainer_id = check_workflow_early(parser, args)
    else:
        graph, trainer_id = graph_from_flags(args), "10"
    class_types = {node["class_type"] for node in graph.values()}
    nodes_module, folder_paths, headless, use_cuda = import_comfyui(args, class_types)
    logging.getLogger("flow_cps").setLevel(logging.WARNING)  # the progress lines below say it once per iteration
    if not args.workflow:
        graph = with_defaults(graph, nodes_module, headless)
        apply_flags(args, graph, trainer_id)
    apply_method_flags(args, graph, trainer_id, nodes_module, headless)
    run_folder = check_before_loading(args, graph, trainer_id, folder_paths, headless)

    import torch
    if args.world_size > 1:
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    try:
        if args.rank == 0:
            os.makedirs(run_folder, exist_ok=True)
        run = headless.HeadlessRun(run_folder=run_folder, rank=args.rank, world_size=args.world_size,
                                   send_event=progress_printer(args.rank))
        try:
            headless.run_workflow(graph, trainer_id, run)
        except headless.HeadlessFailure as e:
            sys.exit(f"training stopped: {e}")
        if args.rank == 0:
            for path in run.written:
                print(f"wrote {path}")
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
