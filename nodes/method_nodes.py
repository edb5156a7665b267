"""Training-method nodes for the GRPO trainer's ``method`` input: MixGRPO windows, a trust region, DiffusionNFT.

Each node returns a FLOW_CPS_METHOD: the trainer settings it sets (GRPOConfig fields) and, chained through its own
optional ``method`` input, those of the nodes before it (the later node wins a setting both set).
"""
from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from ..samplers.solvers import DETERMINISTIC_STOCK_SAMPLERS
from ..training.grpo_config import NFT_OLD_POLICIES, WINDOW_SCHEDULES
from .widget_options import FINE_STEP

CATEGORY = "flow-cps/training"
MethodType = io.Custom("FLOW_CPS_METHOD")
TRAINER_RULE = "trainer rule"  # DiffusionNFT samples with the trainer's rule and η (or its sampler input)


def ode_sampler_names() -> list:
    """The deterministic stock samplers this host has, euler first."""
    return [name for name in DETERMINISTIC_STOCK_SAMPLERS if name in comfy.samplers.KSAMPLER_NAMES]


def rollout_sampler_names() -> list:
    """Every KSampler sampler a DiffusionNFT rollout can use (the cfg_pp ones change the guidance itself)."""
    return [TRAINER_RULE] + [name for name in comfy.samplers.KSAMPLER_NAMES if not name.endswith("_cfg_pp")]


def chained(method, settings: dict, name: str) -> dict:
    """A FLOW_CPS_METHOD: the upstream method's settings, then these."""
    base = method or {"settings": {}, "names": []}
    return {"settings": {**base["settings"], **settings}, "names": [*base["names"], name]}


def method_input():
    return MethodType.Input("method", optional=True,
                            tooltip="Another method node to combine with this one (e.g. a MixGRPO window with a "
                                    "trust region); this node's settings win where both set one.")


class MixGRPOWindow(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_MethodMixGRPO",
            display_name="GRPO Method: MixGRPO Window",
            category=CATEGORY,
            is_experimental=True,
            description="MixGRPO (arXiv 2507.21802): only a window of steps is stochastic and trained; the steps "
                        "outside it are integrated by a deterministic sampler, which may be a stock one "
                        "(dpmpp_2m = MixGRPO-Flash). Fewer trained steps per iteration: faster iterations. "
                        "Overrides the trainer's sde_start_step/sde_end_step.",
            inputs=[
                io.Int.Input("window_start", default=0, min=0, max=1000,
                             tooltip="First step of the window (at the first iteration)."),
                io.Int.Input("window_size", default=2, min=1, max=1000,
                             tooltip="Stochastic (trained) steps in the window (MixGRPO: 4 of 25)."),
                io.Combo.Input("window_schedule", options=list(WINDOW_SCHEDULES), default="progressive",
                               tooltip="fixed: stays; progressive: moves later by window_stride every shift_every "
                                       "iterations and stops at the last position (MixGRPO); sliding: the same, "
                                       "wrapping to the start; random: a seeded random position each iteration. "
                                       "Positions with nothing to train (e.g. only the step into t = 0) are skipped."),
                io.Int.Input("shift_every", default=5, min=1, max=100000,
                             tooltip="Iterations before the window moves (MixGRPO's τ; 25 in its 300-iteration "
                                     "runs)."),
                io.Int.Input("window_stride", default=1, min=1, max=1000, tooltip="Steps the window moves by."),
                io.Combo.Input("ode_sampler", options=ode_sampler_names(), default="euler",
                               tooltip="Deterministic sampler of the steps outside the window: euler (the flow ODE) "
                                       "or a stock higher-order one such as dpmpp_2m (MixGRPO-Flash). A multistep "
                                       "sampler starts afresh after the window."),
                method_input(),
            ],
            outputs=[MethodType.Output(display_name="method", tooltip="Connect to the GRPO trainer's method input.")],
        )

    @classmethod
    def execute(cls, window_start, window_size, window_schedule, shift_every, window_stride, ode_sampler,
                method=None) -> io.NodeOutput:
        settings = {"sde_window": (window_start, window_start + window_size), "window_schedule": window_schedule,
                    "window_shift_every": shift_every, "window_stride": window_stride, "ode_sampler": ode_sampler}
        return io.NodeOutput(chained(method, settings, "mixgrpo"))


