"""GRPO inside ComfyUI: the training core's policy interface implemented with ComfyUI's own machinery.

Rollouts and log-prob recomputation go through a ``CFGGuider`` (model loading, conditioning, CFG, model patches
behave as in normal sampling); the GRPO loop runs inside a ``comfy.samplers.Sampler`` subclass driven by
``CFGGuider.sample``, as the stock TrainLoraNode does. The LoRA is ``comfy.weight_adapter`` LoRA modules added as
weight wrappers on ``comfy.ops`` layers, so its state dict is the stock LORA_MODEL format.
"""
from __future__ import annotations

import contextlib
import fnmatch
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

import comfy.model_management
import comfy.sampler_helpers
import comfy.samplers
import torch
from comfy.weight_adapter import LoRAAdapter
from comfy.weight_adapter.base import WeightAdapterTrainBase

from ..training.checkpointing import model_blocks
from ..training.run_folders import checkpoint_dir
from ..training.saved_tensors import private_saved_activations
from .comfy_sampling import noise_scale, stock_solver
from .host_compat import DEEPCOPY, autograd_kernels, trainable_copy_strategy


def release_inference_tensors(module: torch.nn.Module) -> int:
    """Replace parameters/buffers created under ``torch.inference_mode`` (every weight a loader node made) by
    ordinary copies, so autograd may save them for the backward pass. Values are unchanged; returns the count."""
    count = 0
    for sub in module.modules():
        for store in (sub._parameters, sub._buffers):
            for name, tensor in list(store.items()):
                if tensor is None or not tensor.is_inference():
                    continue
                copy = tensor.detach().clone()
                store[name] = torch.nn.Parameter(copy, requires_grad=False) if name in sub._parameters else copy
                count += 1
    return count


def trainable_clone(model_patcher):
    """``(ModelPatcher to train on, how it was made)``, the way this host allows (see
    host_compat.trainable_copy_strategy). Call under ``torch.inference_mode(False)``."""
    strategy = trainable_copy_strategy(model_patcher)
    if strategy == DEEPCOPY:
        return model_patcher.clone(force_deepcopy=True), strategy
    patched = model_patcher.clone()
    release_inference_tensors(patched.model)
    return patched, strategy


class _Switch:
    enabled = True


class SwitchableLoRA(WeightAdapterTrainBase):
    """A trainable ``comfy.weight_adapter`` LoRA that can be bypassed: off = the base model (the KL reference)."""

    def __init__(self, lora: torch.nn.Module, switch: _Switch):
        super().__init__()
        self.lora = lora
        self.switch = switch

    def __call__(self, w):
        return self.lora(w) if self.switch.enabled else w

    def passive_memory_usage(self):
        return self.lora.passive_memory_usage()


