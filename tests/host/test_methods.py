"""The training-method nodes inside a real ComfyUI on the toy model: MixGRPO windows with a stock solver, the trust
region, DiffusionNFT with a stock sampler; the values typed into their widgets reach the run unchanged."""
import json
import os

import numpy as np
import pytest

from test_grpo_nodes import grpo_graph


def metrics(comfy, run_name):
    with open(os.path.join(comfy.output_dir, "flow_cps_grpo", run_name, "metrics.json")) as handle:
        return json.load(handle)


def with_methods(graph, *methods, trainer="4"):
    """Chain method nodes (class_type, inputs) into the trainer, first to last."""
    previous = None
    for k, (class_type, inputs) in enumerate(methods):
        node_id = str(40 + k)
        graph[node_id] = {"class_type": class_type, "inputs": dict(inputs)}
        if previous is not None:
            graph[node_id]["inputs"]["method"] = [previous, 0]
        previous = node_id
    graph[trainer]["inputs"]["method"] = [previous, 0]
    return graph


def test_the_stock_solver_integrates_outside_the_window_as_comfyui_runs_it_alone(comfy):
    for name in ("dpmpp_2m", "heun", "lms"):
        graph = {"1": {"class_type": "FlowCPS_ToyDigitModel", "inputs": {}},
                 "2": {"class_type": "FlowCPSTest_StockSolverCheck", "inputs": {
                     "model": ["1", 0], "sampler_name": name, "steps": 6, "window_start": 1, "window_stop": 3}}}
        entry, messages = comfy.run(graph, timeout=300)
        assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
        report = json.loads(entry["outputs"]["2"]["text"][0])
        assert report["stochastic_steps"] == [1, 2], report
        assert report["stock_vs_rollout"] < 1e-5, (name, report)  # the same sampler, the same steps
        assert report["euler_vs_rollout"] > 1e-3, (name, report)  # and not the Euler ODE


def test_mixgrpo_flash_with_a_trust_region_trains_the_moving_window(comfy):
    graph = with_methods(
        grpo_graph("host_mix", iterations=3, checkpoint_every=0, save=False),
        ("FlowCPS_MethodMixGRPO", {"window_start": 0, "window_size": 1, "window_schedule": "progressive",
                                   "shift_every": 1, "window_stride": 1, "ode_sampler": "dpmpp_2m"}),
        ("FlowCPS_MethodTrustRegion", {"kl_threshold": 3.5e-6, "ratio_clipping": True, "ratio_norm": True}))
    graph["4"]["inputs"]["clip_range"] = 0.0125
    entry, messages = comfy.run(graph, timeout=600)
    assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
    info = metrics(comfy, "host_mix")
    # typed values reach the run unchanged
    assert info["ode_sampler"] == "dpmpp_2m" and info["window_schedule"] == "progressive"
    assert info["kl_mask_threshold"] == 3.5e-6 and info["ratio_norm"] is True and info["clip_range"] == 0.0125
    history = info["history"]
    # 4 steps of the normal schedule: only windows (0, 1) and (1, 2) have a step to train; progressive stops at (1, 2)
    assert [h["sde_window"] for h in history] == [[0, 1], [1, 2], [1, 2]]
    assert [h["trained_steps"] for h in history] == [[0], [1], [1]]
    assert all(h["first_ratio_min"] == h["first_ratio_max"] == 1.0 for h in history)  # on-policy, normalised
    assert all("masked_fraction" in h for h in history)