class TrustRegion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_MethodTrustRegion",
            display_name="GRPO Method: Trust Region",
            category=CATEGORY,
            is_experimental=True,
            description="FlowDPPO's trust region (Tencent-Hunyuan/UniRL): a (sample, step) term whose exact Gaussian "
                        "KL(old ‖ new) = mean((μ_old − μ_θ)²)/(2σ²) reaches the threshold stops pushing the way its "
                        "advantage pushes. Optionally GRPO-Guard's ratio normalisation (arXiv 2510.22319).",
            inputs=[
                io.Float.Input("kl_threshold", default=1e-5, min=0.0, max=100.0, step=FINE_STEP,
                               tooltip="δ of the mask (UniRL: 1e-5); 0 = no mask."),
                io.Boolean.Input("ratio_clipping", default=False,
                                 tooltip="Keep the trainer's PPO ratio clip beside the mask (off = the mask replaces "
                                         "clipping, as in FlowDPPO)."),
                io.Boolean.Input("ratio_norm", default=False,
                                 tooltip="GRPO-Guard: the log-ratio becomes σ·Δlog p + mean(Δμ²)/(2σ), centred on 0 "
                                         "with one scale at every step (needs log_prob_kind gaussian)."),
                method_input(),
            ],
            outputs=[MethodType.Output(display_name="method", tooltip="Connect to the GRPO trainer's method input.")],
        )

    @classmethod
    def execute(cls, kl_threshold, ratio_clipping, ratio_norm, method=None) -> io.NodeOutput:
        settings = {"kl_mask_threshold": kl_threshold, "ratio_norm": ratio_norm}
        if not ratio_clipping:
            settings["clip_range"] = float("inf")
        return io.NodeOutput(chained(method, settings, "trust_region"))


class DiffusionNFT(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_MethodDiffusionNFT",
            display_name="GRPO Method: DiffusionNFT",
            category=CATEGORY,
            is_experimental=True,
            description="DiffusionNFT (arXiv 2509.16117): instead of GRPO, online RL on the forward process. The old "
                        "policy samples with any sampler (stock ones too) and only the final latents are kept; they "
                        "are re-noised and the LoRA learns reward-weighted positive/negative velocity targets. No "
                        "trajectory in memory, no log-probabilities.",
            inputs=[
                io.Combo.Input("sampler", options=rollout_sampler_names(), default=TRAINER_RULE,
                               tooltip="How rollouts are sampled: the trainer's rule and η (or its sampler input), or "
                                       "any stock sampler (e.g. dpmpp_2m, euler_ancestral). The reference samples "
                                       "deterministically."),
                io.Float.Input("nft_beta", default=1.0, min=0.001, max=10.0, step=FINE_STEP,
                               tooltip="β of the implicit policies v± (1.0 in the reference; 0.1 for its OCR task)."),
                io.Float.Input("kl_beta", default=1e-4, min=0.0, max=10.0, step=FINE_STEP,
                               tooltip="Weight of mean((v_θ − v_base)²) against the model without the LoRA "
                                       "(reference 1e-4; replaces the trainer's beta)."),
                io.Combo.Input("old_policy", options=list(NFT_OLD_POLICIES), default="ema",
                               tooltip="ema: after each iteration old ← d·old + (1 − d)·θ, d = min(decay_rate·k, "
                                       "decay_max) after k optimizer steps; snapshot: the LoRA as the last iteration "
                                       "left it."),
                io.Float.Input("decay_rate", default=0.001, min=0.0, max=1.0, step=FINE_STEP,
                               tooltip="Growth of the old policy's decay per optimizer step (reference 0.001)."),
                io.Float.Input("decay_max", default=0.5, min=0.0, max=0.999, step=FINE_STEP,
                               tooltip="Cap of the decay (reference 0.5)."),
                io.Float.Input("timestep_fraction", default=0.99, min=0.01, max=1.0, step=FINE_STEP,
                               tooltip="Share of the schedule's times each sample is re-noised at per iteration "
                                       "(0.99 of 10 steps: 9)."),
                method_input(),
            ],
            outputs=[MethodType.Output(display_name="method", tooltip="Connect to the GRPO trainer's method input.")],
        )

    @classmethod
    def execute(cls, sampler, nft_beta, kl_beta, old_policy, decay_rate, decay_max, timestep_fraction,
                method=None) -> io.NodeOutput:
        settings = {"algorithm": "diffusion_nft", "nft_sampler": "" if sampler == TRAINER_RULE else sampler,
                    "nft_beta": nft_beta, "nft_kl_beta": kl_beta, "nft_old_policy": old_policy,
                    "nft_decay_rate": decay_rate, "nft_decay_max": decay_max, "timestep_fraction": timestep_fraction}
        return io.NodeOutput(chained(method, settings, "diffusion_nft"))


NODES = [MixGRPOWindow, TrustRegion, DiffusionNFT]
