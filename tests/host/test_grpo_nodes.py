"""GRPO LoRA training inside a real ComfyUI on the toy model, over the HTTP API and websocket."""
import json
import os

import numpy as np
import pytest
from safetensors import safe_open

from model_files import Generated, script_files
from test_sampler_nodes import run_images, toy_graph


def grpo_graph(run_name, iterations=12, resume_from="", checkpoint_every=2, seed=0, save=True):
    graph = {
        "1": {"class_type": "FlowCPS_ToyDigitModel", "inputs": {}},
        "2": {"class_type": "FlowCPS_RewardBoldDigit", "inputs": {}},  # the main toy task
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "4": {"class_type": "FlowCPS_GRPOTrainLoRA", "inputs": {
            "model": ["1", 0], "vae": ["1", 1], "reward": ["2", 0], "latent": ["3", 0],
            "prompts": "a handwritten 5\na handwritten 1\na handwritten 8\na handwritten 7", "negative": "",
            "cfg": 1.0, "rule": "cps", "eta": 0.8, "steps": 4, "scheduler": "normal", "sde_start_step": 0,
            "sde_end_step": 100, "group_size": 8, "prompts_per_iteration": 4, "iterations": iterations,
            "lora_rank": 8, "lora_alpha": 16.0, "lora_targets": "*attn.qkv, *attn.proj, *mlp.fc1, *mlp.fc2",
            "learning_rate": 1e-3, "beta": 0.1, "clip_range": 1e-2, "log_prob_kind": "gaussian",
            "dense_rewards": False, "seed": seed, "checkpoint_every": checkpoint_every, "run_name": run_name,
            "resume_from": resume_from, "sample_batch_size": 32, "train_batch_size": 32,
            "gradient_checkpointing": "auto", "train_dtype": "float32"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 2], "filename_prefix": f"host/{run_name}_curve"}},
    }
    if save:
        graph["6"] = {"class_type": "FlowCPS_SaveLoRA", "inputs": {
            "lora": ["4", 1], "filename_prefix": f"host/{run_name}", "run_info": ["4", 3]}}
    return graph


def chart_events(messages, node="4"):
    return [m["data"] for m in messages if m.get("type") == "flow_cps.grpo" and m["data"].get("node") == node]


def test_grpo_on_the_toy_model_raises_the_reward_and_streams_the_chart(comfy):
    entry, messages = comfy.run(grpo_graph("host_rise"), timeout=600)
    assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
    events = chart_events(messages)
    assert [e["history"][-1][0] for e in events] == list(range(12))  # one chart event per iteration
    rewards = [r for _, r, _ in events[-1]["history"]]
    assert np.mean(rewards[-3:]) > np.mean(rewards[:3]) + 0.01, rewards
    previews = [m for m in messages if m.get("type") == "progress" and m["data"].get("node") == "4"]
    assert len(previews) >= 12
    curve = comfy.output_images(entry, node_id="5")
    assert curve and curve[0].shape[2] == 3
    run_folder = os.path.join(comfy.output_dir, "flow_cps_grpo", "host_rise")
    assert {"checkpoint.safetensors", "lora_final.safetensors", "metrics.json"} <= set(os.listdir(run_folder))
    # a new run under the same name gets its own folder: the first run's files stay as they were
    first = open(os.path.join(run_folder, "metrics.json")).read()
    assert json.loads(first)["model_copy"] == "shared"  # the toy model has no cached loader to re-create it from
    assert json.loads(first)["lora_preset"] == "custom"
    info = json.loads(first)  # the drift monitor ran with the toy's default measure on the EMA of the LoRA
    assert info["monitor"] == "paper_haze" and info["ema_decay"] == 0.9 and info["monitor_samples"] == 4
    assert -0.01 < info["monitor_baseline"]["monitor"] <= 0.0 and 0 < info["monitor_baseline"]["held_out_reward"]
    assert all(h["monitor"] <= 0.0 and 0 <= h["held_out_reward"] for h in info["history"])
    assert all(h["kl"] is not None and h["kl"] >= 0 for h in info["history"])  # β 0.1: the KL is on
    # the toy task is learnt, not hacked: bolder held-out digits, the paper no greyer than half a noticeable change
    base = info["monitor_baseline"]
    assert info["history"][-1]["held_out_reward"] > base["held_out_reward"] + 0.1
    assert min(h["monitor"] for h in info["history"]) > base["monitor"] - 0.01
    # steps 4 on the normal schedule end 0.334 → 0.001 → 0: the step into 0.001 (std ≈ 0.001) is not trained
    assert all(h["trained_steps"] == [0, 1] for h in info["history"])
    assert "held-out reward" in entry["outputs"]["4"]["text"][0] and "paper_haze" in entry["outputs"]["4"]["text"][0]
    # the live chart draws the monitor: every event carries its series so far, the last one all of it
    monitored = [[h["iteration"], h["held_out_reward"], h["monitor"]] for h in info["history"]
                 if h.get("held_out_reward") is not None]
    assert monitored and events[-1]["monitor"]["points"] == monitored
    assert events[-1]["monitor"]["name"] == "paper_haze" and events[-1]["monitor"]["value_range"] == [-1.0, 0.0]
    assert events[-1]["monitor"]["noticeable_change"] == 0.02
    assert events[-1]["reward"] == "bold_digit" and events[-1]["value_range"] == [0.0, None]
    assert events[-1]["monitor"]["baseline"] == [info["monitor_baseline"]["held_out_reward"],
                                                 info["monitor_baseline"]["monitor"]]
    assert [len(e["monitor"]["points"]) for e in events] == sorted(len(e["monitor"]["points"]) for e in events)
    assert entry["outputs"]["4"]["flow_cps_chart"][0]["monitor"] == events[-1]["monitor"]
    entry, messages = comfy.run(grpo_graph("host_rise", iterations=2, save=False), timeout=600)
    assert entry["status"]["status_str"] == "success", comfy.execution_error(messages)
    assert open(os.path.join(run_folder, "metrics.json")).read() == first
    assert len(json.load(open(os.path.join(run_folder + "_2", "metrics.json")))["history"]) == 2


