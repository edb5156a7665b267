"""The one-command demo runs end to end, and Flow-SDE leaves measurably more residual noise than CPS (CPS Fig. 1)."""
import os
import subprocess
import sys

import torch

from samplers import flow_schedule, sample_flow
from samplers.image_noise import estimate_noise
from training.toy.model import latent_to_image, load_toy_model, make_denoiser
from training.toy.prompts import encode_prompts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_command_writes_its_files(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "demo.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for name in ("sampler_grid.png", "noise_levels.png", "noise_table.md"):
        assert (tmp_path / name).stat().st_size > 1000 or name.endswith(".md")
        assert f"wrote {tmp_path / name}" in out.stdout
    assert "| flow_sde | 0.7 | 10 |" in (tmp_path / "noise_table.md").read_text()


def test_flow_sde_images_are_noisier_than_cps_at_the_same_eta_and_seed():
    model = load_toy_model()
    prompts = [f"a handwritten {d}" for d in range(10)] * 2
    denoise = make_denoiser(model, encode_prompts(prompts))
    x = torch.randn(len(prompts), 1, 16, 16, generator=torch.Generator().manual_seed(0))
    times = flow_schedule(10, 1.0, "normal")
    noise = {}
    for rule in ("flow_sde", "cps"):
        with torch.no_grad():
            latents = sample_flow(denoise, x, times, rule=rule, eta=0.7, seed=1)
        noise[rule] = estimate_noise(latent_to_image(latents))
    assert float(noise["flow_sde"].mean()) > 1.5 * float(noise["cps"].mean()), noise
    assert float((noise["flow_sde"] > noise["cps"]).float().mean()) >= 0.8