def test_diffusion_nft_with_a_stock_sampler_keeps_only_final_latents(comfy):
    graph = with_methods(
        grpo_graph("host_nft", iterations=3, checkpoint_every=0, save=False),
        ("FlowCPS_MethodDiffusionNFT", {"sampler": "euler_ancestral", "nft_beta": 0.75, "kl_beta": 2.5e-4,
                                        "old_policy": "ema", "decay_rate": 0.002, "decay_max": 0.4,
                                        "timestep_fraction": 0.5}))
    entry, messages = comfy.run(graph, timeout=600)
    assert entry["status"]["status_str"] == "success", (comfy.execution_error(messages), comfy.log_tail())
    info = metrics(comfy, "host_nft")
    assert info["algorithm"] == "diffusion_nft" and info["nft_sampler"] == "euler_ancestral"
    history = info["history"]
    # 4 normal steps: times 1, 0.667, 0.334 (0.001 is not re-noised at), ⌊3 × 0.5⌋ = 1 per iteration
    assert all(h["algorithm"] == "diffusion_nft" and len(h["trained_times"]) == 1 for h in history)
    assert all(h["rollout_bytes_per_sample"] == 1 * 16 * 16 * 4 for h in history)  # one float32 toy latent
    # the old policy's decay: min(0.002 · optimizer steps so far, 0.4), 1 optimizer step per iteration
    assert [h["nft_old_decay"] for h in history] == pytest.approx([0.002 * (k + 1) for k in range(3)])
    assert all(h["kl"] is not None and h["kl"] >= 0 for h in history)
    assert "DiffusionNFT" not in json.dumps(comfy.execution_error(messages) or {})


def test_method_settings_that_cannot_work_are_refused_before_training(comfy):
    graph = with_methods(grpo_graph("host_bad_window", iterations=1, save=False),
                         ("FlowCPS_MethodMixGRPO", {"window_start": 3, "window_size": 4, "window_schedule": "fixed",
                                                    "shift_every": 1, "window_stride": 1, "ode_sampler": "euler"}))
    entry, messages = comfy.run(graph, timeout=300)
    error = comfy.execution_error(messages)
    assert entry["status"]["status_str"] == "error" and "SDE window (3, 7) must satisfy" in error["exception_message"]
    assert not os.path.exists(os.path.join(comfy.output_dir, "flow_cps_grpo", "host_bad_window", "checkpoint.safetensors"))


@pytest.mark.parametrize("arch", ["sd3", "flux", "qwen_image", "wan21", "lumina2"])
def test_every_method_trains_the_real_architecture(comfy, arch):
    """MixGRPO-Flash with a trust region, and DiffusionNFT with a stock sampler, on ComfyUI's own model classes
    (random, tiny widths, built in memory by the fixture pack); micro-batches and gradient checkpointing as for
    GRPO."""
    from test_architectures import built_in_memory, grpo_graph as arch_graph, run
    info = built_in_memory(arch)
    runs = {
        "mix": [("FlowCPS_MethodMixGRPO", {"window_start": 0, "window_size": 1, "window_schedule": "random",
                                           "shift_every": 1, "window_stride": 1, "ode_sampler": "dpmpp_2m"}),
                ("FlowCPS_MethodTrustRegion", {"kl_threshold": 1e-5, "ratio_clipping": False, "ratio_norm": True})],
        "nft": [("FlowCPS_MethodDiffusionNFT", {"sampler": "dpmpp_2m", "nft_beta": 1.0, "kl_beta": 1e-4,
                                                "old_policy": "ema", "decay_rate": 0.001, "decay_max": 0.5,
                                                "timestep_fraction": 0.34})],
    }
    for kind, methods in runs.items():
        run_name = f"host_method_{arch}_{kind}"
        graph = with_methods(arch_graph(info, arch, run_name, scheduler="simple", iterations=1), *methods,
                             trainer="24")
        run(comfy, graph, node_id="24")
        history = metrics(comfy, run_name)["history"]
        assert len(history) == 1 and all(np.isfinite(h["loss"]) and h["grad_norm"] > 0 for h in history), history
        if kind == "mix":
            assert all(len(h["trained_steps"]) == 1 and h["first_ratio_min"] == 1.0 == h["first_ratio_max"]
                       for h in history)
            assert all(h["clip_fraction"] is not None and "masked_fraction" in h for h in history)
        else:
            assert all(h["algorithm"] == "diffusion_nft" and len(h["trained_times"]) == 1 for h in history)
    comfy.free()
