"""The flow samplers inside a real ComfyUI, on the shipped toy model, over the HTTP API."""
import sys
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "scripts"))
import make_workflows  # noqa: E402

FLOW_SAMPLERS = ["flow_cps", "flow_cpws", "flow_precise", "flow_sde", "dance_sde"]
PACK_NODES = ["FlowCPS_SamplerCPS", "FlowCPS_SamplerCPWS", "FlowCPS_SamplerPrecise", "FlowCPS_SamplerFlowSDE",
              "FlowCPS_SamplerDanceSDE", "FlowCPS_EtaSchedule", "FlowCPS_SamplerGrid", "FlowCPS_NoiseEstimate",
              "FlowCPS_NoiseLevelPlot", "FlowCPS_ToyDigitModel", "FlowCPS_ToyDigitPrompt"]


def toy_graph(sampler_name="flow_cps", seed=7, steps=8, cfg=3.0, prompt="a handwritten 3", prefix="host/toy"):
    """Toy model → KSampler → VAEDecode → SaveImage, in API format."""
    return {
        "1": {"class_type": "FlowCPS_ToyDigitModel", "inputs": {}},
        "2": {"class_type": "FlowCPS_ToyDigitPrompt", "inputs": {"text": prompt}},
        "3": {"class_type": "FlowCPS_ToyDigitPrompt", "inputs": {"text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 2}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler_name, "scheduler": "normal",
            "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 1]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


def run_images(comfy, graph, node_id="7"):
    entry, messages = comfy.run(graph, timeout=240)
    assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
    return comfy.output_images(entry, node_id=node_id), messages


def test_object_info_lists_the_flow_samplers_and_pack_nodes(comfy):
    info = comfy.object_info()
    for node in ("KSampler", "KSamplerAdvanced", "KSamplerSelect"):
        names = comfy.combo_options(info[node]["input"]["required"]["sampler_name"])
        assert all(name in names for name in FLOW_SAMPLERS), node
    missing = [n for n in PACK_NODES if n not in info]
    assert not missing
    for node in PACK_NODES:
        assert info[node]["description"], node
        assert info[node]["category"].startswith("flow-cps")
        for group in (info[node]["input"].get("required", {}), info[node]["input"].get("optional", {})):
            for name, spec in group.items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node}.{name} has no tooltip"


@pytest.mark.parametrize("sampler_name", FLOW_SAMPLERS)
def test_ksampler_with_each_flow_sampler_is_reproducible(comfy, sampler_name):
    first, messages = run_images(comfy, toy_graph(sampler_name, seed=11, prefix=f"host/{sampler_name}_a"))
    second, _ = run_images(comfy, toy_graph(sampler_name, seed=11, prefix=f"host/{sampler_name}_b"))
    assert len(first) == 2 and first[0].shape == (128, 128, 3)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    # the callback ran once per step (progress bar, previews and cancel work): each step sends a latent preview,
    # which newer ComfyUI never throttles (the server runs with --preview-method latent2rgb)
    progress = [m["data"]["value"] for m in messages if m.get("type") == "progress" and m["data"].get("node") == "5"]
    assert progress == list(range(1, 9)), progress
    assert len([m for m in messages if m.get("type") == "binary"]) == 8
    other, _ = run_images(comfy, toy_graph(sampler_name, seed=12, prefix=f"host/{sampler_name}_c"))
    assert not np.array_equal(first[0], other[0])


def test_toy_model_draws_the_digit_and_cps_is_cleaner_than_flow_sde(comfy):
    import sys
    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__file__)) + "/..")
    import torch
    from samplers.image_noise import estimate_noise
    from training.toy.classifier import classify_images
    from training.toy.model import image_to_latent, latent_to_image

    results = {}
    for name in ("euler", "flow_cps", "flow_sde"):
        images, _ = run_images(comfy, toy_graph(name, seed=3, steps=10, prompt="seven", prefix=f"host/q_{name}"))
        batch = torch.tensor(np.stack(images), dtype=torch.float32) / 255.0
        native = latent_to_image(image_to_latent(batch))  # back to 16×16: the 8× nearest upscale hides the noise
        results[name] = (classify_images(batch).argmax(-1).tolist(), float(estimate_noise(native).mean()))
    assert results["euler"][0] == [7, 7] and results["flow_cps"][0] == [7, 7]
    assert results["flow_sde"][1] > 1.5 * results["flow_cps"][1], results


