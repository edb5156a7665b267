"""Headless GRPO: the trainer node's own code path, run from the command line (scripts/train_comfy.py), one process
per GPU under torchrun.

ComfyUI is imported as a library; the workflow (exported in API format, or built from the command line's flags) is
run by ComfyUI's own executor, so its loaders, model patches and conditioning nodes load and encode exactly as in the
browser. Only the trainer node's output side changes: while a :class:`HeadlessRun` is active, the run writes into a
folder the command line chose (the same on every rank), only rank 0 writes files, and chart events go to the command
line (one progress line per iteration on rank 0) instead of the browser.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional

from .api_graph import TRAINER, WorkflowError, check_api_workflow, find_trainer, is_link, upstream

log = logging.getLogger("flow_cps")

# loader inputs that name a model file, and the ComfyUI model folder each is looked up in
MODEL_FILE_INPUTS = {
    "CheckpointLoaderSimple": {"ckpt_name": "checkpoints"},
    "UNETLoader": {"unet_name": "diffusion_models"},
    "VAELoader": {"vae_name": "vae"},
    "CLIPLoader": {"clip_name": "text_encoders"},
    "DualCLIPLoader": {"clip_name1": "text_encoders", "clip_name2": "text_encoders"},
    "TripleCLIPLoader": {"clip_name1": "text_encoders", "clip_name2": "text_encoders",
                         "clip_name3": "text_encoders"},
    "LoraLoaderModelOnly": {"lora_name": "loras"},
    "LoraLoader": {"lora_name": "loras"},
}


@dataclass
class HeadlessRun:
    run_folder: str  # absolute, inside <output>/flow_cps_grpo/; the same on every rank
    rank: int
    world_size: int
    send_event: Callable[[str, dict], None]
    written: List[str] = field(default_factory=list)  # the final files the run wrote (rank 0)

    @property
    def writes(self) -> bool:
        return self.rank == 0


_ACTIVE: List[HeadlessRun] = []


@contextlib.contextmanager
def headless_run(run: HeadlessRun) -> Iterator[HeadlessRun]:
    _ACTIVE.append(run)
    try:
        yield run
    finally:
        _ACTIVE.remove(run)


def current() -> Optional[HeadlessRun]:
    return _ACTIVE[-1] if _ACTIVE else None


def writes_files() -> bool:
    """False on the ranks > 0 of a headless run: rank 0 alone writes checkpoints, LoRAs and metrics."""
    run = current()
    return run is None or run.writes


# ----- the model files a graph names ----------------------------------------------------------------------------------
def model_files(graph: Dict[str, dict]) -> List[tuple]:
    """(node id, input, model folder kind, value) of every loader input naming a model file."""
    found = []
    for node_id, node in graph.items():
        for name, kind in MODEL_FILE_INPUTS.get(node["class_type"], {}).items():
            value = node.get("inputs", {}).get(name)
            if isinstance(value, str):
                found.append((node_id, name, kind, value))
    return found


def resolve_model_files(graph: Dict[str, dict], folder_paths) -> List[str]:
    """Make every model file a loader names loadable: a path (absolute, or relative to the working folder) gets its
    folder added to that model kind and is replaced by its file name; a name must exist in ComfyUI's model folders.
    Returns the problems (empty = all found), each saying what to do."""
    problems = []
    for node_id, name, kind, value in model_files(graph):
        if os.path.isfile(value):
            folder_paths.add_model_folder_path(kind, os.path.dirname(os.path.abspath(value)))
            graph[node_id]["inputs"][name] = os.path.basename(value)
        elif folder_paths.get_full_path(kind, value) is None:
            where = ", ".join(folder_paths.get_folder_paths(kind)) or "(no folder)"
            problems.append(f"{graph[node_id]['class_type']} (node {node_id}) {name} = {value!r}: no such file in "
                            f"ComfyUI's '{kind}' folders ({where}) nor as a path; give an existing file name or path")
    return problems


def _input_spec(entry) -> tuple:
    """(kind, options, choices) of one INPUT_TYPES entry; choices: a combo's values (either host's form) or None."""
    kind, options = entry[0], entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
    choices = kind if isinstance(kind, (list, tuple)) else options.get("options") if kind == "COMBO" else None
    return kind, options, choices


def input_defaults(node_class) -> Dict[str, object]:
    """Every required input's default (a combo's first option) from the node's INPUT_TYPES."""
    defaults = {}
    for name, entry in node_class.INPUT_TYPES().get("required", {}).items():
        _, options, choices = _input_spec(entry)
        if "default" in options:
            defaults[name] = options["default"]
        elif choices:
            defaults[name] = choices[0]
    return defaults


