"""Rewards that need no model weights: JPEG (in)compressibility, colourfulness, sharpness, low residual noise.

All take ComfyUI IMAGE tensors [B, H, W, C] in [0, 1] and ignore the prompt.
"""
from __future__ import annotations

import io
from typing import Dict, Type

import torch

from .._host import samplers
from .base import Reward, rgb

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's "L" conversion


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 3] uint8 on the CPU, rounded as DDPO does: (x·255).round().clamp(0, 255)."""
    return (rgb(images).float() * 255).round().clamp(0, 255).to(torch.uint8).cpu()


def jpeg_kilobytes(images: torch.Tensor, quality: int = 95) -> torch.Tensor:
    """Size of each image saved as JPEG at ``quality`` in kB (bytes / 1000), as in DDPO's compressibility task."""
    from PIL import Image
    sizes = []
    for array in to_uint8(images).numpy():
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000)
    return torch.tensor(sizes, dtype=torch.float32)


class WeightFreeReward(Reward):
    """Plain tensor/PIL maths on the images alone: safe to score in a worker thread while sampling goes on."""

    thread_safe = True


class JpegCompressibility(WeightFreeReward):
    """DDPO (Black et al. 2023) compressibility: −(JPEG size in kB at quality 95). Smaller files score higher."""

    name = "jpeg_compressibility"
    value_range = (None, 0.0)

    def compute(self, images, prompts):
        kb = jpeg_kilobytes(images)
        return -kb, {"kb": kb.tolist()}


class JpegIncompressibility(WeightFreeReward):
    """DDPO incompressibility: +(JPEG size in kB at quality 95). Detailed (or noisy) images score higher."""

    name = "jpeg_incompressibility"
    value_range = (0.0, None)

    def compute(self, images, prompts):
        kb = jpeg_kilobytes(images)
        return kb, {"kb": kb.tolist()}


def colorfulness(images: torch.Tensor) -> torch.Tensor:
    """Hasler & Süsstrunk (2003) M = σ_rgyb + 0.3·μ_rgyb on 0–255 values, rg = R − G, yb = (R + G)/2 − B.

    σ/μ are the population std/mean over the image; grey images give 0, vivid photos ≈ 50–110."""
    x = rgb(images).float() * 255
    r, g, b = x.unbind(-1)
    rg, yb = (r - g).flatten(1), ((r + g) / 2 - b).flatten(1)
    std = (rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False)).sqrt()
    mean = (rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2).sqrt()
    return std + 0.3 * mean


class Colorfulness(WeightFreeReward):
    """Hasler–Süsstrunk colourfulness (0–255 scale)."""

    name = "colorfulness"
    value_range = (0.0, None)

    def compute(self, images, prompts):
        return colorfulness(images)


