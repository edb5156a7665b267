"""Reward nodes: loaders producing a REWARD, a combine node, and a node that scores images with a REWARD."""
from __future__ import annotations

import json
import os

import folder_paths
from comfy_api.latest import io, ui

from .reward_placement import managed_by_comfy
from .widget_options import WEIGHT_STEP
from ..training.rewards import (FRAME_REDUCTIONS, WEIGHT_FREE_REWARDS, BoldDigitReward, CombinedReward, DigitReward,
                                FrameReward, OCRReward, evaluate_reward, load_clip_reward, weight_free_reward)

CATEGORY = "flow-cps/rewards"
RewardType = io.Custom("REWARD")
REWARD_FOLDER = "reward_models"  # models/reward_models/<name>/ (more roots: a reward_models entry in extra_model_paths)
CLIP_REWARDS = ["pickscore", "hpsv2", "aesthetic", "clipscore"]


def reward_output(what: str):
    return RewardType.Output(display_name="reward",
                             tooltip=f"{what[0].upper()}{what[1:]}, for the GRPO trainer, Combine Rewards or Score "
                                     "Images.")


def register_reward_folder() -> None:
    folder_paths.add_model_folder_path(REWARD_FOLDER, os.path.join(folder_paths.models_dir, REWARD_FOLDER),
                                       is_default=True)


def reward_roots():
    return folder_paths.get_folder_paths(REWARD_FOLDER)


def parse_prompt_list(text: str, batch: int):
    lines = [line.strip() for line in text.splitlines() if line.strip()] or [""]
    if len(lines) == 1:
        return lines * batch
    if len(lines) != batch:
        raise ValueError(f"{len(lines)} prompts for {batch} images: write one prompt (used for every image) or one "
                         "per image, one per line")
    return lines


def format_scores(result) -> str:
    rows = [f"image {i}: {float(v):.4f}" for i, v in enumerate(result.rewards)]
    for key, values in result.details.items():
        for i, value in enumerate(values):
            rows[i] += f"  {key}={value:.4g}" if isinstance(value, float) else f"  {key}={value}"
    return "\n".join(rows)


class DigitRewardLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_RewardDigit",
            display_name="Reward: Digit Classifier (toy)",
            category=CATEGORY,
            description="The shipped digit classifier's probability that an image shows the digit its prompt names "
                        "(a verifiable, GenEval-like reward for the toy model). No download.",
            inputs=[],
            outputs=[reward_output("the digit reward")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(DigitReward())


class BoldDigitRewardLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_RewardBoldDigit",
            display_name="Reward: Bold Digit (toy)",
            category=CATEGORY,
            description="The toy's style task: the digit classifier's probability that an image shows the digit its "
                        "prompt names × the mean stroke width in pixels (ink darker than 0.5, so a grey background "
                        "does not count). The base toy model draws thin strokes (about 1.2 px); a blob that no longer "
                        "reads as the digit scores about 0. No download.",
            inputs=[],
            outputs=[reward_output("the bold-digit reward")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(BoldDigitReward())


class CLIPFamilyRewardLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_RewardCLIP",
            display_name="Reward: PickScore / HPSv2 / Aesthetic / CLIPScore",
            category=CATEGORY,
            description="Loads a CLIP-family reward model from models/reward_models/<name>/ (or a given path) with "
                        "transformers. Nothing is downloaded: a missing model's error says which files to put "
                        "where. PickScore = 100·cos (≈18–23), HPSv2 = cos (≈0.2–0.35), aesthetic = LAION score "
                        "(1–10, prompt ignored), CLIPScore = 2.5·max(cos, 0).",
            inputs=[
                io.Combo.Input("model", options=CLIP_REWARDS, default="pickscore",
                               tooltip="Which reward model (folder under models/reward_models)."),
                io.String.Input("path", default="",
                                tooltip="Optional: a folder or weights file to load instead of the reward_models "
                                        "folder."),
                io.Combo.Input("dtype", options=["float32", "float16", "bfloat16"], default="float32",
                               tooltip="Compute dtype (float16/bfloat16 halve memory on a GPU)."),
            ],
            outputs=[reward_output("the loaded reward model")],
        )

    @classmethod
    def execute(cls, model, path, dtype) -> io.NodeOutput:
        return io.NodeOutput(load_clip_reward(model, reward_roots(), path=path.strip() or None, dtype=dtype))


class WeightFreeRewardLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_RewardWeightFree",
            display_name="Reward: Weight-free (JPEG, colour, sharpness, noise)",
            category=CATEGORY,
            description="Rewards that need no model: jpeg_compressibility / jpeg_incompressibility (DDPO: ∓ JPEG size "
                        "in kB at quality 95), colorfulness (Hasler–Süsstrunk), sharpness (variance of the "
                        "Laplacian ×1000) and low_noise (− the residual-noise estimate the comparison nodes show). "
                        "The prompt is ignored.",
            inputs=[io.Combo.Input("kind", options=list(WEIGHT_FREE_REWARDS), default="low_noise",
                                   tooltip="Which weight-free reward.")],
            outputs=[reward_output("the weight-free reward")],
        )

    @classmethod
    def execute(cls, kind) -> io.NodeOutput:
        return io.NodeOutput(weight_free_reward(kind))


class OCRRewardLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_RewardOCR",
            display_name="Reward: OCR text rendering",
            category=CATEGORY,
            description="Reads the image with rapidocr (its PP-OCR models ship in the pip package; no download) and "
                        "compares with the first quoted text of the prompt: 1 − edit distance / length, spaces and "
                        "case ignored (the CPS / Flow-GRPO OCR task). Needs: pip install rapidocr onnxruntime.",
            inputs=[],
            outputs=[reward_output("the OCR reward")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(OCRReward())


class CombineRewards(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_RewardCombine",
            display_name="Combine Rewards",
            category=CATEGORY,
            description="A weighted sum of up to four rewards. With normalize, each reward is z-scored over the batch "
                        "first (as the Precise paper mixes rewards), so rewards on different scales weigh as given.",
            inputs=[
                RewardType.Input("reward_1", tooltip="First reward."),
                io.Float.Input("weight_1", default=1.0, min=-100.0, max=100.0, step=WEIGHT_STEP,
                               tooltip="Its weight."),
                RewardType.Input("reward_2", optional=True, tooltip="Second reward (optional)."),
                io.Float.Input("weight_2", default=1.0, min=-100.0, max=100.0, step=WEIGHT_STEP,
                               tooltip="Its weight."),
                RewardType.Input("reward_3", optional=True, tooltip="Third reward (optional)."),
                io.Float.Input("weight_3", default=1.0, min=-100.0, max=100.0, step=WEIGHT_STEP,
                               tooltip="Its weight."),
                RewardType.Input("reward_4", optional=True, tooltip="Fourth reward (optional)."),
                io.Float.Input("weight_4", default=1.0, min=-100.0, max=100.0, step=WEIGHT_STEP,
                               tooltip="Its weight."),
                io.Boolean.Input("normalize", default=False,
                                 tooltip="z-normalise each reward over the batch before weighting (needs ≥ 2 images)."),
            ],
            outputs=[reward_output("the weighted sum")],
        )

    @classmethod
    def execute(cls, reward_1, weight_1, weight_2, weight_3, weight_4, normalize, reward_2=None, reward_3=None,
                reward_4=None) -> io.NodeOutput:
        pairs = [(r, w) for r, w in ((reward_1, weight_1), (reward_2, weight_2), (reward_3, weight_3),
                                     (reward_4, weight_4)) if r is not None]
        return io.NodeOutput(CombinedReward([r for r, _ in pairs], [w for _, w in pairs], normalize=normalize))


class VideoFrameReward(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_VideoFrameReward",
            display_name="Video Reward over Frames",
            category=CATEGORY,
            description="How an image reward scores a video (e.g. Wan rollouts [B, T, H, W, C]): every frame with the "
                        "video's prompt, then one number per video. Without this node a video gets the mean over its "
                        "frames; choose min to reward the worst frame, last for where the video ends, and so on.",
            inputs=[
                RewardType.Input("reward", tooltip="An image reward."),
                io.Combo.Input("reduction", options=list(FRAME_REDUCTIONS), default="mean",
                               tooltip="How the frames' scores become the video's reward."),
            ],
            outputs=[RewardType.Output(display_name="reward", tooltip="The same reward, scoring videos this way.")],
        )

    @classmethod
    def execute(cls, reward, reduction) -> io.NodeOutput:
        return io.NodeOutput(FrameReward(reward, reduction))


class ScoreImages(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowCPS_ScoreImages",
            display_name="Score Images with Reward",
            category=CATEGORY,
            is_output_node=True,
            description="Scores each image with a REWARD (and its prompt) and shows the scores on the node, so you "
                        "can check a reward before training with it.",
            inputs=[
                io.Image.Input("images", tooltip="Images to score (a batch)."),
                RewardType.Input("reward", tooltip="The reward to apply."),
                io.String.Input("prompts", multiline=True, default="a handwritten 7",
                                tooltip="One prompt for all images, or one per image (one per line)."),
            ],
            outputs=[io.String.Output(display_name="scores_json", tooltip="JSON list of the per-image scores."),
                     io.Float.Output(display_name="mean", tooltip="Mean score over the batch.")],
        )

    @classmethod
    def execute(cls, images, reward, prompts) -> io.NodeOutput:
        result = evaluate_reward(managed_by_comfy(reward), images, parse_prompt_list(prompts, images.shape[0]))
        scores = [float(v) for v in result.rewards]
        return io.NodeOutput(json.dumps(scores), sum(scores) / len(scores), ui=ui.PreviewText(format_scores(result)))


NODES = [DigitRewardLoader, BoldDigitRewardLoader, WeightFreeRewardLoader, OCRRewardLoader, CLIPFamilyRewardLoader, CombineRewards,
         VideoFrameReward, ScoreImages]
