"""The one-command demo: the samplers compared on the shipped toy digit model, no downloads.

    python scripts/demo.py [--out demo_output] [--seed 0]

Writes (paths printed at the end):
- sampler_grid.png: the same seeds and prompts through ode / flow_sde / dance_sde / cps / cpws / precise at several η
  and step counts, each cell captioned with its residual-noise estimate;
- noise_levels.png: the CPS paper's Fig. 2 for the toy schedule (noise std each step really leaves vs the schedule);
- noise_table.md: the per-configuration noise estimates as a table (also printed).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from samplers import DEFAULT_ETA, flow_schedule, sample_flow  # noqa: E402
from samplers.compare import noise_level_chart, parse_rule_specs  # noqa: E402
from samplers.image_noise import estimate_noise  # noqa: E402
from samplers.plots import label_grid  # noqa: E402
from training.script_args import HelpFormatter, output_folder  # noqa: E402
from training.toy.model import DEFAULT_CFG, latent_to_image, load_toy_model, make_denoiser  # noqa: E402
from training.toy.prompts import encode_prompts  # noqa: E402

ROWS = [("ode", 0.0), ("flow_sde", 0.7), ("flow_sde", 1.0), ("dance_sde", 0.3), ("cps", 0.8), ("cps", 1.0),
        ("cpws", 0.7), ("precise", 1.5)]
STEP_COUNTS = (10, 20)
PROMPTS = ["a handwritten 3", "seven"]


def save(image: torch.Tensor, path: str) -> None:
    Image.fromarray((image[0].clamp(0, 1) * 255).round().byte().numpy()).save(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--out", type=output_folder, default="demo_output", help="folder for the demo images")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.time()
    os.makedirs(args.out, exist_ok=True)
    model = load_toy_model()
    cond = encode_prompts(PROMPTS)
    noise = torch.randn(len(PROMPTS), 1, 16, 16, generator=torch.Generator().manual_seed(args.seed))
    denoise = make_denoiser(model, cond, DEFAULT_CFG)
    cells, captions, table = [], [], []
    for rule, eta in ROWS:
        for steps in STEP_COUNTS:
            with torch.no_grad():
                latents = sample_flow(denoise, noise, flow_schedule(steps, 1.0, "normal"), rule=rule, eta=eta,
                                      seed=args.seed + 1)
            images = latent_to_image(latents, scale=1)
            estimates = estimate_noise(images)
            for image, estimate in zip(images, estimates):
                cells.append(image)
                captions.append(f"{float(estimate):.3f}")
            table.append((rule, eta, steps, float(estimates.mean())))
    cols = [f"{steps} steps: {p.split()[-1]}" for steps in STEP_COUNTS for p in PROMPTS]
    rows = [f"{rule} eta={eta:g}" if rule != "ode" else "ode" for rule, eta in ROWS]
    grid = label_grid(torch.stack(cells), len(ROWS), len(cols), rows, cols, captions, min_cell=96,
                      title=f"toy digits, seed {args.seed}, CFG {DEFAULT_CFG:g}; caption = residual noise estimate")
    grid_path = os.path.join(args.out, "sampler_grid.png")
    save(grid, grid_path)
    specs = parse_rule_specs(", ".join(f"{r}={DEFAULT_ETA[r]}" for r in ("flow_sde", "dance_sde", "cps", "cpws",
                                                                           "precise")))
    levels_path = os.path.join(args.out, "noise_levels.png")
    save(noise_level_chart(specs, flow_schedule(10, 1.0, "normal"),
                           title="noise std after each step, toy schedule (normal, 10 steps)"), levels_path)
    lines = ["| sampler | η | steps | mean residual noise |", "|---|---:|---:|---:|"]
    lines += [f"| {rule} | {eta:g} | {steps} | {value:.4f} |" for rule, eta, steps, value in table]
    table_path = os.path.join(args.out, "noise_table.md")
    with open(table_path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {grid_path}\nwrote {levels_path}\nwrote {table_path}\n({time.time() - start:.1f} s)")


if __name__ == "__main__":
    main()
