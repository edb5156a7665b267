"""Nodes for comparing the noise artifacts of samplers: a labelled grid, a noise estimate and the Fig. 2 plot."""
from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.samplers
import latent_preview
import torch
from comfy_api.latest import io, ui

from ..samplers.compare import noise_level_chart, parse_floats, parse_names, parse_rule_specs
from ..samplers.image_noise import estimate_noise, estimate_noise_chw
from ..samplers.plots import label_grid
from .widget_options import SCALE_STEP
from .comfy_sampling import ksampler_object, require_flow_model, sampler_accepts_eta

CATEGORY = "flow-cps/compare"


def render_sampler_grid(model, positive, negative, latent, vae, seed, steps, cfg, scheduler, sampler_names, etas):
    """Sample the first latent of ``latent`` with every sampler × η (same seed), decode, and lay out a grid whose
    cells carry the residual-noise estimate of the sampled latent (the noise a sampler leaves is latent noise; an
    upscaling decoder would hide it from a pixel-level estimate). Samplers without η are run once and repeated."""
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"][:1])
    noise = comfy.sample.prepare_noise(latent_image, seed)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
    noise_mask = latent.get("noise_mask")
    cache, images, latents = {}, [], []
    for name in sampler_names:
        if name.startswith(("flow_", "dance_")):
            require_flow_model(model.get_model_object("model_sampling"), name)
        for eta in etas:
            key = (name, eta if sampler_accepts_eta(name) else None)
            if key not in cache:
                samples = comfy.sample.sample_custom(
                    model, noise, cfg, ksampler_object(name, key[1]), sigmas, positive, negative, latent_image,
                    noise_mask=noise_mask, callback=latent_preview.prepare_callback(model, steps), seed=seed)
                cache[key] = (vae.decode(samples)[:1].float().cpu(), samples[:1].float().cpu())
            images.append(cache[key][0])
            latents.append(cache[key][1])
    images = torch.cat(images)
    captions = [f"{float(v):.3f}" for v in estimate_noise_chw(torch.cat(latents))]
    col_labels = [f"eta {eta:g}" for eta in etas]
    row_labels = [name if sampler_accepts_eta(name) else f"{name} (no eta)" for name in sampler_names]
    return label_grid(images, len(sampler_names), len(etas), row_labels, col_labels, captions,
                      title=f"seed {seed}, {steps} steps, {scheduler}, cfg {cfg:g}; caption = latent noise")


