"""The trainer's GPU memory for real models, from measured per-block activation bytes (needs a ComfyUI checkout).

    cd $COMFYUI_PATH && $COMFYUI_PYTHON /path/to/flow-cps/scripts/memory_model.py

For each family it builds ComfyUI's own model class at the real width with one block of each kind (random bf16
weights), runs a training forward with the LoRA preset's layers trainable, and counts the bytes autograd saves
inside each block (data_ptr-deduplicated, parameters excluded): the memory a block's recomputation holds. That is
measured at two token counts; activations grow linearly with tokens (memory-efficient attention), so the line
through the two points gives any resolution. Then, for train_batch_size 1 with gradient checkpointing:

    peak ≈ weights (bf16) + LoRA (weights, grads, AdamW moments: float32)
           + blocks × one block's input (what checkpointing keeps)
           + 2 × one block's saved activations (its recomputation plus the gradients in flight; an estimate)

with the CFG batch (×2) where the family trains with CFG. Text encoders are not counted: prompts are encoded once
before training and ComfyUI can offload them; the VAE (≈ 0.2 GB) decodes between training steps.
"""
import os
import sys

sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import fnmatch  # noqa: E402

import comfy.ops  # noqa: E402
import torch  # noqa: E402

import importlib.util  # noqa: E402

# the pack's LoRA presets, by file path (ComfyUI has a module called nodes of its own)
_spec = importlib.util.spec_from_file_location("flow_cps_lora_presets", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "nodes", "lora_presets.py"))
_presets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_presets)
PRESETS = _presets.PRESETS

OPS = comfy.ops.disable_weight_init
GB = 1024 ** 3


def flux(depth=1, single=1, device="cpu"):
    import dataclasses
    from comfy.ldm.flux.model import Flux, FluxParams
    extra = {"txt_ids_dims": []} if "txt_ids_dims" in {f.name for f in dataclasses.fields(FluxParams)} else {}
    return Flux(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0,
                num_heads=24, depth=depth, depth_single_blocks=single, axes_dim=[16, 56, 56], theta=10000,
                patch_size=2, qkv_bias=True, guidance_embed=True, dtype=torch.bfloat16, device=device, operations=OPS,
                **extra)


def sd35_medium(depth=24, device="cpu"):  # MMDiT's width is 64 × depth: it cannot be built with fewer blocks
    from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper as MMDiT
    return MMDiT(input_size=None, patch_size=2, in_channels=16, out_channels=16, depth=depth, num_patches=147456,
                 pos_embed_max_size=384, adm_in_channels=2048, qk_norm="rms", pos_embed_scaling_factor=None,
                 x_block_self_attn_layers=list(range(min(depth, 13))),
                 context_embedder_config={"target": "torch.nn.Linear",
                                          "params": {"in_features": 4096, "out_features": 1536}},
                 dtype=torch.bfloat16, device=device, operations=OPS)


def qwen_image(depth=1, device="cpu"):
    from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel
    return QwenImageTransformer2DModel(patch_size=2, in_channels=64, out_channels=16, num_layers=depth,
                                       attention_head_dim=128, num_attention_heads=24, joint_attention_dim=3584,
                                       dtype=torch.bfloat16, device=device, operations=OPS)


def wan21_1_3b(depth=1, device="cpu"):
    from comfy.ldm.wan.model import WanModel
    return WanModel(model_type="t2v", patch_size=(1, 2, 2), in_dim=16, dim=1536, ffn_dim=8960, freq_dim=256,
                    text_dim=4096, out_dim=16, num_heads=12, num_layers=depth, window_size=(-1, -1), qk_norm=True,
                    cross_attn_norm=True, eps=1e-6, device=device, dtype=torch.bfloat16, operations=OPS)


# (x, timestep, context) positionally, the rest by keyword, as each class's forward takes them
def flux_inputs(h, w, text):
    return (torch.randn(1, 16, h, w), torch.full((1,), 0.5), torch.randn(1, text, 4096)), dict(
        y=torch.randn(1, 768), guidance=torch.full((1,), 3.5))


def sd3_inputs(h, w, text):
    return (torch.randn(1, 16, h, w), torch.full((1,), 500.0), torch.randn(1, text, 4096)), dict(
        y=torch.randn(1, 2048))


def qwen_inputs(h, w, text):
    return (torch.randn(1, 16, 1, h, w), torch.full((1,), 0.5), torch.randn(1, text, 3584)), {}


def wan_inputs(h, w, text, frames=1):
    return (torch.randn(1, 16, frames, h, w), torch.full((1,), 500.0), torch.randn(1, text, 4096)), {}


# family: builder, full depth kwargs, inputs, preset, CFG batch, streams a block carries (image + text, or image
# alone with cross-attention), resolutions (name, latent h, w, latent frames, text tokens)
FAMILIES = {
    "SD3.5-M": (sd35_medium, {"depth": 24}, sd3_inputs, "sd3", 2, 2,
                [("512²", 64, 64, 1, 333), ("1024²", 128, 128, 1, 333)]),
    "Flux-dev": (flux, {"depth": 19, "single": 38}, flux_inputs, "flux", 1, 2, [("512²", 64, 64, 1, 512)]),
    "Qwen-Image": (qwen_image, {"depth": 60}, qwen_inputs, "qwen_image", 2, 2, [("1024²", 128, 128, 1, 256)]),
    "Wan 2.1 1.3B": (wan21_1_3b, {"depth": 30}, wan_inputs, "wan", 2, 1,
                     [("480×832, 33 frames", 60, 104, 9, 512), ("480×832, 81 frames", 60, 104, 21, 512)]),
}
NODE_TRAIN_BATCH = 4  # the trainer node's default train_batch_size


