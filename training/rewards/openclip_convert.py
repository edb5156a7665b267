"""open_clip ViT checkpoints (HPSv2 / HPSv2.1) → a transformers ``CLIPModel``, without open_clip.

open_clip cannot be used here: it imports torchvision, which does not import beside the CPU torch build the pack
targets. The standard open_clip ``CLIP`` (ViT image tower + causal text transformer, no custom text tower) maps
one-to-one onto transformers' ``CLIPModel``:

==============================================  ========================================================
open_clip key                                   transformers key
==============================================  ========================================================
visual.conv1.weight                             vision_model.embeddings.patch_embedding.weight
visual.class_embedding                          vision_model.embeddings.class_embedding
visual.positional_embedding                     vision_model.embeddings.position_embedding.weight
visual.ln_pre.*                                 vision_model.pre_layrnorm.*
visual.transformer.resblocks.N.ln_1.*           vision_model.encoder.layers.N.layer_norm1.*
  … .attn.in_proj_weight / in_proj_bias         … .self_attn.{q,k,v}_proj.weight / bias (split in 3, q k v)
  … .attn.out_proj.*                            … .self_attn.out_proj.*
  … .ln_2.*                                     … .layer_norm2.*
  … .mlp.c_fc.* / mlp.c_proj.*                  … .mlp.fc1.* / mlp.fc2.*
visual.ln_post.*                                vision_model.post_layernorm.*
visual.proj  [width, embed]                     visual_projection.weight [embed, width] (transposed)
token_embedding.weight                          text_model.embeddings.token_embedding.weight
positional_embedding                            text_model.embeddings.position_embedding.weight
transformer.resblocks.N.*                       text_model.encoder.layers.N.* (as above)
ln_final.*                                      text_model.final_layer_norm.*
text_projection [width, embed]                  text_projection.weight [embed, width] (transposed)
logit_scale                                     logit_scale
==============================================  ========================================================

Both towers pool the same way: the image feature is ``ln_post(x[:, 0]) @ proj`` (class token), the text feature is
``ln_final(x)[eot] @ text_projection`` where open_clip takes the position of the largest token id (``argmax``) and
transformers the first ``eos_token_id``; with the CLIP BPE vocabulary the end-of-text token has the largest id, so
the two agree. Attention, LayerNorm (eps 1e-5) and the 4× MLP are the same maths.

Architecture numbers are read from the state-dict shapes (widths, layer counts, patch size, image size, context
length, vocabulary, MLP width, embedding width), so tiny test models convert like the real one. Two things are not
visible in the shapes:

* **Attention heads.** Taken from an ``open_clip_config.json`` beside the checkpoint (the file open_clip's hub repos
  ship: ``{"model_cfg": {"vision_cfg": {"width", "head_width"}, "text_cfg": {"heads"}, "quick_gelu"?}}``; a bare
  model config is accepted too), else from the known open_clip configs matched by widths (ViT-H-14: vision
  1280 / head_width 80 → 16 heads, text 1024 → 16 heads; ViT-L-14 and ViT-B are listed too).
* **Activation.** open_clip's ViT-H-14 config has no ``quick_gelu`` flag, so its blocks use ``nn.GELU`` (exact erf
  GELU); HPSv2 builds it with ``force_quick_gelu=False``. transformers calls that ``"gelu"`` (the OpenAI CLIP
  checkpoints use ``"quick_gelu"``). The default here is therefore ``"gelu"``; an ``open_clip_config.json`` with
  ``"quick_gelu": true`` switches to ``"quick_gelu"``.

The model is built on the meta device and the converted tensors are assigned into it, so a 1 B-parameter ViT-H is
not randomly initialised first.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Dict, Mapping, Optional

import torch

from .base import RewardError

# (vision width, text width) -> (vision heads, text heads, name) of open_clip's standard ViT configs
KNOWN_OPENCLIP_HEADS = {
    (1280, 1024): (16, 16, "ViT-H-14"),
    (1024, 768): (16, 12, "ViT-L-14"),
    (768, 512): (12, 8, "ViT-B-16/32"),
    (1664, 1280): (16, 20, "ViT-bigG-14"),
    (1408, 1024): (16, 16, "ViT-g-14"),
}
# keys that carry no weights (non-persistent buffers saved by some open_clip versions)
_IGNORED_KEYS = {"attn_mask", "visual.attn_mask"}


class OpenClipConversionError(RewardError):
    """The checkpoint is not a standard open_clip ViT CLIP state dict (or is damaged)."""
    __module__ = "flow_cps"  # ComfyUI shows f"{__module__}.{name}" as the error type; the real one is a folder path


def _torch_load(path: Path):
    """``torch.load(weights_only=True)``, memory-mapped when the file is in the zip format (saves a copy of 2 GB)."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        pass  # legacy (non-zip) files cannot be memory-mapped; retry plainly to get the real error if any
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle with non-tensor objects, truncated download, ...
        raise RewardError(
            f"cannot read {path} with torch.load(weights_only=True): {type(e).__name__}: {str(e)[:300]}. Re-download "
            "the file; if it holds more than tensors, save its 'state_dict' as .safetensors and use that") from None


