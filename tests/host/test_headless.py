"""The command-line trainer (scripts/train_comfy.py) on a real ComfyUI, CPU and gloo: a workflow in API format with
a random SD3 model that the stock UNETLoader/VAELoader read (tiny_models.py), given by path, and a random tiny Flux
built by the test fixture pack (its file would be the host's full width on v0.3.64).

- 2 processes under torchrun train the same LoRA as 1 process (float tolerance), and rank 0 alone reports and writes;
- a run killed after a checkpoint resumes bit-exactly (the same LoRA as the run that was never killed);
- the LoRA loads in the running server with LoraLoaderModelOnly, with no unmatched key, and changes the output;
- bad arguments fail before any model is loaded, saying what to change.
"""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from model_files import arch_files
from test_architectures import base_graph, built_in_memory, grpo_graph, run, sampled, stock_loaded
from test_grpo_nodes import RANDOM_CLIP_L_FILES, TINY_MMDIT_CLIP_L_FILES
from training.checkpoint import read_checkpoint, trained_iterations

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "train_comfy.py"
FIXTURES = Path(__file__).resolve().parent / "fixture_pack"
FROM_FILES = {"sd3"}
MODEL_FILES = [arch_files("sd3"), TINY_MMDIT_CLIP_L_FILES, RANDOM_CLIP_L_FILES]  # built at the session's start


EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out = set()
_port_lock = threading.Lock()


def free_port() -> int:
    """A free port for torchrun's rendezvous, below the kernel's ephemeral range: a run beside it opens connections
    on ephemeral ports, and one of those could take a port picked there before this run's launcher binds it."""
    low = int(EPHEMERAL_PORTS.read_text().split()[0]) if EPHEMERAL_PORTS.is_file() else 32768
    with _port_lock:  # side_by_side runs ask from two threads
        for port in random.sample(range(max(1024, low - 12000), low), 200):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no free port below the ephemeral range")


def workflow(comfy, arch, run_name, iterations=2, checkpoint_every=1, seed=0):
    """What a user exports from the browser: loaders (here with the model files' paths), conditioning, a reward, the
    trainer, and a Save LoRA and a preview that the command line leaves out (the run saves its LoRA itself).
    SD3 comes from files (by path), the others from the fixture pack's nodes."""
    info = stock_loaded(comfy, arch) if arch in FROM_FILES else built_in_memory(arch)
    graph = grpo_graph(info, arch, run_name, scheduler="simple", iterations=iterations, beta=0.1,
                       checkpoint_every=checkpoint_every, seed=seed, train_batch_size=2, train_dtype="float32")
    if arch in FROM_FILES:
        graph["1"]["inputs"]["unet_name"] = os.path.join(comfy.models_dir, "diffusion_models", info["unet"])
        graph["9"]["inputs"]["vae_name"] = os.path.join(comfy.models_dir, "vae", info["vae"])
    graph.update({
        "25": {"class_type": "FlowCPS_SaveLoRA", "inputs": {"lora": ["24", 1], "filename_prefix": "host/cli",
                                                            "run_info": ["24", 3]}},
        "26": {"class_type": "PreviewImage", "inputs": {"images": ["24", 2]}},
    })
    return graph


def command(tmp_path, graph, *extra, processes=1, output=None):
    path = tmp_path / f"workflow_{time.monotonic_ns()}.json"
    path.write_text(json.dumps(graph))
    launcher = [os.environ["COMFYUI_PYTHON"]]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-addr",
                     "127.0.0.1", "--master-port", str(free_port())]
    return [*launcher, str(SCRIPT), "--comfyui", os.environ["COMFYUI_PATH"], "--workflow", str(path), "--cpu",
            "--custom-node", str(FIXTURES), "--output-directory", str(output or tmp_path / "output"), *extra]


def environment(**extra):
    # PYTHONDONTWRITEBYTECODE is dropped: every run of train_comfy.py imports ComfyUI (~1400 modules), and without
    # bytecode caches each would compile its source again (~8 s a process on 2 cores; ComfyUI writes them itself
    # whenever it runs)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "WORLD_SIZE", "RANK",
                                                             "LOCAL_RANK", "PYTHONDONTWRITEBYTECODE")}
    # one thread per process: the same float reductions in every run, so resumed runs can match bit for bit
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **extra}


