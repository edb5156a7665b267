"""Text prompts for the toy digit model: a small deterministic text → class mapping.

Accepted: "a handwritten 7", "7", "seven", "digit seven", "Seven.", "the number 3", "draw a 4" … — any text that
names exactly one digit (as a numeral or an English word, case-insensitive). "" (or only spaces) is the null class
used for the negative prompt / unconditional branch.
"""
from __future__ import annotations

import re
from typing import List, Optional, Sequence

import torch

from .model import NULL_CLASS, one_hot_context

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_TOKEN = re.compile(r"[a-z]+|\d+")
_EXAMPLES = "'a handwritten 7', '7', 'seven', 'the number 3', or '' for the unconditional prompt"


def parse_digit(prompt: str) -> Optional[int]:
    """The digit a prompt names, or None for the empty prompt. Raises ValueError for anything ambiguous."""
    if not isinstance(prompt, str):
        raise ValueError(f"a toy-model prompt must be text, got {type(prompt).__name__}")
    if not prompt.strip():
        return None
    found = set()
    for token in _TOKEN.findall(prompt.lower()):
        if token.isdigit():
            if len(token) != 1:
                raise ValueError(f"the toy model draws single digits 0–9; {token!r} in {prompt!r} is not one. "
                                 f"Try {_EXAMPLES}.")
            found.add(int(token))
        elif token in NUMBER_WORDS:
            found.add(NUMBER_WORDS.index(token))
    if len(found) != 1:
        what = "no digit" if not found else f"several digits ({', '.join(map(str, sorted(found)))})"
        raise ValueError(f"the toy model needs a prompt naming exactly one digit; {prompt!r} names {what}. "
                         f"Try {_EXAMPLES}.")
    return found.pop()


def encode_prompts(prompts: Sequence[str], device=None) -> torch.Tensor:
    """[B, 1, 11] one-hot conditioning for the toy model."""
    labels: List[int] = [NULL_CLASS if (d := parse_digit(p)) is None else d for p in prompts]
    return one_hot_context(labels, device)
