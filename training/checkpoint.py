"""GRPO checkpoints as one safetensors file: every tensor (LoRA, optimizer moments, RNG state) as a tensor, everything
else (format, iteration, history, config, optimizer param_groups and the non-tensor parts of its state) as one JSON
string in the safetensors metadata. Reading one never unpickles anything, so a checkpoint path a user (or an upload)
can point at cannot run code.

Layout of ``checkpoint.safetensors``::

    metadata["format"]          = "flow-cps grpo checkpoint v2"
    metadata["flow_cps.state"]  = JSON of the state, each tensor replaced by {"__tensor__": "<name>"}
    tensors                     = "<name>" → tensor (e.g. "lora/diffusion_model.blocks.0.attn.qkv.lora_up.weight",
                                  "optimizer/state/0/exp_avg", "torch_rng")

Dicts with non-string keys (the optimizer's per-parameter state) are stored as {"__items__": [[key, value], …]} and
tuples as {"__tuple__": […]}, so the decoded state equals the saved one.

Version 1 (``checkpoint.pt``, ``torch.save``) is not read here: ``scripts/convert_checkpoint_v1.py`` converts a file of
your own.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Dict, Optional

import torch

FORMAT = "flow-cps grpo checkpoint v2"
V1_FORMAT = "flow-cps grpo checkpoint v1"
CHECKPOINT_NAME = "checkpoint.safetensors"
V1_CHECKPOINT_NAME = "checkpoint.pt"
_STATE_KEY = "flow_cps.state"
CONVERT_HINT = ("convert it with `python scripts/convert_checkpoint_v1.py OLD.pt <run folder>/"
                f"{CHECKPOINT_NAME}` (flow-cps never unpickles a checkpoint: unpickling can run code)")


class CheckpointError(ValueError):
    """The file is not a readable flow-cps v2 checkpoint; the message says what to do."""
    __module__ = "flow_cps"  # ComfyUI shows f"{__module__}.{name}" as the error type; the real one is a folder path


# ----- atomic writes ------------------------------------------------------------------------------------------------
def temporary_path(path: str, pid: Optional[int] = None) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.tmp-{os.getpid() if pid is None else pid}")


def remove_stale_temporaries(path: str) -> list:
    """Remove temporary files an earlier (killed) save of ``path`` left behind; returns the removed paths.

    Only ``.<name>.tmp-<pid>`` files of this exact target are touched. Two processes saving the same file at the same
    moment are not supported (runs write to their own folders)."""
    folder, name = os.path.split(os.path.abspath(path))
    prefix, removed = f".{name}.tmp-", []
    try:
        entries = os.listdir(folder)
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.startswith(prefix) and entry[len(prefix):].isdigit():
            try:
                os.remove(os.path.join(folder, entry))
                removed.append(os.path.join(folder, entry))
            except OSError:
                pass  # e.g. still open on Windows: the next save tries again
    return removed


def atomic_write(path: str, write: Callable[[str], None]) -> str:
    """``write(temporary)`` into a temporary file in the same folder, fsync it, then rename it over ``path``.

    A kill at any point leaves ``path`` as it was (the old file or none); a leftover temporary file is removed by the
    next save of the same path, and our own is removed when ``write`` fails."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(path)
    temporary = temporary_path(path)
    try:
        write(temporary)
        with open(temporary, "r+b") as handle:  # writable handle: Windows' fsync (_commit) needs one
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except OSError:
            pass
        raise
    if os.name == "posix":  # make the rename itself durable
        try:
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
    return path