def saved_bytes_per_block(model, inputs, preset):
    """{block type: bytes autograd saves inside one block of it} for one training forward."""
    patterns = PRESETS[preset]
    params = set()
    for name, p in model.named_parameters():
        p.requires_grad_(any(fnmatch.fnmatchcase(name.rsplit(".", 1)[0], pat) for pat in patterns))
        params.add(p.data_ptr())
    current, counts = [None], {}
    seen = set()

    def pack(t):
        if current[0] is not None and t.data_ptr() not in params and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            counts[current[0]] = counts.get(current[0], 0) + t.untyped_storage().nbytes()
        return t

    blocks = [b for c in model.children() if isinstance(c, torch.nn.ModuleList) for b in c]
    handles = []
    for index, block in enumerate(blocks):
        key = (type(block).__name__, index)
        handles.append(block.register_forward_pre_hook(lambda m, a, k=key: current.__setitem__(0, k)))
        handles.append(block.register_forward_hook(lambda m, a, o: current.__setitem__(0, None)))
    args, kwargs = inputs
    args = [v.to(torch.bfloat16) for v in args]
    kwargs = {k: v.to(torch.bfloat16) for k, v in kwargs.items()}
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(*args, **kwargs)
    for h in handles:
        h.remove()
    del out
    largest = {}  # per kind of block, the block that saves most
    for (kind, _), value in counts.items():
        largest[kind] = max(largest.get(kind, 0), value)
    return largest


def count_params(builder, kwargs, preset):
    model = builder(device="meta", **kwargs)
    total = sum(p.numel() for p in model.parameters())
    blocks = [b for c in model.children() if isinstance(c, torch.nn.ModuleList) for b in c]
    lora_in_out = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                   and any(fnmatch.fnmatchcase(n, p) for p in PRESETS[preset])]
    return total, blocks, lora_in_out


def main():
    torch.manual_seed(0)
    rank = 32
    rows = []
    for family, (builder, depth, make_inputs, preset, cfg_batch, streams, cases) in FAMILIES.items():
        small = builder()
        with torch.no_grad():
            for p in small.parameters():
                p.normal_(0, 0.02)
        total, blocks, lora_layers = count_params(builder, depth, preset)
        lora_params = sum(rank * (m.in_features + m.out_features) for m in lora_layers)
        for label, h, w, frames, text in cases:
            kinds = {}
            points = []
            scale = 4 if frames == 1 else 8  # measure at 1/scale of the area: a line through two points
            for factor in (scale, scale // 2):
                hh, ww = max(8, h // factor * 2 // 2), max(8, w // factor * 2 // 2)
                extra = {"frames": max(1, frames // factor)} if make_inputs is wan_inputs else {}
                counts = saved_bytes_per_block(small, make_inputs(hh, ww, text, **extra), preset)
                tokens = (hh // 2) * (ww // 2) * extra.get("frames", 1)
                points.append((tokens, counts))
            img_tokens = (h // 2) * (w // 2) * frames
            (t1, c1), (t2, c2) = points
            for kind in c1:
                slope = (c2[kind] - c1[kind]) / (t2 - t1)
                kinds[kind] = c1[kind] + slope * (img_tokens - t1)
            n_blocks = {}
            for b in blocks:
                n_blocks[type(b).__name__] = n_blocks.get(type(b).__name__, 0) + 1
            width = getattr(small, "hidden_size", None) or getattr(small, "inner_dim", None) or getattr(small, "dim")
            block_input = ((img_tokens + text) if streams == 2 else img_tokens) * width * 2 * cfg_batch  # bf16
            largest = max(kinds.values()) * cfg_batch
            weights = total * 2
            lora = lora_params * 4 * 4  # weights, grads, two AdamW moments
            activations = len(blocks) * block_input + 2 * largest
            peak = weights + lora + activations
            rows.append((family, label, total / 1e9, {k: v * cfg_batch / GB for k, v in kinds.items()}, n_blocks,
                         len(blocks) * block_input / GB, weights / GB, peak / GB, (peak - weights / 2) / GB,
                         (weights + lora + NODE_TRAIN_BATCH * activations) / GB, cfg_batch))
        del small
    print(f"| model | resolution | params | one block's saved activations, GB (× CFG batch) | blocks | "
          f"checkpointed inputs GB | weights GB (bf16) | peak GB, train_batch_size 1 | same, fp8 weights | "
          f"train_batch_size {NODE_TRAIN_BATCH} (node default) |")
    print("|---|---|---:|---|---|---:|---:|---:|---:|---:|")
    for family, label, params, kinds, n_blocks, inputs, weights, peak, peak_fp8, peak_default, cfg_batch in rows:
        kind_text = ", ".join(f"{k} {v:.2f}" for k, v in kinds.items())
        blocks = ", ".join(f"{n} × {k}" for k, n in n_blocks.items())
        print(f"| {family} | {label}{' (CFG)' if cfg_batch == 2 else ''} | {params:.1f} B | {kind_text} | {blocks} | "
              f"{inputs:.2f} | {weights:.1f} | **{peak:.1f}** | {peak_fp8:.1f} | {peak_default:.1f} |")


main()
