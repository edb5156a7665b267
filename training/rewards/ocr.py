"""OCR text-rendering reward (the CPS / Flow-GRPO OCR task), with rapidocr's bundled ONNX models (offline).

Target = the first quoted span of the prompt. As Flow-GRPO's ``ocr.py``: spaces are removed and both texts
lowercased; the recognised text is all detected boxes joined; a target found inside it scores 1, otherwise
reward = max(1 − Levenshtein(recognised, target) / len(target), 0).
"""
from __future__ import annotations

import logging
import re
from typing import Optional, Sequence

import torch

from .base import Reward, RewardError
from .weight_free import to_uint8

INSTALL = "pip install rapidocr onnxruntime"
_QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”|‘([^’]+)’|\'([^\']+)\'')


def quoted_target(prompt: str) -> str:
    """The first quoted span ("…", “…”, ‘…’ or '…') of a prompt."""
    match = _QUOTED.search(prompt)
    if match is None:
        raise RewardError(f"reward 'ocr' needs the text to render in quotes in every prompt, e.g. 'a neon sign "
                          f"that says \"OPEN 24/7\"'; got {prompt!r}")
    return next(group for group in match.groups() if group is not None)


def levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def normalise(text: str) -> str:
    return text.replace(" ", "").lower()


def ocr_score(recognised: str, target: str) -> float:
    recognised, target = normalise(recognised), normalise(target)
    if not target:
        raise RewardError("reward 'ocr': the quoted target text is empty")
    distance = 0 if target in recognised else levenshtein(recognised, target)
    return max(1.0 - distance / len(target), 0.0)


class OCRReward(Reward):
    """Text-rendering accuracy read by rapidocr (PP-OCR det + rec, CPU ONNX). details: text, target."""

    name = "ocr"

    def __init__(self, engine: Optional[object] = None):
        if engine is None:
            try:
                from rapidocr import RapidOCR
            except ImportError as error:
                raise RewardError(f"reward 'ocr' needs rapidocr and onnxruntime: {INSTALL}") from error
            logging.getLogger("RapidOCR").setLevel(logging.ERROR)  # it logs every empty detection otherwise
            engine = RapidOCR()
        self.engine = engine

    def read(self, image) -> str:
        result = self.engine(image)
        texts = getattr(result, "txts", None) or ()
        return "".join(texts)

    def compute(self, images: torch.Tensor, prompts: Sequence[str]):
        targets = [quoted_target(p) for p in prompts]
        texts = [self.read(array) for array in to_uint8(images).numpy()]
        scores = [ocr_score(text, target) for text, target in zip(texts, targets)]
        return torch.tensor(scores, dtype=torch.float32), {"text": texts, "target": targets}


__all__ = ["OCRReward", "quoted_target", "levenshtein", "ocr_score"]
