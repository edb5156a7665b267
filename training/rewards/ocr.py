"""OCR text-rendering reward (the CPS / Flow-GRPO OCR task), read by rapidocr's bundled ONNX models (offline, CPU).

Target = the first quoted span of the prompt. As Flow-GRPO's ``flow_grpo/ocr.py``: spaces are removed and both texts
lowercased; the recognised text is all detected boxes joined; a target found inside it scores 1, otherwise
reward = max(1 − Levenshtein(recognised, target) / len(target), 0). Like Flow-GRPO (PaddleOCR with
``use_angle_cls=False``) the text-orientation classifier is off.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional, Sequence

import torch

from .base import Reward, RewardDependencyMissing, RewardError
from .weight_free import to_uint8

INSTALL = "pip install rapidocr onnxruntime"
# A single quote opens only after a non-word character and closes only before one, so the apostrophes in
# "a cat's sign" or 'Joe's Diner' are not taken for quotes.
_QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”|(?<!\w)‘(.+?)’(?!\w)|(?<!\w)\'(.+?)\'(?!\w)')


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


_KNOWN_MODELS = ("PP-OCRv6_{task}_small.onnx", "ch_PP-OCRv4_{task}_infer.onnx")  # newer, older 3.x wheels


def bundled_models(package_dir: Path) -> dict:
    """The detection and recognition ONNX files shipped inside the rapidocr wheel (names vary by version)."""
    found = {}
    for task in ("det", "rec"):
        known = [package_dir / "models" / name.format(task=task) for name in _KNOWN_MODELS]
        files = [f for f in known if f.is_file()][:1] or sorted((package_dir / "models").glob(f"*_{task}_*.onnx"))
        if len(files) != 1:
            raise RewardError(f"reward 'ocr' expects one bundled {task} model in {package_dir / 'models'}, found "
                              f"{[f.name for f in files]}; reinstall rapidocr ({INSTALL})")
        found[task] = str(files[0])
    return found


def make_engine():
    """A CPU RapidOCR engine on the wheel's own model files: with explicit paths it never downloads."""
    try:
        import onnxruntime  # noqa: F401  (rapidocr imports it only when the first image is read)
        import rapidocr
        from rapidocr import RapidOCR
    except ImportError as error:
        raise RewardDependencyMissing(f"reward 'ocr' needs rapidocr and onnxruntime: {INSTALL}") from error
    log = logging.getLogger("RapidOCR")
    log.setLevel(logging.ERROR)  # it logs every model load and every empty detection otherwise
    models = bundled_models(Path(rapidocr.__file__).parent)
    engine = RapidOCR(params={"Global.use_cls": False, "Det.model_path": models["det"],
                              "Rec.model_path": models["rec"], "EngineConfig.onnxruntime.use_cuda": False,
                              "EngineConfig.onnxruntime.use_dml": False})
    log.setLevel(logging.ERROR)  # again: newer versions reset the level in the constructor
    return engine


class OCRReward(Reward):
    """Text-rendering accuracy read by rapidocr (PP-OCR det + rec, ONNX on the CPU). details: text, target."""

    name = "ocr"
    thread_safe = True  # one ONNX session on the CPU, used by one thread at a time

    def __init__(self, engine: Optional[object] = None):
        self.engine = engine if engine is not None else make_engine()

    def read(self, rgb_uint8) -> str:
        result = self.engine(rgb_uint8[..., ::-1].copy())  # rapidocr takes arrays as BGR, like cv2.imread
        texts = getattr(result, "txts", None) or ()
        return "".join(texts)

    def compute(self, images: torch.Tensor, prompts: Sequence[str]):
        targets = [quoted_target(p) for p in prompts]
        texts = [self.read(array) for array in to_uint8(images).numpy()]
        scores = [ocr_score(text, target) for text, target in zip(texts, targets)]
        return torch.tensor(scores, dtype=torch.float32), {"text": texts, "target": targets}


__all__ = ["OCRReward", "quoted_target", "levenshtein", "ocr_score", "make_engine"]