def test_saved_lora_loads_with_the_stock_loader_without_warnings_and_changes_the_output(comfy):
    entry, messages = comfy.run(grpo_graph("host_save", iterations=4), timeout=600)
    assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
    path = entry["outputs"]["6"]["text"][0].removeprefix("saved ")
    # like the stock Save LoRA: into the server's --output-directory/loras, which every LoRA loader lists
    assert os.path.commonpath([path, comfy.output_dir]) == comfy.output_dir, path
    assert os.path.dirname(path) == os.path.join(comfy.output_dir, "loras", "host"), path
    assert not os.path.exists(os.path.join(comfy.models_dir, "loras"))
    with safe_open(path, "pt") as handle:
        keys, metadata = list(handle.keys()), handle.metadata()
    assert keys and all(k.startswith("diffusion_model.") for k in keys)
    assert metadata["flow_cps.rule"] == "cps" and metadata["flow_cps.reward"] == "bold_digit"
    assert metadata["flow_cps.iterations"] == "4"
    lora_name = os.path.relpath(path, os.path.join(comfy.output_dir, "loras"))
    listed = comfy.get_json("/object_info/LoraLoaderModelOnly")["LoraLoaderModelOnly"]["input"]["required"]
    assert lora_name in json.dumps(listed["lora_name"]), listed["lora_name"]
    log_before = len(comfy.log_text())
    base = toy_graph("euler", seed=5, prefix="host/lora_base")
    with_lora = toy_graph("euler", seed=5, prefix="host/lora_on")
    with_lora["8"] = {"class_type": "LoraLoaderModelOnly",
                      "inputs": {"model": ["1", 0], "lora_name": lora_name, "strength_model": 1.0}}
    with_lora["5"]["inputs"]["model"] = ["8", 0]
    plain, _ = run_images(comfy, base)
    trained, _ = run_images(comfy, with_lora)
    new_log = comfy.log_text()[log_before:]
    assert "lora key not loaded" not in new_log and "ERROR" not in new_log, new_log
    assert np.abs(plain[0].astype(float) - trained[0].astype(float)).max() > 0


