"""The LAION improved aesthetic predictor v2 as a reward."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch

from ..base import RewardError
from .layout import (AESTHETIC_FILES, AESTHETIC_URL, CLIP_CONFIG, CLIP_L14_URL, CLIP_WEIGHTS, PREPROCESSOR, PathLike,
                     _folder_of, _missing, _not_found)
from .model import ClipRewardBase, ImageSpec, _load_clip_model


def _aesthetic_head(sd: Dict[str, torch.Tensor], source: Path) -> torch.nn.Sequential:
    """The LAION aesthetic MLP from its state dict (Linear layers at the indices present, Dropout elsewhere)."""
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    linear = sorted({int(k.split(".")[1]) for k in sd if k.startswith("layers.") and k.endswith(".weight")})
    if not linear or set(sd) != {f"layers.{i}.{p}" for i in linear for p in ("weight", "bias")}:
        raise RewardError(f"reward 'aesthetic': {source} is not a LAION aesthetic predictor (expected keys "
                          f"layers.0/2/4/6/7.weight/bias, got {sorted(sd)[:6]})")
    layers: List[torch.nn.Module] = []
    for i in range(linear[-1] + 1):
        if i in linear:
            w = sd[f"layers.{i}.weight"]
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            lin.load_state_dict({"weight": w.float(), "bias": sd[f"layers.{i}.bias"].float()})
            layers.append(lin)
        else:
            layers.append(torch.nn.Dropout(0.0))  # Dropout(0.2/0.1) in training; identity at inference
    head = torch.nn.Sequential(*layers).eval()
    dims = [m.in_features for m in layers if isinstance(m, torch.nn.Linear)]
    outs = [m.out_features for m in layers if isinstance(m, torch.nn.Linear)]
    if outs[-1] != 1 or any(o != i for o, i in zip(outs[:-1], dims[1:])):
        raise RewardError(f"reward 'aesthetic': the layers in {source} do not chain to one output ({dims} -> {outs})")
    return head


class AestheticReward(ClipRewardBase):
    """LAION aesthetic predictor v2 (``sac+logos+ava1-l14-linearMSE``) on CLIP ViT-L/14 image embeddings.

    ``path``: the weights file (.pth or .safetensors) or its folder. The CLIP model comes from ``clip_path`` or, in
    this order, ``<folder>/clip-vit-large-patch14``, ``<folder>/clip``, ``<folder>`` itself and the sibling
    ``<folder>/../clip-vit-large-patch14`` (the CLIPScore folder of the reward_models layout). Its text tower is
    dropped after loading; prompts are ignored.
    """

    name = "aesthetic"

    def __init__(self, path: PathLike, *, clip_path: Optional[PathLike] = None,
                 dtype: Union[str, torch.dtype] = "float32", batch_size: int = 16):
        from ..openclip_convert import load_state_dict_file

        p = Path(path).expanduser()
        if p.is_file():
            weights, folder = p, p.parent
        else:
            folder = p
            found = [folder / f for f in AESTHETIC_FILES if (folder / f).is_file()]
            if not found:
                extra = "" if clip_path is not None else (
                    f" It also needs CLIP ViT-L/14 (config.json, model.safetensors, preprocessor_config.json of "
                    f"{CLIP_L14_URL}) in {folder / 'clip-vit-large-patch14'}{os.sep} or "
                    f"{folder.parent / 'clip-vit-large-patch14'}{os.sep}.")
                _not_found(self.name, folder, [" or ".join(AESTHETIC_FILES)], AESTHETIC_FILES[0], AESTHETIC_URL, extra)
            weights = found[0]
        if clip_path is not None:
            candidates = [_folder_of(clip_path)]
        else:
            candidates = [folder / "clip-vit-large-patch14", folder / "clip", folder,
                          folder.parent / "clip-vit-large-patch14"]
        groups = [CLIP_CONFIG, CLIP_WEIGHTS, PREPROCESSOR]
        clip_dir = next((c for c in candidates if not _missing(c, groups)), None)
        if clip_dir is None:
            first = next((c for c in candidates if c.is_dir() and (c / "config.json").is_file()), candidates[0])
            others = [str(c) for c in candidates if c != first]
            _not_found(self.name, first, _missing(first, groups),
                       "config.json, model.safetensors and preprocessor_config.json of CLIP ViT-L/14", CLIP_L14_URL,
                       f" (looked for the CLIP image encoder also in {', '.join(others)})" if others else "")
        self.head = _aesthetic_head(load_state_dict_file(weights), weights)
        model = _load_clip_model(self.name, clip_dir)
        width = int(model.config.projection_dim)
        if self.head[0].in_features != width:
            raise RewardError(f"reward 'aesthetic': {weights.name} expects {self.head[0].in_features}-d CLIP image "
                              f"embeddings but the CLIP model in {clip_dir} gives {width}-d; use CLIP ViT-L/14 "
                              f"({CLIP_L14_URL})")
        model.text_model = None  # the image tower is all the predictor needs
        model.text_projection = None
        super().__init__(model, None, ImageSpec.from_preprocessor_config(clip_dir / "preprocessor_config.json"),
                         dtype=dtype, batch_size=batch_size)
        self.weights_path, self.clip_path = weights, clip_dir

    def models(self):
        return [self.model, self.head]

    @torch.no_grad()
    def compute(self, images, prompts):
        return self.head(self.image_features(images)).squeeze(-1)
