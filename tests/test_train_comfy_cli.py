"""scripts/train_comfy.py: the checks it makes before importing ComfyUI (the runs themselves: tests/host/test_headless.py)."""
import json
import os
import sys

import pytest

from test_train_cli import error_of, load_script


@pytest.fixture(scope="module")
def cli():
    return load_script("train_comfy")


@pytest.fixture(scope="module")
def comfy_library(cli):
    return load_script("comfy_library")


@pytest.fixture(scope="module")
def run_checks(cli):  # loading train_comfy puts scripts/ on sys.path, where run_checks finds comfy_library
    return load_script("run_checks")


@pytest.fixture
def comfyui(tmp_path):
    folder = tmp_path / "ComfyUI"
    folder.mkdir()
    (folder / "main.py").write_text("")
    return ["--comfyui", str(folder)]


def parse(cli, *argv):
    return cli.parse_args(list(argv))[1]


def test_one_source_and_its_companions_are_required(cli, comfyui, tmp_path, capsys):
    _, message = error_of(capsys, lambda: parse(cli, "--comfyui", str(tmp_path), "--checkpoint", "x"))
    assert "is no ComfyUI folder (no main.py there)" in message and "COMFYUI_PATH" in message
    _, message = error_of(capsys, lambda: parse(cli, *comfyui))
    assert "give exactly one of --workflow, --checkpoint or --diffusion-model" in message
    _, message = error_of(capsys, lambda: parse(cli, *comfyui, "--checkpoint", "a", "--diffusion-model", "b"))
    assert "(got --checkpoint, --diffusion-model)" in message
    _, message = error_of(capsys, lambda: parse(cli, *comfyui, "--diffusion-model", "m", "--vae", "v"))
    assert "--diffusion-model also needs --text-encoder (1–3), --clip-type and --vae" in message
    _, message = error_of(capsys, lambda: parse(cli, *comfyui, "--checkpoint", "c", "--prompts", "p"))
    assert "--reward: name the reward" in message and "pickscore" in message
    _, message = error_of(capsys, lambda: parse(cli, *comfyui, "--checkpoint", "c", "--reward", "pickscore"))
    assert "--prompts: give a prompts file" in message


def test_files_are_checked_and_read_before_comfyui_is_imported(cli, comfyui, tmp_path, capsys):
    _, message = error_of(capsys, lambda: parse(cli, *comfyui, "--workflow", str(tmp_path / "none.json")))
    assert "--workflow: no such file" in message
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    _, message = error_of(capsys, lambda: parse(cli, *comfyui, "--workflow", str(broken)))
    assert "is not JSON" in message
    graph = tmp_path / "api.json"
    graph.write_text(json.dumps({"1": {"class_type": "FlowCPS_GRPOTrainLoRA", "inputs": {}}}))
    _, message = error_of(capsys, lambda: parse(cli, *comfyui, "--workflow", str(graph), "--reward", "digit"))
    assert "the workflow brings its own loaders and reward" in message
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n  \n")
    _, message = error_of(capsys, lambda: parse(cli, *comfyui, "--workflow", str(graph), "--prompts", str(empty)))
    assert "holds no prompt" in message
    _, message = error_of(capsys, lambda: parse(cli, *comfyui, "--workflow", str(graph), "--reward-option", "x"))
    assert "'x' is not KEY=VALUE" in message
    _, message = error_of(capsys, lambda: parse(cli, *comfyui, "--workflow", str(graph), "--custom-node",
                                                str(tmp_path / "nowhere")))
    assert "--custom-node: no such folder" in message
    _, message = error_of(capsys, lambda: parse(cli, *comfyui, "--workflow", str(graph), "--dense-rewards", "maybe"))
    assert "expected true or false" in message


