"""Real architectures inside a real ComfyUI: random models of ComfyUI's own SD3 MMDiT, Flux, Qwen-Image, Wan 2.1 and
Lumina 2 classes, sampled with all five flow samplers and trained with the GRPO trainer node.

Two sources, the same classes: the samplers' and the methods' tests use tiny widths built in memory by the test
fixture pack (FlowCPSTest_TinyDiffusionModel / FlowCPSTest_TinyVAE); the GRPO test of each family reads a random
checkpoint with the stock UNETLoader and VAELoader (tiny_models.py, at whatever widths the host's detection fixes,
cached per host by model_files.py) and loads the LoRA it trains back with the stock LoraLoaderModelOnly."""
import glob
import json
import os
import shutil

import numpy as np
import pytest
from safetensors import safe_open

from fixture_pack.tiny_architectures import ARCHS, TINY_CONTEXT_DIM, TINY_POOLED_DIM
from model_files import arch_files, stock_model_files
from test_grpo_nodes import chart_events

FAMILY = {"sd3": "sd3", "flux": "flux", "qwen_image": "qwen_image", "wan21": "wan", "lumina2": "lumina2"}
FLOW_SAMPLERS = ["flow_cps", "flow_cpws", "flow_precise", "flow_sde", "dance_sde"]
STEPS = 3
MODEL_FILES = [arch_files(arch) for arch in ARCHS]  # built at the session's start


def stock_loaded(comfy, arch):
    """The model as a file (see tiny_models.py): nodes "1" (UNETLoader) and "9" (VAELoader), the file names and the
    widths of the conditioning it reads."""
    info = stock_model_files(comfy, arch)
    return dict(info, nodes={
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": info["unet"], "weight_dtype": "default"}},
        "9": {"class_type": "VAELoader", "inputs": {"vae_name": info["vae"]}}})


def built_in_memory(arch):
    """The model at tiny widths, made by the fixture pack's nodes "1" (MODEL) and "9" (VAE); no file."""
    return {"context_dim": TINY_CONTEXT_DIM, "pooled_dim": TINY_POOLED_DIM.get(arch, 0), "nodes": {
        "1": {"class_type": "FlowCPSTest_TinyDiffusionModel", "inputs": {"arch": arch}},
        "9": {"class_type": "FlowCPSTest_TinyVAE", "inputs": {"model": ["1", 0]}}}}


def conditioning(info, text, arch):
    return {"class_type": "FlowCPSTest_RandomConditioning", "inputs": {
        "text": text, "context_dim": info["context_dim"], "tokens": 5, "pooled_dim": info["pooled_dim"],
        "attention_mask": arch == "lumina2"}}


def base_graph(info, arch, prompt="a red fox"):
    latent = ({"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 64, "length": 5,
                                                                    "batch_size": 1}} if arch == "wan21" else
              {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}})
    return {
        **json.loads(json.dumps(info["nodes"])),  # "1": the MODEL, "9": the VAE (a copy: graphs get edited)
        "2": conditioning(info, prompt, arch),
        "3": conditioning(info, "", arch),
        "4": latent,
    }


def grpo_graph(info, arch, run_name, **settings):
    """base_graph + two prompts' conditioning, the colorfulness reward and the trainer (node 24); ``settings``
    override the trainer's inputs."""
    graph = base_graph(info, arch)
    graph.update({
        "20": conditioning(info, "a red fox", arch),
        "21": conditioning(info, "a blue bird", arch),
        "22": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["20", 0],
                                                               "conditioning_2": ["21", 0]}},
        "23": {"class_type": "FlowCPS_RewardWeightFree", "inputs": {"kind": "colorfulness"}},
        "24": {"class_type": "FlowCPS_GRPOTrainLoRA", "inputs": {
            "model": ["1", 0], "vae": ["9", 0], "reward": ["23", 0], "latent": ["4", 0],
            "prompts": "a red fox\na blue bird", "negative": "", "cfg": 1.0, "rule": "cps", "eta": 0.8,
            "steps": STEPS, "scheduler": "normal", "sde_start_step": 0, "sde_end_step": 100, "group_size": 2,
            "prompts_per_iteration": 2, "iterations": 2, "lora_rank": 4, "lora_alpha": 4.0, "lora_targets": "auto",
            "learning_rate": 1e-2, "beta": 0.01, "clip_range": 1e-2, "log_prob_kind": "gaussian",
            "dense_rewards": False, "seed": 0, "checkpoint_every": 0, "run_name": run_name, "resume_from": "",
            "positive": ["22", 0], "negative_conditioning": ["3", 0],
            # micro-batches of 2 for sampling and 1 for training, the blocks checkpointed (auto: on for these models)
            "sample_batch_size": 2, "train_batch_size": 1, "gradient_checkpointing": "auto",
            "train_dtype": "bfloat16" if arch == "sd3" else "float32", **settings}},
    })
    return graph