def side_by_side(*calls):
    """Independent runs started together, their results in order (an assertion failing in one is raised here).
    Each process runs one thread, so two share the machine's 2 cores instead of waiting for each other: most of a
    run is importing ComfyUI, which is the same whether one runs or two."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return [future.result() for future in [pool.submit(call) for call in calls]]


def train(tmp_path, graph, *extra, processes=1, output=None, timeout=1500):
    done = subprocess.run(command(tmp_path, graph, *extra, processes=processes, output=output),
                          capture_output=True, text=True, timeout=timeout, env=environment())
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-6000:])
    return done


def descendants(pid: int) -> list:
    """The processes below ``pid`` (read from /proc: torchrun starts each worker in a session of its own, so killing
    the launcher's process group leaves the workers training on)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL a launcher and every worker under it at once, as a crash or an OOM killer would."""
    victims = [pid, *descendants(pid)]
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_folder(tmp_path, name, output=None):
    return Path(output or tmp_path / "output") / "flow_cps_grpo" / name


def lora(folder):
    return load_file(str(folder / "lora_final.safetensors"))


@pytest.mark.parametrize("arch", ["sd3", "flux"])
def test_two_processes_train_the_same_lora_as_one(comfy, tmp_path, arch):
    one, two = side_by_side(lambda: train(tmp_path, workflow(comfy, arch, "one")),
                            lambda: train(tmp_path, workflow(comfy, arch, "two"), processes=2))
    a, b = lora(run_folder(tmp_path, "one")), lora(run_folder(tmp_path, "two"))
    assert a.keys() == b.keys() and any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_up" in k)
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), (key, float((a[key] - b[key]).abs().max()))
    m1 = json.loads((run_folder(tmp_path, "one") / "metrics.json").read_text())
    m2 = json.loads((run_folder(tmp_path, "two") / "metrics.json").read_text())
    assert (m1["world_size"], m2["world_size"]) == (1, 2)
    # the advantages come from all 4 samples on either layout: the rewards agree
    assert [h["reward_mean"] for h in m1["history"]] == pytest.approx([h["reward_mean"] for h in m2["history"]],
                                                                     rel=1e-5)
    # one progress line per iteration, from rank 0 only
    for done in (one, two):
        lines = [line for line in done.stdout.splitlines() if line.startswith("iteration ")]
        assert [line.split(":")[0] for line in lines] == ["iteration 1/2", "iteration 2/2"], done.stdout
    assert {p.name for p in run_folder(tmp_path, "two").iterdir()} >= {
        "lora_final.safetensors", "checkpoint.safetensors", "metrics.json", "reward_curve.png"}
    # the Save LoRA node of the workflow did not run (the run saves its own LoRA, once, on rank 0)
    assert not (tmp_path / "output" / "loras").exists()
    # the LoRA carries the Save LoRA node's metadata
    with safe_open(str(run_folder(tmp_path, "two") / "lora_final.safetensors"), "pt") as handle:
        metadata = handle.metadata()
    assert metadata["flow_cps.rule"] == "cps" and metadata["flow_cps.reward"] == "colorfulness"
    assert json.loads(metadata["flow_cps.prompts"]) == ["a red fox", "a blue bird"]


