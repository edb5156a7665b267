"""Small image renderers for comparisons: labelled grids and line charts, as ComfyUI IMAGE tensors.

Pillow does the drawing (imported lazily, so the sampler maths imports with torch alone). Every function returns a
float tensor [1, H, W, 3] in [0, 1], ComfyUI's IMAGE layout.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (23, 190, 207)]


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _to_tensor(image) -> torch.Tensor:
    import numpy as np
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)[None]


def _to_pil(image: torch.Tensor):
    from PIL import Image
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    if array.shape[-1] == 1:
        array = array.repeat(3, axis=-1)
    return Image.fromarray(array[..., :3], "RGB")


def label_grid(images: torch.Tensor, rows: int, cols: int, row_labels: Sequence[str], col_labels: Sequence[str],
               cell_labels: Optional[Sequence[str]] = None, min_cell: int = 128, title: str = "") -> torch.Tensor:
    """Arrange ``rows × cols`` images [N, H, W, C] (row-major) into one labelled grid image.

    Small images are enlarged by an integer factor (nearest neighbour, so noise stays visible) to at least
    ``min_cell`` pixels; row labels go on the left, column labels on top, optional per-cell captions below each cell.
    """
    from PIL import Image, ImageDraw
    if images.shape[0] != rows * cols:
        raise ValueError(f"label_grid needs rows × cols = {rows * cols} images, got {images.shape[0]}")
    if len(row_labels) != rows or len(col_labels) != cols:
        raise ValueError("label_grid needs one label per row and per column")
    height, width = images.shape[1], images.shape[2]
    zoom = max(1, math.ceil(min_cell / max(1, min(height, width))))
    cell_w, cell_h = width * zoom, height * zoom
    font = _font(max(12, min(22, cell_h // 8)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_h = probe.textbbox((0, 0), "Ag", font=font)[3] + 6
    left = max([probe.textlength(label, font=font) for label in row_labels] + [0]) + 16
    top = text_h + 8 + (text_h if title else 0)
    caption_h = text_h if cell_labels else 0
    gap = 4
    canvas = Image.new("RGB", (int(left + cols * (cell_w + gap)), int(top + rows * (cell_h + caption_h + gap))),
                       (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((8, 4), title, fill=(0, 0, 0), font=font)
    for c, label in enumerate(col_labels):
        x = left + c * (cell_w + gap) + (cell_w - probe.textlength(label, font=font)) / 2
        draw.text((x, top - text_h - 2), label, fill=(0, 0, 0), font=font)
    for r, label in enumerate(row_labels):
        y = top + r * (cell_h + caption_h + gap) + (cell_h - text_h) / 2
        draw.text((8, y), label, fill=(0, 0, 0), font=font)
        for c in range(cols):
            index = r * cols + c
            tile = _to_pil(images[index]).resize((cell_w, cell_h), Image.NEAREST)
            x, y0 = int(left + c * (cell_w + gap)), int(top + r * (cell_h + caption_h + gap))
            canvas.paste(tile, (x, y0))
            if cell_labels:
                draw.text((x + 2, y0 + cell_h + 1), cell_labels[index], fill=(60, 60, 60), font=font)
    return _to_tensor(canvas)


def _nice_ticks(lo: float, hi: float, count: int = 5) -> List[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def line_chart(series: Dict[str, Tuple[Sequence[float], Sequence[float]]], *, title: str = "", x_label: str = "",
               y_label: str = "", size: Tuple[int, int] = (720, 440), dashed: Sequence[str] = (),
               bands: Optional[Dict[str, Tuple[Sequence[float], Sequence[float]]]] = None,
               y_range: Optional[Tuple[float, float]] = None) -> torch.Tensor:
    """A line chart of named ``(xs, ys)`` series with axes, ticks and a legend; ``dashed`` names dashed series.

    ``bands`` maps a series name to (lower, upper) values drawn as a shaded band (e.g. mean ± spread).
    ``y_range`` fixes the y-axis (values outside are drawn at its edge); by default it spans 0 and the data.
    Non-finite points are skipped.
    """
    from PIL import Image, ImageDraw
    width, height = size
    font = _font(14)
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image, "RGBA")
    points = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
    for lower, upper in (bands or {}).values():
        points += [(0.0, v) for v in list(lower) + list(upper) if math.isfinite(v)]
    if not points:
        raise ValueError("line_chart needs at least one finite point")
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    if x_hi == x_lo:
        x_hi = x_lo + 1
    if y_range is not None:
        y_lo, y_hi = float(y_range[0]), float(y_range[1])
        if not y_hi > y_lo:
            raise ValueError(f"line_chart: y_range needs low < high, got {y_range}")
    else:
        y_lo, y_hi = min(0.0, min(p[1] for p in points)), max(p[1] for p in points)
        if y_hi == y_lo:
            y_hi = y_lo + 1
        y_hi += (y_hi - y_lo) * 0.05
    margin_l, margin_r, margin_t, margin_b = 70, 20, 36, 56
    plot_w, plot_h = width - margin_l - margin_r, height - margin_t - margin_b

    def to_px(x, y):
        y = min(y_hi, max(y_lo, y))
        return (margin_l + (x - x_lo) / (x_hi - x_lo) * plot_w, margin_t + (1 - (y - y_lo) / (y_hi - y_lo)) * plot_h)

    for y in _nice_ticks(y_lo, y_hi):
        _, py = to_px(x_lo, y)
        draw.line([(margin_l, py), (margin_l + plot_w, py)], fill=(230, 230, 230))
        draw.text((margin_l - 8, py), f"{y:.3g}", fill=(0, 0, 0), font=font, anchor="rm")
    for x in _nice_ticks(x_lo, x_hi, 8):
        px, _ = to_px(x, y_lo)
        draw.line([(px, margin_t + plot_h), (px, margin_t + plot_h + 4)], fill=(0, 0, 0))
        draw.text((px, margin_t + plot_h + 6), f"{x:.4g}", fill=(0, 0, 0), font=font, anchor="mt")
    draw.rectangle([margin_l, margin_t, margin_l + plot_w, margin_t + plot_h], outline=(0, 0, 0))
    draw.text((width / 2, 8), title, fill=(0, 0, 0), font=font, anchor="mt")
    draw.text((margin_l + plot_w / 2, height - 6), x_label, fill=(0, 0, 0), font=font, anchor="mb")
    draw.text((6, margin_t - 18), y_label, fill=(0, 0, 0), font=font)

    colours = {}
    for i, name in enumerate(series):
        colours[name] = (0, 0, 0) if name in dashed else PALETTE[i % len(PALETTE)]
    for name, (lower, upper) in (bands or {}).items():
        xs = series[name][0]
        poly = [to_px(x, v) for x, v in zip(xs, upper)] + [to_px(x, v) for x, v in reversed(list(zip(xs, lower)))]
        if len(poly) >= 3:
            draw.polygon(poly, fill=colours[name] + (50,))
    for name, (xs, ys) in series.items():
        pts = [to_px(x, y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
        if name in dashed:
            for a, b in zip(pts, pts[1:]):
                for s in range(0, 10, 2):
                    f0, f1 = s / 10, (s + 1) / 10
                    draw.line([(a[0] + (b[0] - a[0]) * f0, a[1] + (b[1] - a[1]) * f0),
                               (a[0] + (b[0] - a[0]) * f1, a[1] + (b[1] - a[1]) * f1)], fill=colours[name], width=2)
        elif len(pts) > 1:
            draw.line(pts, fill=colours[name], width=2)
        for p in pts:
            draw.ellipse([p[0] - 2.5, p[1] - 2.5, p[0] + 2.5, p[1] + 2.5], fill=colours[name])
    legend_w = max(draw.textlength(name, font=font) for name in series) + 50
    legend_x, legend_y = margin_l + plot_w - legend_w - 6, margin_t + 6
    draw.rectangle([legend_x, legend_y - 2, legend_x + legend_w, legend_y + 18 * len(series) + 2],
                   fill=(255, 255, 255, 220), outline=(200, 200, 200))
    for name in series:
        draw.line([(legend_x + 6, legend_y + 8), (legend_x + 30, legend_y + 8)], fill=colours[name], width=3)
        draw.text((legend_x + 36, legend_y), name, fill=(0, 0, 0), font=font)
        legend_y += 18
    return _to_tensor(image)


def reward_y_range(histories: Sequence[Sequence[dict]], value_range=None) -> Tuple[float, float]:
    """One y-range for reward curves shown together: the span of mean ± std over every run, padded by 5 %, never
    outside the reward's known ``value_range`` ((low, high), None = unbounded)."""
    values = [v for history in histories for h in history
              for v in (h["reward_mean"] - h["reward_std"], h["reward_mean"] + h["reward_std"]) if math.isfinite(v)]
    if not values:
        lo, hi = 0.0, 1.0
    else:
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.05 or max(abs(lo) * 0.05, 0.05)
        lo, hi = lo - pad, hi + pad
    low, high = (list(value_range) + [None, None])[:2] if value_range else (None, None)
    if low is not None and math.isfinite(low):
        lo = max(lo, low)
    if high is not None and math.isfinite(high):
        hi = min(hi, high)
    if not hi > lo:  # a flat curve pinned to a bound: open the axis towards the inside
        span = (high - low) * 0.05 if low is not None and high is not None else max(abs(lo) * 0.05, 0.05)
        lo, hi = (hi - span, hi) if high is not None and hi >= high else (lo, lo + span)
    return lo, hi


def reward_curves_chart(runs: Sequence[Tuple[str, Sequence[dict]]], *, title: str = "GRPO reward",
                        value_range=None, size: Tuple[int, int] = (720, 440)) -> torch.Tensor:
    """Reward mean (± std band) per iteration of one or more GRPO runs (``(label, history)`` pairs, history entries
    with iteration / reward_mean / reward_std) in one chart: all runs share the y-axis (reward_y_range)."""
    series, bands = {}, {}
    for label, history in runs:
        xs = [h["iteration"] for h in history]
        mean = [h["reward_mean"] for h in history]
        std = [h["reward_std"] for h in history]
        series[label] = (xs, mean)
        bands[label] = ([m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)])
    return line_chart(series, title=title, x_label="iteration", y_label="reward", bands=bands, size=size,
                      y_range=reward_y_range([history for _, history in runs], value_range))
