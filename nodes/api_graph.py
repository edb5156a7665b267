"""The API-format graph of a workflow (Workflow → Export (API)): its checks, its trainer and what the trainer needs.

Standard library only: scripts/train_comfy.py loads this file by path to check a workflow before it imports ComfyUI,
so a wrong file or a missing trainer is reported in a second, not after ComfyUI's start-up.
"""
from __future__ import annotations

from typing import Dict, Optional

TRAINER = "FlowCPS_GRPOTrainLoRA"


class WorkflowError(ValueError):
    """A workflow the command-line trainer cannot run (it says what to change)."""

    __module__ = "flow_cps"


def check_api_workflow(graph) -> Dict[str, dict]:
    """The graph of an API-format export ({id: {class_type, inputs}}); a UI-format file gets the export hint."""
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        raise WorkflowError("this is a workflow in the UI format (what Save writes); the trainer needs the API "
                            "format: in ComfyUI use Workflow → Export (API) and pass that file")
    if not isinstance(graph, dict) or not graph or not all(
            isinstance(node, dict) and "class_type" in node for node in graph.values()):
        raise WorkflowError("not an API-format workflow: expected {node id: {class_type, inputs}} (ComfyUI: "
                            "Workflow → Export (API))")
    return graph


def find_trainer(graph: Dict[str, dict], node_id: Optional[str] = None) -> str:
    trainers = [k for k, node in graph.items() if node["class_type"] == TRAINER]
    if node_id is not None:
        if node_id not in trainers:
            raise WorkflowError(f"node {node_id!r} is not a 'GRPO Train LoRA (flow)' node; the workflow's trainer "
                                f"nodes are {trainers or 'none'}")
        return node_id
    if len(trainers) != 1:
        raise WorkflowError(f"the workflow has {len(trainers)} 'GRPO Train LoRA (flow)' nodes "
                            f"({', '.join(trainers) or 'none'}); " + ("pick one with --node ID" if trainers else
                                                                     "add one, or build the run from flags"))
    return trainers[0]


def upstream(graph: Dict[str, dict], node_id: str) -> Dict[str, dict]:
    """The node and every node it depends on (what the trainer needs): the rest (previews, Save LoRA, samplers
    after training) is dropped, since only rank 0 may write and the run itself saves the LoRA."""
    keep, todo = {}, [node_id]
    while todo:
        current_id = todo.pop()
        if current_id in keep:
            continue
        if current_id not in graph:
            raise WorkflowError(f"the workflow links to node {current_id!r}, which it does not contain")
        keep[current_id] = graph[current_id]
        todo += [value[0] for value in graph[current_id].get("inputs", {}).values() if is_link(value)]
    return {k: graph[k] for k in graph if k in keep}


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