def sampled(graph, sampler_name, seed=3, model=("1", 0), prefix="host/arch"):
    graph = dict(graph)
    graph["5"] = {"class_type": "KSampler", "inputs": {
        "model": list(model), "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": seed,
        "steps": STEPS, "cfg": 1.0, "sampler_name": sampler_name, "scheduler": "normal", "denoise": 1.0}}
    graph["6"] = {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["9", 0]}}
    graph["7"] = {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}}
    return graph


def run(comfy, graph, node_id="7"):
    entry, messages = comfy.run(graph, timeout=900)
    assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
    return comfy.output_images(entry, node_id=node_id), messages, entry


@pytest.mark.parametrize("arch", ARCHS)
def test_all_flow_samplers_run_on_the_real_architecture(comfy, arch):
    info = built_in_memory(arch)
    frames = 5 if arch == "wan21" else 1  # Wan: [1, 16, 2, 8, 8] latents decode to 5 frames
    graph = base_graph(info, arch)
    outputs = {}
    for name in FLOW_SAMPLERS:
        images, messages, _ = run(comfy, sampled(graph, name, prefix=f"host/{arch}_{name}"))
        assert len(images) == frames and images[0].shape == (64, 64, 3)
        progress = [m["data"]["value"] for m in messages if m.get("type") == "progress"
                    and m["data"].get("node") == "5"]
        assert progress == list(range(1, STEPS + 1)), (name, progress)  # the callback ran once per step
        outputs[name] = np.stack(images).astype(np.int16)
    assert not np.array_equal(outputs["flow_cps"], outputs["flow_sde"])
    # SamplerCustomAdvanced reproduces KSampler for every sampler (same noise stream, also for 5-D latents), from
    # KSamplerSelect and, for CPS, from the pack's own SAMPLER node
    selected = {"20": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "flow_cps"}},
                "21": {"class_type": "FlowCPS_SamplerCPS", "inputs": {
                    "eta": 0.8, "sde_start_step": 0, "sde_end_step": 10000, "log_prob_kind": "gaussian"}}}
    for name, sampler in [(n, "20") for n in FLOW_SAMPLERS] + [("flow_cps", "21")]:
        selected["20"]["inputs"]["sampler_name"] = name
        custom = dict(graph, **selected)
        custom.update({
            "11": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
            "12": {"class_type": "CFGGuider", "inputs": {"model": ["1", 0], "positive": ["2", 0],
                                                         "negative": ["3", 0], "cfg": 1.0}},
            "13": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "normal",
                                                              "steps": STEPS, "denoise": 1.0}},
            "14": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["11", 0], "guider": ["12", 0],
                                                                     "sampler": [sampler, 0], "sigmas": ["13", 0],
                                                                     "latent_image": ["4", 0]}},
            "15": {"class_type": "VAEDecode", "inputs": {"samples": ["14", 0], "vae": ["9", 0]}},
            "16": {"class_type": "SaveImage", "inputs": {"images": ["15", 0],
                                                         "filename_prefix": f"host/{arch}_sca_{name}"}},
        })
        images, _, _ = run(comfy, custom, node_id="16")
        assert np.array_equal(np.stack(images).astype(np.int16), outputs[name]), (name, sampler)


