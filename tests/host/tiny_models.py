"""Random checkpoints of ComfyUI's own model classes that the host's stock loaders read (UNETLoader, VAELoader).

    cd $COMFYUI_PATH && $COMFYUI_PYTHON tests/host/tiny_models.py ARCH MODELS_DIR

writes MODELS_DIR/diffusion_models/random_<arch>.safetensors and a VAE under MODELS_DIR/vae/.

ARCH: sd3 (MMDiT), flux (FLUX.1-dev style: guidance-distilled, RoPE), qwen_image, wan21 (T2V, 5-D video latents), lumina2.
Prints one JSON line: the files and what the model reads (context width, pooled width, latent kind).

Each model starts tiny; the host's own detection (comfy.model_detection) then decides what it will build from that
file, and the file is made for exactly that. Where detection reads a size from the weights the model stays tiny;
where the host fixes it (Flux's width on v0.3.64, Qwen-Image's heads and text width, Lumina 2's width) it is the
host's size with one block of each kind. The file is loaded back through comfy.sd before anything is printed.
"""
import inspect
import json
import os
import sys

arch, models_dir = sys.argv[1:3]
sys.path.insert(0, os.getcwd())  # run from COMFYUI_PATH
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.model_detection  # noqa: E402
import comfy.ops  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.taesd.taesd  # noqa: E402
import comfy.utils  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OPS = comfy.ops.disable_weight_init


def accepted(cls, kwargs):
    names = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in kwargs.items() if k in names or "kwargs" in names}


def tiny_sd3():
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT
    return MMDiT(input_size=None, patch_size=2, in_channels=16, out_channels=16, depth=2, num_patches=256,
                 pos_embed_max_size=16, adm_in_channels=11, pos_embed_scaling_factor=None,
                 context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 11,
                                                                                  "out_features": 128}},
                 dtype=torch.float32, device="cpu", operations=OPS)


def tiny_flux():
    from comfy.ldm.flux.model import Flux, FluxParams
    config = dict(in_channels=16, out_channels=16, vec_in_dim=11, context_in_dim=11, hidden_size=128, mlp_ratio=4.0,
                  num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56], theta=10000, patch_size=2,
                  qkv_bias=True, guidance_embed=True)
    if "txt_ids_dims" in {f.name for f in __import__("dataclasses").fields(FluxParams)}:
        config["txt_ids_dims"] = []
    return Flux(dtype=torch.float32, device="cpu", operations=OPS, **config)


def tiny_qwen_image():
    from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel as Qwen
    config = dict(patch_size=2, in_channels=64, out_channels=16, num_layers=1, attention_head_dim=16,
                  num_attention_heads=2, joint_attention_dim=11, pooled_projection_dim=11, axes_dims_rope=(4, 6, 6))
    return Qwen(dtype=torch.float32, device="cpu", operations=OPS, **accepted(Qwen, config))


def tiny_wan21():
    from comfy.ldm.wan.model import WanModel
    return WanModel(model_type="t2v", patch_size=(1, 2, 2), in_dim=16, dim=128, ffn_dim=256, freq_dim=256,
                    text_dim=4096, out_dim=16, num_heads=1, num_layers=1, window_size=(-1, -1), qk_norm=True,
                    cross_attn_norm=True, eps=1e-6, device="cpu", dtype=torch.float32, operations=OPS)


def tiny_lumina2():
    from comfy.ldm.lumina.model import NextDiT
    config = dict(patch_size=2, in_channels=16, dim=2304, n_layers=1, n_heads=24, n_kv_heads=8, qk_norm=True,
                  cap_feat_dim=11, axes_dims=[32, 32, 32], axes_lens=[300, 512, 512])
    return NextDiT(dtype=torch.float32, device="cpu", operations=OPS, **accepted(NextDiT, config))


BUILDERS = {"sd3": tiny_sd3, "flux": tiny_flux, "qwen_image": tiny_qwen_image, "wan21": tiny_wan21, "lumina2": tiny_lumina2}


