"""LoRA target presets per model family: what ``lora_targets = auto`` on the trainer picks.

Module paths are ComfyUI's (inside ``diffusion_model``), written as fnmatch patterns. The choices follow the
reference trainers: attention projections of both streams (flow_grpo on SD3.5), plus the MLPs where the reference
trains them (flow_grpo / DanceGRPO on Flux, DiffSynth on Qwen-Image and Wan).
"""
from __future__ import annotations

from typing import Optional, Tuple

PRESETS = {
    "toy": ("*attn.qkv", "*attn.proj", "*mlp.fc1", "*mlp.fc2"),
    "sd3": ("*attn.qkv", "*attn.proj", "*attn2.qkv", "*attn2.proj"),
    "flux": ("double_blocks.*_attn.qkv", "double_blocks.*_attn.proj", "double_blocks.*_mlp.0",
             "double_blocks.*_mlp.2", "single_blocks.*.linear1", "single_blocks.*.linear2"),
    "qwen_image": ("*.attn.to_q", "*.attn.to_k", "*.attn.to_v", "*.attn.to_out.0", "*.attn.add_q_proj",
                   "*.attn.add_k_proj", "*.attn.add_v_proj", "*.attn.to_add_out", "*_mlp.net.0.proj",
                   "*_mlp.net.2"),
    "wan": ("blocks.*.self_attn.[qkvo]", "blocks.*.cross_attn.[qkvo]", "blocks.*.ffn.0", "blocks.*.ffn.2"),
    "lumina2": ("*.attention.qkv", "*.attention.out", "*.feed_forward.w[123]"),  # layers and refiners
}

# class name of ComfyUI's diffusion_model → family
FAMILIES = {
    "ToyDiT": "toy",
    "OpenAISignatureMMDITWrapper": "sd3",
    "MMDiT": "sd3",
    "Flux": "flux",
    "Chroma": "flux",
    "QwenImageTransformer2DModel": "qwen_image",
    "WanModel": "wan",
    "NextDiT": "lumina2",
}

AUTO = "auto"


def model_family(diffusion_model) -> Optional[str]:
    for cls in type(diffusion_model).__mro__:
        if cls.__name__ in FAMILIES:
            return FAMILIES[cls.__name__]
    return None


def resolve_targets(text: str, diffusion_model) -> Tuple[str, Tuple[str, ...]]:
    """``(preset name, patterns)`` for the trainer's ``lora_targets`` text: ``auto`` = the model family's preset
    (every preset's patterns for a family this table does not know), anything else = comma-separated patterns."""
    patterns = tuple(p.strip() for p in text.split(",") if p.strip())
    if patterns != (AUTO,):
        if not patterns:
            raise ValueError("lora_targets is empty: write 'auto' or fnmatch patterns such as '*attn.qkv'")
        return "custom", patterns
    family = model_family(diffusion_model)
    if family is None:
        return "auto (unknown family)", tuple(dict.fromkeys(p for ps in PRESETS.values() for p in ps))
    return family, PRESETS[family]


__all__ = ["PRESETS", "FAMILIES", "AUTO", "model_family", "resolve_targets"]
