"""CLIP-family rewards loaded from local files only: PickScore, CLIPScore, LAION aesthetic predictor v2, HPSv2/v2.1.

Nothing is ever downloaded: every loader takes a path (a folder or a file) and, if something is missing, raises
:class:`RewardModelNotFound` naming the files, the folder to put them in and where to get them.
:func:`reward_model_layout` describes the folders expected under a ``reward_models`` root (ComfyUI:
``models/reward_models``) and :func:`find_reward_model` looks for them in given roots.

Scores (one per (image, its prompt)); image/text features are the projected CLIP embeddings, L2-normalised:

* **PickScore** (Kirstain et al. 2023): ``logit_scale.exp() · cos(image, text)`` as in the PickScore repo
  (``logit_scale.exp()`` = 100 for PickScore_v1, so typical values are 18–23). Flow-GRPO divides this by 26 to get
  roughly [0, 1]; here the raw published value is the default and ``scale=1/26`` reproduces Flow-GRPO. GRPO's
  group-normalised advantages are invariant to a positive constant factor, so the scale only matters when rewards
  are mixed by weighted sums or compared across papers.
* **CLIPScore** (Hessel et al. 2021): ``w · max(cos(image, text), 0)`` with ``w = 2.5``. The paper prefixes captions
  with "A photo depicts"; pass ``prefix="A photo depicts "`` to do the same (default: prompts as given).
* **Aesthetic** (LAION improved aesthetic predictor v2, ``sac+logos+ava1-l14-linearMSE.pth``): an MLP
  ``Linear(768,1024) Dropout Linear(1024,128) Dropout Linear(128,64) Dropout Linear(64,16) Linear(16,1)`` (keys
  ``layers.0/2/4/6/7``; no activations, as in the original) on the L2-normalised CLIP ViT-L/14 image embedding.
  Scores are on the AVA 1–10 scale. The prompt is ignored.
* **HPSv2 / HPSv2.1** (Wu et al. 2023): ``cos(image, text)`` — HPSv2's ``score()`` takes the diagonal of
  ``image_features @ text_features.T`` with normalised features and no logit scale (typical values 0.2–0.35). The
  official checkpoint is an open_clip ViT-H-14 state dict; open_clip itself cannot be used (it imports torchvision,
  which does not import beside the CPU torch), so :mod:`.openclip_convert` converts it to a transformers
  ``CLIPModel`` (exact GELU as open_clip's ViT-H-14; heads from ``open_clip_config.json`` or the known ViT-H-14
  numbers; see that module). HPSv2 preprocesses with open_clip's ``ResizeMaxSize``: the longest side is resized to
  224 and the short side padded with black, centred (identical to resize + centre crop for square images); the
  same is done here. Prompts go through transformers' CLIP tokenizer instead of open_clip's (which also runs ftfy
  and HTML unescaping), so only prompts with broken unicode or HTML entities can tokenize differently.

Image preprocessing runs in torch on the images' device, batched: RGB (``base.rgb``), bicubic resize with
antialias of the shortest side to the processor's ``size`` (``int(size · long / short)`` for the long side, as
transformers' ``CLIPImageProcessor``), values clamped to [0, 1] (PIL clamps its uint8 output), centre crop to
``crop_size`` and normalisation with ``image_mean``/``image_std``, all read from ``preprocessor_config.json``. It
differs from the PIL pipeline only by PIL's uint8 rounding and its slightly different bicubic filter (≈ 0.004 mean
absolute difference after normalisation). Text goes through the CLIP tokenizer with padding and truncation to the
model's ``max_position_embeddings`` (77); identical prompts in a batch (GRPO groups) are encoded once.

transformers 4.x returns a tensor from ``get_image_features``/``get_text_features``; 5.x returns a
``BaseModelOutputWithPooling`` whose ``pooler_output`` holds the *projected* embedding. :func:`projected_features`
handles both. Models run in eval mode under ``torch.no_grad()`` in ``dtype`` (float32 default), on the device of
the images (moved on first use; a host's memory manager may place them instead, see managed.py); scores are
float32.
"""
from __future__ import annotations

from typing import Iterable, Optional, Union

from .aesthetic import AestheticReward
from .clipscore import CLIPScoreReward
from .hpsv2 import HPSv2Reward
from .layout import (REWARD_MODELS, PathLike, RewardModelNotFound, RewardModelSpec, _spec, find_reward_model,
                     reward_model_layout)
from .model import (ClipRewardBase, ImageSpec, RewardDependencyMissing, preprocess_images, projected_features,
                    require_transformers)
from .pickscore import PickScoreReward


def load_clip_reward(name: str, roots: Union[PathLike, Iterable[PathLike], None] = None, *,
                     path: Optional[PathLike] = None, **kwargs) -> ClipRewardBase:
    """Construct a CLIP-family reward by name from ``path`` or from ``find_reward_model(name, roots)``."""
    spec = _spec(name)
    cls = {"pickscore": PickScoreReward, "clipscore": CLIPScoreReward, "aesthetic": AestheticReward,
           "hpsv2": HPSv2Reward}[spec.name]
    return cls(path if path is not None else find_reward_model(spec.name, roots), **kwargs)


__all__ = ["AestheticReward", "CLIPScoreReward", "ClipRewardBase", "HPSv2Reward", "ImageSpec", "PickScoreReward",
           "REWARD_MODELS", "RewardDependencyMissing", "RewardModelNotFound", "RewardModelSpec", "find_reward_model",
           "load_clip_reward", "preprocess_images", "projected_features", "require_transformers",
           "reward_model_layout"]