def luma(images: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] luma in [0, 1] (BT.601 weights)."""
    weights = torch.tensor(_LUMA, device=images.device, dtype=torch.float32)
    return (rgb(images).float() * weights).sum(-1)[:, None]


def laplacian_variance(images: torch.Tensor) -> torch.Tensor:
    """Variance of the 4-neighbour Laplacian of the luma (valid region, values in [0, 1] units): the classic
    focus measure (Pech-Pacheco et al. 2000). Flat images give 0; a sharp edge far more than its blurred copy."""
    y = luma(images)[:, 0]
    # the 3×3 kernel [[0, 1, 0], [1, −4, 1], [0, 1, 0]] as shifted sums: a single-channel conv2d is ~10× slower on CPU
    response = (y[:, :-2, 1:-1] + y[:, 2:, 1:-1] + y[:, 1:-1, :-2] + y[:, 1:-1, 2:]) - 4 * y[:, 1:-1, 1:-1]
    return response.flatten(1).var(dim=1, unbiased=False)


class Sharpness(WeightFreeReward):
    """Variance of the Laplacian of the luma (×1000 so typical photos land around 1–50)."""

    name = "sharpness"
    value_range = (0.0, None)
    scale = 1000.0

    def compute(self, images, prompts):
        return laplacian_variance(images) * self.scale


class LowNoise(WeightFreeReward):
    """−σ̂, the residual-noise estimate of the comparison nodes (finest Haar diagonal band, MAD / 0.6745, in [0, 1]
    image units): the artifact Flow-SDE leaves and CPS removes. details: sigma."""

    name = "low_noise"
    value_range = (None, 0.0)

    def compute(self, images, prompts):
        sigma = samplers.estimate_noise(rgb(images).float())
        return -sigma, {"sigma": sigma.tolist()}


def paper_haze(images: torch.Tensor) -> torch.Tensor:
    """Mean darkness (1 − luma) of the lighter half of each image's pixels, [B]: for dark ink on light paper (ink
    covers well under half of a digit image) that half is paper, so this reads 0 for clean white paper and rises
    with the grey haze an over-trained toy LoRA puts on the background; strokes and their soft edges do not count."""
    darkness = (1 - luma(images)).flatten(1)
    half = max(1, darkness.shape[1] // 2)
    return darkness.topk(half, dim=1, largest=False).values.mean(1)


class PaperHaze(WeightFreeReward):
    """−(mean darkness of the paper, the lighter half of the pixels): for dark ink on light paper such as the toy
    digits, how grey the background is (0 = clean). A drift monitor for the toy: the digit reward does not see it.
    details: haze."""

    name = "paper_haze"
    value_range = (-1.0, 0.0)
    noticeable_change = 0.02  # ≈ 2 % grey on white paper starts to show; the live chart's monitor axis spans ± this

    def compute(self, images, prompts):
        haze = paper_haze(images)
        return -haze, {"haze": haze.tolist()}


INK_THRESHOLD = 0.5  # darkness above which a pixel counts as ink (a grey haze stays below it)


def stroke_width(images: torch.Tensor) -> torch.Tensor:
    """Mean stroke width of dark-on-light line art in native pixels, [B]: 2·area / perimeter of the ink (pixels
    darker than ``INK_THRESHOLD``, at the native resolution of nearest-neighbour upscales), with the perimeter
    counted as ink/paper pixel edges (the image border is paper). A stroke of width w and length L ≫ w has area wL
    and perimeter ≈ 2L, hence ≈ w; a 2×L bar gives exactly 4L / (2L + 4). No ink gives 0. Binarising makes the
    measure blind to a background haze, so it cannot be raised by greying the paper."""
    darkness = 1 - luma(images)[:, 0]
    widths = []
    for item in darkness:
        native = samplers.image_noise.native_resolution(item[None])[0]
        ink = torch.nn.functional.pad((native > INK_THRESHOLD).float(), (1, 1, 1, 1))
        perimeter = (ink[1:] - ink[:-1]).abs().sum() + (ink[:, 1:] - ink[:, :-1]).abs().sum()
        widths.append(2 * ink.sum() / perimeter.clamp(min=1))
    return torch.stack(widths).float()


class StrokeWidth(WeightFreeReward):
    """Mean stroke width in native pixels (2·ink area / ink perimeter, ink = darker than 0.5): bold line art scores
    higher, a grey background does not count. Alone it also rewards blobs; the toy's ``bold_digit`` multiplies it by
    the digit classifier's probability."""

    name = "stroke_width"
    value_range = (0.0, None)

    def compute(self, images, prompts):
        return stroke_width(images)


WEIGHT_FREE_REWARDS: Dict[str, Type[Reward]] = {
    cls.name: cls for cls in (JpegCompressibility, JpegIncompressibility, Colorfulness, Sharpness, LowNoise,
                              PaperHaze, StrokeWidth)}


def weight_free_reward(name: str) -> Reward:
    if name not in WEIGHT_FREE_REWARDS:
        raise ValueError(f"unknown weight-free reward {name!r}; choose one of {', '.join(WEIGHT_FREE_REWARDS)}")
    return WEIGHT_FREE_REWARDS[name]()


__all__ = ["JpegCompressibility", "JpegIncompressibility", "Colorfulness", "Sharpness", "LowNoise", "PaperHaze",
           "StrokeWidth", "paper_haze", "stroke_width", "INK_THRESHOLD",
           "WEIGHT_FREE_REWARDS", "weight_free_reward", "jpeg_kilobytes", "colorfulness", "laplacian_variance"]
