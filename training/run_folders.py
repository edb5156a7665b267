"""Where the ComfyUI trainer node keeps its runs, and which checkpoint a ``resume_from`` text means.

Every run lives in ``<output>/flow_cps_grpo/<run_name>[_N]/``. A resume path must resolve (symlinks followed) to a
file inside such a run folder: ComfyUI's upload endpoint can put files into the output folder of a ``--listen``
server, so nothing outside the trainer's own folder is read, and a resumed run writes only into its own run folder.
No ComfyUI import here (the node passes ComfyUI's output directory), so the rules are tested without a host.

Also the files a run folder holds besides its checkpoint, for every trainer (the node, scripts/train.py,
scripts/train_comfy.py): :func:`write_json` (every JSON a run writes, atomically) and the final files' record of how
many iterations they hold (:func:`recorded_iterations`, :func:`stale_final_files`), so a run killed after its last
checkpoint but before its final files can be finished by resuming it.
"""
from __future__ import annotations

import json
import os
import re
from typing import Iterable, List, Optional

from .checkpoint import CHECKPOINT_NAME, CheckpointError, atomic_write, trained_iterations, v1_hint

RUNS_FOLDER = "flow_cps_grpo"


def runs_root(output_dir: str) -> str:
    return os.path.join(output_dir, RUNS_FOLDER)


def checkpoint_dir(output_dir: str, run_name: str) -> str:
    """``<output>/flow_cps_grpo/<run name>`` with the name reduced to letters, digits, '-', '_' and '.' (a name of
    only dots becomes 'grpo', so it never means the folder itself or its parent)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_name.strip())
    if not safe.strip("."):
        safe = "grpo"
    return os.path.join(runs_root(output_dir), safe)


def is_inside(path: str, root: str) -> bool:
    """``path`` resolves (realpath) to ``root`` itself or something below it."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    try:
        return os.path.commonpath([real, base]) == base
    except ValueError:  # different drives on Windows
        return False


def is_run_folder(folder: str, output_dir: str) -> bool:
    """``folder`` resolves to a folder strictly inside ``<output>/flow_cps_grpo/``."""
    root = os.path.realpath(runs_root(output_dir))
    real = os.path.realpath(folder)
    return is_inside(real, root) and real != root


def run_family(output_dir: str, run_name: str) -> List[str]:
    """Existing folders of a run name: <output>/flow_cps_grpo/<name>, <name>_2, <name>_3, … (only real folders inside
    flow_cps_grpo/: a symlink pointing elsewhere is left out)."""
    base = checkpoint_dir(output_dir, run_name)
    parent, stem = os.path.dirname(base), os.path.basename(base)
    if not os.path.isdir(parent):
        return []
    pattern = re.compile(re.escape(stem) + r"(_\d+)?")
    folders = [os.path.join(parent, f) for f in sorted(os.listdir(parent)) if pattern.fullmatch(f)]
    return [f for f in folders if os.path.isdir(f) and is_run_folder(f, output_dir)]


def new_run_folder(output_dir: str, run_name: str) -> str:
    """A folder no earlier run wrote to, so a new run never overwrites another run's checkpoint or LoRA."""
    base = checkpoint_dir(output_dir, run_name)
    folder, k = base, 1
    while os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
        k += 1
        folder = f"{base}_{k}"
    return folder


def latest_checkpoint(output_dir: str, run_name: str) -> str:
    """The newest (by modification time) checkpoint of this run name that holds at least one trained iteration."""
    found, notes = [], []
    for folder in run_family(output_dir, run_name):
        path = os.path.join(folder, CHECKPOINT_NAME)
        if not os.path.isfile(path):
            notes.append(v1_hint(folder).strip())
            continue
        try:
            iterations = trained_iterations(path)
        except CheckpointError as e:
            notes.append(f"skipped {path}: {e}")
            continue
        if iterations < 1:
            notes.append(f"skipped {path}: no trained iteration")
            continue
        found.append(os.path.realpath(path))
    if not found:
        extra = " ".join(n for n in notes if n)
        raise FileNotFoundError(
            f"resume_from 'latest': run '{run_name}' has no checkpoint with a trained iteration in "
            f"{checkpoint_dir(output_dir, run_name)}(_N)/{CHECKPOINT_NAME}. Check run_name, give a checkpoint path, "
            f"or leave resume_from empty for a new run." + (f" {extra}" if extra else ""))
    return max(found, key=os.path.getmtime)


def _outside_error(text: str, output_dir: str) -> ValueError:
    return ValueError(
        f"resume_from: '{text}' is not inside a run folder of {runs_root(output_dir)}{os.sep}. The trainer only resumes "
        f"from its own folder (a checkpoint elsewhere could be a file someone uploaded). Use 'latest', a path "
        f"relative to the output folder such as {RUNS_FOLDER}/<run_name>/{CHECKPOINT_NAME}, or copy a checkpoint of "
        f"your own into {runs_root(output_dir)}{os.sep}<run_name>{os.sep} first")