def test_a_workflow_is_refused_before_comfyui_is_imported(cli, comfyui, tmp_path, capsys, monkeypatch):
    """main() on a folder that only looks like ComfyUI (an empty main.py, no comfy package): each refusal below comes
    before the import, which would fail on such a folder, and names what to change."""
    output = tmp_path / "out"
    def refusal(graph, *extra, **env):
        path = tmp_path / "api.json"
        path.write_text(json.dumps(graph))
        for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        _, message = error_of(capsys, lambda: cli.main([*comfyui, "--workflow", str(path), "--output-directory",
                                                        str(output), *extra]))
        assert "comfy" not in sys.modules
        return message
    trainer = {"class_type": "FlowCPS_GRPOTrainLoRA", "inputs": {
        "prompts_per_iteration": 2, "group_size": 2, "iterations": 2, "run_name": "early", "latent": ["3", 0]}}
    latent = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    assert "Export (API)" in refusal({"nodes": [], "links": [], "version": 0.4})
    assert "has 0 'GRPO Train LoRA (flow)' nodes" in refusal({"3": latent})
    assert "links to node '3', which it does not contain" in refusal({"7": trainer})
    message = refusal({"7": trainer, "3": latent}, **{"WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0"})
    assert "2 × 2 = 4 samples per iteration do not split over 3 processes" in message and "[1, 2, 4]" in message
    assert "--resume: no checkpoint at " + str(output / "flow_cps_grpo" / "early") in refusal(
        {"7": trainer, "3": latent}, "--resume")
    from training.checkpoint import CHECKPOINT_NAME, write_checkpoint
    write_checkpoint(str(output / "flow_cps_grpo" / "mine" / CHECKPOINT_NAME), {"iteration": 2, "history": []})
    assert "already holds a run; pass --resume" in refusal({"7": trainer, "3": latent}, "--run-name", "mine")
    # the flags apply first: --iterations 1 asks for fewer than the checkpoint holds
    assert "already holds 2 iterations and --iterations is 1" in refusal(
        {"7": trainer, "3": latent}, "--run-name", "mine", "--resume", "--iterations", "1")
    assert not (output / "flow_cps_grpo" / "early").exists()


def test_settings_reach_the_trainer_inputs_unchanged_and_only_when_given(cli, comfyui, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\na blue bird\n")
    graph_file = tmp_path / "api.json"
    graph = {"7": {"class_type": "FlowCPS_GRPOTrainLoRA", "inputs": {"learning_rate": 3e-4, "beta": 0.04,
                                                                      "group_size": 8, "run_name": "mine"}},
             "3": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}}}
    graph["7"]["inputs"]["latent"] = ["3", 0]
    graph_file.write_text(json.dumps(graph))
    args = parse(cli, *comfyui, "--workflow", str(graph_file), "--prompts", str(prompts), "--beta", "1.2345e-05",
                 "--dense-rewards", "true", "--width", "768", "--seed",
                 "18446744073709551615")
    inputs = cli.apply_flags(args, args.graph, "7")
    assert inputs["beta"] == 1.2345e-05 and inputs["learning_rate"] == 3e-4 and inputs["group_size"] == 8
    assert inputs["dense_rewards"] is True and inputs["seed"] == 2 ** 64 - 1
    assert inputs["prompts"] == "a red fox\na blue bird\n" and inputs["run_name"] == "mine"
    assert args.graph["3"]["inputs"]["width"] == 768 and args.graph["3"]["inputs"]["height"] == 512
    assert args.world_size == 1 and args.rank == 0


class FakeNodes:
    """What apply_method_flags reads of ComfyUI's nodes module: the method nodes' classes (their defaults)."""

    def __init__(self):
        self.NODE_CLASS_MAPPINGS = {"FlowCPS_MethodMixGRPO": {"window_start": 0, "window_size": 2},
                                    "FlowCPS_MethodTrustRegion": {"kl_threshold": 1e-5, "ratio_norm": False},
                                    "FlowCPS_MethodDiffusionNFT": {"nft_beta": 1.0}}


class FakeHeadless:
    @staticmethod
    def input_defaults(defaults):
        return dict(defaults)


def test_method_flags_add_or_set_method_nodes_in_front_of_the_trainer(cli, comfyui, tmp_path, capsys):
    graph = {"7": {"class_type": "FlowCPS_GRPOTrainLoRA", "inputs": {"method": ["12", 0]}},
             "12": {"class_type": "FlowCPS_MethodTrustRegion", "inputs": {"kl_threshold": 3e-5, "ratio_norm": True}}}
    graph_file = tmp_path / "api.json"
    graph_file.write_text(json.dumps(graph))
    args = parse(cli, *comfyui, "--workflow", str(graph_file), "--window-size", "1", "--ode-sampler", "dpmpp_2m",
                 "--kl-threshold", "2.5e-06")
    cli.apply_method_flags(args, args.graph, "7", FakeNodes(), FakeHeadless())
    g = args.graph
    # the workflow's trust-region node keeps its other inputs and takes the flag; a MixGRPO node is chained in front
    assert g["12"]["inputs"] == {"kl_threshold": 2.5e-06, "ratio_norm": True}
    head = g["7"]["inputs"]["method"][0]
    assert g[head]["class_type"] == "FlowCPS_MethodMixGRPO" and g[head]["inputs"]["method"] == ["12", 0]
    assert g[head]["inputs"]["window_size"] == 1 and g[head]["inputs"]["ode_sampler"] == "dpmpp_2m"
    assert g[head]["inputs"]["window_start"] == 0  # the node's default
    assert cli.method_chain(g, "7") == {"mixgrpo": head, "trust_region": "12"}
    # --method alone adds the node with its defaults; flags of no method leave the graph alone
    args = parse(cli, *comfyui, "--workflow", str(graph_file), "--method", "diffusion_nft")
    cli.apply_method_flags(args, args.graph, "7", FakeNodes(), FakeHeadless())
    assert set(cli.method_chain(args.graph, "7")) == {"diffusion_nft", "trust_region"}
    args = parse(cli, *comfyui, "--workflow", str(graph_file))
    cli.apply_method_flags(args, args.graph, "7", FakeNodes(), FakeHeadless())
    assert args.graph == graph
    _, message = error_of(capsys, lambda: parse(cli, *comfyui, "--workflow", str(graph_file), "--method", "ppo"))
    assert "--method: invalid choice: 'ppo'" in message