def test_sampler_custom_advanced_with_the_cps_node_matches_ksampler(comfy):
    graph = toy_graph("flow_cps", seed=5, steps=8, prefix="host/ks")
    expected, _ = run_images(comfy, graph)
    custom = {k: v for k, v in graph.items() if k in ("1", "2", "3", "4")}
    custom.update({
        "10": {"class_type": "FlowCPS_SamplerCPS", "inputs": {"eta": 0.8, "sde_start_step": 0,
                                                             "sde_end_step": 10000, "log_prob_kind": "gaussian"}},
        "11": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}},
        "12": {"class_type": "CFGGuider", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                     "cfg": 3.0}},
        "13": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "normal", "steps": 8,
                                                          "denoise": 1.0}},
        "14": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["11", 0], "guider": ["12", 0],
                                                                 "sampler": ["10", 0], "sigmas": ["13", 0],
                                                                 "latent_image": ["4", 0]}},
        "15": {"class_type": "VAEDecode", "inputs": {"samples": ["14", 0], "vae": ["1", 1]}},
        "16": {"class_type": "SaveImage", "inputs": {"images": ["15", 0], "filename_prefix": "host/custom"}},
    })
    got, _ = run_images(comfy, custom, node_id="16")
    assert all(np.array_equal(a, b) for a, b in zip(expected, got))


def test_ksampler_advanced_two_stages_and_denoise_below_one(comfy):
    graph = toy_graph("flow_precise", seed=9, steps=10, prefix="host/adv")
    graph["5"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
        "add_noise": "enable", "noise_seed": 9, "steps": 10, "cfg": 3.0, "sampler_name": "flow_precise",
        "scheduler": "normal", "start_at_step": 0, "end_at_step": 5, "return_with_leftover_noise": "enable"}}
    graph["8"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["5", 0],
        "add_noise": "disable", "noise_seed": 9, "steps": 10, "cfg": 3.0, "sampler_name": "flow_cps",
        "scheduler": "normal", "start_at_step": 5, "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    graph["6"]["inputs"]["samples"] = ["8", 0]
    images, _ = run_images(comfy, graph)
    assert len(images) == 2 and images[0].std() > 10  # a drawn digit, not a flat or noise image
    img2img = toy_graph("flow_cps", seed=2, prefix="host/i2i")
    img2img["9"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["6", 0], "vae": ["1", 1]}}
    img2img["10"] = {"class_type": "KSampler", "inputs": {**img2img["5"]["inputs"], "latent_image": ["9", 0],
                                                          "denoise": 0.5}}
    img2img["11"] = {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 1]}}
    img2img["12"] = {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "host/i2i_b"}}
    images, _ = run_images(comfy, img2img, node_id="12")
    assert len(images) == 2


def test_non_flow_model_gets_a_clear_error(comfy):
    graph = toy_graph("flow_cps", prefix="host/eps")
    graph["20"] = {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["1", 0], "sampling": "eps",
                                                                     "zsnr": False}}
    graph["5"]["inputs"]["model"] = ["20", 0]
    entry, messages = comfy.run(graph, timeout=120)
    error = comfy.execution_error(messages)
    assert error is not None and error["node_type"] == "KSampler"
    assert "only works with flow-matching models" in error["exception_message"]
    assert "EPS" in error["exception_message"] and "euler_ancestral" in error["exception_message"]


