"""LoRA for the Linear layers of a plain torch model, saved in the format ComfyUI's LoraLoaderModelOnly reads.

The adapters are attached with forward hooks, so the model keeps its own module names and weights (no copy, no
merge): out = W·x + b + (α/r)·B·A·x. Disabling the hooks gives the base model, which is the KL reference policy.
Works on any ``torch.nn.Linear`` subclass, including ComfyUI's ``comfy.ops`` layers.

peft is not used: it renames modules (``base_layer``), saves ``lora_A``/``lora_B`` keys without ``.alpha`` tensors
(ComfyUI then loads them at scale 1.0 instead of α/r), and would need a conversion step either way.

File format (reference §4): ``diffusion_model.<module path>.lora_down.weight`` [r, in],
``.lora_up.weight`` [out, r] and ``.alpha`` (a scalar tensor; scale = alpha / rank).
"""
from __future__ import annotations

import contextlib
import fnmatch
import math
from typing import Dict, Iterable, List, Optional, Sequence

import torch

DEFAULT_TARGETS = ("*attn.qkv", "*attn.proj", "*mlp.fc1", "*mlp.fc2")
COMFY_PREFIX = "diffusion_model."


class LoRAAdapter(torch.nn.Module):
    """The low-rank update of one Linear: ``down`` [r, in] (Kaiming-uniform) and ``up`` [out, r] (zeros)."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float,
                 generator: Optional[torch.Generator] = None, device=None):
        super().__init__()
        self.rank, self.alpha = rank, float(alpha)
        self.down = torch.nn.Parameter(torch.empty(rank, in_features, device=device))
        self.up = torch.nn.Parameter(torch.zeros(out_features, rank, device=device))
        bound = 1 / math.sqrt(in_features)  # kaiming_uniform_(a=√5), as peft and the reference trainers do
        with torch.no_grad():
            self.down.uniform_(-bound, bound, generator=generator)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.down.dtype) @ self.down.t() @ self.up.t()) * self.scale


class LoRANetwork(torch.nn.Module):
    """LoRA adapters on the Linear layers of ``model`` whose module paths match ``targets`` (fnmatch patterns)."""

    def __init__(self, model: torch.nn.Module, targets: Sequence[str] = DEFAULT_TARGETS, rank: int = 8,
                 alpha: Optional[float] = None, seed: int = 0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.rank, self.alpha = rank, float(alpha if alpha is not None else 2 * rank)
        generator = torch.Generator().manual_seed(seed)
        self.paths: List[str] = []
        adapters = {}
        self._handles = []
        for path, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and any(fnmatch.fnmatchcase(path, p) for p in targets):
                adapter = LoRAAdapter(module.in_features, module.out_features, rank, self.alpha, generator)
                adapter.to(module.weight.device)
                adapters[path.replace(".", "__")] = adapter
                self.paths.append(path)
                self._handles.append(module.register_forward_hook(self._hook(adapter)))
        if not self.paths:
            linears = [p for p, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
            raise ValueError(f"no Linear layer matches the LoRA targets {list(targets)}; the model's Linear layers "
                             f"include: {', '.join(linears[:12])}{' …' if len(linears) > 12 else ''}")
        self.adapters = torch.nn.ModuleDict(adapters)
        self.enabled = True

    def _hook(self, adapter: LoRAAdapter):
        def hook(module, inputs, output):
            if not self.enabled:
                return output
            return output + adapter.delta(inputs[0]).to(output.dtype)
        return hook

    def adapter(self, path: str) -> LoRAAdapter:
        return self.adapters[path.replace(".", "__")]

    @contextlib.contextmanager
    def disabled(self):
        """Run the base model (the KL reference policy) inside this block."""
        previous, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = previous

    def remove(self) -> None:
        """Detach the hooks; the model is exactly the base model again."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def comfy_state_dict(self, prefix: str = COMFY_PREFIX) -> Dict[str, torch.Tensor]:
        """Tensors in the format ComfyUI's LoraLoaderModelOnly loads (float32, contiguous, on the CPU)."""
        out = {}
        for path in self.paths:
            adapter = self.adapter(path)
            key = f"{prefix}{path}"
            out[f"{key}.lora_down.weight"] = adapter.down.detach().float().cpu().contiguous()
            out[f"{key}.lora_up.weight"] = adapter.up.detach().float().cpu().contiguous()
            out[f"{key}.alpha"] = torch.tensor(adapter.alpha)
        return out

    def load_comfy_state_dict(self, state: Dict[str, torch.Tensor], prefix: str = COMFY_PREFIX) -> None:
        """Load tensors written by :meth:`comfy_state_dict`; every adapter must be present with matching rank."""
        expected = set(self.comfy_state_dict(prefix))
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise ValueError(f"LoRA state does not match this network: missing {sorted(missing)[:4]}, "
                             f"unexpected {sorted(unexpected)[:4]}")
        with torch.no_grad():
            for path in self.paths:
                adapter = self.adapter(path)
                key = f"{prefix}{path}"
                down, up = state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"]
                if down.shape != adapter.down.shape or up.shape != adapter.up.shape:
                    raise ValueError(f"{key}: the saved LoRA has rank {down.shape[0]} (shapes {list(down.shape)}, "
                                     f"{list(up.shape)}) but this network has rank {adapter.rank}")
                if float(state[f"{key}.alpha"]) != adapter.alpha:
                    raise ValueError(f"{key}: alpha {float(state[f'{key}.alpha'])} != {adapter.alpha}")
                adapter.down.copy_(down)
                adapter.up.copy_(up)


def trainable(parameters: Iterable[torch.nn.Parameter]) -> List[torch.nn.Parameter]:
    return [p for p in parameters if p.requires_grad]
