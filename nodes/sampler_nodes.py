"""SAMPLER nodes for SamplerCustom / SamplerCustomAdvanced, one per rule, plus the per-step η schedule node.

One node per rule (like the stock SamplerEulerAncestral, SamplerDPMPP_SDE, …) so each gets its own default η,
its own η range (CPS/CPWS stop at 1, Precise goes beyond) and a tooltip that says what η means for it.
"""
from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from ..samplers import DEFAULT_ETA, ETA_RANGE, LOG_PROB_KINDS
from ..samplers.eta_schedule import EtaSchedule
from .comfy_sampling import SAMPLER_FUNCTIONS
from .widget_options import ETA_STEP

CATEGORY = "flow-cps/samplers"
EtaScheduleType = io.Custom("FLOW_ETA_SCHEDULE")
SDE_END_DEFAULT = 10000  # every node's sde_end_step default and max: "until the end" for any step count

_RULE_INFO = {
    # rule: (node id, display name, KSampler name, description); the η range is samplers.ETA_RANGE[rule]
    "cps": ("FlowCPS_SamplerCPS", "Sampler CPS (flow)", "flow_cps",
            "Coefficients-Preserving Sampling (arXiv 2509.05952, eq. 12): each step replaces a fraction sin(η·π/2) "
            "of the predicted noise with fresh noise while keeping the noise level exactly on schedule. Clean images "
            "with stochasticity for RL."),
    "cpws": ("FlowCPS_SamplerCPWS", "Sampler CPWS (flow)", "flow_cpws",
             "Coefficients-Preserving Wiener Sampling (CPS paper eq. 15): Flow-GRPO's noise amount σ_t·√Δt, with "
             "the predicted noise shrunk so the total noise stays on schedule."),
    "precise": ("FlowCPS_SamplerPrecise", "Sampler Precise (flow)", "flow_precise",
                "Precise sampler (arXiv 2605.23522): keeps a fraction ρ = (SNR ratio)^(η²/2) of the predicted noise "
                "and tops up with fresh noise; η = √2 is DDIM(η=1) / DDPM ancestral."),
    "flow_sde": ("FlowCPS_SamplerFlowSDE", "Sampler Flow-SDE (Flow-GRPO)", "flow_sde",
                 "Flow-GRPO's SDE (σ_t = η·√(t/(1−t))). Injects more noise than the schedule allows; kept for "
                 "comparison and for reproducing Flow-GRPO."),
    "dance_sde": ("FlowCPS_SamplerDanceSDE", "Sampler Dance-SDE (DanceGRPO)", "dance_sde",
                  "DanceGRPO's SDE (σ_t = η). Ends with the model's x̂0 at the last step, as DanceGRPO decodes it."),
}


def _make_sampler_node(rule: str):
    node_id, display_name, ksampler_name, description = _RULE_INFO[rule]
    eta_min, eta_max = ETA_RANGE[rule]

    class FlowSamplerNode(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(
                node_id=node_id,
                display_name=display_name,
                category=CATEGORY,
                description=description + " Works with flow-matching models only (SD3/3.5, Flux, Qwen-Image, …).",
                inputs=[
                    io.Float.Input("eta", default=DEFAULT_ETA[rule], min=eta_min, max=eta_max, step=ETA_STEP,
                                   tooltip=f"Noise amount, {eta_min:g} to {eta_max:g} (default {DEFAULT_ETA[rule]}). "
                                           "0 gives the deterministic Euler/ODE sampler."),
                    io.Int.Input("sde_start_step", default=0, min=0, max=SDE_END_DEFAULT,
                                 tooltip="First stochastic step (0-based). Steps before it are deterministic (ODE)."),
                    io.Int.Input("sde_end_step", default=SDE_END_DEFAULT, min=1, max=SDE_END_DEFAULT,
                                 tooltip="Stochastic steps stop before this step; later steps are deterministic. "
                                         "Values above the step count mean 'until the end'."),
                    io.Combo.Input("log_prob_kind", options=list(LOG_PROB_KINDS), default="gaussian",
                                   tooltip="Only used when this SAMPLER feeds the GRPO trainer: 'gaussian' is the "
                                           "per-element Gaussian log-density (flow_grpo, DanceGRPO); 'cps_eq14' is "
                                           "CPS eq. 14 as FlowCPS trains with it. Sampling is not affected."),
                    EtaScheduleType.Input("eta_schedule", optional=True,
                                          tooltip="Optional per-step η (e.g. from the DenseGRPO calibration node). "
                                                  "Overrides eta; needs one value per sampling step."),
                ],
                outputs=[io.Sampler.Output(tooltip=f"The {rule} sampler, for SamplerCustom / SamplerCustomAdvanced "
                                                     "or the GRPO trainer's 'sampler' input.")],
            )

        @classmethod
        def execute(cls, eta, sde_start_step, sde_end_step, log_prob_kind, eta_schedule=None) -> io.NodeOutput:
            if sde_start_step >= sde_end_step:
                raise ValueError(f"{display_name}: sde_start_step ({sde_start_step}) must be smaller than "
                                 f"sde_end_step ({sde_end_step})")
            options = {"eta": eta, "window": (sde_start_step, sde_end_step), "eta_schedule": eta_schedule}
            sampler = comfy.samplers.KSAMPLER(SAMPLER_FUNCTIONS[ksampler_name], extra_options=options)
            sampler.flow_cps = {"rule": rule, "log_prob_kind": log_prob_kind, **options}
            return io.NodeOutput(sampler)

    FlowSamplerNode.__name__ = node_id
    FlowSamplerNode.__qualname__ = node_id
    return FlowSamplerNode


SAMPLER_NODES = [_make_sampler_node(rule) for rule in _RULE_INFO]


class FlowEtaSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_EtaSchedule",
            display_name="η Schedule (per step)",
            category=CATEGORY,
            description="A per-step η list for the flow sampler nodes, typed in by hand (the DenseGRPO calibration "
                        "node makes the same type).",
            inputs=[io.String.Input("values", default="0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0",
                                    multiline=False,
                                    tooltip="One η per sampling step, separated by commas. The count must equal "
                                            "the sampler's steps.")],
            outputs=[EtaScheduleType.Output(tooltip="Per-step η for the flow sampler nodes and the GRPO trainer.")],
        )

    @classmethod
    def execute(cls, values) -> io.NodeOutput:
        return io.NodeOutput(EtaSchedule.parse(values))


NODES = SAMPLER_NODES + [FlowEtaSchedule]
