"""Random models of ComfyUI's own architectures (SD3 MMDiT, Flux, Qwen-Image, Wan 2.1, Lumina 2) and random VAEs
that decode their latents, for the host tests. Two ways to get one:

- ``stock_loader_model(arch)``: the network that the host's stock loader would build from a small file of this
  architecture (comfy.model_detection decides; where it fixes a width, e.g. Flux's 3072 on v0.3.64, the network has
  it). tiny_models.py saves it as a file for UNETLoader.
- ``tiny_model_patcher(arch)``: the same model classes (the supported_models config, model_base, ModelPatcher the
  loader would use) built in memory at the tiny widths below, whatever the host's detection would fix.

Every width a test's conditioning must have is in ``TINY_CONTEXT_DIM`` / ``TINY_POOLED_DIM``. ComfyUI is imported
only inside the functions, so the test process may read those constants without it.
"""
import inspect

ARCHS = ("sd3", "flux", "qwen_image", "wan21", "lumina2")
TINY_CONTEXT_DIM = 11
TINY_POOLED_DIM = {"sd3": 11, "flux": 11}  # the others read no pooled vector

# constructor arguments of each diffusion model class at its tiny size (names as comfy.model_detection writes them)
TINY_CONFIGS = {
    "sd3": dict(input_size=None, patch_size=2, in_channels=16, out_channels=16, depth=2, num_patches=256,
                pos_embed_max_size=16, adm_in_channels=11, pos_embed_scaling_factor=None,
                context_embedder_config={"target": "torch.nn.Linear",
                                         "params": {"in_features": 11, "out_features": 128}}),
    "flux": dict(in_channels=16, out_channels=16, vec_in_dim=11, context_in_dim=11, hidden_size=128, mlp_ratio=4.0,
                 num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56], theta=10000, patch_size=2,
                 qkv_bias=True, guidance_embed=True),
    "qwen_image": dict(patch_size=2, in_channels=64, out_channels=16, num_layers=1, attention_head_dim=32,
                       num_attention_heads=4, joint_attention_dim=11, pooled_projection_dim=11,
                       axes_dims_rope=(8, 12, 12)),
    "wan21": dict(model_type="t2v", patch_size=(1, 2, 2), in_dim=16, dim=128, ffn_dim=256, freq_dim=256,
                  text_dim=11, out_dim=16, num_heads=1, num_layers=1, window_size=(-1, -1), qk_norm=True,
                  cross_attn_norm=True, eps=1e-6),
    "lumina2": dict(patch_size=2, in_channels=16, dim=96, n_layers=1, n_heads=1, n_kv_heads=1, qk_norm=True,
                    cap_feat_dim=11, axes_dims=[32, 32, 32], axes_lens=[300, 512, 512]),
}


def diffusion_model_class(arch):
    if arch == "sd3":
        from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT
        return MMDiT
    if arch == "flux":
        from comfy.ldm.flux.model import Flux
        return Flux
    if arch == "qwen_image":
        from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel
        return QwenImageTransformer2DModel
    if arch == "wan21":
        from comfy.ldm.wan.model import WanModel
        return WanModel
    if arch == "lumina2":
        from comfy.ldm.lumina.model import NextDiT
        return NextDiT
    raise ValueError(f"unknown architecture {arch!r}; one of {', '.join(ARCHS)}")


# a file is made from a network whose widths the host's detection knows: v0.33 reads Lumina 2's width from the
# weights but only knows the heads of the real widths (2304, 3840). Flux's file has double blocks only: at v0.3.64's
# fixed width a single block is 141 M parameters more (the tiny Flux built in memory has one of each)
FILE_SEED_OVERRIDES = {"lumina2": dict(dim=2304, n_heads=24, n_kv_heads=8), "flux": dict(depth_single_blocks=0)}


def tiny_config(arch, **overrides):
    """TINY_CONFIGS[arch] with ``overrides``, less what this host's class does not take (plus what it needs)."""
    cls = diffusion_model_class(arch)
    config = {**TINY_CONFIGS[arch], **overrides}
    if arch == "flux":
        import dataclasses
        from comfy.ldm.flux.model import FluxParams
        if "txt_ids_dims" in {f.name for f in dataclasses.fields(FluxParams)}:
            config["txt_ids_dims"] = []
        return config
    names = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in config.items() if k in names or "kwargs" in names}


def tiny_network(arch, **overrides):
    """The diffusion model class at its tiny size, weights uninitialised (comfy ops leave them torch.empty)."""
    import comfy.ops
    import torch
    return diffusion_model_class(arch)(dtype=torch.float32, device="cpu", operations=comfy.ops.disable_weight_init,
                                       **tiny_config(arch, **overrides))