def load_state_dict_file(path: os.PathLike) -> Dict[str, torch.Tensor]:
    """Tensors of a ``.pt``/``.pth``/``.bin`` (``torch.load(weights_only=True)``) or ``.safetensors`` file.

    A checkpoint wrapped as ``{"state_dict": ...}`` (HPSv2's files) or ``{"model": ...}`` is unwrapped, and a
    DistributedDataParallel ``module.`` prefix is removed.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        sd = load_file(str(path))
    else:
        sd = _torch_load(path)
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(sd, Mapping) and wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise RewardError(f"{path} does not hold a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def read_openclip_config(path: Optional[os.PathLike]) -> dict:
    """The model config inside an ``open_clip_config.json`` (``model_cfg``) or a bare open_clip model config."""
    if path is None or not Path(path).is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    return cfg.get("model_cfg", cfg)


def _count_blocks(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for k in sd for m in [pat.match(k)] if m}
    if idx != set(range(len(idx))):
        raise OpenClipConversionError(f"transformer blocks under '{prefix}' are not numbered 0..N-1: {sorted(idx)}")
    return len(idx)


def openclip_architecture(sd: Mapping[str, torch.Tensor], config: Optional[dict] = None) -> dict:
    """Architecture numbers of an open_clip ViT CLIP from its state dict (heads/activation from ``config``)."""
    config = config or {}
    required = ["visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.proj",
                "visual.ln_pre.weight", "visual.ln_post.weight", "token_embedding.weight", "positional_embedding",
                "ln_final.weight", "text_projection", "logit_scale"]
    missing = [k for k in required if k not in sd]
    if missing:
        hint = ""
        if any(k.startswith("text.") for k in sd):
            hint = " (this looks like an open_clip CustomTextCLIP, e.g. a Hugging Face text tower; not supported)"
        elif any(k.startswith("visual.trunk.") for k in sd):
            hint = " (this looks like a timm image tower; not supported)"
        raise OpenClipConversionError(f"not a standard open_clip ViT CLIP state dict{hint}: missing {missing[:6]}")
    unsupported = [k for k in sd if ".ls_1." in k or ".ls_2." in k or k.startswith("visual.attn_pool")
                   or ".ln_attn." in k or k.endswith("attn.logit_scale") or k.startswith("visual.patchnorm")]
    if unsupported:
        raise OpenClipConversionError(f"open_clip features without a transformers CLIP equivalent: {unsupported[:4]}")

    conv = sd["visual.conv1.weight"]
    v_width, _, patch, patch_w = conv.shape
    n_pos = sd["visual.positional_embedding"].shape[0]
    grid = int(round(math.sqrt(n_pos - 1)))
    if patch != patch_w or grid * grid != n_pos - 1:
        raise OpenClipConversionError(f"non-square patches/grids are not supported (conv1 {tuple(conv.shape)}, "
                                      f"{n_pos} positions)")
    embed_dim = sd["visual.proj"].shape[1]
    t_width = sd["token_embedding.weight"].shape[1]
    if sd["text_projection"].shape != (t_width, embed_dim):
        raise OpenClipConversionError(f"text_projection {tuple(sd['text_projection'].shape)} does not map the text "
                                      f"width {t_width} to the image embedding width {embed_dim}")

    vis_cfg, txt_cfg = config.get("vision_cfg", {}), config.get("text_cfg", {})
    known = KNOWN_OPENCLIP_HEADS.get((v_width, t_width))
    if "head_width" in vis_cfg or "width" in vis_cfg:
        v_heads = v_width // int(vis_cfg.get("head_width", 64))
    elif known:
        v_heads = known[0]
    else:
        v_heads = None
    if "heads" in txt_cfg:
        t_heads = int(txt_cfg["heads"])
    elif known:
        t_heads = known[1]
    else:
        t_heads = None
    if v_heads is None or t_heads is None:
        raise OpenClipConversionError(
            f"the attention head counts of an open_clip model with widths {v_width}/{t_width} are not known: put its "
            "open_clip_config.json (from the model's hub repo) beside the checkpoint")
    if v_width % v_heads or t_width % t_heads:
        raise OpenClipConversionError(f"widths {v_width}/{t_width} do not split into {v_heads}/{t_heads} heads")

    return {
        "embed_dim": int(embed_dim),
        "hidden_act": "quick_gelu" if config.get("quick_gelu") else "gelu",
        "logit_scale": float(sd["logit_scale"].float()),
        "vision": {
            "hidden_size": int(v_width), "num_attention_heads": int(v_heads), "patch_size": int(patch),
            "image_size": int(grid * patch), "num_hidden_layers": _count_blocks(sd, "visual.transformer.resblocks."),
            "intermediate_size": int(sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        },
        "text": {
            "hidden_size": int(t_width), "num_attention_heads": int(t_heads),
            "vocab_size": int(sd["token_embedding.weight"].shape[0]),
            "max_position_embeddings": int(sd["positional_embedding"].shape[0]),
            "num_hidden_layers": _count_blocks(sd, "transformer.resblocks."),
            "intermediate_size": int(sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        },
    }


def _convert_blocks(sd, src: str, dst: str, layers: int, out: dict, used: set) -> None:
    for i in range(layers):
        s, d = f"{src}{i}.", f"{dst}{i}."

        def take(key):
            used.add(s + key)
            return sd[s + key]

        q, k, v = take("attn.in_proj_weight").chunk(3, dim=0)
        qb, kb, vb = take("attn.in_proj_bias").chunk(3, dim=0)
        out.update({
            d + "self_attn.q_proj.weight": q, d + "self_attn.k_proj.weight": k, d + "self_attn.v_proj.weight": v,
            d + "self_attn.q_proj.bias": qb, d + "self_attn.k_proj.bias": kb, d + "self_attn.v_proj.bias": vb,
            d + "self_attn.out_proj.weight": take("attn.out_proj.weight"),
            d + "self_attn.out_proj.bias": take("attn.out_proj.bias"),
            d + "layer_norm1.weight": take("ln_1.weight"), d + "layer_norm1.bias": take("ln_1.bias"),
            d + "layer_norm2.weight": take("ln_2.weight"), d + "layer_norm2.bias": take("ln_2.bias"),
            d + "mlp.fc1.weight": take("mlp.c_fc.weight"), d + "mlp.fc1.bias": take("mlp.c_fc.bias"),
            d + "mlp.fc2.weight": take("mlp.c_proj.weight"), d + "mlp.fc2.bias": take("mlp.c_proj.bias"),
        })


def convert_openclip_state_dict(sd: Mapping[str, torch.Tensor], arch: dict) -> Dict[str, torch.Tensor]:
    """open_clip keys → transformers ``CLIPModel`` keys (every open_clip tensor must be used)."""
    used = set()

    def take(key):
        used.add(key)
        return sd[key]

    out = {
        "vision_model.embeddings.patch_embedding.weight": take("visual.conv1.weight"),
        "vision_model.embeddings.class_embedding": take("visual.class_embedding"),
        "vision_model.embeddings.position_embedding.weight": take("visual.positional_embedding"),
        "vision_model.pre_layrnorm.weight": take("visual.ln_pre.weight"),
        "vision_model.pre_layrnorm.bias": take("visual.ln_pre.bias"),
        "vision_model.post_layernorm.weight": take("visual.ln_post.weight"),
        "vision_model.post_layernorm.bias": take("visual.ln_post.bias"),
        "visual_projection.weight": take("visual.proj").t(),
        "text_model.embeddings.token_embedding.weight": take("token_embedding.weight"),
        "text_model.embeddings.position_embedding.weight": take("positional_embedding"),
        "text_model.final_layer_norm.weight": take("ln_final.weight"),
        "text_model.final_layer_norm.bias": take("ln_final.bias"),
        "text_projection.weight": take("text_projection").t(),
        "logit_scale": take("logit_scale").reshape(()),
    }
    _convert_blocks(sd, "visual.transformer.resblocks.", "vision_model.encoder.layers.",
                    arch["vision"]["num_hidden_layers"], out, used)
    _convert_blocks(sd, "transformer.resblocks.", "text_model.encoder.layers.",
                    arch["text"]["num_hidden_layers"], out, used)
    left = sorted(k for k in sd if k not in used and k not in _IGNORED_KEYS)
    if left:
        raise OpenClipConversionError(f"open_clip tensors the conversion does not know: {left[:6]}"
                                      f"{' …' if len(left) > 6 else ''}")
    return {k: v.contiguous() for k, v in out.items()}


def clip_config_for(arch: dict, *, bos_token_id: int, eos_token_id: int, pad_token_id: int):
    """A transformers ``CLIPConfig`` for ``openclip_architecture(...)`` and the tokenizer's special ids."""
    from transformers import CLIPConfig

    act, dim = arch["hidden_act"], arch["embed_dim"]
    text = dict(arch["text"], hidden_act=act, projection_dim=dim, layer_norm_eps=1e-5,
                bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    vision = dict(arch["vision"], hidden_act=act, projection_dim=dim, layer_norm_eps=1e-5, num_channels=3)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=dim,
                      logit_scale_init_value=arch["logit_scale"])


