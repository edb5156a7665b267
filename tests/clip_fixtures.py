"""Tiny randomly initialised CLIP-family reward models in the layouts the loaders expect (nothing is downloaded).

Used by tests/test_rewards_clip.py and by benchmark scripts::

    from clip_fixtures import make_tiny_reward_models
    paths = make_tiny_reward_models("/tmp/reward_models")   # {"pickscore": ..., "clipscore": ..., ...}

Every builder writes real file formats: a transformers ``CLIPModel`` saved with ``save_pretrained`` (config.json,
model.safetensors), a CLIP BPE tokenizer built from a small vocabulary (the 512 byte-level tokens, a few merges and
the two special tokens: vocab.json, merges.txt, tokenizer.json, tokenizer_config.json), a preprocessor_config.json,
the LAION aesthetic MLP (``layers.0/2/4/6/7``) as .pth or .safetensors, and an open_clip-format ViT CLIP state dict
wrapped as HPSv2 saves it (``{"state_dict": ...}``) with an open_clip_config.json.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Optional

import torch

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
TINY_MERGES = [("a", "t</w>"), ("c", "at</w>"), ("d", "o"), ("do", "g</w>"), ("t", "h"), ("th", "e</w>"),
               ("r", "e"), ("re", "d</w>")]
TINY_PROMPTS = ["a red cat", "the dog", "a photo of a cat on a mat", "a blue dog at the sea", "", "cat"]
AESTHETIC_FILE = "sac+logos+ava1-l14-linearMSE.pth"


def bytes_to_unicode() -> Dict[int, str]:
    """GPT-2/CLIP byte → printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tiny_tokenizer(path, *, max_length: int = 16, pad_token: str = "<|endoftext|>") -> Path:
    """A CLIP BPE tokenizer: vocab.json + merges.txt in the CLIP layout, plus transformers' tokenizer files.

    Ids: 0..255 byte tokens, 256..511 byte tokens + "</w>", then the merges, then <|startoftext|>, <|endoftext|>
    (the end-of-text token has the largest id, as in CLIP). ``pad_token="!"`` pads like the LAION ViT-H-14 repo.
    """
    from transformers import CLIPTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + [a + b for a, b in TINY_MERGES]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in TINY_MERGES),
                                     encoding="utf-8")
    tok = CLIPTokenizer.from_pretrained(str(path), local_files_only=True, pad_token=pad_token,
                                        model_max_length=max_length)
    tok.save_pretrained(str(path))
    return path


def tiny_vocab_size() -> int:
    return 512 + len(TINY_MERGES) + 2


def write_preprocessor_config(path, *, size: int, crop_size: Optional[int] = None, mean=OPENAI_MEAN,
                              std=OPENAI_STD) -> Path:
    """A CLIPImageProcessor preprocessor_config.json (shortest-edge resize, centre crop, normalise)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    crop = crop_size or size
    cfg = {"crop_size": {"height": crop, "width": crop}, "do_center_crop": True, "do_convert_rgb": True,
           "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": list(mean),
           "image_processor_type": "CLIPImageProcessor", "image_std": list(std), "resample": 3,
           "rescale_factor": 1 / 255, "size": {"shortest_edge": size}}
    (path / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return path


def write_processor(path, *, image_size: int = 32, max_length: int = 16, pad_token: str = "<|endoftext|>") -> Path:
    write_tiny_tokenizer(path, max_length=max_length, pad_token=pad_token)
    return write_preprocessor_config(path, size=image_size)


def make_tiny_clip_dir(path, *, image_size: int = 32, patch_size: int = 8, embed_dim: int = 24, width: int = 32,
                       text_width: int = 32, layers: int = 2, heads: int = 4, max_length: int = 16,
                       hidden_act: str = "quick_gelu", logit_scale: Optional[float] = None,
                       processor: Optional[str] = "same", pad_token: str = "<|endoftext|>", seed: int = 0) -> Path:
    """A tiny transformers CLIPModel folder (config.json + model.safetensors).

    ``processor``: "same" writes the tokenizer/preprocessor files beside the model (openai/clip-* layout),
    "subdir" into ``<path>/processor/`` (PickScore layout), None writes none.
    """
    from transformers import CLIPConfig, CLIPModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab_size()
    common = dict(num_hidden_layers=layers, num_attention_heads=heads, hidden_act=hidden_act, projection_dim=embed_dim)
    text = dict(common, vocab_size=vocab, hidden_size=text_width, intermediate_size=4 * text_width,
                max_position_embeddings=max_length, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                pad_token_id=vocab - 1)
    vision = dict(common, hidden_size=width, intermediate_size=4 * width, image_size=image_size,
                  patch_size=patch_size)
    extra = {} if logit_scale is None else {"logit_scale_init_value": logit_scale}
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=embed_dim, **extra)
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    model.save_pretrained(str(path))
    if processor == "same":
        write_processor(path, image_size=image_size, max_length=max_length, pad_token=pad_token)
    elif processor == "subdir":
        write_processor(path / "processor", image_size=image_size, max_length=max_length, pad_token=pad_token)
    return path


def make_tiny_pickscore(path, **kwargs) -> Path:
    """PickScore_v1 layout: a GELU CLIP (as the LAION ViT-H-14 it is finetuned from) with logit_scale.exp() = 100,
    processor files from "laion/CLIP-ViT-H-14" in ``processor/`` (padding with "!", as that repo does)."""
    kwargs = dict(dict(hidden_act="gelu", logit_scale=math.log(100.0), processor="subdir", pad_token="!"), **kwargs)
    return make_tiny_clip_dir(path, **kwargs)


def tiny_aesthetic_state_dict(embed_dim: int = 24, seed: int = 0) -> Dict[str, torch.Tensor]:
    """The LAION aesthetic MLP's state dict (real hidden sizes 1024/128/64/16) for ``embed_dim``-d embeddings."""
    g = torch.Generator().manual_seed(seed)
    dims = [embed_dim, 1024, 128, 64, 16, 1]
    sd = {}
    for idx, (i, o) in zip([0, 2, 4, 6, 7], zip(dims[:-1], dims[1:])):
        sd[f"layers.{idx}.weight"] = torch.randn(o, i, generator=g) / math.sqrt(i)
        sd[f"layers.{idx}.bias"] = 0.1 * torch.randn(o, generator=g)
    return sd


