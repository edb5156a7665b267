"""HPSv2 / HPSv2.1 (Wu et al. 2023) as a reward."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import torch

from ..base import RewardError
from .layout import (HPSV2_FILES, HPSV2_URL, PROCESSOR_FILES, PROCESSOR_SUBDIR, VIT_H_PROCESSOR_URL, PathLike,
                     _find_processor_dir, _folder_of, _not_found)
from .model import ClipRewardBase, ImageSpec, _load_tokenizer


class HPSv2Reward(ClipRewardBase):
    """HPSv2 / HPSv2.1: ``cos(image, prompt)`` of the HPS-finetuned open_clip ViT-H-14, converted to transformers.

    ``path``: the checkpoint (HPS_v2.1_compressed.pt, HPS_v2_compressed.pt or a .safetensors of the same state
    dict; possibly wrapped in ``{"state_dict": ...}``) or its folder (v2.1 preferred). An ``open_clip_config.json``
    beside it is used for the head counts if present. The CLIP-ViT-H-14 processor files go into
    ``<folder>/processor/`` or ``<folder>`` itself (or pass ``processor_path``).
    """

    name = "hpsv2"

    def __init__(self, path: PathLike, *, processor_path: Optional[PathLike] = None,
                 dtype: Union[str, torch.dtype] = "float32", batch_size: int = 16):
        from ..openclip_convert import load_state_dict_file, openclip_to_transformers, read_openclip_config

        p = Path(path).expanduser()
        if p.is_file():
            ckpt, folder = p, p.parent
        else:
            folder = p
            found = [folder / f for f in HPSV2_FILES if (folder / f).is_file()]
            if not found:
                extra = "" if processor_path is not None else (
                    f" The processor files ({', '.join(PROCESSOR_FILES)}) of {VIT_H_PROCESSOR_URL} go into "
                    f"{folder / PROCESSOR_SUBDIR}{os.sep}.")
                _not_found(self.name, folder, [" or ".join(HPSV2_FILES[:2])], "HPS_v2.1_compressed.pt", HPSV2_URL,
                           extra)
            ckpt = found[0]
        if processor_path is not None:
            candidates = [_folder_of(processor_path)]
        else:
            candidates = [folder / PROCESSOR_SUBDIR, folder]
        proc = _find_processor_dir(self.name, candidates)
        tokenizer = _load_tokenizer(self.name, proc)
        eos = tokenizer.eos_token_id
        model = openclip_to_transformers(
            load_state_dict_file(ckpt), config=read_openclip_config(folder / "open_clip_config.json"),
            bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)
        if len(tokenizer) > model.config.text_config.vocab_size:
            raise RewardError(f"reward 'hpsv2': the tokenizer in {proc} has {len(tokenizer)} tokens but the model "
                              f"only {model.config.text_config.vocab_size}; use the CLIP-ViT-H-14 processor files "
                              f"({VIT_H_PROCESSOR_URL})")
        spec = ImageSpec.from_preprocessor_config(proc / "preprocessor_config.json", mode="pad", clamp=False)
        super().__init__(model, tokenizer, spec, dtype=dtype, batch_size=batch_size)
        self.checkpoint = ckpt

    @torch.no_grad()
    def compute(self, images, prompts):
        return self.cosine(images, prompts)
