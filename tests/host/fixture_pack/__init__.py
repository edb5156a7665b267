"""Test-only ComfyUI nodes, loaded by the host tests beside the pack and never shipped with it.

LoadedModels reports what ComfyUI's model management holds, so a test can see that a reward model is managed.

The tiny random models of the real architectures read conditioning of their text encoders' widths (T5-XXL 4096,
Qwen2.5-VL 3584, …), encoders that are gigabytes even when random. This node gives deterministic conditioning of
any width instead, one tensor per prompt text: what CLIP Text Encode would hand a sampler, minus the encoder.
"""
import hashlib

import torch


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


NODE_CLASS_MAPPINGS = {"FlowCPSTest_RandomConditioning": RandomConditioning, "FlowCPSTest_LoadedModels": LoadedModels}
NODE_DISPLAY_NAME_MAPPINGS = {"FlowCPSTest_RandomConditioning": "Random Conditioning (flow-cps tests)",
                              "FlowCPSTest_LoadedModels": "Loaded Models (flow-cps tests)"}
