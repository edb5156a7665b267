"""Chart nodes: GRPO runs' reward curves in one chart (one shared y-axis), e.g. CPS vs Flow-SDE."""
from __future__ import annotations

import json

from comfy_api.latest import io, ui

from ..samplers.plots import reward_curves_chart

CATEGORY = "flow-cps/training"
SLOTS = 4


def run_label(info: dict, index: int) -> str:
    eta = info.get("eta")
    eta_text = f" eta {eta:g}" if isinstance(eta, (int, float)) else ""  # the chart font has no Greek
    return f"{index}: {info.get('rule', 'run')}{eta_text}"


def compare_runs(run_infos, labels):
    """(image, title) for GRPO run_info JSON strings (None = unconnected) and optional labels (empty = derived)."""
    runs, rewards, ranges = [], [], []
    for index, (text, label) in enumerate(zip(run_infos, labels), start=1):
        if text is None:
            continue
        info = json.loads(text)
        history = info.get("history") or []
        if not history:
            raise ValueError(f"run_info_{index} holds no trained iteration")
        runs.append((label.strip() or run_label(info, index), history))
        rewards.append(info.get("reward"))
        ranges.append(tuple(info["value_range"]) if info.get("value_range") else None)
    if not runs:
        raise ValueError("connect at least one trainer's run_info")
    if len({label for label, _ in runs}) != len(runs):
        raise ValueError("give every curve a different label")
    same_reward = len(set(rewards)) == 1
    value_range = ranges[0] if same_reward and len(set(ranges)) == 1 else None
    title = "GRPO reward" + (f" ({rewards[0]})" if same_reward and rewards[0] else " (different rewards!)")
    return reward_curves_chart(runs, title=title, value_range=value_range), title


class CompareRewardCurves(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        inputs = []
        for k in range(1, SLOTS + 1):
            inputs.append(io.String.Input(f"run_info_{k}", optional=k > 1, force_input=True,
                                          tooltip="A GRPO trainer's run_info output."))
            inputs.append(io.String.Input(f"label_{k}", default="",
                                          tooltip="Legend label (empty = 'k: rule eta …')."))
        return io.Schema(
            node_id="FlowCPS_CompareRewardCurves",
            display_name="Compare GRPO Reward Curves",
            category=CATEGORY,
            is_output_node=True,
            description="Draws the reward mean (± std) per iteration of up to four GRPO runs in one chart, so they "
                        "share one y-axis (inside the reward's known range, e.g. [0, 1] for the digit reward).",
            inputs=inputs,
            outputs=[io.Image.Output(display_name="chart",
                                     tooltip="The runs' mean reward per iteration on one shared y-axis.")],
        )

    @classmethod
    def execute(cls, run_info_1, label_1, label_2, label_3, label_4, run_info_2=None, run_info_3=None,
                run_info_4=None) -> io.NodeOutput:
        image, _ = compare_runs([run_info_1, run_info_2, run_info_3, run_info_4], [label_1, label_2, label_3, label_4])
        return io.NodeOutput(image, ui=ui.PreviewImage(image, cls=cls))


NODES = [CompareRewardCurves]
