"""A tiny class-conditional rectified-flow DiT on 16×16 handwritten digits, shipped with the pack.

Latent = the image itself: [B, 1, 16, 16], ink in [−1, 1] (−1 = paper, +1 = ink). The network predicts the
velocity v = x1 − x0 of x_t = (1 − t)·x0 + t·x1 (x1 noise). Conditioning is a one-hot [B, 1, 11] over the ten
digits plus a "null" class (the empty prompt), embedded by a Linear so LoRA can reach it too.

Layers come from an ``operations`` namespace (default ``torch.nn``): inside ComfyUI the same class is built with
``comfy.ops`` so weight wrappers (LoRA training, LoRA loading) apply. Names mirror SD3/Flux blocks
(``blocks.N.attn.qkv``, ``blocks.N.attn.proj``, ``blocks.N.mlp.fc1``, ``blocks.N.mlp.fc2``).
"""
from __future__ import annotations

import json
import math
import os
from typing import Optional

import torch
import torch.nn.functional as F

NUM_CLASSES = 10
NULL_CLASS = 10
CONTEXT_DIM = NUM_CLASSES + 1
DEFAULT_CONFIG = {"image_size": 16, "in_channels": 1, "patch_size": 2, "hidden_size": 96, "depth": 4,
                  "num_heads": 4, "mlp_ratio": 4.0}
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
DEFAULT_WEIGHTS = os.path.join(WEIGHTS_DIR, "toy_dit.safetensors")
DEFAULT_CFG = 3.0
PIXELS_PER_LATENT = 8  # the ComfyUI toy VAE draws each latent pixel as 8×8 image pixels (16×16 → 128×128)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps (t·1000), as in DiT."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(torch.nn.Module):
    def __init__(self, dim, num_heads, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = operations.Linear(dim, dim * 3, dtype=dtype, device=device)
        self.proj = operations.Linear(dim, dim, dtype=dtype, device=device)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(torch.nn.Module):
    def __init__(self, dim, hidden, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.fc1 = operations.Linear(dim, hidden, dtype=dtype, device=device)
        self.fc2 = operations.Linear(hidden, dim, dtype=dtype, device=device)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(torch.nn.Module):
    """adaLN-Zero transformer block (Peebles & Xie 2023)."""

    def __init__(self, dim, num_heads, mlp_ratio, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.norm1 = operations.LayerNorm(dim, elementwise_affine=False, eps=1e-6, dtype=dtype, device=device)
        self.attn = Attention(dim, num_heads, dtype=dtype, device=device, operations=operations)
        self.norm2 = operations.LayerNorm(dim, elementwise_affine=False, eps=1e-6, dtype=dtype, device=device)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dtype=dtype, device=device, operations=operations)
        self.adaLN_modulation = operations.Linear(dim, 6 * dim, dtype=dtype, device=device)

    def forward(self, x, c):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(F.silu(c)).chunk(6, dim=-1)
        x = x + gate1[:, None] * self.attn(_modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(_modulate(self.norm2(x), shift2, scale2))


class ToyDiT(torch.nn.Module):
    """Class-conditional DiT predicting flow velocity. ``forward(x, timesteps, context)`` with timesteps = t·1000."""

    def __init__(self, image_size=16, in_channels=1, patch_size=2, hidden_size=96, depth=4, num_heads=4,
                 mlp_ratio=4.0, dtype=None, device=None, operations=None, **_unused):
        super().__init__()
        operations = torch.nn if operations is None else operations
        self.dtype = dtype or torch.float32  # ComfyUI's BaseModel reads diffusion_model.dtype
        self.image_size, self.in_channels, self.patch_size = image_size, in_channels, patch_size
        self.hidden_size = hidden_size
        tokens = (image_size // patch_size) ** 2
        patch_dim = in_channels * patch_size * patch_size
        self.x_embedder = operations.Linear(patch_dim, hidden_size, dtype=dtype, device=device)
        self.pos_embed = torch.nn.Parameter(torch.zeros(1, tokens, hidden_size, dtype=dtype, device=device))
        self.t_embedder = torch.nn.Sequential(
            operations.Linear(hidden_size, hidden_size, dtype=dtype, device=device), torch.nn.SiLU(),
            operations.Linear(hidden_size, hidden_size, dtype=dtype, device=device))
        self.y_embedder = operations.Linear(CONTEXT_DIM, hidden_size, dtype=dtype, device=device)
        self.blocks = torch.nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio, dtype=dtype, device=device,
                                                    operations=operations) for _ in range(depth)])
        self.final_norm = operations.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6, dtype=dtype,
                                               device=device)
        self.final_adaLN = operations.Linear(hidden_size, 2 * hidden_size, dtype=dtype, device=device)
        self.final_linear = operations.Linear(hidden_size, patch_dim, dtype=dtype, device=device)

    def initialize_weights(self, generator: Optional[torch.Generator] = None):
        """DiT initialisation: xavier linears, zeroed adaLN and output layers (identity blocks at start)."""
        for module in self.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(module.weight, generator=generator)
                torch.nn.init.zeros_(module.bias)
        torch.nn.init.normal_(self.pos_embed, std=0.02, generator=generator)
        for block in self.blocks:
            torch.nn.init.zeros_(block.adaLN_modulation.weight)
            torch.nn.init.zeros_(block.adaLN_modulation.bias)
        for layer in (self.final_adaLN, self.final_linear):
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)

    def forward(self, x, timesteps, context=None, transformer_options={}, **kwargs):
        b, c, h, w = x.shape
        if (c, h, w) != (self.in_channels, self.image_size, self.image_size):
            s, k = self.image_size, PIXELS_PER_LATENT
            raise ValueError(f"the toy digit model takes {self.in_channels}×{s}×{s} latents (in ComfyUI: Empty Latent "
                             f"Image of {s * k}×{s * k}); got {c}×{h}×{w}")
        p = self.patch_size
        dtype = self.x_embedder.weight.dtype
        tokens = x.to(dtype).reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)
        tokens = self.x_embedder(tokens) + self.pos_embed.to(dtype)
        if context is None:
            context = null_context(b, x.device)
        cond = self.t_embedder(timestep_embedding(timesteps, self.hidden_size).to(dtype))
        cond = cond + self.y_embedder(context.reshape(b, -1).to(dtype))
        for block in self.blocks:
            tokens = block(tokens, cond)
        shift, scale = self.final_adaLN(F.silu(cond)).chunk(2, dim=-1)
        out = self.final_linear(_modulate(self.final_norm(tokens), shift, scale))
        return out.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def one_hot_context(labels, device=None) -> torch.Tensor:
    """[B, 1, 11] conditioning from class labels 0–9 (10 = null / unconditional)."""
    labels = torch.as_tensor(labels, dtype=torch.long, device=device)
    return F.one_hot(labels, CONTEXT_DIM).float()[:, None]


