"""CLIPScore (Hessel et al. 2021) as a reward."""
from __future__ import annotations

from typing import Optional, Union

import torch

from .layout import CLIP_L14_URL, PathLike, _clip_reward_files
from .model import ClipRewardBase, ImageSpec, _load_clip_model, _load_tokenizer


class CLIPScoreReward(ClipRewardBase):
    """CLIPScore (Hessel et al. 2021): ``weight · max(cos(image, prefix + prompt), 0)``, weight 2.5.

    ``path``: a transformers CLIP folder with its processor files (default expectation openai/clip-vit-large-patch14)
    or a file in it; ``processor_path`` if the processor files live elsewhere.
    """

    name = "clipscore"
    value_range = (0.0, None)  # weight · max(cos, 0)

    def __init__(self, path: PathLike, *, processor_path: Optional[PathLike] = None, weight: float = 2.5,
                 prefix: str = "", dtype: Union[str, torch.dtype] = "float32", batch_size: int = 16):
        folder, proc = _clip_reward_files(self.name, path, CLIP_L14_URL, processor_path, separate_processor=False)
        self.weight, self.prefix = float(weight), str(prefix)
        super().__init__(_load_clip_model(self.name, folder), _load_tokenizer(self.name, proc),
                         ImageSpec.from_preprocessor_config(proc / "preprocessor_config.json"),
                         dtype=dtype, batch_size=batch_size)

    @torch.no_grad()
    def compute(self, images, prompts):
        cos = self.cosine(images, [self.prefix + p for p in prompts])
        return self.weight * cos.clamp(min=0)
