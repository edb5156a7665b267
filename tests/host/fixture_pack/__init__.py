"""Test-only ComfyUI nodes, loaded by the host tests beside the pack and never shipped with it.

LoadedModels reports what ComfyUI's model management holds, so a test can see that a reward model is managed.

The tiny random models of the real architectures read conditioning of their text encoders' widths (T5-XXL 4096,
Qwen2.5-VL 3584, …), encoders that are gigabytes even when random. This node gives deterministic conditioning of
any width instead, one tensor per prompt text: what CLIP Text Encode would hand a sampler, minus the encoder.

TinyDiffusionModel and TinyVAE build those architectures in memory at tiny widths with ComfyUI's own classes
(tiny_architectures.py), for tests that are not about reading a file; no file is written.
"""
import hashlib

import torch

from . import tiny_architectures


class TinyDiffusionModel:
    """ComfyUI's own model class for an architecture (supported_models config, model_base, ModelPatcher) at tiny
    widths, random weights (seed 0): what UNETLoader would give for such a file if the host read every width from
    it. Its conditioning: tiny_architectures.TINY_CONTEXT_DIM wide (pooled: TINY_POOLED_DIM)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"arch": (list(tiny_architectures.ARCHS), {"default": "sd3"})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "build"
    CATEGORY = "flow-cps-test"

    def build(self, arch):
        return (tiny_architectures.tiny_model_patcher(arch),)


class TinyVAE:
    """A random VAE (ComfyUI's VAE around a TAESD or a Wan 2.1 VAE) that decodes the latents of ``model``."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("VAE",)
    FUNCTION = "build"
    CATEGORY = "flow-cps-test"

    def build(self, model):
        return (tiny_architectures.vae_for(model)[2],)


class RandomConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text": ("STRING", {"default": "", "tooltip": "Seeds the tensors; empty = all zeros (unconditional)."}),
            "context_dim": ("INT", {"default": 11, "min": 1, "max": 16384, "tooltip": "Width of the context."}),
            "tokens": ("INT", {"default": 5, "min": 1, "max": 512, "tooltip": "Context length."}),
            "pooled_dim": ("INT", {"default": 0, "min": 0, "max": 16384,
                                   "tooltip": "Width of the pooled vector (0 = none)."}),
            "attention_mask": ("BOOLEAN", {"default": False,
                                           "tooltip": "Add an all-ones integer mask (Lumina 2 on v0.3.64 needs it)."}),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "flow-cps-test"

    def encode(self, text, context_dim, tokens, pooled_dim, attention_mask):
        generator = torch.Generator().manual_seed(int(hashlib.sha256(text.encode()).hexdigest()[:12], 16))
        scale = 1.0 if text else 0.0
        context = torch.randn(1, tokens, context_dim, generator=generator) * scale
        extra = {"pooled_output": torch.randn(1, pooled_dim, generator=generator) * scale} if pooled_dim else {}
        if attention_mask:
            extra["attention_mask"] = torch.ones(1, tokens, dtype=torch.long)
        return ([[context, extra]],)


class LoadedModels:
    """Lists ComfyUI's loaded models after ``after`` (any STRING output) was computed, in the same prompt."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"after": ("STRING", {"forceInput": True,
                                                  "tooltip": "Connect a STRING output that must run first."})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "report"
    OUTPUT_NODE = True
    CATEGORY = "flow-cps-test"

    def report(self, after):
        import comfy.model_management as mm
        rows = []
        for loaded in mm.current_loaded_models:
            patcher = loaded.model
            if patcher is None:  # a dead weak reference, not yet cleaned up
                continue
            parts = getattr(patcher.model, "parts", None)
            name = type(patcher.model).__name__
            if parts is not None:
                name += "[" + ",".join(type(p).__name__ for p in parts) + "]"
            rows.append(f"{name} load={patcher.load_device} offload={patcher.offload_device}")
        text = "\n".join(rows)
        return {"ui": {"text": [text]}, "result": (text,)}


def _pack_module(suffix: str):
    """A module of the flow-cps pack as ComfyUI imported it (its name is the pack's folder path)."""
    import sys
    found = [m for name, m in sys.modules.items() if name.endswith(suffix) and "flow" in name.lower()]
    if not found:
        raise RuntimeError(f"the flow-cps pack's {suffix} is not loaded")
    return found[0]


class StockSolverCheck:
    """Samples the toy model inside a CFGGuider as the GRPO trainer does (the pack's ComfyPolicy, sample_flow with the
    policy's stock solver outside a CPS window) and runs the same stock sampler alone through ComfyUI's own KSAMPLER
    on the steps after the window, from the latent the rollout had there. Reports both differences as JSON."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "sampler_name": ("STRING", {"default": "dpmpp_2m"}),
                             "steps": ("INT", {"default": 6, "min": 2, "max": 50}),
                             "window_start": ("INT", {"default": 1, "min": 0, "max": 50}),
                             "window_stop": ("INT", {"default": 3, "min": 1, "max": 50})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "check"
    OUTPUT_NODE = True
    CATEGORY = "flow-cps-test"

    def check(self, model, sampler_name, steps, window_start, window_stop):
        import json

        import comfy.samplers
        host = _pack_module(".nodes.grpo_host")
        run = _pack_module(".nodes.grpo_run")
        samplers = _pack_module(".samplers")
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps).cpu()
        result = {}

        def compare(policy):
            cond = policy.encode_prompts(["a handwritten 5", "a handwritten 5"])

            def denoise(x, t):
                return policy.denoise(x, t, cond, 1.0)

            x = torch.randn((2, *policy.latent_shape), generator=torch.Generator().manual_seed(3)) * float(sigmas[0])
            window = (window_start, window_stop)
            solver = policy.stock_sampler(sampler_name, deterministic=True)
            final, traj = samplers.sample_flow(denoise, x, sigmas, rule="cps", window=window, record=True,
                                               seed=[1, 2], ode_solver=solver)
            plain = samplers.sample_flow(denoise, x, sigmas, rule="cps", window=window, seed=[1, 2])
            after = sigmas[window_stop:]
            start = traj.latents[window_stop]
            stock = comfy.samplers.sampler_object(sampler_name).sample(
                policy.guider, after, {}, None, start / float(after[0]), torch.zeros_like(start))
            result.update(stock_vs_rollout=float((stock - final).abs().max()),
                          euler_vs_rollout=float((plain - final).abs().max()),
                          stochastic_steps=traj.stochastic_steps, rules=traj.rules)
            return None

        conds = run.prompt_conditioning(["a handwritten 5"], "", None, model)
        hostrun = host.HostRun(make_trainer=lambda policy: policy, prompts=conds, vae=None, lora=None, run=compare)
        with torch.inference_mode(False):
            host.train_grpo_in_comfy(model.clone(), hostrun, (1, 16, 16), sigmas, 0)
        text = json.dumps(result)
        return {"ui": {"text": [text]}, "result": (text,)}


NODE_CLASS_MAPPINGS = {"FlowCPSTest_RandomConditioning": RandomConditioning, "FlowCPSTest_LoadedModels": LoadedModels,
                       "FlowCPSTest_StockSolverCheck": StockSolverCheck,
                       "FlowCPSTest_TinyDiffusionModel": TinyDiffusionModel, "FlowCPSTest_TinyVAE": TinyVAE}
NODE_DISPLAY_NAME_MAPPINGS = {"FlowCPSTest_RandomConditioning": "Random Conditioning (flow-cps tests)",
                              "FlowCPSTest_TinyDiffusionModel": "Tiny Diffusion Model (flow-cps tests)",
                              "FlowCPSTest_TinyVAE": "Tiny VAE (flow-cps tests)",
                              "FlowCPSTest_LoadedModels": "Loaded Models (flow-cps tests)",
                              "FlowCPSTest_StockSolverCheck": "Stock Solver Check (flow-cps tests)"}