def test_a_killed_run_resumes_bit_exactly_and_its_lora_loads_in_comfyui(comfy, tmp_path):
    graph = workflow(comfy, "sd3", "killed", iterations=4)
    process = subprocess.Popen(command(tmp_path, graph, processes=2), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=environment(), start_new_session=True)
    with ThreadPoolExecutor(max_workers=1) as pool:  # the uninterrupted run, beside the one to kill (see side_by_side)
        straight = pool.submit(train, tmp_path, workflow(comfy, "sd3", "straight", iterations=4), processes=2)
        checkpoint = run_folder(tmp_path, "killed") / "checkpoint.safetensors"
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline and process.poll() is None:
            if checkpoint.is_file() and trained_iterations(str(checkpoint)) >= 2:
                break
            time.sleep(0.2)
        assert process.poll() is None, "the run ended before it could be killed: " + process.stdout.read()[-3000:]
        kill_tree(process.pid)
        process.wait(timeout=60)
        killed_at = trained_iterations(str(checkpoint))
        time.sleep(3)  # no worker survived the kill to train on
        assert trained_iterations(str(checkpoint)) == killed_at
        assert 2 <= killed_at < 4 and not (run_folder(tmp_path, "killed") / "lora_final.safetensors").exists()
        assert straight.result().returncode == 0
    resumed = train(tmp_path, graph, "--resume", processes=2)
    lines = [line.split(":")[0] for line in resumed.stdout.splitlines() if line.startswith("iteration ")]
    assert lines[-1] == "iteration 4/4" and len(lines) <= 4 - killed_at + 1, resumed.stdout
    a, b = lora(run_folder(tmp_path, "straight")), lora(run_folder(tmp_path, "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run differs from the uninterrupted one"

    # into a running ComfyUI: LoraLoaderModelOnly applies every key and changes the image
    info = stock_loaded(comfy, "sd3")
    target = Path(comfy.output_dir) / "loras" / "host" / "cli_sd3.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_folder(tmp_path, "killed") / "lora_final.safetensors", target)
    log_before = len(comfy.log_text())
    plain, _, _ = run(comfy, sampled(base_graph(info, "sd3"), "flow_cps", seed=5, prefix="host/cli_base"))
    with_lora = base_graph(info, "sd3")
    with_lora["8"] = {"class_type": "LoraLoaderModelOnly",
                      "inputs": {"model": ["1", 0], "lora_name": "host/cli_sd3.safetensors", "strength_model": 1.0}}
    trained, _, _ = run(comfy, sampled(with_lora, "flow_cps", seed=5, model=("8", 0), prefix="host/cli_lora"))
    new_log = comfy.log_text()[log_before:]
    assert "lora key not loaded" not in new_log and "ERROR" not in new_log, new_log[-3000:]
    assert np.abs(np.stack(plain).astype(float) - np.stack(trained).astype(float)).max() > 0


def failure(tmp_path, arguments, **env):
    started = time.monotonic()
    done = subprocess.run([os.environ["COMFYUI_PYTHON"], str(SCRIPT), *arguments], capture_output=True, text=True,
                          timeout=600, env=environment(**env))
    assert done.returncode != 0, done.stdout[-2000:]
    return done.stderr, time.monotonic() - started


def test_bad_arguments_fail_before_any_model_loads(comfy, tmp_path):
    comfyui = ["--comfyui", os.environ["COMFYUI_PATH"], "--cpu", "--custom-node", str(FIXTURES)]
    good = tmp_path / "good.json"
    good.write_text(json.dumps(workflow(comfy, "sd3", "bad")))
    output = ["--output-directory", str(tmp_path / "output")]
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    broken = workflow(comfy, "sd3", "bad")
    broken["1"]["inputs"]["unet_name"] = "no_such_model.safetensors"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    # (arguments, environment, what the error says)
    cases = [
        ([*comfyui, "--workflow", str(tmp_path / "missing.json")], {}, ["--workflow: no such file"]),
        (["--comfyui", str(tmp_path), "--workflow", str(good)], {}, ["is no ComfyUI folder", "COMFYUI_PATH"]),
        ([*comfyui, *output, "--workflow", str(ui)], {}, ["Export (API)"]),
        ([*comfyui, *output, "--workflow", str(path)], {},
         ["UNETLoader (node 1) unet_name = 'no_such_model.safetensors'"]),
        # 2 prompts × group 2 = 4 samples do not split over 3 processes: refused on every rank before loading
        ([*comfyui, *output, "--workflow", str(good)], dict(WORLD_SIZE="3", RANK="0", LOCAL_RANK="0"),
         ["do not split over 3 processes", "one of [1, 2, 4]"]),
        ([*comfyui, *output, "--workflow", str(good), "--rule", "euler", "--group-size", "1000"], {},
         ["FlowCPS_GRPOTrainLoRA (node 24) rule = 'euler': not one of cps, cpws, precise",
          "group_size = 1000: outside 2…64"]),
        ([*comfyui, *output, "--workflow", str(good), "--resume"], {}, ["--resume: no checkpoint at"]),
        ([*comfyui, "--diffusion-model", "x.safetensors", "--reward", "colorfulness", "--prompts", str(good)], {},
         ["--diffusion-model also needs --text-encoder"]),
    ]
    results = side_by_side(*[lambda a=arguments, e=env: failure(tmp_path, a, **e) for arguments, env, _ in cases])
    for (arguments, _, expected), (message, _) in zip(cases, results):
        assert all(text in message for text in expected), (arguments, message[-3000:])
    assert not (tmp_path / "output" / "flow_cps_grpo").exists()  # nothing was created by any of these


def test_every_trainer_setting_has_a_flag(comfy):
    sys.path.insert(0, str(REPO / "scripts"))
    import train_comfy
    spec = comfy.object_info()["FlowCPS_GRPOTrainLoRA"]["input"]["required"]
    links = {"MODEL", "VAE", "REWARD", "LATENT"}
    widgets = {name for name, value in spec.items() if not (isinstance(value[0], str) and value[0] in links)}
    flags = {name for _, name, _, _ in train_comfy.SETTINGS}
    own = {"prompts": "--prompts", "negative": "--negative", "run_name": "--run-name", "resume_from": "--resume"}
    assert widgets == flags | set(own), (widgets - flags - set(own), flags - widgets)
    parser = train_comfy.build_parser()
    assert all(any(a.option_strings == [flag] for a in parser._actions) for flag in own.values())
    for name, class_type in train_comfy.METHOD_NODES.items():  # and every method node's widget
        spec = comfy.object_info()[class_type]["input"]["required"]
        assert set(spec) == {key for _, node, key, _, _ in train_comfy.METHOD_SETTINGS if node == name}, class_type


def test_method_flags_train_mixgrpo_flash_with_a_trust_region_and_diffusion_nft(comfy, tmp_path):
    """The method nodes from the command line: flags add them in front of the workflow's trainer (real SD3 classes);
    the values typed reach the run unchanged, and a bad one is refused before any model loads."""
    mix = workflow(comfy, "sd3", "cli_mix", iterations=2, checkpoint_every=0)
    nft = workflow(comfy, "sd3", "cli_nft", iterations=1, checkpoint_every=0)
    nft["24"]["inputs"]["method"] = ["30", 0]
    nft["30"] = {"class_type": "FlowCPS_MethodDiffusionNFT", "inputs": {
        "sampler": "dpmpp_2m", "nft_beta": 1.0, "kl_beta": 1e-4, "old_policy": "snapshot", "decay_rate": 0.001,
        "decay_max": 0.5, "timestep_fraction": 0.5}}
    bad = command(tmp_path, workflow(comfy, "sd3", "cli_bad"), "--window-schedule", "spiral")[2:]
    _, _, (message, _) = side_by_side(
        lambda: train(tmp_path, mix, "--window-size", "1", "--window-schedule", "progressive", "--window-shift-every",
                      "1", "--ode-sampler", "dpmpp_2m", "--kl-threshold", "2.5e-06", "--ratio-norm", "true",
                      "--steps", "4"),
        lambda: train(tmp_path, nft, "--nft-beta", "0.625"),
        lambda: failure(tmp_path, bad))
    info = json.loads((run_folder(tmp_path, "cli_mix") / "metrics.json").read_text())
    assert info["ode_sampler"] == "dpmpp_2m" and info["kl_mask_threshold"] == 2.5e-06 and info["ratio_norm"] is True
    assert [h["sde_window"] for h in info["history"]] == [[0, 1], [1, 2]]
    assert all(h["first_ratio_min"] == h["first_ratio_max"] == 1.0 for h in info["history"])
    info = json.loads((run_folder(tmp_path, "cli_nft") / "metrics.json").read_text())
    config = read_checkpoint(str(run_folder(tmp_path, "cli_nft") / "checkpoint.safetensors"))["config"]
    assert info["algorithm"] == "diffusion_nft" and config["nft_beta"] == 0.625 and config["nft_old_policy"] == "snapshot"
    assert info["history"][0]["nft_old_decay"] == 0.0 and info["history"][0]["rollout_bytes_per_sample"] > 0
    assert "window_schedule = 'spiral': not one of fixed, sliding, progressive, random" in message


def test_flags_alone_train_a_diffusion_model_with_its_text_encoder(comfy, tmp_path):
    """No workflow: UNETLoader + CLIPLoader (ComfyUI's CLIP-L, random weights) + VAELoader + a reward by name, all
    given by path, and the prompts encoded by that text encoder."""
    from test_grpo_nodes import make_tiny_sd3, random_clip_l
    unet, vae = make_tiny_sd3(comfy, TINY_MMDIT_CLIP_L_FILES)
    clip = os.path.join(comfy.models_dir, "text_encoders", random_clip_l(comfy))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\na blue bird\n")
    done = subprocess.run(
        [os.environ["COMFYUI_PYTHON"], str(SCRIPT), "--comfyui", os.environ["COMFYUI_PATH"], "--cpu",
         "--output-directory", str(tmp_path / "output"),
         "--diffusion-model", os.path.join(comfy.models_dir, "diffusion_models", unet),
         "--text-encoder", clip, "--clip-type", "stable_diffusion",
         "--vae", os.path.join(comfy.models_dir, "vae", vae), "--reward", "colorfulness", "--prompts", str(prompts),
         "--negative", "blurry", "--width", "64", "--height", "64", "--steps", "3", "--scheduler", "simple",
         "--cfg", "2", "--group-size", "2", "--prompts-per-iteration", "2", "--iterations", "1",
         "--sample-batch-size", "2", "--train-batch-size", "2", "--lora-rank", "4", "--lora-alpha", "4",
         "--learning-rate", "0.00012345", "--run-name", "flags"],
        capture_output=True, text=True, timeout=1200, env=environment())
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-6000:])
    metrics = json.loads((run_folder(tmp_path, "flags") / "metrics.json").read_text())
    assert metrics["prompts"] == ["a red fox", "a blue bird"] and metrics["reward"] == "colorfulness"
    assert metrics["history"][0]["reward_std"] > 0  # the rollouts differ
    config = read_checkpoint(str(run_folder(tmp_path, "flags") / "checkpoint.safetensors"))["config"]
    assert config["lr"] == 0.00012345 and config["cfg"] == 2.0  # typed values arrive unchanged
    assert [line.split(":")[0] for line in done.stdout.splitlines() if line.startswith("iteration ")] == [
        "iteration 1/1"]