def check_pack_inputs(graph: Dict[str, dict], node_classes: Dict[str, type]) -> List[str]:
    """The literal inputs of this pack's nodes against their INPUT_TYPES: combo values and number ranges (older
    hosts' validation skips V3 combos, and a bad value must fail before any model loads, not in the middle)."""
    problems = []
    for node_id, node in graph.items():
        if not node["class_type"].startswith("FlowCPS") or node["class_type"] not in node_classes:
            continue
        spec = node_classes[node["class_type"]].INPUT_TYPES()
        for name, entry in {**spec.get("optional", {}), **spec.get("required", {})}.items():
            if name not in node.get("inputs", {}):
                continue
            value = node["inputs"][name]
            if is_link(value):
                continue
            kind, options, choices = _input_spec(entry)
            where = f"{node['class_type']} (node {node_id}) {name} = {value!r}"
            if choices is not None and value not in choices:
                problems.append(f"{where}: not one of {', '.join(map(str, choices))}")
            elif kind in ("INT", "FLOAT") and isinstance(value, (int, float)) and not isinstance(value, bool):
                low, high = options.get("min"), options.get("max")
                if (low is not None and value < low) or (high is not None and value > high):
                    problems.append(f"{where}: outside {low}…{high}")
    return problems


# ----- running it -----------------------------------------------------------------------------------------------------
class _Server:
    """What ComfyUI's executor talks to instead of the web server: it keeps the execution error and passes chart
    events on."""

    def __init__(self):
        self.client_id = "flow_cps_headless"
        self.last_node_id = None
        self.error: Optional[dict] = None

    def send_sync(self, event, data, sid=None):
        if event == "execution_error":
            self.error = data
        elif event == "executing" and isinstance(data, dict):
            self.last_node_id = data.get("node")

    def queue_updated(self):
        pass


class HeadlessFailure(RuntimeError):
    """The workflow stopped with an error (its node and message)."""

    __module__ = "flow_cps"


def run_workflow(graph: Dict[str, dict], trainer_id: str, run: HeadlessRun) -> None:
    """Run the trainer node (and what feeds it) with ComfyUI's executor while ``run`` is active."""
    import inspect

    import execution

    server = _Server()
    if "cache_args" in inspect.signature(execution.PromptExecutor).parameters:  # newer hosts need its keys
        executor = execution.PromptExecutor(server, cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    else:
        executor = execution.PromptExecutor(server)
    with headless_run(run):
        executor.execute(graph, "flow_cps_headless", {"client_id": server.client_id}, [trainer_id])
    if server.error is not None or not executor.success:
        error = server.error or {}
        where = f"{error.get('node_type', '?')} (node {error.get('node_id', '?')})"
        raise HeadlessFailure(f"{where}: {error.get('exception_type', 'error')}: "
                              f"{error.get('exception_message', 'the run failed')}")


async def validate(graph: Dict[str, dict], trainer_id: str) -> List[str]:
    """ComfyUI's own validation of the graph (types, widget ranges, combo values): the problems, empty = valid."""
    import execution

    valid = await execution.validate_prompt("flow_cps_headless", graph, [trainer_id])
    if valid[0]:
        return []
    problems = []
    for node_id, errors in (valid[3] or {}).items():
        for error in errors.get("errors", []):
            details = error.get("details") or error.get("message")
            problems.append(f"{errors.get('class_type', '?')} (node {node_id}): {details}")
    if not problems:  # no node to name: the graph as a whole (e.g. no output)
        problems.append(str(valid[1].get("message", valid[1])) if isinstance(valid[1], dict) else str(valid[1]))
    return problems


__all__ = ["HeadlessRun", "headless_run", "current", "writes_files", "WorkflowError", "check_api_workflow",
           "find_trainer", "upstream", "resolve_model_files", "input_defaults", "check_pack_inputs", "run_workflow",
           "validate", "HeadlessFailure", "TRAINER", "MODEL_FILE_INPUTS"]
