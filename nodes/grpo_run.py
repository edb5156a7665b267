"""One GRPO LoRA training run inside ComfyUI: prompts → conditioning, LoRA wrappers, the CFGGuider-driven loop,
progress/chart events, atomic checkpoints, and saving what was trained when the run stops early."""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Callable, List, Optional

import comfy.samplers
import comfy.sd
import comfy.utils
import folder_paths
import torch
from safetensors.torch import save_file

from ..training import run_folders
from ..training.checkpoint import CHECKPOINT_NAME, atomic_write, trained_iterations
from ..training.grpo_config import GRPOConfig, default_lora_alpha
from ..training.methods import make_trainer as make_trainer_for
from ..training.methods.dense import calibrate_exploration
from ..training.rewards import weight_free_reward
from ..training.toy.model import ToyDiT
from ..training.toy.prompts import encode_prompts as toy_encode
from ..training.trainer import GRPOTrainer, reward_curve
from .comfy_sampling import require_flow_model
from . import headless
from .lora_presets import resolve_targets
from .reward_placement import managed_by_comfy
from .grpo_host import HostLoRA, HostRun, PromptConds, train_grpo_in_comfy, trainable_clone

CHART_EVENT = "flow_cps.grpo"
LORA_FINAL = "lora_final.safetensors"
CURVE = "reward_curve.png"  # the command line's (the node has its reward_curve output)
log = logging.getLogger("flow_cps")


def parse_prompts(text: str) -> List[str]:
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError("no training prompt: write one prompt per line in 'prompts'")
    return list(dict.fromkeys(prompts))


def is_toy_model(model) -> bool:
    return isinstance(getattr(model.model, "diffusion_model", None), ToyDiT)


def _clone(value):
    if torch.is_tensor(value):
        return value.clone()
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    return value


def encode_text(text: str, clip, model) -> list:
    """CONDITIONING for one prompt: with the connected CLIP like CLIPTextEncode, or the toy model's encoder."""
    if clip is not None:
        return _clone(clip.encode_from_tokens_scheduled(clip.tokenize(text)))
    if is_toy_model(model):
        context = toy_encode([text])
        return [[context, {"pooled_output": context[:, 0]}]]
    raise ValueError("connect the model's text encoder to 'clip' (e.g. from Load Checkpoint or DualCLIPLoader); "
                     "only the toy digit model can be trained without one")


def prompt_conditioning(prompts: List[str], negative_text: str, clip, model, positive=None,
                        negative=None) -> List[PromptConds]:
    """One (positive, negative) CONDITIONING per prompt: connected CONDITIONING wins over text encoding.

    A connected ``positive`` holds one entry per prompt line (e.g. built with Conditioning (Combine)) or one entry
    shared by all prompts; the prompt text is still what the reward reads."""
    if positive is not None:
        entries = [[entry] for entry in positive]
        if len(entries) == 1:
            entries = entries * len(prompts)
        if len(entries) != len(prompts):
            raise ValueError(f"'positive' has {len(entries)} conditioning entries for {len(prompts)} prompt lines: "
                             "give one entry per prompt (in order) or a single one for all")
        positives = [_clone(e) for e in entries]
    else:
        positives = [encode_text(p, clip, model) for p in prompts]
    negative_cond = _clone(negative) if negative is not None else encode_text(negative_text, clip, model)
    return [PromptConds(p, pos, negative_cond) for p, pos in zip(prompts, positives)]


def model_description(model) -> str:
    inner = getattr(model.model, "diffusion_model", None)
    return f"{type(model.model).__name__}/{type(inner).__name__}" if inner is not None else type(model.model).__name__


def lora_metadata(run_info: dict) -> dict:
    keys = ("base_model", "rule", "eta", "reward", "iterations", "prompts", "lora_rank", "lora_alpha")
    return {"flow_cps." + k: json.dumps(run_info[k]) if not isinstance(run_info[k], str) else run_info[k]
            for k in keys if k in run_info}