def train_and_apply_lora(comfy, info, arch, run_name, **settings):
    """GRPO on model "1" (grpo_graph with ``settings``), the LoRA saved with FlowCPS_SaveLoRA, then loaded onto the
    same model with the stock LoraLoaderModelOnly: every key applies and the image changes. Returns the run's
    metrics.json and the trainer's websocket messages."""
    graph = grpo_graph(info, arch, run_name, **settings)
    graph.update({
        "25": {"class_type": "FlowCPS_SaveLoRA", "inputs": {"lora": ["24", 1], "filename_prefix": f"host/{run_name}",
                                                            "run_info": ["24", 3]}},
    })
    _, messages, entry = run(comfy, graph, node_id="25")
    metrics = json.load(open(os.path.join(comfy.output_dir, "flow_cps_grpo", run_name, "metrics.json")))
    path = entry["outputs"]["25"]["text"][0].removeprefix("saved ")
    with safe_open(path, "pt") as handle:
        keys = list(handle.keys())
    assert keys and all(k.startswith("diffusion_model.") for k in keys)

    lora_name = os.path.relpath(path, os.path.join(comfy.output_dir, "loras"))
    log_before = len(comfy.log_text())
    plain, _, _ = run(comfy, sampled(base_graph(info, arch), "flow_cps", seed=5, prefix=f"host/{run_name}_base"))
    with_lora = base_graph(info, arch)
    with_lora["8"] = {"class_type": "LoraLoaderModelOnly",
                      "inputs": {"model": ["1", 0], "lora_name": lora_name, "strength_model": 1.0}}
    trained, _, _ = run(comfy, sampled(with_lora, "flow_cps", seed=5, model=("8", 0),
                                       prefix=f"host/{run_name}_lora"))
    new_log = comfy.log_text()[log_before:]
    assert "lora key not loaded" not in new_log and "ERROR" not in new_log, new_log[-3000:]
    assert np.abs(np.stack(plain).astype(float) - np.stack(trained).astype(float)).max() > 0
    return metrics, messages


@pytest.mark.parametrize("arch", ARCHS)
def test_grpo_trains_a_lora_that_the_stock_loader_applies(comfy, arch):
    metrics, messages = train_and_apply_lora(comfy, built_in_memory(arch), arch, f"host_arch_{arch}")
    history = chart_events(messages, node="24")[-1]["history"]
    assert len(history) == 2 and all(np.isfinite(h[1]) for h in history)
    assert metrics["lora_preset"] == FAMILY[arch]
    assert metrics["model_copy"] == "shared"  # a model a node built has no cached loader to re-create it from
    assert all(np.isfinite(h["loss"]) and np.isfinite(h["kl"]) for h in metrics["history"])
    assert metrics["history"][-1]["grad_norm"] > 0
    assert all(h["train_micro_batches"] == 4 and h["first_ratio_min"] == 1.0 == h["first_ratio_max"]
               for h in metrics["history"][:1])


@pytest.mark.parametrize("arch", ARCHS)
def test_a_checkpoint_file_trains_through_the_stock_loaders_and_its_lora_loads_back(comfy, arch):
    """The one file round trip per family: UNETLoader + VAELoader read a random checkpoint at the host's widths
    (full width where its detection fixes it), the trainer trains it (the smallest run: one prompt, a group of 2,
    one trained step of 3), and LoraLoaderModelOnly applies the LoRA to the loaded file."""
    metrics, _ = train_and_apply_lora(
        comfy, stock_loaded(comfy, arch), arch, f"host_file_{arch}", iterations=1, sde_end_step=1,
        prompts_per_iteration=1, sample_batch_size=2, train_batch_size=2)
    assert metrics["lora_preset"] == FAMILY[arch]
    # a stock-loaded model is deep-copied where the host can (v0.33: what dynamic VRAM needs), else shared
    version = tuple(int(v) for v in comfy.get_json("/system_stats")["system"]["comfyui_version"].split(".")[:2])
    assert metrics["model_copy"] == ("deepcopy" if version >= (0, 8) else "shared")
    assert [len(h["trained_steps"]) for h in metrics["history"]] == [1] and metrics["history"][-1]["grad_norm"] > 0
    comfy.free()  # the next architecture's models need the memory
    # and no later test reads this run's files (a checkpoint and LoRAs of up to 18 MB at the host's widths): the
    # suite stays within its disk budget
    shutil.rmtree(os.path.join(comfy.output_dir, "flow_cps_grpo", f"host_file_{arch}"))
    for path in glob.glob(os.path.join(comfy.output_dir, "loras", "host", f"host_file_{arch}_*.safetensors")):
        os.unlink(path)