def null_context(batch: int, device=None) -> torch.Tensor:
    return one_hot_context([NULL_CLASS] * batch, device)


def velocity_to_denoised(x, t, v):
    """x̂0 = x_t − t·v̂."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.dim() - 1)))
    return x - t * v


def make_denoiser(model: ToyDiT, context: torch.Tensor, cfg: float = DEFAULT_CFG):
    """``denoise(x, t) -> x̂0`` with classifier-free guidance (on v, equivalently on x̂0), for samplers.sample_flow."""
    uncond = null_context(context.shape[0], context.device)

    def denoise(x, t):
        ts = torch.full((x.shape[0],), float(t) * 1000.0, device=x.device)
        if cfg == 1.0:
            v = model(x, ts, context)
        else:
            v_c, v_u = model(torch.cat([x, x]), torch.cat([ts, ts]), torch.cat([context, uncond])).chunk(2)
            v = v_u + cfg * (v_c - v_u)
        return velocity_to_denoised(x, t, v.to(x.dtype))
    return denoise


def latent_to_image(latent: torch.Tensor, scale: int = 1) -> torch.Tensor:
    """[B, 1, H, W] in [−1, 1] → ComfyUI IMAGE [B, H·scale, W·scale, 3] in [0, 1], dark ink on white paper."""
    image = (1 - (latent.float().clamp(-1, 1) + 1) / 2)
    if scale > 1:
        image = F.interpolate(image, scale_factor=scale, mode="nearest")
    return image.movedim(1, -1).expand(-1, -1, -1, 3).contiguous()


def image_to_latent(images: torch.Tensor, size: int = 16) -> torch.Tensor:
    """ComfyUI IMAGE [B, H, W, C] in [0, 1] → [B, 1, size, size] ink in [−1, 1] (area-averaged, greyscale)."""
    grey = images.float().mean(dim=-1, keepdim=True).movedim(-1, 1)
    if grey.shape[-1] != size or grey.shape[-2] != size:
        grey = F.interpolate(grey, size=(size, size), mode="area")
    return (1 - grey) * 2 - 1


def save_toy_model(model: ToyDiT, path: str, config: dict, metadata: Optional[dict] = None) -> None:
    from safetensors.torch import save_file
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    meta = {"config": json.dumps(config), "format": "flow-cps toy DiT v1", **(metadata or {})}
    save_file(state, path, metadata=meta)


def read_toy_checkpoint(path: Optional[str] = None):
    """(state_dict, config, metadata) of a toy checkpoint; default: the one shipped in training/toy/weights/."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    path = path or DEFAULT_WEIGHTS
    if not os.path.exists(path):
        raise FileNotFoundError(f"toy model weights not found at {path}; run `python scripts/train_toy_model.py` "
                                "to recreate them")
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata() or {}
    config = {**DEFAULT_CONFIG, **json.loads(metadata.get("config", "{}"))}
    return load_file(path), config, metadata


def load_toy_model(path: Optional[str] = None, device="cpu", dtype=torch.float32) -> ToyDiT:
    state, config, _ = read_toy_checkpoint(path)
    model = ToyDiT(**config, dtype=dtype, device=device)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()})
    return model.eval().requires_grad_(False)