class HostLoRA:
    """LoRA adapters on a ModelPatcher's ``comfy.ops`` Linear layers, keyed by module path."""

    def __init__(self, model_patcher, targets: Sequence[str], rank: int, alpha: float, seed: int):
        self.switch = _Switch()
        self.adapters: Dict[str, torch.nn.Module] = {}
        names = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for name, module in model_patcher.model.named_modules():
                if not name.startswith("diffusion_model.") or not hasattr(module, "weight_function"):
                    continue
                weight = getattr(module, "weight", None)
                if weight is None or weight.dim() != 2:
                    continue
                path = name[len("diffusion_model."):]
                names.append(path)
                if not any(fnmatch.fnmatchcase(path, pattern) for pattern in targets):
                    continue
                lora = LoRAAdapter.create_train(weight, rank=rank, alpha=alpha)
                self.adapters[name] = lora
                model_patcher.add_weight_wrapper(f"{name}.weight", SwitchableLoRA(lora, self.switch))
        if not self.adapters:
            shown = ", ".join(names[:12]) + (" …" if len(names) > 12 else "")
            raise ValueError(f"no Linear layer of the model matches the LoRA targets {list(targets)}. Layers this "
                             f"model has: {shown or 'none that ComfyUI can wrap'}. Write fnmatch patterns such as "
                             "'*attn.qkv' (comma-separated).")

    def parameters(self) -> List[torch.nn.Parameter]:
        return [p for lora in self.adapters.values() for p in lora.parameters() if p.requires_grad]

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The stock LORA_MODEL format: ``diffusion_model.<path>.lora_up.weight / .lora_down.weight / .alpha``."""
        return {f"{name}.{key}": value.detach().clone()
                for name, lora in self.adapters.items() for key, value in lora.state_dict().items()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        expected = set(self.state_dict())
        if set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError("the checkpoint's LoRA does not fit this model and these targets/rank "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]}); resume with the settings the run "
                             "was started with")
        with torch.no_grad():
            for name, lora in self.adapters.items():
                for key, value in lora.state_dict().items():
                    value.copy_(state[f"{name}.{key}"])

    def disabled(self):
        switch = self.switch

        class _Off:
            def __enter__(self):
                switch.enabled = False

            def __exit__(self, *exc):
                switch.enabled = True

        return _Off()


@dataclass
class PromptConds:
    text: str
    positive: list  # CONDITIONING
    negative: list  # CONDITIONING


class ComfyPolicy:
    """The trainer's policy interface on a running ``CFGGuider`` (see training/trainer.py)."""

    def __init__(self, guider, lora: HostLoRA, prompts: List[PromptConds], processed: List[dict],
                 decode: Callable[[torch.Tensor], torch.Tensor], latent_shape, extra_args: dict, device):
        self.guider, self.lora, self.prompts, self.processed = guider, lora, prompts, processed
        self.decode_fn, self.latent_shape, self.extra_args, self.device = decode, tuple(latent_shape), extra_args, device
        self.index = {p.text: k for k, p in enumerate(prompts)}

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        return torch.tensor([self.index[p] for p in prompts])

    def denoise(self, x: torch.Tensor, t: float, cond: torch.Tensor, cfg: float) -> torch.Tensor:
        comfy.model_management.throw_exception_if_processing_interrupted()
        self.guider.cfg = cfg
        sigma = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
        pieces, order = [], []
        for k in cond.unique().tolist():
            rows = (cond == k).nonzero().flatten()
            self.guider.conds = self.processed[k]
            pieces.append(self.guider(x[rows.to(x.device)], sigma[: len(rows)], **self.extra_args).to(x.dtype))
            order.append(rows)
        if len(pieces) == 1:
            return pieces[0]
        inverse = torch.argsort(torch.cat(order)).to(x.device)
        return torch.cat(pieces)[inverse]

    def reference(self):
        return self.lora.disabled()

    def stock_sampler(self, name: str, deterministic: bool):
        """ComfyUI's own sampler ``name`` as the trainer's solver (MixGRPO's ODE outside the window, DiffusionNFT's
        rollouts)."""
        return stock_solver(self.guider, name, deterministic)

    @property
    def noise_scale(self) -> float:
        return noise_scale(self.guider.model_patcher.get_model_object("model_sampling"))

    @contextlib.contextmanager
    def train_mode(self):
        """Training forwards and backwards take the host's differentiable kernels (rollouts keep the fast ones),
        and autograd keeps private copies of what it saves: Flux-style blocks update their input in place."""
        with autograd_kernels(comfy.model_management), private_saved_activations():
            yield

    def checkpoint_modules(self):
        """The diffusion model's blocks (double/single blocks, joint blocks, layers and refiners, …), as the stock
        TrainLoraNode checkpoints them."""
        return model_blocks(self.guider.model_patcher.model.diffusion_model)

    def trainable_parameters(self):
        return self.lora.parameters()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode_fn(latents)

    def restore_model(self) -> None:
        """After the VAE and the reward had their turn: model management may have moved the diffusion model (or part
        of it) off the GPU to fit them."""
        comfy.model_management.load_models_gpu(self.guider.loaded_models)

    def lora_state_dict(self):
        return self.lora.state_dict()

    def load_lora_state_dict(self, state) -> None:
        self.lora.load_state_dict(state)


@dataclass
class HostRun:
    """What the GRPO sampler needs besides the guider; filled in by the trainer node."""

    make_trainer: Callable  # (policy) -> GRPOTrainer
    prompts: List[PromptConds]
    vae: object
    lora: HostLoRA
    run: Callable  # (trainer) -> None: trains, reports progress, saves


class GRPOSampler(comfy.samplers.Sampler):
    """Runs a whole GRPO training inside ``CFGGuider.sample`` (model loaded, conds processed, patches applied)."""

    def __init__(self, host: HostRun):
        self.host = host

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        guider = model_wrap
        device = noise.device
        release_inference_tensors(guider.model_patcher.model)
        processed = []
        for prompt in self.host.prompts:
            conds = {"positive": comfy.sampler_helpers.convert_cond(prompt.positive),
                     "negative": comfy.sampler_helpers.convert_cond(prompt.negative)}
            processed.append(comfy.samplers.process_conds(guider.inner_model, noise, conds, device, latent_image,
                                                          None, extra_args.get("seed")))
        vae, inner = self.host.vae, guider.inner_model

        def decode(latents):
            return vae.decode(inner.process_latent_out(latents.float())).to(device).float()

        policy = ComfyPolicy(guider, self.host.lora, self.host.prompts, processed, decode, noise.shape[1:],
                             dict(extra_args), device)
        trainer = self.host.make_trainer(policy)
        self.host.run(trainer)
        return torch.zeros_like(noise)


def train_grpo_in_comfy(model_patcher, host: HostRun, latent_shape, sigmas, seed: int) -> None:
    """Drive ``GRPOSampler`` through a CFGGuider on ``model_patcher`` (a clone carrying the LoRA wrappers)."""
    guider = comfy.samplers.CFGGuider(model_patcher)
    first = host.prompts[0]
    guider.set_conds(first.positive, first.negative)
    noise = torch.zeros((1, *latent_shape))
    guider.sample(noise, torch.zeros_like(noise), GRPOSampler(host), sigmas, seed=seed, disable_pbar=True)


__all__ = ["trainable_clone", "HostLoRA", "ComfyPolicy", "PromptConds", "HostRun",
           "GRPOSampler", "train_grpo_in_comfy", "checkpoint_dir"]