def randomise(module, std, seed):
    """comfy ops leave weights as torch.empty. Norm scales get 1 + noise so activations keep their size."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator) * std
            last = name.rsplit(".", 2)
            is_scale = p.dim() == 1 and ("norm" in name.split(".")[-2 if len(last) > 1 else -1]
                                         or name.endswith((".scale", ".gamma")))
            p.copy_(noise + 1.0 if is_scale else noise)
        # buffers a model fills only from a checkpoint are torch.empty too: MMDiT's pos_embed held whatever the
        # memory held (once 3e10, which saturated every activation and left the LoRA a gradient of 1e-14)
        for name, b in module.named_buffers():
            if name.rsplit(".", 1)[-1] == "pos_embed" and b.is_floating_point():
                b.copy_(torch.randn(b.shape, generator=generator) * std)


def context_widths(net):
    """(context width, pooled width) the conditioning must have, read from the built model's input layers."""
    name = type(net).__name__
    if name == "OpenAISignatureMMDITWrapper":
        return net.context_embedder.in_features, net.y_embedder.mlp[0].in_features
    if name == "Flux":
        return net.txt_in.in_features, net.vector_in.in_layer.in_features
    if name == "QwenImageTransformer2DModel":
        return net.txt_in.in_features, 0
    if name == "WanModel":
        return net.text_embedding[0].in_features, 0
    if name == "NextDiT":
        return net.cap_embedder[-1].in_features, 0
    raise ValueError(name)


def save(state, path):
    save_file({k: v.detach().contiguous() for k, v in state.items()}, path)
    return path


def main():
    for folder in ("diffusion_models", "vae"):
        os.makedirs(os.path.join(models_dir, folder), exist_ok=True)
    tiny = BUILDERS[arch]()
    model_config = comfy.model_detection.model_config_from_unet(tiny.state_dict(), "")
    if model_config is None:
        raise SystemExit(f"this host's detection does not recognise {arch}")
    net = model_config.get_model(tiny.state_dict(), "").diffusion_model  # what the loader will build
    randomise(net, std=0.02, seed=0)
    unet_path = save(net.state_dict(), os.path.join(models_dir, "diffusion_models", f"random_{arch}.safetensors"))
    loaded = comfy.sd.load_diffusion_model(unet_path)
    shapes = {k: tuple(v.shape) for k, v in loaded.model.diffusion_model.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in net.state_dict().items()}, "the loader built another model"

    latent = comfy.sample.fix_empty_latent_channels(loaded, torch.zeros(1, 16, 2, 8, 8) if arch == "wan21"
                                                    else torch.zeros(1, 4, 8, 8))
    decoded = None
    if arch != "wan21":  # image models: a random TAESD, where this host's VAE decodes the model's latent with it
        taesd = comfy.taesd.taesd.TAESD(latent_channels=16)
        randomise(taesd, std=0.05, seed=1)
        with torch.no_grad():
            taesd.vae_scale.fill_(1.0)
            taesd.vae_shift.fill_(0.0)
        vae_path = save(taesd.state_dict(), os.path.join(models_dir, "vae", "random_taesd16.safetensors"))
        try:
            decoded = comfy.sd.VAE(sd=comfy.utils.load_torch_file(vae_path)).decode(latent)
        except RuntimeError:  # e.g. Qwen-Image's [B, 16, 1, H, W] latent on v0.3.64
            decoded = None
    if decoded is None:  # video latents: the Wan 2.1 VAE (v0.3.64's loader fixes its width at 96)
        from comfy.ldm.wan.vae import WanVAE
        wan_vae = WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                         temperal_downsample=[False, True, True], dropout=0.0)
        randomise(wan_vae, std=0.02, seed=1)
        keep = ("decoder.", "conv2.", "encoder.conv1.")  # decode-only: the encoder's other weights are not needed
        vae_path = save({k: v for k, v in wan_vae.state_dict().items() if k.startswith(keep)},
                        os.path.join(models_dir, "vae", "random_wan21_vae.safetensors"))
        decoded = comfy.sd.VAE(sd=comfy.utils.load_torch_file(vae_path)).decode(latent)
    context_dim, pooled_dim = context_widths(net)
    print(json.dumps({
        "arch": arch, "unet": os.path.basename(unet_path), "vae": os.path.basename(vae_path),
        "model_class": type(loaded.model).__name__, "diffusion_model": type(net).__name__,
        "params": sum(p.numel() for p in net.parameters()), "context_dim": context_dim, "pooled_dim": pooled_dim,
        "latent_shape": list(latent.shape), "decoded_shape": list(decoded.shape)}))


main()