def test_interrupt_saves_a_checkpoint_and_resume_continues(comfy):
    run = "host_interrupt"
    prompt_id = comfy.queue(grpo_graph(run, iterations=400, checkpoint_every=0, save=False))
    run_folder = os.path.join(comfy.output_dir, "flow_cps_grpo", run)

    interrupted = []

    def interrupt_after_three_iterations(msg):
        if msg.get("type") == "flow_cps.grpo" and len(msg["data"].get("history", [])) >= 3 and not interrupted:
            interrupted.append(True)
            comfy.interrupt()

    entry, messages = comfy.wait(prompt_id, timeout=600, on_message=interrupt_after_three_iterations)
    assert entry["status"]["status_str"] != "success"
    files = os.listdir(run_folder)
    assert "checkpoint.safetensors" in files and any(f.startswith("lora_stopped_at_") for f in files), files
    # the node is told what was saved and how to continue (the browser shows it on the node)
    stopped = [e for e in chart_events(messages) if "stopped" in e]
    assert len(stopped) == 1, stopped
    report = stopped[0]["stopped"]
    done = len(chart_events(messages)[-1]["history"])
    assert report["reason"] == "cancelled" and report["resume_from"] == "latest" and report["run_name"] == run
    assert report["iteration"] == done >= 3
    assert sorted(os.path.basename(p) for p in report["saved"]) == ["checkpoint.safetensors",
                                                                    f"lora_stopped_at_{done:05d}.safetensors"]
    assert all(os.path.isfile(p) and os.path.dirname(p) == run_folder for p in report["saved"]), report
    entry, messages = comfy.run(grpo_graph(run, iterations=done + 2, resume_from="latest", save=False), timeout=600)
    assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
    history = chart_events(messages)[-1]["history"]
    assert [h[0] for h in history] == list(range(len(history))) and len(history) == done + 2


def test_resume_never_reads_a_file_outside_the_runs_folder_nor_unpickles_one(comfy, tmp_path):
    import torch

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "marker"), "w"))

    outside = tmp_path / "evil.pt"
    torch.save({"format": "flow-cps grpo checkpoint v1", "x": Payload()}, str(outside))
    uploaded = os.path.join(comfy.output_dir, "flow_cps_grpo", "host_evil", "checkpoint.safetensors")
    os.makedirs(os.path.dirname(uploaded), exist_ok=True)
    torch.save({"format": "flow-cps grpo checkpoint v1", "x": Payload()}, uploaded)  # as an upload could place it
    for resume, needle in ((str(outside), "not inside a run folder"), ("../../" + outside.name, "not inside a run"),
                           ("flow_cps_grpo/host_evil/checkpoint.safetensors", "convert_checkpoint_v1.py")):
        entry, messages = comfy.run(grpo_graph("host_evil", iterations=2, resume_from=resume, save=False),
                                    timeout=600)
        assert entry["status"]["status_str"] != "success"
        assert needle in comfy.execution_error(messages)["exception_message"], comfy.execution_error(messages)
    assert not (tmp_path / "marker").exists()
    assert sorted(os.listdir(os.path.dirname(uploaded))) == ["checkpoint.safetensors"]  # the run wrote nothing


def test_calibration_schedule_feeds_the_trainer_and_sampler_nodes(comfy):
    graph = grpo_graph("host_calibrated", iterations=2, save=False)
    graph["7"] = {"class_type": "FlowCPS_CalibrateExploration", "inputs": {
        "model": ["1", 0], "vae": ["1", 1], "reward": ["2", 0], "latent": ["3", 0],
        "prompts": "a handwritten 5\na handwritten 1", "negative": "", "cfg": 1.0, "rule": "flow_sde", "eta": 0.7,
        "steps": 4, "scheduler": "normal", "group_size": 4, "prompts_per_iteration": 2, "iterations": 3,
        "eps1": 2.0, "eps2": 0.05, "seed": 1}}
    graph["8"] = {"class_type": "FlowCPS_SamplerFlowSDE", "inputs": {
        "eta": 0.7, "sde_start_step": 0, "sde_end_step": 100, "log_prob_kind": "gaussian", "eta_schedule": ["7", 0]}}
    graph["4"]["inputs"]["sampler"] = ["8", 0]
    graph["4"]["inputs"]["dense_rewards"] = True  # DenseGRPO per-step rewards through the host as well
    entry, messages = comfy.run(graph, timeout=600)
    assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
    text = entry["outputs"]["7"]["text"][0]
    values = [float(v) for v in text.split(":")[1].split(",")]
    assert len(values) == 4 and all(v >= 0 for v in values)
    assert values != [0.7] * 4  # every step moved by ±ε2-derived amounts
    info = entry["outputs"]["4"]["text"][0]
    assert "2 iterations" in info
    run = json.load(open(os.path.join(comfy.output_dir, "flow_cps_grpo", "host_calibrated", "metrics.json")))
    assert run["rule"] == "flow_sde" and run["eta"] == pytest.approx(values, abs=5e-4)  # the calibrated η
    assert all(len(h["step_advantage_abs_mean"]) == 4 and h["dense_extra_reward_calls"] == 4 for h in run["history"])