def save_lora_file(lora_sd: dict, path: str, metadata: Optional[dict] = None) -> str:
    """Atomic safetensors write (temporary file in the same folder, fsynced, then renamed)."""
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in lora_sd.items()}
    return atomic_write(path, lambda temporary: save_file(tensors, temporary, metadata=metadata))


def _preview(images: torch.Tensor, max_images: int = 8):
    from PIL import Image
    if images.dim() == 5:  # videos [B, T, H, W, C]: their middle frames
        images = images[:, images.shape[1] // 2]
    strip = torch.cat(list(images[:max_images].float().clamp(0, 1).cpu()), dim=1)
    if strip.shape[-1] == 1:
        strip = strip.expand(-1, -1, 3)
    return Image.fromarray((strip * 255).round().byte().numpy())


def run_family(run_name: str) -> List[str]:
    """Existing folders of a run name: output/flow_cps_grpo/<name>, <name>_2, <name>_3, …"""
    return run_folders.run_family(folder_paths.get_output_directory(), run_name)


def new_run_folder(run_name: str) -> str:
    """A folder no earlier run wrote to, so a new run never overwrites another run's checkpoint or LoRA."""
    return run_folders.new_run_folder(folder_paths.get_output_directory(), run_name)


def resolve_resume(resume_from: str, run_name: str) -> Optional[str]:
    """None for a new run; 'latest' = the newest checkpoint of this run name that holds a trained iteration; else a
    checkpoint inside output/flow_cps_grpo/ (relative to the output folder, or absolute); see training.run_folders."""
    return run_folders.resolve_resume(folder_paths.get_output_directory(), resume_from, run_name)


def save_stopped_run(trainer: GRPOTrainer, run_folder: str, checkpoint: str, run_info: dict) -> List[str]:
    """After cancel or an error: nothing trained is lost (the LoRA so far and a resumable checkpoint), but a run that
    trained no iteration, or whose LoRA went non-finite, writes nothing (so 'latest' never picks it; the last good
    checkpoint stays). Returns the saved files ([] = nothing saved). Never raises: the original error is what the
    user needs to see."""
    if not headless.writes_files():
        return []  # rank 0 of a headless run saves it
    try:
        skipped = trainer.save_stopped(checkpoint)
        if skipped is not None:
            log.warning("flow-cps GRPO stopped at iteration %d: %s, so no checkpoint or LoRA was saved in %s",
                        trainer.iteration, skipped, run_folder)
            return []
        saved = save_lora_file(trainer.export_lora_state_dict(), os.path.join(
            run_folder, f"lora_stopped_at_{trainer.iteration:05d}.safetensors"),
            lora_metadata({**run_info, "iterations": trainer.iteration}))
    except Exception:
        log.exception("flow-cps GRPO: saving the stopped run failed")
        return []
    log.warning("flow-cps GRPO stopped at iteration %d; saved %s and %s (resume_from 'latest')",
                trainer.iteration, saved, checkpoint)
    return [saved, checkpoint]


def stopped_event(chart: dict, saved: List[str], error: BaseException) -> dict:
    """The chart event a stopped run sends: the chart so far (:func:`chart_payload`), what was saved and how to
    continue (the node shows it). ``saved`` = [LoRA, checkpoint], or [] when nothing was saved."""
    import comfy.model_management
    reason = "cancelled" if isinstance(error, comfy.model_management.InterruptProcessingException) else "failed"
    history = chart["history"]
    iteration = int(history[-1][0]) + 1 if history else 0
    return {**chart, "stopped": {"reason": reason, "iteration": iteration, "saved": saved,
                                 "run_name": chart["run"], "resume_from": "latest" if saved else ""}}


def chart_payload(node_id, run_name: str, trainer: GRPOTrainer, run_info: dict) -> dict:
    """What the live chart draws (web/chart_model.js applyEvent): the reward per iteration, its range, and the
    drift monitor's series."""
    return {"node": node_id, "run": run_name, "iterations": trainer.config.iterations,
            "history": chart_history(trainer), "reward": run_info["reward"], "value_range": run_info["value_range"],
            "monitor": chart_monitor(trainer, run_info["monitor"], run_info["monitor_range"])}


def chart_history(trainer: GRPOTrainer) -> list:
    return [[h["iteration"], h["reward_mean"], h["reward_std"]] for h in trainer.history]


def chart_monitor(trainer: GRPOTrainer, name: Optional[str], value_range: Optional[list]) -> Optional[dict]:
    """The drift monitor's series for the live chart: the base model's held-out scores and each monitored
    iteration's [iteration, held-out reward, monitor]; None when the run has no monitor. A monitor that declares a
    ``noticeable_change`` gets an axis at least that far either side of the base model's value, so a change
    nobody could see does not fill the chart."""
    if trainer.config.monitor_samples < 1:
        return None
    base = trainer.monitor_baseline or {}
    noticeable = getattr(trainer.monitor_fn, "noticeable_change", None)
    return {"name": name, "value_range": value_range, "noticeable_change": noticeable,
            "baseline": [base.get("held_out_reward"), base.get("monitor")],
            "points": [[h["iteration"], h["held_out_reward"], h.get("monitor")] for h in trainer.history
                       if h.get("held_out_reward") is not None]}


def reward_value_range(reward) -> Optional[list]:
    """A reward's declared ``value_range`` as JSON ([low, high], None = unbounded), or None when it declares none."""
    known = getattr(reward, "value_range", None)
    if not known or len(known) != 2:
        return None
    bounds = [float(v) if v is not None and math.isfinite(float(v)) else None for v in known]
    return bounds if any(v is not None for v in bounds) else None


def prepare_run(model, prompts_text: str, config: GRPOConfig, scheduler: str, what: str):
    """Checks the model, sets the config's prompts and returns (prompts, the model's sigmas for config.steps)."""
    require_flow_model(model.get_model_object("model_sampling"), what)
    config.prompts = parse_prompts(prompts_text)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, config.steps)
    return config.prompts, sigmas.cpu()


