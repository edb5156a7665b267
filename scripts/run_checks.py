"""What scripts/train_comfy.py checks before any model loads: the batch split, the run folder, a resumed run's
checkpoint (before ComfyUI is imported), and, once it is, the model files and ComfyUI's own validation."""
import asyncio
import os
import sys

from comfy_library import pack_module

FINAL_FILES = ("lora_final.safetensors", "metrics.json", "reward_curve.png")  # what a run writes after its checkpoint


def run_problems(args, inputs: dict, output_directory: str) -> list:
    """The batch split over the processes and the run folder (a new run never overwrites one; --resume needs a
    checkpoint that has something left to do). Sets the trainer's resume_from. Pure: runs before ComfyUI is imported
    for a workflow, and again after with ComfyUI's own output folder."""
    problems = []
    batch = int(inputs["prompts_per_iteration"]) * int(inputs["group_size"])
    if batch % args.world_size:
        good = [n for n in range(1, batch + 1) if batch % n == 0]
        problems.append(f"prompts_per_iteration × group_size = {inputs['prompts_per_iteration']} × "
                        f"{inputs['group_size']} = {batch} samples per iteration do not split over {args.world_size} "
                        f"processes: use --nproc-per-node one of {good}, or change --group-size / "
                        "--prompts-per-iteration")
    checkpoint = os.path.join(run_folder_of(args, output_directory), "checkpoint.safetensors")
    if args.resume:
        if not os.path.isfile(checkpoint):
            problems.append(f"--resume: no checkpoint at {checkpoint}")
        else:
            problems += finished_run_problems(checkpoint, inputs.get("iterations"))
        inputs["resume_from"] = os.path.relpath(checkpoint, output_directory)
    else:
        inputs["resume_from"] = ""
        if os.path.exists(checkpoint):
            problems.append(f"--run-name: {os.path.dirname(checkpoint)} already holds a run; pass --resume to "
                            "continue it, or choose another --run-name (a new run never overwrites an old one)")
    return problems


def run_folder_of(args, output_directory: str) -> str:
    return os.path.join(output_directory, "flow_cps_grpo", args.run_name)


def refuse_if(problems: list) -> None:
    if problems:
        sys.exit("train_comfy.py: error: " + "\n  ".join(["the run cannot start:", *problems]))


def check_before_loading(args, graph, trainer_id, folder_paths, headless):
    """Model files, the graph (ComfyUI's validation), the batch split and the run folder: all before any model
    loads. Returns the run folder."""
    import nodes
    problems = headless.resolve_model_files(graph, folder_paths)
    problems += headless.check_pack_inputs(graph, nodes.NODE_CLASS_MAPPINGS)
    problems += [p for p in asyncio.run(headless.validate(graph, trainer_id)) if p not in problems]
    problems += run_problems(args, graph[trainer_id]["inputs"], folder_paths.get_output_directory())
    refuse_if(problems)
    return run_folder_of(args, folder_paths.get_output_directory())


def finished_run_problems(checkpoint: str, iterations) -> list:
    """--resume of a checkpoint that holds every iteration: fine when final files are missing (the run then writes
    them), else nothing is left to do; more iterations than --iterations is a mistake. Returns the problems."""
    checkpoints = pack_module("training.checkpoint")
    run_folders = pack_module("training.run_folders")
    try:
        done = checkpoints.trained_iterations(checkpoint)
    except checkpoints.CheckpointError as e:
        return [f"--resume: {e}"]
    if not isinstance(iterations, int) or done < iterations:
        return []
    if done == iterations and run_folders.stale_final_files(os.path.dirname(checkpoint), FINAL_FILES, done):
        return []
    return [f"--resume: {checkpoint} already holds {done} iterations and --iterations is {iterations} (the total, not "
            "the number to add): nothing left to do" + (" (its final files are all written)" if done == iterations
                                                        else "")
            + f". Raise --iterations above {done}, e.g. --iterations {done + iterations}"]
