"""A tiny random velocity model, prompts and reward for the GRPO tests (imported by several test modules)."""
import torch

from training.grpo_config import GRPOConfig
from training.lora import LoRANetwork
from training.policy import VelocityModelPolicy
from training.methods import make_trainer as trainer_for


class TinyBlock(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.attn = torch.nn.Module()
        self.attn.qkv = torch.nn.Linear(dim, dim)
        self.attn.proj = torch.nn.Linear(dim, dim)
        self.mlp = torch.nn.Module()
        self.mlp.fc1 = torch.nn.Linear(dim, 2 * dim)
        self.mlp.fc2 = torch.nn.Linear(2 * dim, dim)

    def forward(self, h):
        h = h + self.attn.proj(torch.tanh(self.attn.qkv(h)))
        return h + self.mlp.fc2(torch.tanh(self.mlp.fc1(h)))


class TinyVelocityModel(torch.nn.Module):
    """x [B, 1, 4, 4], timesteps [B] (t·1000), context [B, 3] → v [B, 1, 4, 4]."""

    def __init__(self, dim=16):
        super().__init__()
        torch.manual_seed(0)
        self.inp = torch.nn.Linear(16 + 1 + 3, dim)
        self.blocks = torch.nn.ModuleList([TinyBlock(dim), TinyBlock(dim)])
        self.out = torch.nn.Linear(dim, 16)

    def forward(self, x, timesteps, context):
        h = self.inp(torch.cat([x.flatten(1), timesteps[:, None] / 1000, context], dim=1))
        for block in self.blocks:
            h = block(h)
        return self.out(h).reshape(x.shape)


def encode(prompts):
    table = {"": [0.0, 0.0, 0.0], "bright": [1.0, 0.0, 0.0], "dark": [0.0, 1.0, 0.0]}
    return torch.tensor([table[p] for p in prompts])


def decode(latents):
    return ((latents.clamp(-1, 1) + 1) / 2).movedim(1, -1).expand(-1, -1, -1, 3)


def brightness(images, prompts):
    sign = torch.tensor([1.0 if p == "bright" else -1.0 for p in prompts])
    return sign * images.mean(dim=(1, 2, 3))


def make_trainer(**overrides):
    model = TinyVelocityModel()
    lora = LoRANetwork(model, rank=4, alpha=8, seed=1)
    policy = VelocityModelPolicy(model, lora, encode, decode, (1, 4, 4))
    settings = dict(prompts=["bright", "dark"], prompts_per_iteration=2, group_size=4, steps=6, rule="cps",
                    cfg=2.0, iterations=3, lr=1e-2, clip_range=0.2, seed=3)
    settings.update(overrides)
    return trainer_for(policy, brightness, GRPOConfig(**settings))  # GRPOTrainer, or NFTTrainer for diffusion_nft