@dataclass
class GRPORunResult:
    model: object
    lora: dict
    curve: torch.Tensor
    run_info: dict
    chart: dict  # the live chart's last state (chart_payload), also sent with the node's UI output
    # a resume whose checkpoint held every iteration: the final files it wrote (None: the run trained)
    finished: Optional[List[str]] = None


def default_monitor(monitor, model):
    """The held-out drift monitor's measure: the connected REWARD, else for the toy model the paper haze (the grey
    background an over-trained toy LoRA paints), else none (the held-out samples are then scored by the reward)."""
    if monitor is None and is_toy_model(model):
        return weight_free_reward("paper_haze")
    return monitor


def train_lora_grpo(*, model, vae, reward, prompts_text: str, negative_text: str, clip, latent_shape,
                    config: GRPOConfig, scheduler: str, lora_targets: str, run_name: str, resume_from: str,
                    node_id: Optional[str], send_event: Callable[[str, dict], None], positive=None,
                    negative=None, monitor=None) -> GRPORunResult:
    prompts, sigmas = prepare_run(model, prompts_text, config, scheduler, "the GRPO trainer")
    reward = managed_by_comfy(reward)
    monitor = managed_by_comfy(default_monitor(monitor, model)) if config.monitor_samples else None
    preset, targets = resolve_targets(lora_targets, model.model.diffusion_model)
    config.lora_targets = targets
    resume = resolve_resume(resume_from, run_name)
    cli_run = headless.current()  # the command line chose the folder, the same on every rank
    run_folder = (cli_run.run_folder if cli_run is not None else
                  os.path.dirname(resume) if resume else new_run_folder(run_name))  # resuming continues in place
    if not run_folders.is_run_folder(run_folder, folder_paths.get_output_directory()):  # resolve_resume ensures it
        raise RuntimeError(f"flow-cps: refusing to write a run outside output/flow_cps_grpo/ ({run_folder})")
    checkpoint = os.path.join(run_folder, CHECKPOINT_NAME)
    done = trained_iterations(resume) if resume else 0
    if done > config.iterations:
        raise ValueError(f"resume_from: {resume} already holds {done} iterations and iterations is "
                         f"{config.iterations} (the total, not the number to add): set iterations to {done} to "
                         f"finish that run, or above {done} to train more")
    run_info = {"base_model": model_description(model), "rule": config.rule, "eta": config.eta,
                "reward": getattr(reward, "name", type(reward).__name__), "prompts": prompts,
                "lora_rank": config.lora_rank, "lora_alpha": config.lora_alpha, "lora_preset": preset,
                "lora_targets": list(targets), "run_folder": run_folder,
                "value_range": reward_value_range(reward), "ema_decay": config.ema_decay,
                "monitor": getattr(monitor, "name", None) if monitor is not None else None,
                "monitor_range": reward_value_range(monitor) if monitor is not None else None,
                "monitor_samples": config.monitor_samples, "algorithm": config.algorithm,
                "sde_window": config.sde_window, "window_schedule": config.window_schedule,
                "ode_sampler": config.ode_sampler, "kl_mask_threshold": config.kl_mask_threshold,
                "ratio_norm": config.ratio_norm, "clip_range": config.clip_range,
                "nft_sampler": config.nft_sampler if config.algorithm == "diffusion_nft" else None}

    with torch.inference_mode(False), torch.enable_grad():
        conds = prompt_conditioning(prompts, negative_text, clip, model, positive, negative)
        patched, run_info["model_copy"] = trainable_clone(model)
        lora = HostLoRA(patched, targets, config.lora_rank,
                        config.lora_alpha if config.lora_alpha is not None else default_lora_alpha(config.lora_rank),
                        config.seed)
        patched.model.requires_grad_(False)
        progress = comfy.utils.ProgressBar(config.iterations, node_id=node_id)

        def report(trainer, metrics):
            send_event(CHART_EVENT, {**chart_payload(node_id, run_name, trainer, run_info), "kl": metrics.get("kl"),
                                     "clip_fraction": metrics.get("clip_fraction")})
            preview = ("JPEG", _preview(trainer.last_images), 768) if trainer.last_images is not None else None
            progress.update_absolute(trainer.iteration, config.iterations, preview=preview)

        def run(trainer: GRPOTrainer):
            if resume:
                trainer.load_checkpoint(resume)
                log.info("flow-cps GRPO: resumed %s at iteration %d", resume, trainer.iteration)
                if trainer.history:
                    report(trainer, trainer.history[-1])
            try:
                trainer.train(checkpoint_path=checkpoint, on_iteration=lambda m: report(trainer, m))
            except BaseException as error:
                saved = save_stopped_run(trainer, run_folder, checkpoint, run_info)
                try:
                    send_event(CHART_EVENT, stopped_event(chart_payload(node_id, run_name, trainer, run_info),
                                                          saved, error))
                except Exception:
                    log.exception("flow-cps GRPO: reporting the stopped run to the browser failed")
                raise
            run_info["iterations"] = trainer.iteration
            run_info["history"] = trainer.history
            run_info["world_size"] = trainer.world.size  # processes that shared each iteration's samples
            chart.update(chart_payload(None, run_name, trainer, run_info))

        trainers, chart = [], {}

        def make_trainer(policy):
            trainers.append(make_trainer_for(policy, reward, config, log=log.info, times=sigmas, monitor=monitor))
            return trainers[-1]

        host = HostRun(make_trainer=make_trainer, prompts=conds, vae=vae, lora=lora, run=run)
        train_grpo_in_comfy(patched, host, latent_shape, sigmas, config.seed)
        lora_sd = trainers[-1].export_lora_state_dict()  # the EMA of the LoRA when it is on
        if trainers[-1].monitor_baseline is not None:
            run_info["monitor_baseline"] = dict(trainers[-1].monitor_baseline)

    what = "DiffusionNFT" if config.algorithm == "diffusion_nft" else "GRPO"
    curve = reward_curve(run_info["history"], f"{what} reward ({config.rule}, {run_info['reward']})",
                         run_info["value_range"])
    names, finished = final_files(cli_run is not None), None
    if resume and done == config.iterations:  # nothing left to train: write what a kill left unwritten
        names = finished = run_folders.stale_final_files(run_folder, names, done)
        log.warning("flow-cps GRPO: %s already holds all %d iterations; %s", resume, done,
                    f"the run stopped before its final files: writing {', '.join(names)}" if names else
                    "its final files are all written, nothing to write")
    if headless.writes_files():
        written = write_final_files(run_folder, names, lora_sd, run_info, curve)
        if cli_run is not None:  # the command line lists them (a run that trained also wrote its checkpoint)
            cli_run.written.extend(written + ([checkpoint] if finished is None else []))
    trained, _ = comfy.sd.load_lora_for_models(model, None, lora_sd, 1.0, 0)
    chart.pop("node", None)
    return GRPORunResult(trained, lora_sd, curve, run_info, chart, finished)