def openclip_to_transformers(sd: Mapping[str, torch.Tensor], *, config: Optional[dict] = None,
                             bos_token_id: int = 49406, eos_token_id: int = 49407, pad_token_id: int = 0):
    """An eval-mode float32 transformers ``CLIPModel`` holding the open_clip weights ``sd``.

    ``config`` is the open_clip model config (see :func:`read_openclip_config`); the special token ids should be
    the tokenizer's (end-of-text must be the largest id, as in the CLIP vocabulary).
    """
    from transformers import CLIPModel

    arch = openclip_architecture(sd, config)
    converted = convert_openclip_state_dict(sd, arch)
    cfg = clip_config_for(arch, bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    with torch.device("meta"):
        model = CLIPModel(cfg)
    expected = set(model.state_dict())
    if expected != set(converted):
        raise OpenClipConversionError(
            f"converted keys do not match transformers' CLIPModel: missing {sorted(expected - set(converted))[:4]}, "
            f"extra {sorted(set(converted) - expected)[:4]}")
    model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True, assign=True)
    for mod in model.modules():  # non-persistent buffers (position_ids) are still on the meta device
        for name, buf in list(mod.named_buffers(recurse=False)):
            if buf.is_meta:
                if name != "position_ids":
                    raise OpenClipConversionError(f"unexpected buffer {name} in transformers' CLIPModel")
                mod.register_buffer(name, torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False)
    bad = [n for n, p in model.named_parameters() if p.is_meta]
    if bad:
        raise OpenClipConversionError(f"parameters left uninitialised by the conversion: {bad[:4]}")
    return model.eval()
