"""The CLIP model side shared by every CLIP-family reward: transformers loading, batched torch preprocessing and
the base class that embeds images and prompts (the package docstring describes the exact pipeline)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..base import Reward, RewardDependencyMissing, RewardError, rgb
from .layout import PathLike

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def require_transformers(reward: str):
    """Import transformers or raise :class:`RewardDependencyMissing` with the install command."""
    try:
        import transformers
    except ImportError as e:
        raise RewardDependencyMissing(
            f"reward '{reward}' needs the transformers package: pip install \"transformers>=4.40\" (into ComfyUI's "
            f"Python; it does not need a different torch). Import error: {e}") from None
    return transformers


def _load_tokenizer(reward: str, folder: Path):
    transformers = require_transformers(reward)
    cls = getattr(transformers, "CLIPTokenizerFast", None) or transformers.CLIPTokenizer
    try:
        return cls.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:
        raise RewardError(f"reward '{reward}': cannot load the CLIP tokenizer from {folder}: {e}") from None


def _load_clip_model(reward: str, folder: Path):
    transformers = require_transformers(reward)
    try:
        model = transformers.CLIPModel.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:
        raise RewardError(f"reward '{reward}': cannot load a transformers CLIPModel from {folder}: {e}") from None
    return model.eval()


def parse_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
    try:
        return names[str(dtype).lower().replace("torch.", "")]
    except KeyError:
        raise RewardError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16") from None


# ------------------------------------------------------------------------------------------ transformers 4.x/5.x
def projected_features(output) -> torch.Tensor:
    """The projected embedding [B, D] from ``get_image_features``/``get_text_features`` in any transformers version.

    4.x returns the tensor itself. 5.x returns ``BaseModelOutputWithPooling`` with the projection applied to
    ``pooler_output`` (``last_hidden_state`` stays unprojected); with ``return_dict=False`` it is the tuple
    ``(last_hidden_state, pooler_output, ...)``. ``image_embeds``/``text_embeds`` (CLIPOutput) are accepted too.
    """
    if isinstance(output, torch.Tensor):
        return output
    for attr in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, (tuple, list)) and len(output) > 1 and isinstance(output[1], torch.Tensor) \
            and output[1].dim() == 2:
        return output[1]
    raise RewardError(f"cannot find the projected embedding in a {type(output).__name__} returned by transformers")


# ------------------------------------------------------------------------------------------------ preprocessing
@dataclass(frozen=True)
class ImageSpec:
    """How images become ``pixel_values`` (read from ``preprocessor_config.json``)."""

    crop: Tuple[int, int]  # final (height, width)
    resize: Optional[Union[int, Tuple[int, int]]]  # shortest edge (int) or exact (h, w); None: no resize
    mean: Tuple[float, ...] = OPENAI_CLIP_MEAN
    std: Tuple[float, ...] = OPENAI_CLIP_STD
    mode: str = "crop"  # "crop": resize + centre crop (CLIPImageProcessor); "pad": longest side + pad (HPSv2)
    center_crop: bool = True
    normalize: bool = True
    clamp: bool = True  # clamp after resampling, as PIL's uint8 output is

    @classmethod
    def from_preprocessor_config(cls, path: PathLike, **overrides) -> "ImageSpec":
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)

        def hw(v):
            if isinstance(v, dict):
                if "height" in v:
                    return int(v["height"]), int(v["width"])
                if "shortest_edge" in v:
                    return int(v["shortest_edge"])
            return int(v) if not isinstance(v, (list, tuple)) else (int(v[0]), int(v[1]))

        size = hw(cfg.get("size", 224))
        crop = hw(cfg.get("crop_size", size))
        crop = (crop, crop) if isinstance(crop, int) else crop
        args = dict(crop=crop, resize=size if cfg.get("do_resize", True) else None,
                    mean=tuple(float(m) for m in cfg.get("image_mean", OPENAI_CLIP_MEAN)),
                    std=tuple(float(s) for s in cfg.get("image_std", OPENAI_CLIP_STD)),
                    center_crop=bool(cfg.get("do_center_crop", True)), normalize=bool(cfg.get("do_normalize", True)))
        args.update(overrides)
        return cls(**args)


def _resize(x: torch.Tensor, size: Tuple[int, int], clamp: bool) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    return x.clamp(0, 1) if clamp else x


def preprocess_images(images: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """ComfyUI IMAGE [B, H, W, C] in [0, 1] → normalised ``pixel_values`` [B, 3, h, w] float32, on the same device."""
    x = rgb(images).float().permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    if spec.mode == "pad":  # open_clip ResizeMaxSize: longest side -> crop size, centred black padding
        target = spec.crop[0]
        scale = target / max(h, w)
        nh, nw = round(h * scale), round(w * scale)
        x = _resize(x, (nh, nw), spec.clamp)
        ph, pw = target - nh, target - nw
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.0)
    else:
        if spec.resize is not None:
            if isinstance(spec.resize, int):
                short, long = (h, w) if h <= w else (w, h)
                new_short, new_long = spec.resize, int(spec.resize * long / short)
                size = (new_short, new_long) if h <= w else (new_long, new_short)
            else:
                size = spec.resize
            x = _resize(x, size, spec.clamp)
        if spec.center_crop:
            ch, cw = spec.crop
            h, w = x.shape[-2:]
            if h < ch or w < cw:  # as CLIPImageProcessor: pad with zeros to the crop size first
                x = F.pad(x, ((max(cw - w, 0)) // 2, (max(cw - w, 0) + 1) // 2,
                              (max(ch - h, 0)) // 2, (max(ch - h, 0) + 1) // 2))
                h, w = x.shape[-2:]
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top:top + ch, left:left + cw]
    if spec.normalize:
        mean = torch.tensor(spec.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        x = (x - mean) / std
    return x.contiguous()


# ------------------------------------------------------------------------------------------------------ rewards
class ClipRewardBase(Reward):
    """Shared machinery: a transformers ``CLIPModel`` (+ tokenizer), batched features on the images' device."""

    name = "clip"
    thread_safe = True  # its own model under no_grad (a host that places the model wraps it: see managed.py)

    def __init__(self, model, tokenizer, image_spec: ImageSpec, *, dtype: Union[str, torch.dtype] = "float32",
                 batch_size: int = 16):
        self.dtype = parse_dtype(dtype)
        self.model = model.eval().to(self.dtype)
        self.tokenizer = tokenizer
        self.image_spec = image_spec
        self.batch_size = max(1, int(batch_size))
        model_size = getattr(getattr(model.config, "vision_config", model.config), "image_size", None)
        if model_size is not None and tuple(image_spec.crop) != (model_size, model_size):
            raise RewardError(f"reward '{self.name}': preprocessor_config.json crops to {image_spec.crop} but the CLIP "
                              f"model takes {model_size}×{model_size} images; use the processor files that belong "
                              "to this model")

    @property
    def max_text_length(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    def models(self):
        return [self.model]

    def _to(self, device: torch.device) -> None:
        """Follow the images, reading where the weights are now: a host's memory manager may have moved them."""
        for module in self.models():
            if next(module.parameters()).device != device:
                module.to(device)
        self.model.eval()

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised projected image embeddings [B, D] (float32)."""
        self._to(images.device)
        pixels = preprocess_images(images, self.image_spec).to(self.dtype)
        feats = [projected_features(self.model.get_image_features(pixel_values=chunk))
                 for chunk in pixels.split(self.batch_size)]
        return F.normalize(torch.cat(feats).float(), dim=-1)

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str], device: torch.device) -> torch.Tensor:
        """L2-normalised projected text embeddings [B, D] (float32); repeated prompts are encoded once."""
        self._to(device)
        unique = list(dict.fromkeys(prompts))
        feats = []
        for i in range(0, len(unique), self.batch_size):
            tok = self.tokenizer(unique[i:i + self.batch_size], padding=True, truncation=True,
                                 max_length=self.max_text_length, return_tensors="pt")
            out = self.model.get_text_features(input_ids=tok["input_ids"].to(device),
                                               attention_mask=tok["attention_mask"].to(device))
            feats.append(projected_features(out))
        feats = F.normalize(torch.cat(feats).float(), dim=-1)
        index = torch.tensor([unique.index(p) for p in prompts], device=feats.device)
        return feats[index]

    def cosine(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        img = self.image_features(images)
        txt = self.text_features(prompts, images.device)
        return (img * txt).sum(-1)