def test_trainer_node_and_chart_extension_are_served(comfy):
    info = comfy.object_info()
    for node in ("FlowCPS_GRPOTrainLoRA", "FlowCPS_SaveLoRA", "FlowCPS_CalibrateExploration", "FlowCPS_RewardDigit",
                 "FlowCPS_ScoreImages"):
        assert node in info, node
        assert info[node]["description"]
    assert info["FlowCPS_GRPOTrainLoRA"]["experimental"] is True
    assert info["FlowCPS_GRPOTrainLoRA"]["output"][:3] == ["MODEL", "LORA_MODEL", "IMAGE"]
    extensions = comfy.get_json("/extensions")
    assert any(e.endswith("flow-cps/flow_cps_chart.js") for e in extensions), extensions
    status, body = comfy.request("GET", "/extensions/flow-cps/flow_cps_chart.js")
    assert status == 200 and b"flow_cps.grpo" in body


TINY_SD3 = r"""
import sys, torch
from safetensors.torch import save_file
out_unet, out_vae = sys.argv[1:3]
context = int(sys.argv[3]) if len(sys.argv) > 3 else 11
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
import comfy.ops, comfy.taesd.taesd
from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT
torch.manual_seed(0)
# ComfyUI's SD3 MMDiT at tiny size: depth 2 -> hidden 128, 2 heads; context and pooled vector = the toy prompt's 11-dim one-hot
net = MMDiT(input_size=None, patch_size=2, in_channels=16, out_channels=16, depth=2, num_patches=256,
            pos_embed_max_size=16, adm_in_channels=context, pos_embed_scaling_factor=None,
            context_embedder_config={"target": "torch.nn.Linear",
                                     "params": {"in_features": context, "out_features": 128}},
            dtype=torch.float32, device="cpu", operations=comfy.ops.disable_weight_init)
for p in list(net.parameters()) + list(net.buffers()):  # comfy ops leave tensors uninitialised (torch.empty)
    torch.nn.init.normal_(p, std=0.02)
save_file({k: v.contiguous() for k, v in net.state_dict().items()}, out_unet)
vae = comfy.taesd.taesd.TAESD(latent_channels=16)
for p in list(vae.parameters()) + list(vae.buffers()):
    torch.nn.init.normal_(p, std=0.05)
save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, out_vae)
"""


RANDOM_CLIP_L = r"""
import json, os, sys, torch
from safetensors.torch import save_file
out = sys.argv[1]
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
import comfy.clip_model, comfy.ops, comfy.sd1_clip
torch.manual_seed(0)
# ComfyUI's own CLIP-L text model at full size (its loader has a fixed config), randomly initialised
config = json.load(open(os.path.join(os.path.dirname(comfy.sd1_clip.__file__), "sd1_clip_config.json")))
net = comfy.clip_model.CLIPTextModel(config, torch.float32, "cpu", comfy.ops.disable_weight_init)
for p in list(net.parameters()) + list(net.buffers()):
    torch.nn.init.normal_(p, std=0.02) if p.is_floating_point() else None
# float8 on disk (123 M parameters: 123 MB, not 246); ComfyUI loads them into its own text encoder dtype
save_file({k: v.to(torch.float8_e4m3fn).contiguous() if v.is_floating_point() else v.contiguous()
           for k, v in net.state_dict().items()}, out)
"""


def tiny_sd3_files(context: int = 11, name: str = "tiny_sd3_mmdit") -> Generated:
    return Generated(name=name, code=TINY_SD3, files=((f"{name}.safetensors", "diffusion_models"),
                                                      (f"{name}_taesd.safetensors", "vae")), args=(str(context),))


TINY_SD3_FILES = tiny_sd3_files()
TINY_MMDIT_CLIP_L_FILES = tiny_sd3_files(context=768, name="tiny_mmdit_clip_l")
RANDOM_CLIP_L_FILES = Generated(name="random_clip_l", code=RANDOM_CLIP_L,
                                files=(("random_clip_l.safetensors", "text_encoders"),))