def final_files(command_line: bool) -> List[str]:
    """The files a run writes after its last checkpoint (the command line also writes the reward curve)."""
    return [LORA_FINAL, "metrics.json", *([CURVE] if command_line else [])]


def write_final_files(run_folder: str, names: List[str], lora_sd: dict, run_info: dict, curve) -> List[str]:
    """Each of ``names`` (see final_files) atomically, each recording the iterations it holds; returns the paths."""
    written = []
    for name in names:
        path = os.path.join(run_folder, name)
        if name == LORA_FINAL:
            save_lora_file(lora_sd, path, lora_metadata(run_info))
        elif name == "metrics.json":
            run_folders.write_json(path, run_info)
        elif name == CURVE:
            run_folders.write_reward_curve(path, curve, run_info["iterations"])
        else:
            raise ValueError(f"not a final file of a run: {name}")
        written.append(path)
    return written


def calibrate_exploration_in_comfy(*, model, vae, reward, prompts_text: str, negative_text: str, clip, latent_shape,
                                   config: GRPOConfig, scheduler: str, iterations: int, eps1: float, eps2: float,
                                   node_id: Optional[str]):
    """DenseGRPO Alg. 1 on a ComfyUI model: returns the calibrated per-step η schedule (samplers.EtaSchedule)."""
    prompts, sigmas = prepare_run(model, prompts_text, config, scheduler, "the exploration calibration")
    reward = managed_by_comfy(reward)
    result = {}
    with torch.inference_mode(False), torch.enable_grad():
        conds = prompt_conditioning(prompts, negative_text, clip, model)
        patched, _ = trainable_clone(model)
        lora = HostLoRA(patched, ["*"], 1, 1.0, config.seed)  # zero update: the trainer API wants parameters
        progress = comfy.utils.ProgressBar(iterations, node_id=node_id)
        done = [0]

        def on_log(message):
            log.info("flow-cps %s", message)
            done[0] += 1
            progress.update_absolute(done[0], iterations)

        def run(trainer):
            result["schedule"] = calibrate_exploration(trainer, iterations=iterations, eps1=eps1, eps2=eps2,
                                                       log=on_log)

        host = HostRun(make_trainer=lambda policy: GRPOTrainer(policy, reward, config, times=sigmas),
                       prompts=conds, vae=vae, lora=lora, run=run)
        train_grpo_in_comfy(patched, host, latent_shape, sigmas, config.seed)
    return result["schedule"]
