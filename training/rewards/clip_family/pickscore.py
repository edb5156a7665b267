"""PickScore (Kirstain et al. 2023) as a reward."""
from __future__ import annotations

from typing import Optional, Union

import torch

from .layout import PICKSCORE_URL, PathLike, _clip_reward_files
from .model import ClipRewardBase, ImageSpec, _load_clip_model, _load_tokenizer


class PickScoreReward(ClipRewardBase):
    """PickScore: ``scale · logit_scale.exp() · cos(image, prompt)`` (raw PickScore for ``scale=1``; Flow-GRPO uses
    ``scale=1/26``).

    ``path``: the PickScore_v1 folder (config.json + model.safetensors) or a file in it; the CLIP-ViT-H-14
    processor files go into ``<path>/processor/`` or ``<path>`` itself (or pass ``processor_path``).
    """

    name = "pickscore"

    def __init__(self, path: PathLike, *, processor_path: Optional[PathLike] = None, scale: float = 1.0,
                 dtype: Union[str, torch.dtype] = "float32", batch_size: int = 16):
        folder, proc = _clip_reward_files(self.name, path, PICKSCORE_URL, processor_path, separate_processor=True)
        self.scale = float(scale)
        super().__init__(_load_clip_model(self.name, folder), _load_tokenizer(self.name, proc),
                         ImageSpec.from_preprocessor_config(proc / "preprocessor_config.json"),
                         dtype=dtype, batch_size=batch_size)

    @torch.no_grad()
    def compute(self, images, prompts):
        logit_scale = self.model.logit_scale.detach().float().exp()
        return self.scale * logit_scale * self.cosine(images, prompts)
