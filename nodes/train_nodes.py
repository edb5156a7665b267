"""GRPO LoRA training nodes: the trainer, the LoRA save node and the DenseGRPO exploration calibration."""
from __future__ import annotations

import dataclasses
import json
import os

import comfy.sample
import comfy.samplers
import folder_paths
import torch
from comfy_api.latest import io, ui

from ..samplers import DEFAULT_ETA, ETA_RANGE, LOG_PROB_KINDS, check_eta_range
from ..training.grpo_config import ADVANTAGE_STD_MODES, GRPOConfig, default_lora_alpha
from ..training.latent_shape import rollout_latent_shape
from ..training.methods.dense import SIGMA_RULES
from ..training.toy.model import PIXELS_PER_LATENT
from . import headless
from .lora_presets import AUTO, PRESETS
from .method_nodes import MethodType
from .grpo_run import (calibrate_exploration_in_comfy, is_toy_model, lora_metadata, save_lora_file,
                       train_lora_grpo)
from .reward_nodes import RewardType
from .sampler_nodes import SDE_END_DEFAULT, EtaScheduleType
from .widget_options import ETA_STEP, FINE_STEP, SCALE_STEP

CATEGORY = "flow-cps/training"
MONITOR_SAMPLES = 4  # held-out samples the drift monitor scores per iteration
TRAIN_RULES = ["cps", "cpws", "precise", "flow_sde", "dance_sde"]
SEED_MAX = 0xFFFFFFFFFFFFFFFF  # the stock seed range (KSampler)
GRPO_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}  # widgets of a config field default to it


def eta_input(rules, default, what="Noise amount η of the rule"):
    """One η widget for a rule combo: its range admits every rule's; execute() checks the chosen rule's range."""
    ranges = ", ".join(f"{r} {ETA_RANGE[r][0]:g}–{ETA_RANGE[r][1]:g}" for r in rules)
    return io.Float.Input("eta", default=default, min=min(ETA_RANGE[r][0] for r in rules),
                          max=max(ETA_RANGE[r][1] for r in rules), step=ETA_STEP,
                          tooltip=f"{what}; each rule has its own range ({ranges}).")


def _send_event(event: str, data: dict) -> None:
    run = headless.current()
    if run is not None:  # the command-line trainer: its own progress lines
        run.send_event(event, data)
        return
    from server import PromptServer
    server = PromptServer.instance
    server.send_sync(event, data, server.client_id)


def sampling_settings(rule, eta, sde_start_step, sde_end_step, steps, log_prob_kind, sampler, eta_schedule):
    """rule, η (float or per-step list), window and log-prob kind from the widgets or a flow-cps SAMPLER."""
    if sampler is not None:
        settings = getattr(sampler, "flow_cps", None)
        if settings is None:
            raise ValueError("the trainer's 'sampler' input takes a flow-cps sampler node (Sampler CPS/CPWS/Precise/"
                             "Flow-SDE/Dance-SDE); stock samplers have no log-probability. Disconnect it to use the "
                             "rule and eta widgets.")
        rule, eta, log_prob_kind = settings["rule"], settings["eta"], settings["log_prob_kind"]
        sde_start_step, sde_end_step = settings["window"]
        eta_schedule = settings.get("eta_schedule") or eta_schedule
    etas = eta_schedule.for_steps(steps) if eta_schedule is not None else eta
    window = None
    if sde_start_step > 0 or sde_end_step < steps:
        stop = min(sde_end_step, steps)
        if sde_start_step >= stop:
            raise ValueError(f"SDE window: sde_start_step {sde_start_step} must be below min(sde_end_step, steps) = "
                             f"{stop}")
        window = (sde_start_step, stop)
    return rule, etas, window, log_prob_kind