def test_resume_of_a_run_whose_iterations_are_all_done(run_checks, tmp_path):
    """Before ComfyUI loads: a checkpoint holding every iteration resumes when final files are missing or show an
    earlier segment (the node then writes them), and is refused with nothing left to do, or asked for fewer."""
    from safetensors.torch import save_file

    from training.checkpoint import CHECKPOINT_NAME, write_checkpoint
    from training.run_folders import write_json, write_reward_curve
    import torch
    folder = tmp_path / "flow_cps_grpo" / "run"
    checkpoint = str(folder / CHECKPOINT_NAME)
    write_checkpoint(checkpoint, {"iteration": 4, "history": []})
    assert run_checks.finished_run_problems(checkpoint, 5) == []  # more to train
    assert run_checks.finished_run_problems(checkpoint, 4) == []  # no final file: the run writes them
    save_file({"a": torch.zeros(1)}, str(folder / "lora_final.safetensors"), metadata={"flow_cps.iterations": "4"})
    write_json(str(folder / "metrics.json"), {"iterations": 4})
    write_reward_curve(str(folder / "reward_curve.png"), torch.zeros(1, 2, 2, 3), 3)  # from an earlier segment
    assert run_checks.finished_run_problems(checkpoint, 4) == []
    write_reward_curve(str(folder / "reward_curve.png"), torch.zeros(1, 2, 2, 3), 4)
    [problem] = run_checks.finished_run_problems(checkpoint, 4)
    assert "already holds 4 iterations and --iterations is 4" in problem and "final files are all written" in problem
    assert "Raise --iterations above 4" in problem
    [problem] = run_checks.finished_run_problems(checkpoint, 3)
    assert "already holds 4 iterations and --iterations is 3" in problem and "final files" not in problem
    (folder / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    [problem] = run_checks.finished_run_problems(checkpoint, 4)
    assert problem.startswith("--resume: ") and "not a flow-cps GRPO checkpoint" in problem


def test_the_trainers_optional_settings_have_flags_that_reach_the_inputs_unchanged(cli, comfyui, tmp_path):
    graph_file = tmp_path / "api.json"
    graph_file.write_text(json.dumps({"7": {"class_type": "FlowCPS_GRPOTrainLoRA", "inputs": {"beta": 0.04}}}))
    assert {name for _, name, _, _ in cli.OPTIONAL_SETTINGS} == {"min_train_std", "advantage_std"}
    args = parse(cli, *comfyui, "--workflow", str(graph_file), "--min-train-std", "1.2345e-05",
                 "--advantage-std", "global")
    inputs = cli.apply_flags(args, args.graph, "7")
    assert inputs["min_train_std"] == 1.2345e-05 and inputs["advantage_std"] == "global" and inputs["beta"] == 0.04
    args = parse(cli, *comfyui, "--workflow", str(graph_file))  # not given: the workflow's value or the default
    inputs = cli.apply_flags(args, args.graph, "7")
    assert "min_train_std" not in inputs and "advantage_std" not in inputs


def test_one_default_lora_alpha_in_the_node_the_toy_policy_and_both_scripts(cli, comfyui, tmp_path):
    """α = 2 × rank (grpo_config.default_lora_alpha) wherever α is not set; the node's widget defaults are read from
    its source here (ComfyUI is needed to build its schema: tests/host/test_finishing_killed_runs.py checks /object_info)."""
    import ast
    from pathlib import Path

    from test_train_cli import load_script
    from training.grpo_config import GRPOConfig, default_lora_alpha
    from training.toy.policy import toy_policy
    assert default_lora_alpha(8) == 16.0 and GRPOConfig.lora_rank == 8
    assert toy_policy().lora.alpha == 16.0 and toy_policy(rank=4).lora.alpha == 8.0
    train = load_script("train")
    assert train.parse_args(["--out", str(tmp_path / "a")]).config.lora_alpha == 16.0
    assert train.parse_args(["--out", str(tmp_path / "a"), "--lora-rank", "4"]).config.lora_alpha == 8.0
    # the node: lora_rank defaults to GRPOConfig's rank and lora_alpha to default_lora_alpha of it
    source = (Path(__file__).resolve().parents[1] / "nodes" / "train_nodes.py").read_text(encoding="utf-8")
    defaults = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and node.args[0].value in ("lora_rank", "lora_alpha"):
            defaults[node.args[0].value] = ast.unparse(next(k.value for k in node.keywords if k.arg == "default"))
    assert defaults == {"lora_rank": "GRPO_DEFAULTS['lora_rank']",
                        "lora_alpha": "default_lora_alpha(GRPO_DEFAULTS['lora_rank'])"}
    assert "GRPO_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}" in source
    # scripts/train_comfy.py from flags: α follows the rank given; a workflow keeps its own α; a flag wins
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\n")
    flags = [*comfyui, "--checkpoint", "c.safetensors", "--reward", "colorfulness", "--prompts", str(prompts)]
    for extra, alpha in (([], 16.0), (["--lora-rank", "32"], 64.0), (["--lora-rank", "32", "--lora-alpha", "8"], 8.0)):
        args = parse(cli, *flags, *extra)
        assert cli.apply_flags(args, {"10": {"inputs": {"lora_rank": 8, "lora_alpha": 16.0}}}, "10")[
            "lora_alpha"] == alpha, extra
    graph_file = tmp_path / "api.json"
    graph_file.write_text(json.dumps({"7": {"class_type": "FlowCPS_GRPOTrainLoRA",
                                            "inputs": {"lora_rank": 8, "lora_alpha": 4.0}}}))
    args = parse(cli, *comfyui, "--workflow", str(graph_file), "--lora-rank", "32")
    assert cli.apply_flags(args, args.graph, "7")["lora_alpha"] == 4.0


def test_only_the_builtin_node_files_a_graph_names_are_loaded(cli, comfy_library, tmp_path):
    """A run imports the comfy_extras files whose source names one of its nodes (V1 mapping keys, V3 node_id), of
    the files ComfyUI's init_builtin_extra_nodes loads (nodes_*.py); flags alone name their loaders and latent."""
    extras = tmp_path / "ComfyUI" / "comfy_extras"
    extras.mkdir(parents=True)
    (extras / "nodes_sd3.py").write_text('NODE_CLASS_MAPPINGS = {"TripleCLIPLoader": T, "EmptySD3LatentImage": E}\n')
    (extras / "nodes_v3.py").write_text("io.Schema(node_id='ModelSamplingAuraFlow')\n")
    (extras / "nodes_other.py").write_text('NODE_CLASS_MAPPINGS = {"EmptySD3LatentImageX": X}  # EmptyLatentImage\n')
    (extras.parent / "main.py").write_text("")
    (extras / "helpers.py").write_text('"EmptySD3LatentImage"\n')  # not a node file: ComfyUI does not load it
    sources = comfy_library.builtin_node_files(str(tmp_path / "ComfyUI"))
    assert sorted(os.path.basename(p) for p in sources) == ["nodes_other.py", "nodes_sd3.py", "nodes_v3.py"]
    named = lambda *types: sorted(os.path.basename(p) for p in comfy_library.naming_files(sources, set(types)))
    assert named("EmptySD3LatentImage", "KSampler") == ["nodes_sd3.py"]
    assert named("ModelSamplingAuraFlow") == ["nodes_v3.py"] and named("EmptyLatentImage", "VAELoader") == []
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\n")
    args = parse(cli, "--comfyui", str(tmp_path / "ComfyUI"), "--diffusion-model", "m", "--text-encoder", "a",
                 "--text-encoder", "b", "--text-encoder", "c", "--clip-type", "sd3", "--vae", "v", "--reward",
                 "pickscore", "--prompts", str(prompts))
    types = {node["class_type"] for node in cli.graph_from_flags(args).values()}
    assert "TripleCLIPLoader" in types and named(*types) == ["nodes_sd3.py"]
