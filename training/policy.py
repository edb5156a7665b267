"""A GRPO policy around a plain torch velocity model with a LoRA attached (the toy model, test models)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch

from .checkpointing import model_blocks
from .lora import LoRANetwork


class VelocityModelPolicy:
    """Policy for ``model(x, timesteps=t·1000, context) -> v`` networks (flow velocity, x_t = (1−t)x0 + t·x1).

    ``encode(prompts) -> cond`` gives the conditioning batch; the empty prompt ``""`` must encode to the
    unconditional condition used for classifier-free guidance. ``decode(latents) -> images [B, H, W, C]``.
    """

    def __init__(self, model: torch.nn.Module, lora: LoRANetwork, encode: Callable[[Sequence[str]], torch.Tensor],
                 decode: Callable[[torch.Tensor], torch.Tensor], latent_shape: Tuple[int, ...],
                 checkpoint_modules: Optional[Sequence[torch.nn.Module]] = None):
        """``checkpoint_modules``: what ``GRPOConfig.gradient_checkpointing`` recomputes in backward; default the
        entries of the model's top-level ModuleLists (``model.blocks`` for the toy DiT)."""
        self.model, self.lora, self.encode, self.decode_fn = model, lora, encode, decode
        self.latent_shape = tuple(latent_shape)
        self._checkpoint_modules = list(checkpoint_modules) if checkpoint_modules is not None else None
        model.requires_grad_(False)
        self._uncond = None

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.encode(list(prompts))

    def denoise(self, x: torch.Tensor, t: float, cond: torch.Tensor, cfg: float) -> torch.Tensor:
        """x̂0 = x − t·v̂, with v̂ = v_u + cfg·(v_c − v_u) evaluated in one batch."""
        ts = torch.full((x.shape[0],), float(t) * 1000.0, device=x.device)
        if cfg == 1.0:
            v = self.model(x, ts, cond)
        else:
            if self._uncond is None:
                self._uncond = self.encode([""])
            uncond = self._uncond.to(cond.device).expand(cond.shape[0], *cond.shape[1:])
            v_c, v_u = self.model(torch.cat([x, x]), torch.cat([ts, ts]), torch.cat([cond, uncond])).chunk(2)
            v = v_u + cfg * (v_c - v_u)
        return x - float(t) * v.to(x.dtype)

    def reference(self):
        return self.lora.disabled()

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def checkpoint_modules(self):
        return self._checkpoint_modules if self._checkpoint_modules is not None else model_blocks(self.model)

    def trainable_parameters(self):
        return list(self.lora.parameters())

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode_fn(latents)

    def lora_state_dict(self):
        return self.lora.comfy_state_dict()

    def load_lora_state_dict(self, state) -> None:
        self.lora.load_comfy_state_dict(state)