def test_comparison_nodes_run(comfy):
    graph = toy_graph(prefix="host/cmp")
    graph["30"] = {"class_type": "FlowCPS_SamplerGrid", "inputs": {
        "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "vae": ["1", 1],
        "seed": 1, "steps": 6, "cfg": 3.0, "scheduler": "normal", "samplers": "flow_sde, flow_cps, euler",
        "etas": "0.5, 1.0"}}
    graph["31"] = {"class_type": "SaveImage", "inputs": {"images": ["30", 0], "filename_prefix": "host/grid"}}
    graph["32"] = {"class_type": "FlowCPS_NoiseEstimate", "inputs": {"images": ["6", 0]}}
    graph["33"] = {"class_type": "FlowCPS_NoiseLevelPlot", "inputs": {
        "samplers": "flow_sde=0.7, cps", "steps": 10, "scheduler": "normal", "model": ["1", 0]}}
    graph["34"] = {"class_type": "SaveImage", "inputs": {"images": ["33", 0], "filename_prefix": "host/plot"}}
    entry, messages = comfy.run(graph, timeout=240)
    assert entry["status"]["status_str"] == "success", comfy.execution_error(messages)
    grid = comfy.output_images(entry, node_id="31")[0]
    assert grid.shape[0] > 3 * 128 and grid.shape[1] > 2 * 128
    assert comfy.output_images(entry, node_id="34")[0].shape == (440, 720, 3)
    report = entry["outputs"]["32"]["text"][0]
    assert report.startswith("image 0: noise std") and "mean:" in report


SHIPPED_TRAINING_ITERATIONS = 3


def test_shipped_example_workflows_run(comfy):
    """Every toy template runs as shipped, except that training nodes run SHIPPED_TRAINING_ITERATIONS iterations
    instead of 30: the wiring, widgets and outputs are what this test is about, and full-length toy training (reward
    rises, resume, charts) is asserted by the tests in test_grpo_nodes.py and test_browser.py. Shortening them keeps
    the host suite near 10 minutes."""
    from workflow_convert import ui_to_api

    templates = comfy.workflow_templates().get("flow-cps", [])
    assert sorted(templates) == sorted(t.title for t in make_workflows.TEMPLATES)
    info = comfy.object_info()
    for name in templates:
        status, body = comfy.request("GET", f"/api/workflow_templates/flow-cps/{urllib.parse.quote(name)}.jpg")
        assert status == 200 and body[:3] == b"\xff\xd8\xff", f"{name}: no thumbnail for the Templates dialog"
        api = ui_to_api(comfy.workflow_template("flow-cps", name), info)
        if not name.endswith("(toy digits)"):
            continue  # templates for user-supplied weights: they must convert (node types, widgets) but not run
        trainers = [node for node in api.values() if "iterations" in node["inputs"]]
        assert trainers or "GRPO" not in name, f"{name}: no node with an iterations widget"
        for node in trainers:
            assert node["inputs"]["iterations"] > SHIPPED_TRAINING_ITERATIONS, (name, node["class_type"])
            node["inputs"]["iterations"] = SHIPPED_TRAINING_ITERATIONS
        entry, messages = comfy.run(api, timeout=600)
        assert entry["status"]["status_str"] == "success", (name, comfy.execution_error(messages))
        assert comfy.output_images(entry), name


def test_inpainting_mask_keeps_the_unmasked_region(comfy):
    graph = toy_graph("flow_cps", seed=4, prefix="host/inpaint_src")
    graph["40"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 128, "height": 128}}
    graph["41"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 128, "height": 64}}
    graph["42"] = {"class_type": "MaskComposite", "inputs": {"destination": ["40", 0], "source": ["41", 0],
                                                             "x": 0, "y": 0, "operation": "add"}}
    graph["43"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["6", 0], "vae": ["1", 1]}}
    graph["44"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["43", 0], "mask": ["42", 0]}}
    graph["45"] = {"class_type": "KSampler", "inputs": {**graph["5"]["inputs"], "latent_image": ["44", 0],
                                                        "seed": 99, "sampler_name": "flow_cps"}}
    graph["46"] = {"class_type": "VAEDecode", "inputs": {"samples": ["45", 0], "vae": ["1", 1]}}
    graph["47"] = {"class_type": "SaveImage", "inputs": {"images": ["46", 0], "filename_prefix": "host/inpainted"}}
    entry, messages = comfy.run(graph, timeout=240)
    assert entry["status"]["status_str"] == "success", comfy.execution_error(messages)
    source = comfy.output_images(entry, node_id="7")[0].astype(int)
    inpainted = comfy.output_images(entry, node_id="47")[0].astype(int)
    assert abs(source[72:] - inpainted[72:]).max() <= 2  # bottom half (mask 0) kept, up to 8-bit rounding
    assert abs(source[:56] - inpainted[:56]).mean() > 1  # top half (mask 1) re-sampled with another seed