class FlowSamplerGrid(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_SamplerGrid",
            display_name="Sampler × η Grid",
            category=CATEGORY,
            description="Renders the same model, prompt and seed with every listed sampler at every listed η into one "
                        "labelled image grid, each cell captioned with the residual-noise estimate of its latent. Use it to see the "
                        "noise Flow-SDE leaves and CPS removes.",
            inputs=[
                io.Model.Input("model", tooltip="The model to sample (flow samplers need a flow model)."),
                io.Conditioning.Input("positive", tooltip="Positive conditioning."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning."),
                io.Latent.Input("latent_image", tooltip="Latent to start from; only the first of a batch is used."),
                io.Vae.Input("vae", tooltip="Decodes the samples for the grid."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed shared by every cell (initial and step noise)."),
                io.Int.Input("steps", default=10, min=1, max=10000, tooltip="Sampling steps for every cell."),
                io.Float.Input("cfg", default=4.0, min=0.0, max=100.0, step=SCALE_STEP,
                               tooltip="Classifier-free guidance scale."),
                io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="normal",
                               tooltip="Scheduler for every cell (`normal` reproduces diffusers' SD3 schedule)."),
                io.String.Input("samplers", default="flow_sde, flow_cpws, flow_cps, flow_precise",
                                tooltip="Rows: KSampler sampler names separated by commas (any stock name works, "
                                        "e.g. euler_ancestral)."),
                io.String.Input("etas", default="0.3, 0.7, 1.0",
                                tooltip="Columns: η values separated by commas. Samplers without η repeat one image."),
            ],
            outputs=[io.Image.Output(display_name="grid", tooltip="The labelled sampler × η image grid.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, vae, seed, steps, cfg, scheduler, samplers,
                etas) -> io.NodeOutput:
        names = parse_names(samplers)
        if not names:
            raise ValueError("list at least one sampler, e.g. 'flow_sde, flow_cps'")
        eta_values = parse_floats(etas, "η values") or [None]
        grid = render_sampler_grid(model, positive, negative, latent_image, vae, seed, steps, cfg, scheduler, names,
                                   eta_values)
        return io.NodeOutput(grid, ui=ui.PreviewImage(grid, cls=cls))


class FlowNoiseEstimate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_NoiseEstimate",
            display_name="Residual Noise Estimate",
            category=CATEGORY,
            description="Estimates the residual Gaussian noise std of each image from its finest Haar wavelet "
                        "coefficients (median absolute deviation / 0.6745), at the image's native resolution when it "
                        "is a nearest-neighbour upscale (e.g. the toy model's 8× decode). Clean images score near 0; "
                        "Flow-SDE artifacts raise it.",
            inputs=[io.Image.Input("images", tooltip="Images to measure (values in [0, 1]).")],
            outputs=[io.Float.Output(display_name="noise_std", is_output_list=True,
                                     tooltip="One estimate per image, in image units (0–1 scale)."),
                     io.String.Output(display_name="report", tooltip="The estimates as text, one line per image.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images) -> io.NodeOutput:
        values = [float(v) for v in estimate_noise(images)]
        report = "\n".join(f"image {i}: noise std {v:.5f}" for i, v in enumerate(values))
        if len(values) > 1:
            report += f"\nmean: {sum(values) / len(values):.5f}"
        return io.NodeOutput(values, report, ui=ui.PreviewText(report))


class FlowNoiseLevelPlot(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_NoiseLevelPlot",
            display_name="Noise Level per Step (CPS Fig. 2)",
            category=CATEGORY,
            description="Plots the noise std each sampler really leaves after every step (perfect model) against "
                        "the schedule's t'. Coefficient-preserving samplers lie on the schedule; Flow-SDE overshoots.",
            inputs=[
                io.String.Input("samplers", default="flow_sde=0.7, cps=0.8, cpws=0.7, precise=1.5",
                                tooltip="Samplers with optional η, e.g. 'flow_sde=0.7, cps'. Missing η = default."),
                io.Int.Input("steps", default=10, min=1, max=1000, tooltip="Steps (ignored when sigmas are given)."),
                io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="normal",
                               tooltip="Scheduler used with the model's schedule (ignored when sigmas are given)."),
                io.Model.Input("model", optional=True,
                               tooltip="Take the schedule from this flow model (its shift)."),
                io.Sigmas.Input("sigmas", optional=True, tooltip="Or give the schedule directly."),
            ],
            outputs=[io.Image.Output(display_name="plot",
                                     tooltip="Noise std after each step per sampler, against the schedule's t'.")],
        )

    @classmethod
    def execute(cls, samplers, steps, scheduler, model=None, sigmas=None) -> io.NodeOutput:
        if sigmas is None:
            if model is None:
                raise ValueError("connect a flow MODEL (its schedule is used) or SIGMAS to the noise-level plot")
            model_sampling = model.get_model_object("model_sampling")
            require_flow_model(model_sampling, "the noise-level plot")
            sigmas = comfy.samplers.calculate_sigmas(model_sampling, scheduler, steps)
        image = noise_level_chart(parse_rule_specs(samplers), sigmas.cpu())
        return io.NodeOutput(image, ui=ui.PreviewImage(image, cls=cls))


NODES = [FlowSamplerGrid, FlowNoiseEstimate, FlowNoiseLevelPlot]
