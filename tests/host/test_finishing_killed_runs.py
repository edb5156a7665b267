"""A run killed after its last checkpoint but before its final files, finished by resuming it (the trainer node over
the API and scripts/train_comfy.py); the trainer's min_train_std / advantage_std widgets and its one LoRA α default.
(scripts/train.py and the helpers: tests/test_run_finish.py.)"""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from model_files import arch_files
from test_grpo_nodes import grpo_graph
from test_node_conventions import history_error
from training.checkpoint import read_checkpoint, trained_iterations
from training.grpo_config import GRPOConfig, default_lora_alpha

REPO = Path(__file__).resolve().parents[2]
MODEL_FILES = [arch_files("sd3")]  # built at the session's start


def small(run_name, **inputs):
    """The toy GRPO graph of test_grpo_nodes at a small size: 1 prompt × 2 samples, 2 iterations."""
    graph = grpo_graph(run_name, iterations=2, checkpoint_every=1, save=False)
    graph["4"]["inputs"].update(prompts="a handwritten 5", group_size=2, prompts_per_iteration=1,
                                sample_batch_size=2, train_batch_size=2, **inputs)
    return graph


def test_the_optional_widgets_and_the_lora_alpha_default(comfy):
    spec = comfy.object_info()["FlowCPS_GRPOTrainLoRA"]["input"]
    optional, required = spec.get("optional", {}), spec["required"]
    assert optional["min_train_std"][1]["default"] == GRPOConfig.min_train_std
    assert optional["min_train_std"][1]["step"] <= 1e-8  # the frontend keeps what is typed down to 1e-8
    assert comfy.combo_options(optional["advantage_std"]) == ["group", "global"]
    assert optional["advantage_std"][1]["default"] == GRPOConfig.advantage_std
    sys.path.insert(0, str(REPO / "scripts"))
    import train_comfy
    widgets = {name for name, value in optional.items() if value[0] in ("FLOAT", "INT", "STRING", "BOOLEAN", "COMBO")
               or isinstance(value[0], list)}
    assert widgets == {name for _, name, _, _ in train_comfy.OPTIONAL_SETTINGS}
    rank = required["lora_rank"][1]["default"]
    assert rank == GRPOConfig.lora_rank and required["lora_alpha"][1]["default"] == default_lora_alpha(rank) == 16.0


def test_a_run_stopped_before_its_final_files_is_finished_by_resuming_it(comfy):
    run = "host_finish"
    typed = dict(min_train_std=1.2345e-05, advantage_std="global")
    entry, messages = comfy.run(small(run, **typed), timeout=600)
    assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
    folder = Path(comfy.output_dir) / "flow_cps_grpo" / run
    checkpoint = folder / "checkpoint.safetensors"
    config = read_checkpoint(str(checkpoint))["config"]
    assert config["min_train_std"] == 1.2345e-05 and config["advantage_std"] == "global"  # as typed
    straight = load_file(str(folder / "lora_final.safetensors"))
    straight_metrics = json.loads((folder / "metrics.json").read_text())
    assert trained_iterations(str(checkpoint)) == 2
    assert any(float(v.abs().max()) > 0 for k, v in straight.items() if "lora_up" in k)

    # what a kill after the last checkpoint leaves: the checkpoint, no final file (each is written atomically)
    (folder / "lora_final.safetensors").unlink()
    (folder / "metrics.json").unlink()
    entry, messages = comfy.run(small(run, resume_from="latest", **typed), timeout=600)
    assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
    text = entry["outputs"]["4"]["text"][0]
    assert "already held all 2 iterations" in text and "wrote lora_final.safetensors, metrics.json" in text, text
    finished = load_file(str(folder / "lora_final.safetensors"))
    assert finished.keys() == straight.keys() and all(torch.equal(finished[k], straight[k]) for k in straight)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["iterations"] == 2 and metrics["history"] == straight_metrics["history"]
    assert sorted(os.listdir(folder)) == ["checkpoint.safetensors", "lora_final.safetensors", "metrics.json"]

    # all written: nothing to write (the same checkpoint named by path, so ComfyUI does not answer from its cache)
    before = {name: (folder / name).stat().st_mtime_ns for name in os.listdir(folder)}
    entry, messages = comfy.run(small(run, resume_from=f"flow_cps_grpo/{run}/checkpoint.safetensors", **typed),
                                timeout=600)
    assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
    assert "nothing was written" in entry["outputs"]["4"]["text"][0]
    assert {name: (folder / name).stat().st_mtime_ns for name in os.listdir(folder)} == before
    # fewer iterations than the checkpoint holds: refused, saying what to set
    graph = small(run, resume_from="latest", **typed)
    graph["4"]["inputs"]["iterations"] = 1
    entry, _ = comfy.run(graph, timeout=600)
    error = history_error(comfy, entry)
    assert error is not None and "already holds 2 iterations and iterations is 1" in error["exception_message"]
    assert "set iterations to 2 to finish that run" in error["exception_message"]


def test_train_comfy_finishes_a_run_stopped_before_its_final_files(comfy, tmp_path):
    from test_headless import command, environment, lora, run_folder, train, workflow
    graph = workflow(comfy, "sd3", "cli_finish", iterations=2, checkpoint_every=1)
    train(tmp_path, graph)
    folder = run_folder(tmp_path, "cli_finish")
    straight = lora(folder)
    curve = (folder / "reward_curve.png").read_bytes()
    for name in ("lora_final.safetensors", "metrics.json", "reward_curve.png"):
        (folder / name).unlink()
    checkpoint = (folder / "checkpoint.safetensors").read_bytes()
    done = train(tmp_path, graph, "--resume")
    assert "already holds all 2 iterations" in done.stdout + done.stderr, (done.stdout, done.stderr[-3000:])
    # nothing trained: the progress shows the checkpoint's last iteration only, and the checkpoint stays as it was
    assert [line.split(":")[0] for line in done.stdout.splitlines() if line.startswith("iteration ")] == [
        "iteration 2/2"], done.stdout
    assert (folder / "checkpoint.safetensors").read_bytes() == checkpoint
    wrote = sorted(Path(line.removeprefix("wrote ")).name for line in done.stdout.splitlines()
                   if line.startswith("wrote "))
    assert wrote == ["lora_final.safetensors", "metrics.json", "reward_curve.png"], done.stdout
    finished = lora(folder)
    assert all(torch.equal(finished[k], straight[k]) for k in straight)
    assert (folder / "reward_curve.png").read_bytes() == curve
    # finished: nothing left to do, refused before any model loads; the files stay
    again = subprocess.run(command(tmp_path, graph, "--resume"), capture_output=True, text=True, timeout=600,
                           env=environment())
    assert again.returncode != 0 and "nothing left to do (its final files are all written)" in again.stderr
    assert all(torch.equal(lora(folder)[k], straight[k]) for k in straight)
