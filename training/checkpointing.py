"""Gradient checkpointing of a model's blocks that stays exact for blocks that update tensors in place.

``torch.utils.checkpoint`` re-runs a block from the very tensors it was first given. Flux's blocks update their
input in place (``img += …``), so by backward time that input already holds the block's output and the recomputed
gradient is silently wrong (see saved_tensors.py). Here a block runs on private copies of its tensor inputs, the
originals are kept for the recomputation, and the recomputation keeps private copies of what it saves: the
gradient is exact, and between forward and backward only the blocks' inputs are held.

Like the stock TrainLoraNode, checkpointing patches each block's ``forward``; without grad (rollouts, the KL
reference) a block runs as it is.
"""
from __future__ import annotations

from typing import Callable, Iterable, List

import torch

from .saved_tensors import private_saved_activations


def _flatten(value, tensors: list):
    """Replace every tensor in nested lists/tuples/dicts by a placeholder index; returns the skeleton."""
    if torch.is_tensor(value):
        tensors.append(value)
        return _Slot(len(tensors) - 1)
    if isinstance(value, (list, tuple)):
        return type(value)(_flatten(v, tensors) for v in value)
    if isinstance(value, dict):
        return {k: _flatten(v, tensors) for k, v in value.items()}
    return value


def _fill(skeleton, tensors):
    if isinstance(skeleton, _Slot):
        return tensors[skeleton.index]
    if isinstance(skeleton, (list, tuple)):
        return type(skeleton)(_fill(v, tensors) for v in skeleton)
    if isinstance(skeleton, dict):
        return {k: _fill(v, tensors) for k, v in skeleton.items()}
    return skeleton


class _Slot:
    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index


class _BlockCheckpoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run, skeleton, anchor, *inputs):
        ctx.run, ctx.skeleton = run, skeleton
        ctx.autocast = (torch.is_autocast_enabled("cuda"), torch.is_autocast_enabled("cpu"),
                        torch.get_autocast_dtype("cuda"), torch.get_autocast_dtype("cpu"))
        ctx.save_for_backward(*inputs)
        with torch.no_grad():
            args, kwargs = _fill(skeleton, [t.clone() for t in inputs])  # the block may update them in place
            out = run(*args, **kwargs)
        ctx.single = torch.is_tensor(out)
        outs = (out,) if ctx.single else tuple(out)
        if not all(o is None or torch.is_tensor(o) for o in outs):  # (SD3's last block returns (None, x))
            raise TypeError("gradient checkpointing needs blocks that return tensors or tuples of tensors")
        return outs[0] if ctx.single else outs

    @staticmethod
    def backward(ctx, *grads):
        inputs = [t.detach().requires_grad_(t.requires_grad) for t in ctx.saved_tensors]
        cuda_on, cpu_on, cuda_dtype, cpu_dtype = ctx.autocast
        with torch.enable_grad(), private_saved_activations(), \
                torch.autocast("cuda", dtype=cuda_dtype, enabled=cuda_on), \
                torch.autocast("cpu", dtype=cpu_dtype, enabled=cpu_on):
            args, kwargs = _fill(ctx.skeleton, [t.clone() for t in inputs])
            out = ctx.run(*args, **kwargs)
        outs = (out,) if torch.is_tensor(out) else tuple(out)
        pairs = [(o, g) for o, g in zip(outs, grads) if o is not None and o.requires_grad and g is not None]
        if pairs:
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        return (None, None, None, *[t.grad if t.requires_grad else None for t in inputs])


def checkpointed(forward: Callable) -> Callable:
    """``forward`` wrapped: with grad enabled, its activations are recomputed in backward (exactly)."""
    def run_checkpointed(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        tensors: list = []
        skeleton = _flatten((args, kwargs), tensors)
        # tensors made under inference_mode (e.g. by another ComfyUI node) cannot be saved for backward: copy them
        tensors = [t.clone() if t.is_inference() else t for t in tensors]
        # the anchor makes the outputs require grad even when no input does, so the LoRA inside gets its gradient
        anchor = torch.empty(0, requires_grad=True)
        return _BlockCheckpoint.apply(forward, skeleton, anchor, *tensors)
    return run_checkpointed


def checkpoint_blocks(blocks: Iterable[torch.nn.Module]) -> Callable[[], None]:
    """Patch each block's forward to be checkpointed; returns a function that undoes it."""
    patched: List[torch.nn.Module] = []
    for block in blocks:
        if "forward" in block.__dict__:  # already patched (by us or someone else): leave it
            continue
        block.forward = checkpointed(block.forward)
        patched.append(block)

    def undo():
        for block in patched:
            del block.forward
    return undo


def model_blocks(model: torch.nn.Module) -> List[torch.nn.Module]:
    """The transformer blocks of a diffusion model: the entries of its top-level ModuleLists (``blocks``,
    ``double_blocks`` + ``single_blocks``, ``joint_blocks``, ``transformer_blocks``, ``layers`` + refiners, …)."""
    return [block for child in model.children() if isinstance(child, torch.nn.ModuleList) for block in child]


__all__ = ["checkpointed", "checkpoint_blocks", "model_blocks"]