def randomise(module, std, seed):
    """comfy ops leave weights as torch.empty. Norm scales get 1 + noise so activations keep their size."""
    import torch
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


def detected_config(arch, **overrides):
    """The supported_models config the host's detection picks for the weights of ``tiny_network(arch, **overrides)``."""
    import comfy.model_detection
    model_config = comfy.model_detection.model_config_from_unet(tiny_network(arch, **overrides).state_dict(), "")
    if model_config is None:
        raise RuntimeError(f"this host's detection does not recognise {arch}")
    return model_config


def stock_loader_model(arch):
    """The random network the stock loader builds from a file of this architecture (the host's widths)."""
    network = detected_config(arch, **FILE_SEED_OVERRIDES.get(arch, {})).get_model({}, "").diffusion_model
    randomise(network, std=0.02, seed=0)
    return network


def tiny_model_patcher(arch):
    """A ModelPatcher around the host's own model_base class for ``arch`` at the tiny widths, as the stock loader
    wraps a loaded model, with random weights (seed 0)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import torch
    model_config = detected_config(arch)
    model_config.unet_config.update(tiny_config(arch))
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({}, "")
    randomise(model.diffusion_model, std=0.02, seed=0)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def context_widths(network):
    """(context width, pooled width) the conditioning must have, read from the built model's input layers."""
    name = type(network).__name__
    if name == "OpenAISignatureMMDITWrapper":
        return network.context_embedder.in_features, network.y_embedder.mlp[0].in_features
    if name == "Flux":
        return network.txt_in.in_features, network.vector_in.in_layer.in_features
    if name == "QwenImageTransformer2DModel":
        return network.txt_in.in_features, 0
    if name == "WanModel":
        return network.text_embedding[0].in_features, 0
    if name == "NextDiT":
        return network.cap_embedder[-1].in_features, 0
    raise ValueError(name)


def empty_latent(model_patcher):
    """The latent an empty-latent node gives this model (64×64; Wan: 5 frames), after the sampler fixes its
    channels."""
    import comfy.sample
    import torch
    video = type(model_patcher.model.diffusion_model).__name__ == "WanModel"
    return comfy.sample.fix_empty_latent_channels(model_patcher, torch.zeros(1, 16, 2, 8, 8) if video
                                                  else torch.zeros(1, 4, 8, 8))


def taesd_state():
    """A random TAESD for 16-channel latents (SD3 / Flux style)."""
    import comfy.taesd.taesd
    import torch
    taesd = comfy.taesd.taesd.TAESD(latent_channels=16)
    randomise(taesd, std=0.05, seed=1)
    with torch.no_grad():
        taesd.vae_scale.fill_(1.0)
        taesd.vae_shift.fill_(0.0)
    return taesd.state_dict()


WAN_VAE_DIMS = (16, 96)  # the smallest first; v0.3.64's VAE loader fixes the width at 96


def wan_vae_state(dim):
    """A random Wan 2.1 VAE, decode-only (the encoder's other weights are not needed)."""
    from comfy.ldm.wan.vae import WanVAE
    wan_vae = WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                     temperal_downsample=[False, True, True], dropout=0.0)
    # std 0.1: at 0.02 the decoder's norms leave the image almost constant (std 3/255) and blind to its latent
    # (a 1 % change of the latent moved no pixel by 0.01/255), so no LoRA could change an image
    randomise(wan_vae, std=0.1, seed=1)
    keep = ("decoder.", "conv2.", "encoder.conv1.")
    return {k: v for k, v in wan_vae.state_dict().items() if k.startswith(keep)}


def vae_for(model_patcher):
    """``(kind, state dict, ComfyUI VAE)`` for a VAE that decodes this model's latents on this host: a random TAESD
    where the host's VAE decodes the latent with it, else (video latents, Qwen-Image's [B, 16, 1, H, W] on v0.3.64)
    the smallest random Wan 2.1 VAE this host's VAE loader builds as it is."""
    import comfy.sd
    latent = empty_latent(model_patcher)
    if type(model_patcher.model.diffusion_model).__name__ != "WanModel":
        state = taesd_state()
        vae = comfy.sd.VAE(sd=dict(state))
        try:
            vae.decode(latent)
            return "taesd16", state, vae
        except RuntimeError:
            pass
    for dim in WAN_VAE_DIMS:
        state = wan_vae_state(dim)
        try:
            vae = comfy.sd.VAE(sd=dict(state))
        except RuntimeError:  # size mismatch: this host builds another width
            continue
        vae.decode(latent)
        return "wan21_vae", state, vae
    raise RuntimeError("no random Wan 2.1 VAE loads on this host")
