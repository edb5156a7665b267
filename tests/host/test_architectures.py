"""Real architectures inside a real ComfyUI: random checkpoints of ComfyUI's own SD3 MMDiT, Flux, Qwen-Image,
Wan 2.1 and Lumina 2 classes, read by the stock UNETLoader and VAELoader (see tiny_models.py), sampled with all five flow
samplers and trained with the GRPO trainer node; the LoRA it saves loads with LoraLoaderModelOnly."""
import json
import os
import subprocess

import numpy as np
import pytest
from safetensors import safe_open

from test_grpo_nodes import chart_events

ARCHS = ["sd3", "flux", "qwen_image", "wan21", "lumina2"]
FAMILY = {"sd3": "sd3", "flux": "flux", "qwen_image": "qwen_image", "wan21": "wan", "lumina2": "lumina2"}
FLOW_SAMPLERS = ["flow_cps", "flow_cpws", "flow_precise", "flow_sde", "dance_sde"]
STEPS = 3
_made = {}


def make_model(comfy, arch):
    if arch not in _made:
        result = subprocess.run([os.environ.get("COMFYUI_PYTHON") or "python",
                                 os.path.join(os.path.dirname(__file__), "tiny_models.py"), arch, comfy.models_dir],
                                cwd=os.environ["COMFYUI_PATH"], capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-4000:]
        _made[arch] = json.loads(result.stdout.strip().splitlines()[-1])
    return _made[arch]


def conditioning(info, text, arch):
    return {"class_type": "FlowCPSTest_RandomConditioning", "inputs": {
        "text": text, "context_dim": info["context_dim"], "tokens": 5, "pooled_dim": info["pooled_dim"],
        "attention_mask": arch == "lumina2"}}


def base_graph(info, arch, prompt="a red fox"):
    latent = ({"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 64, "length": 5,
                                                                    "batch_size": 1}} if arch == "wan21" else
              {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}})
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": info["unet"], "weight_dtype": "default"}},
        "2": conditioning(info, prompt, arch),
        "3": conditioning(info, "", arch),
        "4": latent,
        "9": {"class_type": "VAELoader", "inputs": {"vae_name": info["vae"]}},
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
    info = make_model(comfy, arch)
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


@pytest.mark.parametrize("arch", ARCHS)
def test_grpo_trains_a_lora_that_the_stock_loader_applies(comfy, arch):
    info = make_model(comfy, arch)
    run_name = f"host_arch_{arch}"
    graph = grpo_graph(info, arch, run_name)
    graph.update({
        "25": {"class_type": "FlowCPS_SaveLoRA", "inputs": {"lora": ["24", 1], "filename_prefix": f"host/{arch}",
                                                            "run_info": ["24", 3]}},
    })
    _, messages, entry = run(comfy, graph, node_id="25")
    history = chart_events(messages, node="24")[-1]["history"]
    assert len(history) == 2 and all(np.isfinite(h[1]) for h in history)
    metrics = json.load(open(os.path.join(comfy.output_dir, "flow_cps_grpo", run_name, "metrics.json")))
    assert metrics["lora_preset"] == FAMILY[arch]
    # a stock-loaded model is deep-copied where the host can (v0.33: what dynamic VRAM needs), else shared
    version = tuple(int(v) for v in comfy.get_json("/system_stats")["system"]["comfyui_version"].split(".")[:2])
    assert metrics["model_copy"] == ("deepcopy" if version >= (0, 8) else "shared")
    assert all(np.isfinite(h["loss"]) and np.isfinite(h["kl"]) for h in metrics["history"])
    assert metrics["history"][-1]["grad_norm"] > 0
    assert all(h["train_micro_batches"] == 4 and h["first_ratio_min"] == 1.0 == h["first_ratio_max"]
               for h in metrics["history"][:1])
    path = entry["outputs"]["25"]["text"][0].removeprefix("saved ")
    with safe_open(path, "pt") as handle:
        keys = list(handle.keys())
    assert keys and all(k.startswith("diffusion_model.") for k in keys)

    lora_name = os.path.relpath(path, os.path.join(comfy.output_dir, "loras"))
    log_before = len(comfy.log_text())
    plain, _, _ = run(comfy, sampled(base_graph(info, arch), "flow_cps", seed=5, prefix=f"host/{arch}_base"))
    with_lora = base_graph(info, arch)
    with_lora["8"] = {"class_type": "LoraLoaderModelOnly",
                      "inputs": {"model": ["1", 0], "lora_name": lora_name, "strength_model": 1.0}}
    trained, _, _ = run(comfy, sampled(with_lora, "flow_cps", seed=5, model=("8", 0), prefix=f"host/{arch}_lora"))
    new_log = comfy.log_text()[log_before:]
    assert "lora key not loaded" not in new_log and "ERROR" not in new_log, new_log[-3000:]
    assert np.abs(np.stack(plain).astype(float) - np.stack(trained).astype(float)).max() > 0
    comfy.free()  # the next architecture's models need the memory
