"""Random checkpoints of ComfyUI's own model classes that the host's stock loaders read (UNETLoader, VAELoader).

    cd $COMFYUI_PATH && $COMFYUI_PYTHON tests/host/tiny_models.py ARCH OUT_DIR

writes OUT_DIR/diffusion_models/random_<arch>.safetensors and a VAE under OUT_DIR/vae/ (model_files.py runs it
once per host and keeps the files in a cache).

ARCH: sd3 (MMDiT), flux (FLUX.1-dev style: guidance-distilled, RoPE), qwen_image, wan21 (T2V, 5-D video latents), lumina2.
Prints one JSON line: the files and what the model reads (context width, pooled width, latent kind).

Each model starts tiny (fixture_pack/tiny_architectures.py); the host's own detection (comfy.model_detection) then
decides what it will build from that file, and the file is made for exactly that. Where detection reads a size from
the weights the model stays tiny; where the host fixes it (Flux's width on v0.3.64, Qwen-Image's heads and text
width, Lumina 2's width) it is the host's size with one block of each kind; such big files (and v0.3.64's Wan VAE,
whose width its loader fixes at 96) are stored as float8, which the host loads into its usual float32 on a CPU:
0.4-0.55 GB instead of 1.5-2.2 GB. The file is loaded back through comfy.sd before anything is printed.
"""
import json
import os
import sys

arch, out_dir = sys.argv[1:3]
sys.path.insert(0, os.getcwd())  # run from COMFYUI_PATH
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixture_pack"))
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.sd  # noqa: E402
import comfy.utils  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import tiny_architectures as tiny  # noqa: E402

BIG = 10_000_000  # parameters; a file this big is stored as float8, a smaller one as float32


def save(state, path):
    dtype = torch.float8_e4m3fn if sum(v.numel() for v in state.values()) > BIG else torch.float32
    save_file({k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous() for k, v in state.items()},
              path)
    return path


def main():
    for folder in ("diffusion_models", "vae"):
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    net = tiny.stock_loader_model(arch)  # what the loader will build from this file
    unet_path = save(net.state_dict(), os.path.join(out_dir, "diffusion_models", f"random_{arch}.safetensors"))
    loaded = comfy.sd.load_diffusion_model(unet_path)
    shapes = {k: tuple(v.shape) for k, v in loaded.model.diffusion_model.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in net.state_dict().items()}, "the loader built another model"

    kind, vae_state, _ = tiny.vae_for(loaded)
    vae_path = save(vae_state, os.path.join(out_dir, "vae", f"random_{kind}.safetensors"))
    latent = tiny.empty_latent(loaded)
    decoded = comfy.sd.VAE(sd=comfy.utils.load_torch_file(vae_path)).decode(latent)
    context_dim, pooled_dim = tiny.context_widths(net)
    print(json.dumps({
        "arch": arch, "unet": os.path.basename(unet_path), "vae": os.path.basename(vae_path),
        "model_class": type(loaded.model).__name__, "diffusion_model": type(net).__name__,
        "weight_dtype": str(next(loaded.model.diffusion_model.parameters()).dtype),
        "params": sum(p.numel() for p in net.parameters()), "context_dim": context_dim, "pooled_dim": pooled_dim,
        "latent_shape": list(latent.shape), "decoded_shape": list(decoded.shape)}))


main()
