"""Train through models whose forward updates tensors in place (``img += attn(norm(img))``, as Flux's blocks do).

Autograd refuses such a backward ("one of the variables needed for gradient computation has been modified by an
inplace operation") when the updated tensor had been saved for the backward, e.g. by the norm before it. Gradient
checkpointing does not cure it: the recomputation re-runs a block from the tensor the forward already updated, and
its own saved tensors are updated again before they are used, so the gradient comes out silently wrong.

Inside :func:`private_saved_activations` autograd keeps a private copy of every saved activation instead of the
tensor itself, so later in-place updates cannot reach it: the forward's values and the gradient are exact. Leaves
(weights, LoRA parameters, inputs) are kept as they are; a tensor saved several times at one version is copied
once, so memory is what autograd would hold anyway plus one tensor in flight.
"""
from __future__ import annotations

import contextlib
import weakref

import torch


@contextlib.contextmanager
def private_saved_activations():
    copies = {}  # id(tensor) -> (weakref to it, its version, the copy): one copy per tensor version

    def pack(tensor):
        if tensor.grad_fn is None:
            return tensor
        key = id(tensor)
        entry = copies.get(key)
        if entry is not None and entry[0]() is tensor and entry[1] == tensor._version:
            return entry[2]
        copy = tensor.detach().clone()
        copies[key] = (weakref.ref(tensor), tensor._version, copy)
        return copy

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        try:
            yield
        finally:
            copies.clear()


__all__ = ["private_saved_activations"]
