"""Benchmark: every step rule on the Precise paper's double-ring toy (arXiv 2605.23522) with the exact posterior mean.

    python scripts/bench_double_ring.py [--samples 5000] [--seeds 3] [--nfe 6 10 20 30] [--out docs/images/double_ring.png]

Data: two concentric rings (radii 0.5 and 1.0, equal mass, uniform angle). The "model" is the exact E[x0 | x_t] of
that measure (samplers.toy2d.ring_posterior_mean), so every difference from the data is the sampler's. Each rule
runs at its default η (samplers.rules.DEFAULT_ETA) on ComfyUI's ``normal`` schedule with shift 1 (NFE = steps, one
model call per step, CFG 1). Per seed: fresh initial noise, step noise and a fresh data sample of the same size to
compare against; the noise floor is the energy distance between two independent data samples of that size.
Prints a markdown table (mean ± std over seeds) and writes a PNG: energy distance and the radial mean's deficit
0.75 − mean |x| against NFE, plus
scatter plots of every rule's samples at the smallest NFE.
Takes about 3 minutes on 2 CPU cores with the defaults (the energy distances dominate).
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from samplers import DEFAULT_ETA, RULES, flow_schedule, sample_flow  # noqa: E402
from samplers.toy2d import RADII, double_ring, energy_distance, radial_stats, ring_denoiser  # noqa: E402

ORDER = ("ode", "flow_sde", "dance_sde", "cps", "cpws", "precise")
assert set(ORDER) == set(RULES)


def run(samples, seeds, nfes, schedule, shift, dtype=torch.float64):
    """Returns ``floors`` (one energy distance per seed) and ``results[(rule, nfe)]`` = list of per-seed dicts."""
    denoise = ring_denoiser(RADII)
    floors, results, finals = [], {}, {}
    for s in range(seeds):
        data = double_ring(samples, torch.Generator().manual_seed(1000 + s), dtype=dtype)
        other = double_ring(samples, torch.Generator().manual_seed(2000 + s), dtype=dtype)
        floors.append(energy_distance(data, other))
        x1 = torch.randn(samples, 2, generator=torch.Generator().manual_seed(3000 + s), dtype=dtype)
        for nfe in nfes:
            times = flow_schedule(nfe, shift=shift, kind=schedule).double()
            for rule in ORDER:
                out = sample_flow(denoise, x1.clone(), times, rule=rule, eta=DEFAULT_ETA[rule], seed=4000 + s)
                row = radial_stats(out, RADII)
                row["ed"] = energy_distance(out, data)
                results.setdefault((rule, nfe), []).append(row)
                if s == 0:
                    finals[(rule, nfe)] = out
        if s == 0:
            finals["data"] = data
    return floors, results, finals


def _ms(values, scale=1.0, digits=2):
    m = statistics.mean(values) * scale
    if len(values) < 2:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def table(floors, results, nfes, samples, seeds):
    inner = f"frac_{RADII[0]:g}"
    lines = [
        f"| rule (η) | NFE | energy distance ×10³ | mean \\|x\\| | std \\|x\\| | inner-ring share | off-ring rms |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| data | – | {_ms(floors, 1e3)} (noise floor) | {sum(RADII) / len(RADII):.3f} | "
        f"{(RADII[1] - RADII[0]) / 2:.3f} | 0.500 | 0 |",
    ]
    for rule in ORDER:
        eta = "–" if rule == "ode" else f"{DEFAULT_ETA[rule]:g}"
        for nfe in nfes:
            rows = results[(rule, nfe)]
            col = lambda k: [r[k] for r in rows]  # noqa: E731
            lines.append(f"| {rule} ({eta}) | {nfe} | {_ms(col('ed'), 1e3)} | {_ms(col('mean'), digits=3)} | "
                         f"{_ms(col('std'), digits=3)} | {_ms(col(inner), digits=3)} | "
                         f"{statistics.mean(col('off_ring')):.3f} |")
    return "\n".join(lines)


def scatter_image(points, size=150, extent=1.35, max_points=1500):
    """A small scatter plot [H, W, 3] in [0, 1] of 2-D points, with the data rings drawn faintly."""
    from PIL import Image, ImageDraw
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    scale = size / (2 * extent)
    for r in RADII:
        draw.ellipse([size / 2 - r * scale, size / 2 - r * scale, size / 2 + r * scale, size / 2 + r * scale],
                     outline=(200, 200, 200))
    for x, y in points[:max_points].tolist():
        px, py = size / 2 + x * scale, size / 2 - y * scale
        draw.rectangle([px - 0.5, py - 0.5, px + 0.5, py + 0.5], fill=(31, 119, 180))
    import numpy as np
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)


def plot(floors, results, finals, nfes, path):
    from PIL import Image
    from samplers.plots import _to_pil, label_grid, line_chart
    xs = [float(n) for n in nfes]
    ed = {rule: (xs, [statistics.mean(r["ed"] for r in results[(rule, n)]) * 1e3 for n in nfes]) for rule in ORDER}
    ed["noise floor"] = (xs, [statistics.mean(floors) * 1e3] * len(xs))
    data_mean = sum(RADII) / len(RADII)
    contraction = {rule: (xs, [data_mean - statistics.mean(r["mean"] for r in results[(rule, n)]) for n in nfes])
                   for rule in ORDER}
    contraction["data (0)"] = (xs, [0.0] * len(xs))
    size = (560, 340)
    left = _to_pil(line_chart(ed, title="energy distance to the data (x1e3)", x_label="NFE", size=size,
                              dashed=("noise floor",))[0])
    right = _to_pil(line_chart(contraction, title=f"radial contraction: {data_mean:g} - mean |x|", x_label="NFE",
                               size=size, dashed=("data (0)",))[0])
    n0 = nfes[0]
    cells = torch.stack([scatter_image(finals["data"])] + [scatter_image(finals[(rule, n0)]) for rule in ORDER])
    grid = _to_pil(label_grid(cells, 1, len(cells), [""], ["data"] + [f"{r} {n0}" for r in ORDER], min_cell=150)[0])
    width = max(left.width + right.width, grid.width)
    canvas = Image.new("RGB", (width, left.height + grid.height), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    canvas.paste(grid, ((width - grid.width) // 2, left.height))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    canvas.quantize(colors=64).save(path, optimize=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--nfe", type=int, nargs="+", default=[6, 10, 20, 30])
    parser.add_argument("--schedule", default="normal", help="normal (ComfyUI, default), simple, sd3, uniform")
    parser.add_argument("--shift", type=float, default=1.0)
    parser.add_argument("--out", default=os.path.join("docs", "images", "double_ring.png"),
                        help="PNG path ('' for no plot)")
    args = parser.parse_args()
    start = time.time()
    floors, results, finals = run(args.samples, args.seeds, args.nfe, args.schedule, args.shift)
    print(f"double ring radii {RADII}, {args.samples} samples per run, seeds 0..{args.seeds - 1} "
          f"(mean ± std over seeds), schedule {args.schedule} shift {args.shift:g}, exact posterior mean, "
          f"squared energy distance (V-statistic) to a fresh data sample of the same size")
    print()
    print(table(floors, results, args.nfe, args.samples, args.seeds))
    if args.out:
        plot(floors, results, finals, args.nfe, args.out)
        print(f"\nplot: {args.out}")
    print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