# ----- state <-> (JSON, tensors) ------------------------------------------------------------------------------------
def _encode(value, name: str, tensors: Dict[str, torch.Tensor]):
    if torch.is_tensor(value):
        key, k = name, 1
        while key in tensors:
            k += 1
            key = f"{name}#{k}"
        # a private contiguous CPU copy: safetensors refuses tensors that share memory
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and "__tensor__" not in value and "__items__" not in value \
                and "__tuple__" not in value:
            return {k: _encode(v, f"{name}/{k}", tensors) for k, v in value.items()}
        return {"__items__": [[_encode(k, f"{name}/key", tensors), _encode(v, f"{name}/{k}", tensors)]
                              for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{name}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{name}/{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} at '{name}' in a checkpoint (only tensors, dicts, lists, "
                    "tuples, numbers, strings and None)")


def _decode(value, tensors: Dict[str, torch.Tensor]):
    if isinstance(value, dict):
        if set(value) == {"__tensor__"}:
            try:
                return tensors[value["__tensor__"]]
            except KeyError:
                raise CheckpointError(f"the checkpoint misses the tensor '{value['__tensor__']}'") from None
        if set(value) == {"__items__"}:
            return {_hashable(_decode(k, tensors)): _decode(v, tensors) for k, v in value["__items__"]}
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v, tensors) for v in value["__tuple__"])
        return {k: _decode(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    return value


def _hashable(key):
    if isinstance(key, list):
        return tuple(_hashable(k) for k in key)
    return key


def encode_state(state: dict):
    """(JSON string, tensors) of a checkpoint state."""
    tensors: Dict[str, torch.Tensor] = {}
    encoded = {k: _encode(v, k, tensors) for k, v in state.items()}
    return json.dumps(encoded), tensors


def decode_state(text: str, tensors: Dict[str, torch.Tensor]) -> dict:
    return _decode(json.loads(text), tensors)


# ----- files --------------------------------------------------------------------------------------------------------
def write_checkpoint(path: str, state: dict) -> str:
    """Atomically write ``state`` (a dict with "format" = FORMAT) as one safetensors file."""
    from safetensors.torch import save_file

    state = {**state, "format": FORMAT}
    text, tensors = encode_state(state)
    return atomic_write(path, lambda temporary: save_file(tensors, temporary,
                                                          metadata={"format": FORMAT, _STATE_KEY: text}))


def _looks_like_pickle(path: str) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"  # torch.save zip / legacy pickle protocol ≥ 2


def _open_error(path: str, error: Exception) -> CheckpointError:
    if _looks_like_pickle(path):
        return CheckpointError(
            f"{path} is a torch.save / pickle file (such as a v1 flow-cps checkpoint), not a {FORMAT} file; it is "
            f"not loaded. If it is a v1 checkpoint you made yourself, {CONVERT_HINT}")
    return CheckpointError(f"{path} is not a flow-cps GRPO checkpoint (not a safetensors file: {error})")


def read_metadata(path: str) -> dict:
    """The checkpoint's metadata without reading its tensors (raises CheckpointError)."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(path, "pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for foreign files
        raise _open_error(path, e) from None
    if metadata.get("format") != FORMAT or _STATE_KEY not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not a flow-cps GRPO checkpoint (format "
                              f"{metadata.get('format')!r}, expected {FORMAT!r})")
    return metadata


def read_checkpoint(path: str) -> dict:
    """The state written by :func:`write_checkpoint` (tensors on the CPU); raises CheckpointError."""
    from safetensors.torch import load_file

    metadata = read_metadata(path)
    try:
        tensors = load_file(path, device="cpu")
        return decode_state(metadata[_STATE_KEY], tensors)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: damaged flow-cps checkpoint ({type(e).__name__}: {e})") from None


def trained_iterations(path: str) -> int:
    """How many iterations the checkpoint holds (reads only the header); raises CheckpointError."""
    try:
        iteration = json.loads(read_metadata(path)[_STATE_KEY]).get("iteration")
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: damaged flow-cps checkpoint ({e})") from None
    if not isinstance(iteration, int):
        raise CheckpointError(f"{path}: the checkpoint has no iteration count")
    return iteration


def v1_hint(folder: str) -> str:
    """A sentence about a v1 ``checkpoint.pt`` in ``folder`` (empty when there is none)."""
    old = os.path.join(folder, V1_CHECKPOINT_NAME)
    if os.path.isfile(old):
        return f" {old} is an old v1 checkpoint: if you made it, {CONVERT_HINT}."
    return ""


__all__ = ["CHECKPOINT_NAME", "CONVERT_HINT", "CheckpointError", "FORMAT", "V1_CHECKPOINT_NAME", "V1_FORMAT",
           "atomic_write", "decode_state", "encode_state", "read_checkpoint", "read_metadata",
           "remove_stale_temporaries", "trained_iterations", "v1_hint", "write_checkpoint"]
