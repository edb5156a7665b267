"""Test-only ComfyUI nodes, loaded by the host tests beside the pack and never shipped with it.

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


NODE_CLASS_MAPPINGS = {"FlowCPSTest_RandomConditioning": RandomConditioning}
NODE_DISPLAY_NAME_MAPPINGS = {"FlowCPSTest_RandomConditioning": "Random Conditioning (flow-cps tests)"}
