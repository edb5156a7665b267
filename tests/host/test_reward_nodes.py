"""Reward nodes in a real ComfyUI: listed in /object_info, the score node runs on toy-model images, the CLIP-family
loader reads tiny random models from models/reward_models/, and a missing model gives the layout error."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from test_sampler_nodes import toy_graph

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/clip_fixtures.py
from clip_fixtures import make_tiny_reward_models  # noqa: E402

REWARD_NODES = ["FlowCPS_RewardDigit", "FlowCPS_RewardBoldDigit", "FlowCPS_RewardWeightFree", "FlowCPS_RewardOCR", "FlowCPS_RewardCLIP",
                "FlowCPS_RewardCombine", "FlowCPS_ScoreImages"]


def score_graph(reward_node: dict, prompts="a handwritten 3"):
    graph = toy_graph("flow_cps", seed=3, prefix="host/reward_src")
    graph["20"] = reward_node
    graph["21"] = {"class_type": "FlowCPS_ScoreImages",
                   "inputs": {"images": ["6", 0], "reward": ["20", 0], "prompts": prompts}}
    return graph


def test_reward_nodes_are_listed(comfy):
    info = comfy.object_info()
    for node in REWARD_NODES:
        assert node in info and info[node]["description"], node
    assert info["FlowCPS_RewardDigit"]["output"] == ["REWARD"]


def test_bold_digit_reward_is_the_probability_times_the_stroke_width_of_decoded_toy_images(comfy):
    entry, messages = comfy.run(score_graph({"class_type": "FlowCPS_RewardBoldDigit", "inputs": {}}), timeout=240)
    assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
    for line in entry["outputs"]["21"]["text"][0].splitlines():
        fields = dict(part.split("=") for part in line.split() if "=" in part)
        score, probability, width = float(line.split()[2]), float(fields["probability"]), float(fields["width"])
        # measured at the latent's native 16 × 16, though the VAE decodes 8× larger: a thin toy stroke, 0.5–3 px
        assert 0.5 < width < 3 and 0 <= probability <= 1, line
        assert score == pytest.approx(probability * width, rel=2e-3, abs=1e-4), line


def test_score_node_runs_the_digit_reward_on_toy_images(comfy):
    entry, messages = comfy.run(score_graph({"class_type": "FlowCPS_RewardDigit", "inputs": {}}), timeout=240)
    assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
    text = entry["outputs"]["21"]["text"][0]
    lines = text.splitlines()
    assert len(lines) == 2 and all(line.startswith(f"image {i}: ") for i, line in enumerate(lines))
    scores = [float(line.split()[2]) for line in lines]
    assert all(s > 0.5 for s in scores), text  # the toy model draws a 3 when asked, the classifier agrees
    assert "predicted=3" in lines[0]


def test_clip_family_loader_reads_reward_models_folder_and_explains_a_missing_one(comfy):
    root = Path(comfy.models_dir) / "reward_models"
    make_tiny_reward_models(root)
    scores = {}
    for name in ("pickscore", "hpsv2", "aesthetic", "clipscore"):
        graph = score_graph({"class_type": "FlowCPS_RewardCLIP",
                             "inputs": {"model": name, "path": "", "dtype": "float32"}})
        entry, messages = comfy.run(graph, timeout=240)
        assert entry["status"]["status_str"] == "success", (name, comfy.execution_error(messages))
        scores[name] = [float(line.split()[2]) for line in entry["outputs"]["21"]["text"][0].splitlines()]
        assert len(scores[name]) == 2 and np.isfinite(scores[name]).all()
    missing = score_graph({"class_type": "FlowCPS_RewardCLIP",
                           "inputs": {"model": "pickscore", "path": str(root / "nowhere"), "dtype": "float32"}})
    entry, messages = comfy.run(missing, timeout=240)
    error = comfy.execution_error(messages)
    assert error is not None and "nowhere" in error["exception_message"]
    assert "huggingface.co/yuvalkirstain/PickScore_v1" in error["exception_message"]


def test_weight_free_combination_scores_toy_images(comfy):
    graph = score_graph({"class_type": "FlowCPS_RewardCombine", "inputs": {
        "reward_1": ["30", 0], "weight_1": 1.0, "reward_2": ["31", 0], "weight_2": 0.5, "weight_3": 1.0,
        "weight_4": 1.0, "normalize": False}})
    graph["30"] = {"class_type": "FlowCPS_RewardWeightFree", "inputs": {"kind": "low_noise"}}
    graph["31"] = {"class_type": "FlowCPS_RewardDigit", "inputs": {}}
    entry, messages = comfy.run(graph, timeout=240)
    assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
    for line in entry["outputs"]["21"]["text"][0].splitlines():
        fields = dict(item.split("=") for item in line.split()[3:])
        total = float(line.split()[2])
        assert total == pytest.approx(float(fields["low_noise"].strip("[],")) + 0.5 * float(
            fields["digit"].strip("[],")), abs=2e-4), line


def test_ocr_node_scores_or_names_the_missing_package(comfy):
    import subprocess
    has_ocr = subprocess.run([os.environ.get("COMFYUI_PYTHON") or sys.executable, "-c", "import rapidocr"],
                             capture_output=True).returncode == 0
    graph = score_graph({"class_type": "FlowCPS_RewardOCR", "inputs": {}}, prompts='a sign that says "3"')
    entry, messages = comfy.run(graph, timeout=240)
    if has_ocr:
        assert entry["status"]["status_str"] == "success", comfy.execution_error(messages)
        assert "target=3" in entry["outputs"]["21"]["text"][0]
    else:
        error = comfy.execution_error(messages)
        assert error is not None and "pip install rapidocr onnxruntime" in error["exception_message"]


def loaded_models_after(comfy, graph, node, output):
    """Run ``graph`` with the fixture pack's LoadedModels node computed after ``node``'s STRING ``output``."""
    graph["99"] = {"class_type": "FlowCPSTest_LoadedModels", "inputs": {"after": [node, output]}}
    entry, messages = comfy.run(graph, timeout=600)
    assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
    return entry["outputs"]["99"]["text"][0].splitlines()


def test_reward_models_are_placed_by_comfy_model_management(comfy):
    """The CLIP reward (scoring) and the digit classifier (training) are loaded through load_models_gpu like the VAE,
    so ComfyUI can move them off the GPU when the diffusion model needs the memory."""
    from test_grpo_nodes import grpo_graph
    make_tiny_reward_models(Path(comfy.models_dir) / "reward_models")
    rows = loaded_models_after(comfy, score_graph({"class_type": "FlowCPS_RewardCLIP", "inputs": {
        "model": "clipscore", "path": "", "dtype": "float32"}}), "21", 0)
    assert "RewardModels[CLIPModel] load=cpu offload=cpu" in rows, rows
    graph = grpo_graph("host_managed_reward", iterations=1, save=False)
    graph["4"]["inputs"].update(group_size=2, prompts_per_iteration=2, sample_batch_size=2, train_batch_size=2)
    rows = loaded_models_after(comfy, graph, "4", 3)
    assert "RewardModels[DigitClassifier] load=cpu offload=cpu" in rows, rows