def run_inputs():
    """The inputs a GRPO rollout needs, shared by the trainer and the calibration node."""
    return [
        io.Model.Input("model", tooltip="A flow-matching model (SD3/3.5, Flux, Qwen-Image, the toy model)."),
        io.Vae.Input("vae", tooltip="Decodes rollouts to images for the reward."),
        RewardType.Input("reward", tooltip="What to maximise (from a flow-cps reward loader or combine node)."),
        io.Latent.Input("latent", tooltip="Sets the image size: e.g. Empty Latent Image (128×128 for the toy model) "
                                          "or Empty SD3 Latent Image. Its content is ignored."),
        io.String.Input("prompts", multiline=True, default="a handwritten 3\na handwritten 7",
                        tooltip="Training prompts, one per line. Rewards such as OCR read the text in quotes."),
        io.String.Input("negative", default="", tooltip="Negative prompt for CFG (empty = unconditional)."),
        io.Float.Input("cfg", default=1.0, min=1.0, max=30.0, step=SCALE_STEP,
                       tooltip="Classifier-free guidance scale in rollouts and training (1 = off, fastest)."),
    ]


def latent_shape(model, latent) -> tuple:
    """Per-sample shape of the rollouts: the LATENT's size, checked against the model before any work."""
    samples = latent["samples"]
    if getattr(samples, "is_nested", False):  # multi-part latents (newer ComfyUI): the host's own handling
        return tuple(comfy.sample.fix_empty_latent_channels(model, samples).shape[1:])
    latent_format = model.get_model_object("latent_format")
    toy = is_toy_model(model)
    inner = model.model.diffusion_model if toy else None
    return rollout_latent_shape(
        samples.shape, latent_channels=latent_format.latent_channels,
        latent_dimensions=getattr(latent_format, "latent_dimensions", 2),
        is_empty=not bool(torch.count_nonzero(samples)),
        fixed_size=(inner.image_size, inner.image_size) if toy else None, pixels_per_latent=PIXELS_PER_LATENT,
        model_name="the toy digit model" if toy else "this model")


def held_out_summary(run_info: dict) -> str:
    """'held-out reward a (base b), <monitor> c (base d)' of the last monitored iteration, or '' without a monitor."""
    base = run_info.get("monitor_baseline")
    last = next((h for h in reversed(run_info.get("history") or []) if h.get("held_out_reward") is not None), None)
    if not base or last is None:
        return ""
    text = f"\nheld-out reward {last['held_out_reward']:.4f} (base model {base['held_out_reward']:.4f})"
    if last.get("monitor") is not None and base.get("monitor") is not None:
        text += f", {run_info.get('monitor')} {last['monitor']:.4f} (base model {base['monitor']:.4f})"
    return text


def finished_summary(finished, iterations: int) -> str:
    """What a resume of a run whose checkpoint held every iteration did ('' when the run trained)."""
    if finished is None:
        return ""
    if not finished:
        return f"\nthe checkpoint already held all {iterations} iterations and its final files: nothing was written"
    return (f"\nthe checkpoint already held all {iterations} iterations; the run had stopped before its final files: "
            f"wrote {', '.join(finished)}")


class GRPOTrainLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_GRPOTrainLoRA",
            display_name="GRPO Train LoRA (flow)",
            category=CATEGORY,
            is_experimental=True,
            is_output_node=True,
            description="Trains a LoRA on a flow-matching MODEL with GRPO against a REWARD: each iteration samples "
                        "group_size images per prompt with a stochastic flow sampler (CPS by default), scores them "
                        "and pushes the LoRA towards the better ones. Shows a live reward chart and the current "
                        "rollout, checkpoints to output/flow_cps_grpo/<run_name>/, and saves the LoRA so far if "
                        "you cancel.",
            inputs=[
                *run_inputs(),
                io.Combo.Input("rule", options=TRAIN_RULES, default="cps",
                               tooltip="Stochastic step rule of the rollouts (CPS keeps the noise level on schedule; "
                                       "flow_sde is Flow-GRPO's SDE)."),
                eta_input(TRAIN_RULES, DEFAULT_ETA["cps"]),
                io.Int.Input("steps", default=10, min=2, max=100, tooltip="Sampling steps per rollout."),
                io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="normal",
                               tooltip="The model's sigma schedule (as in KSampler)."),
                io.Int.Input("sde_start_step", default=0, min=0, max=SDE_END_DEFAULT,
                             tooltip="First stochastic (trained) step; earlier steps are ODE."),
                io.Int.Input("sde_end_step", default=SDE_END_DEFAULT, min=1, max=SDE_END_DEFAULT,
                             tooltip="Stochastic steps stop before this one (values ≥ steps = until the end)."),
                io.Int.Input("group_size", default=8, min=2, max=64,
                             tooltip="Images per prompt per iteration (GRPO compares within a group)."),
                io.Int.Input("prompts_per_iteration", default=2, min=1, max=64,
                             tooltip="Prompts per iteration, taken from the list in turn."),
                io.Int.Input("iterations", default=20, min=1, max=100000, tooltip="Total GRPO iterations."),
                io.Int.Input("lora_rank", default=GRPO_DEFAULTS["lora_rank"], min=1, max=256, tooltip="LoRA rank."),
                io.Float.Input("lora_alpha", default=default_lora_alpha(GRPO_DEFAULTS["lora_rank"]), min=0.01,
                               max=1024.0, step=SCALE_STEP,
                               tooltip="LoRA alpha (scale = alpha / rank). The default is 2 × the default rank, the "
                                       "reference trainers' convention (rank 32 / alpha 64 on SD3.5, 64 / 128 on "
                                       "Flux): set it with the rank."),
                io.String.Input("lora_targets", default=AUTO,
                                tooltip="Which Linear layers get a LoRA: 'auto' = the usual attention (and MLP) layers "
                                        "of the model family (" + ", ".join(PRESETS) + "), or fnmatch patterns of "
                                        "module paths inside the diffusion model, comma-separated (e.g. "
                                        "'*attn.qkv, *attn.proj')."),
                io.Float.Input("learning_rate", default=1e-3, min=1e-8, max=1.0, step=FINE_STEP,
                               tooltip="AdamW learning rate."),
                io.Float.Input("beta", default=0.1, min=0.0, max=10.0, step=FINE_STEP,
                               tooltip="KL penalty weight against the model without the LoRA (0 = off, faster). "
                                       "0.1 keeps the toy model's digits legible while it learns. The KL is the "
                                       "exact per-element Gaussian one; flow_grpo's is this × Δt, so divide a β "
                                       "from a flow_grpo config by the step size Δt."),
                io.Float.Input("clip_range", default=1e-2, min=1e-8, max=1.0, step=FINE_STEP,
                               tooltip="PPO clip range ε of the probability ratio."),
                io.Combo.Input("log_prob_kind", options=list(LOG_PROB_KINDS), default="gaussian",
                               tooltip="Log-probability of a step: per-element Gaussian or CPS eq. 14."),
                io.Boolean.Input("dense_rewards", default=False,
                                 tooltip="DenseGRPO per-step rewards by ODE look-ahead (one extra rollout and reward "
                                         "per step: slower, finer credit assignment)."),
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate="fixed",
                             tooltip="Seed of the LoRA init, rollouts and step selection (same seed = same run)."),
                io.Int.Input("checkpoint_every", default=5, min=0, max=100000,
                             tooltip="Save a resumable checkpoint every N iterations (0 = only at the end)."),
                io.String.Input("run_name", default="grpo",
                                tooltip="Folder under output/flow_cps_grpo/ (a new run never overwrites an earlier "
                                        "one: it goes to <run_name>_2, _3, …)."),
                io.String.Input("resume_from", default="",
                                tooltip="Empty = new run; 'latest' = the newest checkpoint of this run_name that "
                                        "trained an iteration; or a checkpoint (or run folder) inside "
                                        "output/flow_cps_grpo/, relative to the output folder, e.g. "
                                        "flow_cps_grpo/my_run/checkpoint.safetensors. The settings set now win "
                                        "(learning rate etc.). Set iterations to the new total."),
                io.Int.Input("sample_batch_size", default=4, min=1, max=256,
                             tooltip="Samples per rollout forward (memory of sampling; the update does not change). "
                                     "Each micro-batch is decoded and scored as soon as it is sampled."),
                io.Int.Input("train_batch_size", default=4, min=1, max=256,
                             tooltip="Samples per training forward/backward: the training memory grows with it, the "
                                     "update does not change. Equal to sample_batch_size trains exactly the rollout's "
                                     "batches; another size costs one extra forward per trained step."),
                io.Combo.Input("gradient_checkpointing", options=["auto", "on", "off"], default="auto",
                               tooltip="Recompute each block's activations in backward: far less memory for about "
                                       "a third more training compute. auto = on for every model but the toy."),
                io.Combo.Input("train_dtype", options=["float32", "bfloat16", "float16"], default="float32",
                               tooltip="Autocast for every model forward of the run (rollouts and training): "
                                       "float32 = none, the model runs as ComfyUI loaded it. LoRA weights, optimizer "
                                       "state and log-probs stay float32."),
                # optional widgets: an API workflow exported before they existed still runs (with the defaults)
                io.Float.Input("min_train_std", default=GRPO_DEFAULTS["min_train_std"], min=0.0, max=1.0,
                               step=FINE_STEP, optional=True,
                               tooltip="Steps whose noise std (in units of the initial noise) is below this are "
                                       "sampled but not trained. The last step into σ_min (e.g. t' = 0.001 with the "
                                       "normal scheduler) has std ≈ 0.001 under CPS/CPWS/Precise: its Gaussian "
                                       "log-prob weighs it by 1/std², and trained it alone decides the update (a "
                                       "grey haze on the toy). 0 = train every stochastic step, as the reference "
                                       "trainers do."),
                io.Combo.Input("advantage_std", options=list(ADVANTAGE_STD_MODES),
                               default=GRPO_DEFAULTS["advantage_std"], optional=True,
                               tooltip="Std that normalises the advantages (reward − group mean): 'group' = each "
                                       "prompt's own group (DanceGRPO, Precise); 'global' = all samples of the "
                                       "iteration (flow_grpo's global_std)."),
                io.Clip.Input("clip", optional=True,
                              tooltip="The model's text encoder (as for CLIP Text Encode). Not needed for the toy "
                                      "digit model."),
                io.Conditioning.Input("positive", optional=True,
                                      tooltip="Instead of encoding the prompt lines: one conditioning entry per prompt "
                                              "line (Conditioning (Combine) them in order) or one for all."),
                io.Conditioning.Input("negative_conditioning", optional=True,
                                      tooltip="Instead of encoding 'negative': the negative CONDITIONING."),
                io.Sampler.Input("sampler", optional=True,
                                 tooltip="A flow-cps sampler node: overrides rule, eta, SDE window, log_prob_kind."),
                EtaScheduleType.Input("eta_schedule", optional=True,
                                      tooltip="Per-step η (e.g. from DenseGRPO calibration); overrides eta."),
                RewardType.Input("monitor", optional=True,
                                 tooltip="Held-out drift monitor: a measure the reward does not see (e.g. Reward: "
                                         "Weight-free low_noise or an aesthetic model). Each iteration 4 fixed-seed "
                                         "samples of the LoRA that is saved (its EMA) are scored with it and with the "
                                         "reward, logged and kept in run_info; the previews show them. The toy model "
                                         "uses paper_haze when nothing is connected."),
                MethodType.Input("method", optional=True,
                                 tooltip="A training-method node: GRPO Method: MixGRPO Window (stochastic window, "
                                         "stock solver outside it), Trust Region (FlowDPPO KL mask, GRPO-Guard) or "
                                         "DiffusionNFT (instead of GRPO). Its settings override the widgets they "
                                         "name; chain them to combine."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The input model with the trained LoRA applied."),
                io.LoraModel.Output(display_name="lora", tooltip="The trained LoRA (works with the stock Save LoRA)."),
                io.Image.Output(display_name="reward_curve", tooltip="Mean reward (± std) per iteration."),
                io.String.Output(display_name="run_info", tooltip="JSON: settings and per-iteration metrics."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, vae, reward, latent, prompts, negative, cfg, rule, eta, steps, scheduler,
                sde_start_step, sde_end_step, group_size, prompts_per_iteration, iterations, lora_rank, lora_alpha,
                lora_targets, learning_rate, beta, clip_range, log_prob_kind, dense_rewards, seed, checkpoint_every,
                run_name, resume_from, sample_batch_size, train_batch_size, gradient_checkpointing, train_dtype,
                min_train_std=GRPO_DEFAULTS["min_train_std"], advantage_std=GRPO_DEFAULTS["advantage_std"],
                clip=None, positive=None, negative_conditioning=None, sampler=None,
                eta_schedule=None, monitor=None, method=None) -> io.NodeOutput:
        shape = latent_shape(model, latent)  # before any work: a latent the model cannot take fails here
        rule, etas, window, log_prob_kind = sampling_settings(rule, eta, sde_start_step, sde_end_step, steps,
                                                              log_prob_kind, sampler, eta_schedule)
        check_eta_range(rule, etas)
        settings = dict(prompts=["-"], prompts_per_iteration=prompts_per_iteration, group_size=group_size,
                        steps=steps, rule=rule, eta=etas, sde_window=window, cfg=cfg, log_prob_kind=log_prob_kind,
                        beta=beta, clip_range=clip_range, dense_rewards=dense_rewards, lr=learning_rate,
                        lora_rank=lora_rank, lora_alpha=lora_alpha, iterations=iterations, seed=seed,
                        sample_batch_size=sample_batch_size, train_batch_size=train_batch_size,
                        gradient_checkpointing=gradient_checkpointing == "on" or (
                            gradient_checkpointing == "auto" and not is_toy_model(model)),
                        train_dtype=train_dtype, checkpoint_every=checkpoint_every,
                        min_train_std=min_train_std, advantage_std=advantage_std,
                        monitor_samples=MONITOR_SAMPLES if monitor is not None or is_toy_model(model) else 0)
        if method is not None:
            settings.update(method["settings"])
        config = GRPOConfig(**settings)
        result = train_lora_grpo(model=model, vae=vae, reward=reward, prompts_text=prompts, negative_text=negative,
                                 clip=clip, latent_shape=shape, config=config,
                                 scheduler=scheduler, lora_targets=lora_targets, run_name=run_name,
                                 resume_from=resume_from, node_id=cls.hidden.unique_id, send_event=_send_event,
                                 positive=positive, negative=negative_conditioning, monitor=monitor)
        info = json.dumps(result.run_info, default=str)
        last = result.run_info["history"][-1] if result.run_info["history"] else {}
        text = (f"{result.run_info['iterations']} iterations, reward {last.get('reward_mean', float('nan')):.4f}; "
                f"saved in {result.run_info['run_folder']}" + held_out_summary(result.run_info)
                + finished_summary(result.finished, result.run_info['iterations']))
        chart = result.chart
        # the chart data also rides on the node's UI output, so a cached re-run or a reopened page redraws it
        return io.NodeOutput(result.model, result.lora, result.curve, info,
                             ui={"text": [text], "flow_cps_chart": [chart]})


class SaveLoRAWithMetadata(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_SaveLoRA",
            display_name="Save LoRA (flow-cps)",
            category=CATEGORY,
            is_output_node=True,
            description="Saves a LORA_MODEL to the output folder's loras/ (like the stock Save LoRA; ComfyUI lists "
                        "output/loras in every LoRA loader) as safetensors in the format Load LoRA (model only) "
                        "reads with no unmatched keys, with the GRPO run's settings as metadata.",
            inputs=[
                io.LoraModel.Input("lora", tooltip="The trained LoRA."),
                io.String.Input("filename_prefix", default="flow_cps/grpo_lora",
                                tooltip="Path under output/loras (a counter is appended); Load LoRA lists it."),
                io.String.Input("run_info", optional=True, force_input=True,
                                tooltip="The trainer's run_info, stored as metadata (base model, rule, η, reward, "
                                        "iterations)."),
            ],
            outputs=[io.String.Output(display_name="path", tooltip="The written file.")],
        )

    @classmethod
    def execute(cls, lora, filename_prefix, run_info=None) -> io.NodeOutput:
        folder = os.path.join(folder_paths.get_output_directory(), "loras")  # honours --output-directory
        full_folder, filename, counter, _, _ = folder_paths.get_save_image_path(filename_prefix, folder)
        path = os.path.join(full_folder, f"{filename}_{counter:05}_.safetensors")
        metadata = lora_metadata(json.loads(run_info)) if run_info else {}
        save_lora_file(lora, path, metadata)
        return io.NodeOutput(path, ui=ui.PreviewText(f"saved {path}"))


class CalibrateExploration(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_CalibrateExploration",
            display_name="DenseGRPO Exploration Calibration",
            category=CATEGORY,
            is_experimental=True,
            description="DenseGRPO's exploration calibration (arXiv 2601.20218, Alg. 1): samples groups with "
                        "per-step ODE look-ahead rewards and nudges each step's noise σ_t up when its reward changes "
                        "are balanced between better and worse, down otherwise. Outputs a per-step η schedule for the "
                        "flow sampler nodes and the GRPO trainer (same steps and scheduler).",
            inputs=[
                *run_inputs(),
                io.Combo.Input("rule", options=list(SIGMA_RULES), default="flow_sde",
                               tooltip="An SDE rule with a per-step σ_t (DenseGRPO calibrates σ_t)."),
                eta_input(SIGMA_RULES, DEFAULT_ETA["flow_sde"],
                          "Starting η (converted to the starting σ_t per step)"),
                io.Int.Input("steps", default=10, min=2, max=100, tooltip="Sampling steps (as in the trainer)."),
                io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="normal",
                               tooltip="The sigma schedule (as in the trainer)."),
                io.Int.Input("group_size", default=8, min=2, max=64, tooltip="Samples per prompt."),
                io.Int.Input("prompts_per_iteration", default=2, min=1, max=64, tooltip="Prompts per round."),
                io.Int.Input("iterations", default=5, min=1, max=1000, tooltip="Calibration rounds."),
                io.Float.Input("eps1", default=2.0, min=0.0, max=1000.0, step=0.5,
                               tooltip="Balance threshold ε1: |#(ΔR>0) − #(ΔR<0)| below it raises σ_t."),
                io.Float.Input("eps2", default=0.01, min=0.0, max=1.0, step=FINE_STEP,
                               tooltip="Step size ε2 of σ_t."),
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate="fixed",
                             tooltip="Seed of the calibration rollouts."),
                io.Clip.Input("clip", optional=True, tooltip="The model's text encoder (not needed for the toy)."),
            ],
            outputs=[EtaScheduleType.Output(display_name="eta_schedule",
                                            tooltip="Per-step η for the sampler nodes and the trainer.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, vae, reward, latent, prompts, negative, cfg, rule, eta, steps, scheduler, group_size,
                prompts_per_iteration, iterations, eps1, eps2, seed, clip=None) -> io.NodeOutput:
        shape = latent_shape(model, latent)
        check_eta_range(rule, eta)
        config = GRPOConfig(prompts=["-"], prompts_per_iteration=prompts_per_iteration, group_size=group_size,
                            steps=steps, rule=rule, eta=eta, cfg=cfg, seed=seed)
        schedule = calibrate_exploration_in_comfy(
            model=model, vae=vae, reward=reward, prompts_text=prompts, negative_text=negative, clip=clip,
            latent_shape=shape, config=config, scheduler=scheduler, iterations=iterations,
            eps1=eps1, eps2=eps2, node_id=cls.hidden.unique_id)
        text = f"{rule} η per step: " + ", ".join(f"{v:.3f}" for v in schedule.values)
        return io.NodeOutput(schedule, ui=ui.PreviewText(text))


NODES = [GRPOTrainLoRA, SaveLoRAWithMetadata, CalibrateExploration]