def make_tiny_aesthetic(path, *, clip: Optional[str] = "subdir", fmt: str = "pth", embed_dim: int = 24,
                        seed: int = 0, **clip_kwargs) -> Path:
    """``<path>/sac+logos+ava1-l14-linearMSE.pth`` (or .safetensors) and, for ``clip="subdir"``, a tiny CLIP in
    ``<path>/clip-vit-large-patch14/`` (``clip="sibling"``: ``<path>/../clip-vit-large-patch14/``; None: none)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sd = tiny_aesthetic_state_dict(embed_dim, seed)
    if fmt == "safetensors":
        from safetensors.torch import save_file
        save_file(sd, str(path / AESTHETIC_FILE.replace(".pth", ".safetensors")))
    else:
        torch.save(sd, str(path / AESTHETIC_FILE))
    if clip == "subdir":
        make_tiny_clip_dir(path / "clip-vit-large-patch14", embed_dim=embed_dim, seed=seed + 1, **clip_kwargs)
    elif clip == "sibling":
        make_tiny_clip_dir(path.parent / "clip-vit-large-patch14", embed_dim=embed_dim, seed=seed + 1, **clip_kwargs)
    return path


TINY_OPENCLIP = dict(image_size=32, patch_size=8, embed_dim=24, vision_width=48, vision_head_width=12,
                     vision_layers=2, text_width=32, text_heads=4, text_layers=2, context_length=16)


def tiny_openclip_state_dict(vocab_size: Optional[int] = None, *, seed: int = 0, meta: bool = False,
                             **arch) -> Dict[str, torch.Tensor]:
    """An open_clip ViT CLIP state dict (the key layout of open_clip's ``CLIP`` class) with random weights.

    ``meta=True`` makes shape-only tensors (except logit_scale), e.g. for a full-size ViT-H-14 key/shape check.
    """
    a = dict(TINY_OPENCLIP, **arch)
    vocab_size = vocab_size or tiny_vocab_size()
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=1.0):
        if meta:
            return torch.empty(*shape, device="meta")
        return std * torch.randn(*shape, generator=g)

    def blocks(prefix, width, layers):
        out = {}
        for i in range(layers):
            p = f"{prefix}{i}."
            out.update({
                p + "ln_1.weight": 1 + rnd(width, std=0.1), p + "ln_1.bias": rnd(width, std=0.1),
                p + "attn.in_proj_weight": rnd(3 * width, width, std=width ** -0.5),
                p + "attn.in_proj_bias": rnd(3 * width, std=0.1),
                p + "attn.out_proj.weight": rnd(width, width, std=width ** -0.5),
                p + "attn.out_proj.bias": rnd(width, std=0.1),
                p + "ln_2.weight": 1 + rnd(width, std=0.1), p + "ln_2.bias": rnd(width, std=0.1),
                p + "mlp.c_fc.weight": rnd(4 * width, width, std=width ** -0.5),
                p + "mlp.c_fc.bias": rnd(4 * width, std=0.1),
                p + "mlp.c_proj.weight": rnd(width, 4 * width, std=(4 * width) ** -0.5),
                p + "mlp.c_proj.bias": rnd(width, std=0.1),
            })
        return out

    vw, tw, grid = a["vision_width"], a["text_width"], a["image_size"] // a["patch_size"]
    sd = {
        "visual.class_embedding": rnd(vw, std=vw ** -0.5),
        "visual.positional_embedding": rnd(grid * grid + 1, vw, std=vw ** -0.5),
        "visual.conv1.weight": rnd(vw, 3, a["patch_size"], a["patch_size"], std=0.1),
        "visual.ln_pre.weight": 1 + rnd(vw, std=0.1), "visual.ln_pre.bias": rnd(vw, std=0.1),
        "visual.ln_post.weight": 1 + rnd(vw, std=0.1), "visual.ln_post.bias": rnd(vw, std=0.1),
        "visual.proj": rnd(vw, a["embed_dim"], std=vw ** -0.5),
        "token_embedding.weight": rnd(vocab_size, tw, std=0.5),
        "positional_embedding": rnd(a["context_length"], tw, std=0.1),
        "ln_final.weight": 1 + rnd(tw, std=0.1), "ln_final.bias": rnd(tw, std=0.1),
        "text_projection": rnd(tw, a["embed_dim"], std=tw ** -0.5),
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
    }
    sd.update(blocks("visual.transformer.resblocks.", vw, a["vision_layers"]))
    sd.update(blocks("transformer.resblocks.", tw, a["text_layers"]))
    return sd


def tiny_openclip_config(**arch) -> dict:
    """open_clip_config.json contents (the format of open_clip's hub repos) for the tiny architecture."""
    a = dict(TINY_OPENCLIP, **arch)
    return {"model_cfg": {"embed_dim": a["embed_dim"],
                          "vision_cfg": {"image_size": a["image_size"], "layers": a["vision_layers"],
                                         "width": a["vision_width"], "head_width": a["vision_head_width"],
                                         "patch_size": a["patch_size"]},
                          "text_cfg": {"context_length": a["context_length"], "vocab_size": tiny_vocab_size(),
                                       "width": a["text_width"], "heads": a["text_heads"],
                                       "layers": a["text_layers"]}},
            "preprocess_cfg": {"mean": OPENAI_MEAN, "std": OPENAI_STD}}


def make_tiny_hpsv2(path, *, fmt: str = "pt", wrap: bool = True, write_config: bool = True,
                    processor: Optional[str] = "subdir", seed: int = 0, **arch) -> Path:
    """HPSv2 layout: ``<path>/HPS_v2.1_compressed.pt`` holding ``{"state_dict": <open_clip state dict>}`` (or an
    unwrapped .safetensors), ``open_clip_config.json`` and the CLIP-ViT-H-14-style processor in ``processor/``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    a = dict(TINY_OPENCLIP, **arch)
    sd = tiny_openclip_state_dict(seed=seed, **arch)
    if fmt == "safetensors":
        from safetensors.torch import save_file
        save_file(sd, str(path / "HPS_v2.1_compressed.safetensors"))
    else:
        torch.save({"state_dict": sd} if wrap else sd, str(path / "HPS_v2.1_compressed.pt"))
    if write_config:
        (path / "open_clip_config.json").write_text(json.dumps(tiny_openclip_config(**arch), indent=2))
    if processor is not None:
        proc = path / "processor" if processor == "subdir" else path
        write_processor(proc, image_size=a["image_size"], max_length=a["context_length"], pad_token="!")
    return path


def make_tiny_reward_models(root) -> Dict[str, Path]:
    """The whole ``reward_models`` layout with tiny models; returns {reward name: folder}."""
    root = Path(root)
    return {
        "pickscore": make_tiny_pickscore(root / "pickscore", seed=1),
        "clipscore": make_tiny_clip_dir(root / "clip-vit-large-patch14", seed=0),
        "aesthetic": make_tiny_aesthetic(root / "aesthetic", clip=None),  # uses the sibling clip-vit-large-patch14
        "hpsv2": make_tiny_hpsv2(root / "hpsv2"),
    }