def resolve_resume(output_dir: str, resume_from: str, run_name: str) -> Optional[str]:
    """None for a new run; 'latest' = this run name's newest checkpoint with a trained iteration; else a checkpoint
    file (or run folder) given relative to the output folder or as an absolute path. The result is the real path
    (symlinks resolved) of a checkpoint inside a run folder of ``<output>/flow_cps_grpo/``; anything else raises."""
    text = (resume_from or "").strip()
    if not text:
        return None
    if text == "latest":
        return latest_checkpoint(output_dir, run_name)
    candidate = text if os.path.isabs(text) else os.path.join(output_dir, text)
    real = os.path.realpath(candidate)
    root = os.path.realpath(runs_root(output_dir))
    if os.path.isdir(real) or (not os.path.exists(real) and os.path.dirname(real) == root):
        real = os.path.join(real, CHECKPOINT_NAME)  # a run folder (or the name of a missing one)
    if not is_run_folder(os.path.dirname(real), output_dir):
        raise _outside_error(text, output_dir)
    if not os.path.isfile(real):
        raise FileNotFoundError(
            f"resume_from: no checkpoint at {real}. Use 'latest' for this run name's newest checkpoint, a path "
            f"relative to the output folder ({RUNS_FOLDER}/<run_name>/{CHECKPOINT_NAME}), or leave it empty for a "
            "new run." + v1_hint(os.path.dirname(real)))
    if trained_iterations(real) < 1:  # also rejects foreign and v1 files, with the conversion hint
        raise CheckpointError(f"resume_from: {real} holds no trained iteration")
    return real


# ----- the files a run writes besides its checkpoint -----------------------------------------------------------------
ITERATIONS_KEY = "flow_cps.iterations"  # a PNG text chunk / LoRA metadata key: the iterations the file shows


def write_json(path: str, value, indent: Optional[int] = 1) -> str:
    """Write ``value`` as JSON atomically (training.checkpoint.atomic_write: a temporary file in the same folder,
    flushed and fsynced, then ``os.replace``d over ``path``): a kill or an error at any point leaves the old file (or
    none), never a truncated one. Values JSON cannot hold are written as ``str(value)``."""
    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(value, handle, indent=indent, default=str)
            handle.flush()
    return atomic_write(path, write)


def write_reward_curve(path: str, curve, iterations: int) -> str:
    """The reward curve (an IMAGE tensor [1, H, W, 3] in 0…1) as a PNG, atomically, recording ``iterations``."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(ITERATIONS_KEY, str(int(iterations)))
    image = Image.fromarray((curve[0] * 255).round().byte().cpu().numpy())
    return atomic_write(path, lambda temporary: image.save(temporary, format="PNG", pnginfo=info))


def recorded_iterations(path: str) -> Optional[int]:
    """How many trained iterations a run's final file records: a LoRA's metadata (``iterations`` or
    ``flow_cps.iterations``), a metrics JSON's ``iterations`` (else the length of its ``history``), a reward-curve
    PNG's text chunk. None when the file is missing, unreadable or records nothing (then it is rewritten)."""
    if not os.path.isfile(path):
        return None
    try:
        if path.endswith(".safetensors"):
            from safetensors import safe_open
            with safe_open(path, "pt") as handle:
                metadata = handle.metadata() or {}
            value = metadata.get(ITERATIONS_KEY, metadata.get("iterations"))
            return int(json.loads(value)) if value is not None else None
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as handle:
                value = json.load(handle)
            if isinstance(value.get("iterations"), int):
                return value["iterations"]
            return len(value["history"]) if isinstance(value.get("history"), list) else None
        if path.endswith(".png"):
            from PIL import Image
            with Image.open(path) as image:
                value = image.text.get(ITERATIONS_KEY)
            return int(value) if value is not None else None
    except Exception:  # a damaged or foreign file: it does not show this run's end
        return None
    return None


def stale_final_files(folder: str, names: Iterable[str], iterations: int) -> List[str]:
    """The final files of ``folder`` (``names``) that do not show ``iterations`` trained iterations: missing, damaged,
    or left from an earlier segment of a resumed run. A resume whose checkpoint already holds every iteration writes
    these, and only these."""
    return [name for name in names if recorded_iterations(os.path.join(folder, name)) != iterations]


__all__ = ["RUNS_FOLDER", "ITERATIONS_KEY", "checkpoint_dir", "recorded_iterations", "stale_final_files",
           "write_json", "write_reward_curve", "is_inside", "is_run_folder", "latest_checkpoint", "new_run_folder",
           "resolve_resume", "run_family", "runs_root"]