MODEL_FILES = [TINY_SD3_FILES, TINY_MMDIT_CLIP_L_FILES, RANDOM_CLIP_L_FILES]  # built at the session's start


def make_tiny_sd3(comfy, files: Generated = TINY_SD3_FILES):
    """TINY_SD3's files, made once per host (model_files.py); returns (diffusion model, VAE) file names."""
    script_files(comfy, files)
    return files.files[0][0], files.files[1][0]


def random_clip_l(comfy) -> str:
    """RANDOM_CLIP_L's file, made once per host; returns its name in text_encoders/."""
    script_files(comfy, RANDOM_CLIP_L_FILES)
    return RANDOM_CLIP_L_FILES.files[0][0]


def test_a_tiny_real_sd3_mmdit_trains_through_the_same_node(comfy):
    unet, vae = make_tiny_sd3(comfy)
    graph = grpo_graph("host_tiny_sd3", iterations=1, save=True)
    graph["1"] = {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}}
    graph["9"] = {"class_type": "VAELoader", "inputs": {"vae_name": vae}}
    graph["10"] = {"class_type": "FlowCPS_ToyDigitPrompt", "inputs": {"text": "a handwritten 5"}}
    graph["11"] = {"class_type": "FlowCPS_ToyDigitPrompt", "inputs": {"text": "a handwritten 1"}}
    graph["12"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["10", 0],
                                                                   "conditioning_2": ["11", 0]}}
    graph["13"] = {"class_type": "FlowCPS_ToyDigitPrompt", "inputs": {"text": ""}}
    graph["3"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    inputs = graph["4"]["inputs"]
    inputs.update({"model": ["1", 0], "vae": ["9", 0], "prompts": "a handwritten 5\na handwritten 1",
                   "prompts_per_iteration": 2, "group_size": 2, "positive": ["12", 0],
                   "negative_conditioning": ["13", 0], "cfg": 2.0, "beta": 0.01})
    entry, messages = comfy.run(graph, timeout=600)
    assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
    path = entry["outputs"]["6"]["text"][0].removeprefix("saved ")
    # like the stock Save LoRA: into the server's --output-directory/loras, which every LoRA loader lists
    assert os.path.commonpath([path, comfy.output_dir]) == comfy.output_dir, path
    assert os.path.dirname(path) == os.path.join(comfy.output_dir, "loras", "host"), path
    assert not os.path.exists(os.path.join(comfy.models_dir, "loras"))
    with safe_open(path, "pt") as handle:
        keys = list(handle.keys())
        metadata = handle.metadata()
    assert any(".x_block.attn.qkv.lora_up.weight" in k for k in keys)
    assert any(".context_block.mlp.fc1.lora_down.weight" in k for k in keys)
    assert metadata["flow_cps.base_model"] == "SD3/OpenAISignatureMMDITWrapper"
    history = chart_events(messages)[-1]["history"]
    assert len(history) == 1 and np.isfinite(history[0][1])


def test_prompts_encoded_with_a_stock_clip_text_encoder(comfy):
    """The CLIP path (as CLIP Text Encode does it): ComfyUI's CLIP-L, random weights, via the stock CLIPLoader."""
    unet, vae = make_tiny_sd3(comfy, TINY_MMDIT_CLIP_L_FILES)
    clip = random_clip_l(comfy)
    graph = grpo_graph("host_clip_path", iterations=1, save=False)
    graph["1"] = {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}}
    graph["9"] = {"class_type": "VAELoader", "inputs": {"vae_name": vae}}
    graph["10"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": clip,
                                                          "type": "stable_diffusion", "device": "default"}}
    graph["3"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    graph["4"]["inputs"].update({"model": ["1", 0], "vae": ["9", 0], "clip": ["10", 0],
                                 "prompts": "a handwritten 5\na handwritten 1", "negative": "blurry", "cfg": 2.0,
                                 "prompts_per_iteration": 2, "group_size": 2})
    entry, messages = comfy.run(graph, timeout=600)
    assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
    history = chart_events(messages)[-1]["history"]
    assert len(history) == 1 and np.isfinite(history[0][1]) and history[0][2] > 0  # the rollouts differ
    assert "clip missing" not in comfy.log_text()  # the random CLIP-L has every weight ComfyUI's loader expects