def _disabled_noise_graph(sampler_name, noise_scale, prefix):
    """SamplerCustomAdvanced from an all-zero latent with DisableNoise: the only randomness is the sampler's own step
    noise, so ModelNoiseScale can change the output only through it."""
    graph = {k: v for k, v in toy_graph(prefix=prefix).items() if k in ("1", "2", "3", "4", "6", "7")}
    graph.update({
        "20": {"class_type": "ModelNoiseScale", "inputs": {"model": ["1", 0], "noise_scale": noise_scale}},
        "21": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler_name}},
        "22": {"class_type": "DisableNoise", "inputs": {}},
        "23": {"class_type": "CFGGuider", "inputs": {"model": ["20", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                     "cfg": 3.0}},
        "24": {"class_type": "BasicScheduler", "inputs": {"model": ["20", 0], "scheduler": "normal", "steps": 6,
                                                          "denoise": 1.0}},
        "25": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["22", 0], "guider": ["23", 0],
                                                                 "sampler": ["21", 0], "sigmas": ["24", 0],
                                                                 "latent_image": ["4", 0]}},
    })
    graph["6"]["inputs"]["samples"] = ["25", 0]
    return graph


def test_model_noise_scale_scales_the_step_noise(comfy):
    if "ModelNoiseScale" not in comfy.object_info():
        pytest.skip("this ComfyUI has no model_sampling.noise_scale (added after v0.3.64)")
    euler = [run_images(comfy, _disabled_noise_graph("euler", s, f"host/ns_euler_{s}"))[0][0] for s in (1.0, 0.2)]
    assert np.array_equal(*euler)  # a deterministic sampler from a zero latent ignores the noise scale
    cps = [run_images(comfy, _disabled_noise_graph("flow_cps", s, f"host/ns_cps_{s}"))[0][0] for s in (1.0, 0.2)]
    again = run_images(comfy, _disabled_noise_graph("flow_cps", 0.2, "host/ns_cps_again"))[0][0]
    assert np.array_equal(cps[1], again) and not np.array_equal(cps[0], cps[1])


REQUIRE_FLOW = r"""
import importlib.util, sys
pack = sys.argv[1]
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
import comfy.model_base, comfy.supported_models_base
spec = importlib.util.spec_from_file_location("flow_cps_pack", pack + "/__init__.py", submodule_search_locations=[pack])
module = importlib.util.module_from_spec(spec)
sys.modules["flow_cps_pack"] = module
spec.loader.exec_module(module)
from flow_cps_pack.nodes.comfy_sampling import NotAFlowModelError, require_flow_model
config = comfy.supported_models_base.BASE({})
for name in ("FLOW", "IMG_TO_IMG_FLOW", "EPS"):
    if not hasattr(comfy.model_base.ModelType, name):
        print(name, "absent")
        continue
    sampling = comfy.model_base.model_sampling(config, getattr(comfy.model_base.ModelType, name))
    try:
        require_flow_model(sampling, "flow_cps")
        print(name, "accepted")
    except NotAFlowModelError as error:
        print(name, "refused:", error)
"""


def test_only_true_flow_models_pass_the_flow_check_with_comfys_own_model_sampling_classes(comfy):
    import os
    import subprocess
    from conftest import REPO_ROOT
    result = subprocess.run([os.environ.get("COMFYUI_PYTHON") or "python", "-c", REQUIRE_FLOW, str(REPO_ROOT)],
                            cwd=os.environ["COMFYUI_PATH"], capture_output=True, text=True, timeout=300)
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.split(" ")[0].isupper())
    assert lines.get("FLOW") == "accepted", (result.stdout, result.stderr[-3000:])
    assert lines["EPS"].startswith("refused: flow_cps only works with flow-matching models")
    if lines["IMG_TO_IMG_FLOW"] != "absent":  # newer ComfyUI: CONST subclass whose model predicts the image
        assert "IMG_TO_IMG_FLOW" in lines["IMG_TO_IMG_FLOW"] and "calculate_denoised" in lines["IMG_TO_IMG_FLOW"]
