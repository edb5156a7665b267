"""Write the example workflows in workflows/ (ComfyUI's UI format) from the small graph descriptions below.

    python scripts/make_workflows.py

    python scripts/make_workflows.py --render http://127.0.0.1:8188   # also the thumbnails, from real runs

Every workflow whose name ends in ``(toy digits)`` runs as shipped on the toy digit model (no downloads, CPU); the
others need the model files they name (see README). Nodes are stacked in columns with room for the frontends' own
node sizes, so no two overlap (tests/test_workflows.py checks it; tests/host/test_browser.py checks the sizes the
browser really draws).
"""
import argparse
import json
import math
import os
from dataclasses import dataclass
from typing import Callable

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


TITLE_H = 30  # the frontends draw a node's title bar above its pos
GAP = 40  # free space between stacked nodes (and between columns)


class Workflow:
    def __init__(self):
        self.nodes, self.links = [], []
        self.thumbnail_nodes = []  # output nodes whose images make the Templates thumbnail
        self.grid_columns = {}  # thumbnail node → columns of its image grid (default: near-square)
        self.readme_images = []  # (README image relative to the repo, thumbnail nodes whose grids it stacks)

    def node(self, type_, widgets=(), inputs=(), outputs=(), pos=(0, 0), size=(300, 120), title=None):
        """``inputs``: (name, type, (source node, source slot)); ``outputs``: (name, type)."""
        node_id = len(self.nodes) + 1
        node = {"id": node_id, "type": type_, "pos": list(pos), "size": list(size), "flags": {},
                "order": node_id - 1, "mode": 0, "inputs": [], "outputs": [],
                "properties": {"Node name for S&R": type_}, "widgets_values": list(widgets)}
        if title:
            node["title"] = title
        for slot, (name, kind) in enumerate(outputs):
            node["outputs"].append({"name": name, "type": kind, "links": [], "slot_index": slot})
        for name, kind, (source, source_slot) in inputs:
            link_id = len(self.links) + 1
            self.links.append([link_id, source, source_slot, node_id, len(node["inputs"]), kind])
            self.nodes[source - 1]["outputs"][source_slot]["links"].append(link_id)
            node["inputs"].append({"name": name, "type": kind, "link": link_id})
        self.nodes.append(node)
        return node_id

    def column(self, x, width):
        return Column(self, x, width)

    def to_json(self):
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


class Column:
    """Stacks nodes top to bottom at one x, each ``height`` tall (the frontends' own minimum for it, with room to
    spare) plus its title bar, so no two nodes overlap."""

    def __init__(self, workflow, x, width, y=60):
        self.workflow, self.x, self.width, self.y = workflow, x, width, y

    def node(self, type_, height, **kw):
        node_id = self.workflow.node(type_, pos=(self.x, self.y), size=(self.width, height), **kw)
        self.y += height + TITLE_H + GAP
        return node_id

    @property
    def right(self):
        return self.x + self.width + GAP


def toy_base(w, prompt="a handwritten 7", col=None):
    col = col or w.column(20, 340)
    model = col.node("FlowCPS_ToyDigitModel", 60, outputs=[("MODEL", "MODEL"), ("VAE", "VAE")])
    positive = col.node("FlowCPS_ToyDigitPrompt", 70, widgets=[prompt], outputs=[("CONDITIONING", "CONDITIONING")],
                        title="Positive prompt")
    negative = col.node("FlowCPS_ToyDigitPrompt", 70, widgets=[""], outputs=[("CONDITIONING", "CONDITIONING")],
                        title="Negative prompt (empty = unconditional)")
    latent = col.node("EmptyLatentImage", 110, widgets=[128, 128, 4], outputs=[("LATENT", "LATENT")])
    return model, positive, negative, latent, col


def ksampler_flow_cps():
    w = Workflow()
    model, positive, negative, latent, left = toy_base(w)
    mid = w.column(left.right, 320)
    sampled = mid.node("KSampler", 270, widgets=[0, "fixed", 10, 3.0, "flow_cps", "normal", 1.0],
                       inputs=[("model", "MODEL", (model, 0)), ("positive", "CONDITIONING", (positive, 0)),
                               ("negative", "CONDITIONING", (negative, 0)), ("latent_image", "LATENT", (latent, 0))],
                       outputs=[("LATENT", "LATENT")])
    right = w.column(mid.right, 340)
    image = right.node("VAEDecode", 50, inputs=[("samples", "LATENT", (sampled, 0)), ("vae", "VAE", (model, 1))],
                       outputs=[("IMAGE", "IMAGE")])
    w.thumbnail_nodes.append(right.node("SaveImage", 340, widgets=["flow-cps/ksampler_cps"],
                                        inputs=[("images", "IMAGE", (image, 0))]))
    return w


def sampler_custom_cps():
    w = Workflow()
    model, positive, negative, latent, left = toy_base(w)
    mid = w.column(left.right, 320)
    sampler = mid.node("FlowCPS_SamplerCPS", 140, widgets=[0.8, 0, 10000, "gaussian"],
                       outputs=[("SAMPLER", "SAMPLER")])
    noise = mid.node("RandomNoise", 90, widgets=[0, "fixed"], outputs=[("NOISE", "NOISE")])
    guider = mid.node("CFGGuider", 100, widgets=[3.0], inputs=[("model", "MODEL", (model, 0)),
                                                             ("positive", "CONDITIONING", (positive, 0)),
                                                             ("negative", "CONDITIONING", (negative, 0))],
                      outputs=[("GUIDER", "GUIDER")])
    sigmas = mid.node("BasicScheduler", 110, widgets=["normal", 10, 1.0], inputs=[("model", "MODEL", (model, 0))],
                      outputs=[("SIGMAS", "SIGMAS")])
    right = w.column(mid.right, 340)
    sampled = right.node("SamplerCustomAdvanced", 110,
                         inputs=[("noise", "NOISE", (noise, 0)), ("guider", "GUIDER", (guider, 0)),
                                 ("sampler", "SAMPLER", (sampler, 0)), ("sigmas", "SIGMAS", (sigmas, 0)),
                                 ("latent_image", "LATENT", (latent, 0))],
                         outputs=[("output", "LATENT"), ("denoised_output", "LATENT")])
    image = right.node("VAEDecode", 50, inputs=[("samples", "LATENT", (sampled, 0)), ("vae", "VAE", (model, 1))],
                       outputs=[("IMAGE", "IMAGE")])
    w.thumbnail_nodes.append(right.node("SaveImage", 340, widgets=["flow-cps/custom_cps"],
                                        inputs=[("images", "IMAGE", (image, 0))]))
    return w


def noise_comparison_grid():
    w = Workflow()
    model, positive, negative, latent, left = toy_base(w, "a handwritten 3")
    mid = w.column(left.right, 360)
    grid = mid.node("FlowCPS_SamplerGrid", 290, widgets=[0, "fixed", 10, 3.0, "normal",
                                                         "euler, flow_sde, flow_cpws, flow_cps, flow_precise",
                                                         "0.5, 0.8, 1.0"],
                    inputs=[("model", "MODEL", (model, 0)), ("positive", "CONDITIONING", (positive, 0)),
                            ("negative", "CONDITIONING", (negative, 0)), ("latent_image", "LATENT", (latent, 0)),
                            ("vae", "VAE", (model, 1))],
                    outputs=[("grid", "IMAGE")])
    plot = mid.node("FlowCPS_NoiseLevelPlot", 140, widgets=["flow_sde=0.7, cps=0.8, cpws=0.7, precise=1.5", 10,
                                                            "normal"],
                    inputs=[("model", "MODEL", (model, 0))], outputs=[("plot", "IMAGE")])
    right = w.column(mid.right, 440)
    w.thumbnail_nodes.append(right.node("SaveImage", 520, widgets=["flow-cps/sampler_grid"],
                                        inputs=[("images", "IMAGE", (grid, 0))]))
    w.thumbnail_nodes.append(right.node("PreviewImage", 300, inputs=[("images", "IMAGE", (plot, 0))]))
    return w


TOY_PROMPTS = "a handwritten 5\na handwritten 1\na handwritten 8\na handwritten 7"
LORA_TARGETS = "*attn.qkv, *attn.proj, *mlp.fc1, *mlp.fc2"


def trainer_widgets(prompts=TOY_PROMPTS, negative="", cfg=1.0, rule="cps", eta=0.8, steps=4, scheduler="normal",
                    group_size=8, prompts_per_iteration=4, iterations=30, rank=8, alpha=16.0, targets=LORA_TARGETS,
                    lr=1e-3, beta=0.1, clip_range=1e-2, seed=0, checkpoint_every=5, run_name="grpo_toy_cps",
                    sample_batch_size=32, train_batch_size=32, gradient_checkpointing="auto", train_dtype="float32"):
    return [prompts, negative, cfg, rule, eta, steps, scheduler, 0, 100, group_size, prompts_per_iteration,
            iterations, rank, alpha, targets, lr, beta, clip_range, "gaussian", False, seed, "fixed",
            checkpoint_every, run_name, "", sample_batch_size, train_batch_size, gradient_checkpointing, train_dtype]


# the main toy task (README "GRPO on the toy model"): bold digits, KL on, α = 2 × rank as scripts/train.py
TOY_BOLD = dict(alpha=16.0, beta=0.1, run_name="grpo_toy_bold")

TRAINER_OUTPUTS = [("model", "MODEL"), ("lora", "LORA_MODEL"), ("reward_curve", "IMAGE"), ("run_info", "STRING")]


TRAINER_H = 1240  # the trainer's widgets, its live chart and its text box


def grpo_toy():
    """The main toy workflow: GRPO teaches the toy model bold strokes (the bold-digit reward), with the KL to the
    base model on and the paper-haze drift monitor on the chart; the same 8 seeds sampled before and after."""
    w = Workflow()
    left = w.column(20, 340)
    model = left.node("FlowCPS_ToyDigitModel", 60, outputs=[("MODEL", "MODEL"), ("VAE", "VAE")])
    reward = left.node("FlowCPS_RewardBoldDigit", 40, outputs=[("reward", "REWARD")])
    latent = left.node("EmptyLatentImage", 110, widgets=[128, 128, 1], outputs=[("LATENT", "LATENT")])
    positive = left.node("FlowCPS_ToyDigitPrompt", 70, widgets=["a handwritten 5"],
                         outputs=[("CONDITIONING", "CONDITIONING")], title="Try the trained model")
    negative = left.node("FlowCPS_ToyDigitPrompt", 70, widgets=[""], outputs=[("CONDITIONING", "CONDITIONING")])
    check_latent = left.node("EmptyLatentImage", 110, widgets=[128, 128, 8], outputs=[("LATENT", "LATENT")])
    mid = w.column(left.right, 420)
    trainer = mid.node("FlowCPS_GRPOTrainLoRA", TRAINER_H, widgets=trainer_widgets(**TOY_BOLD),
                       inputs=[("model", "MODEL", (model, 0)), ("vae", "VAE", (model, 1)),
                               ("reward", "REWARD", (reward, 0)), ("latent", "LATENT", (latent, 0))],
                       outputs=TRAINER_OUTPUTS)
    right = w.column(mid.right, 440)
    curve = right.node("PreviewImage", 320, inputs=[("images", "IMAGE", (trainer, 2))], title="Reward curve")
    right.node("FlowCPS_SaveLoRA", 180, widgets=["flow_cps/grpo_toy_bold"],
               inputs=[("lora", "LORA_MODEL", (trainer, 1)), ("run_info", "STRING", (trainer, 3))],
               outputs=[("path", "STRING")])
    decoded = []
    for label, source in (("Before: the base model", (model, 0)), ("After: the trained LoRA", (trainer, 0))):
        sampled = right.node("KSampler", 430, widgets=[1, "fixed", 4, 1.0, "flow_cps", "normal", 1.0],
                             inputs=[("model", "MODEL", source), ("positive", "CONDITIONING", (positive, 0)),
                                     ("negative", "CONDITIONING", (negative, 0)),
                                     ("latent_image", "LATENT", (check_latent, 0))],
                             outputs=[("LATENT", "LATENT")], title=label)
        decoded.append(right.node("VAEDecode", 50, inputs=[("samples", "LATENT", (sampled, 0)),
                                                           ("vae", "VAE", (model, 1))],
                                  outputs=[("IMAGE", "IMAGE")]))
    last = w.column(right.right, 560)
    grids = [last.node("PreviewImage", 230, inputs=[("images", "IMAGE", (decoded[0], 0))],
                       title="Before: the base model, 8 seeds"),
             last.node("PreviewImage", 230, inputs=[("images", "IMAGE", (decoded[1], 0))],
                       title="After: the trained LoRA, the same 8 seeds")]
    w.thumbnail_nodes += [curve, *grids]
    for grid in grids:
        w.grid_columns[grid] = 4
    w.readme_images.append((os.path.join("docs", "images", "grpo_toy_before_after.png"), grids))
    return w


def toy_training_inputs(w):
    """The toy model, the bold-digit reward and a 128×128 latent in a left column: (model, reward, latent, the x
    right of them)."""
    left = w.column(20, 340)
    model = left.node("FlowCPS_ToyDigitModel", 60, outputs=[("MODEL", "MODEL"), ("VAE", "VAE")])
    reward = left.node("FlowCPS_RewardBoldDigit", 40, outputs=[("reward", "REWARD")])
    latent = left.node("EmptyLatentImage", 110, widgets=[128, 128, 1], outputs=[("LATENT", "LATENT")])
    return model, reward, latent, left.right


def grpo_cps_vs_flow_sde_toy():
    w = Workflow()
    model, reward, latent, x = toy_training_inputs(w)
    infos = []
    for rule, eta in (("cps", 0.8), ("flow_sde", 0.7)):
        col = w.column(x, 420)
        trainer = col.node("FlowCPS_GRPOTrainLoRA", TRAINER_H,
                           widgets=trainer_widgets(rule=rule, eta=eta, **{**TOY_BOLD,
                                                                          "run_name": f"grpo_toy_bold_{rule}"}),
                           inputs=[("model", "MODEL", (model, 0)), ("vae", "VAE", (model, 1)),
                                   ("reward", "REWARD", (reward, 0)), ("latent", "LATENT", (latent, 0))],
                           outputs=TRAINER_OUTPUTS, title=f"GRPO with {rule}")
        infos.append(trainer)
        x = col.right
    right = w.column(x, 560)
    w.thumbnail_nodes.append(right.node(
        "FlowCPS_CompareRewardCurves", 560, widgets=["CPS (eta 0.8)", "Flow-SDE (eta 0.7)", "", ""],
        inputs=[("run_info_1", "STRING", (infos[0], 3)), ("run_info_2", "STRING", (infos[1], 3))],
        outputs=[("chart", "IMAGE")], title="Reward curves: CPS vs Flow-SDE (one y-axis)"))
    return w


METHOD_TRAINERS = [
    ("GRPO with CPS", "grpo_toy_methods_cps", []),
    ("MixGRPO-Flash + trust region", "grpo_toy_methods_mix",
     [("FlowCPS_MethodMixGRPO", 260, [0, 1, "progressive", 10, 1, "dpmpp_2m"], "MixGRPO window: 1 step, dpmpp_2m"),
      ("FlowCPS_MethodTrustRegion", 150, [1e-5, False, False], "Trust region (FlowDPPO)")]),
    ("DiffusionNFT", "grpo_toy_methods_nft",
     [("FlowCPS_MethodDiffusionNFT", 280, ["trainer rule", 1.0, 1e-4, "ema", 0.001, 0.5, 0.99], "DiffusionNFT")]),
]


def grpo_methods_toy():
    """The same toy task trained three ways: GRPO with CPS, MixGRPO-Flash with FlowDPPO's trust region, and
    DiffusionNFT; the three reward curves in one chart."""
    w = Workflow()
    model, reward, latent, x = toy_training_inputs(w)
    infos = []
    for title, run_name, methods in METHOD_TRAINERS:
        col = w.column(x, 420)
        method = None
        for class_type, height, widgets, label in methods:
            method = col.node(class_type, height, widgets=widgets, title=label,
                              inputs=[("method", "FLOW_CPS_METHOD", (method, 0))] if method else [],
                              outputs=[("method", "FLOW_CPS_METHOD")])
        inputs = [("model", "MODEL", (model, 0)), ("vae", "VAE", (model, 1)), ("reward", "REWARD", (reward, 0)),
                  ("latent", "LATENT", (latent, 0))]
        if method:
            inputs.append(("method", "FLOW_CPS_METHOD", (method, 0)))
        infos.append(col.node("FlowCPS_GRPOTrainLoRA", TRAINER_H,
                              widgets=trainer_widgets(**{**TOY_BOLD, "run_name": run_name}), inputs=inputs,
                              outputs=TRAINER_OUTPUTS, title=title))
        x = col.right
    right = w.column(x, 560)
    w.thumbnail_nodes.append(right.node(
        "FlowCPS_CompareRewardCurves", 560, widgets=[title for title, _, _ in METHOD_TRAINERS] + [""],
        inputs=[(f"run_info_{k + 1}", "STRING", (info, 3)) for k, info in enumerate(infos)],
        outputs=[("chart", "IMAGE")], title="Reward curves: three methods (one y-axis)"))
    return w


SD35_PROMPTS = ("a photo of a red fox reading a newspaper in a cafe\n"
               "an astronaut riding a horse on the moon, studio lighting\n"
               "a watercolor painting of a lighthouse at dawn\n"
               "a corgi wearing sunglasses on a surfboard")


def grpo_sd35_pickscore():
    """For users with the weights: models/checkpoints/sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors and
    models/reward_models/pickscore/ (see README). Settings follow Flow-GRPO's SD3.5 recipe scaled down."""
    w = Workflow()
    left = w.column(20, 400)
    ckpt = left.node("CheckpointLoaderSimple", 100, widgets=["sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors"],
                     outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")])
    reward = left.node("FlowCPS_RewardCLIP", 110, widgets=["pickscore", "", "bfloat16"],
                       outputs=[("reward", "REWARD")])
    latent = left.node("EmptySD3LatentImage", 110, widgets=[512, 512, 1], outputs=[("LATENT", "LATENT")])
    mid = w.column(left.right, 440)
    trainer = mid.node("FlowCPS_GRPOTrainLoRA", TRAINER_H,
                       widgets=trainer_widgets(prompts=SD35_PROMPTS, cfg=4.5, steps=10, group_size=8,
                                               prompts_per_iteration=2, iterations=300, rank=32, alpha=64.0,
                                               targets="*attn.qkv, *attn.proj", lr=3e-4, beta=0.01,
                                               clip_range=1e-4, checkpoint_every=10,
                                               run_name="grpo_sd35_pickscore", sample_batch_size=4,
                                               train_batch_size=4),
                       inputs=[("model", "MODEL", (ckpt, 0)), ("vae", "VAE", (ckpt, 2)),
                               ("reward", "REWARD", (reward, 0)), ("latent", "LATENT", (latent, 0)),
                               ("clip", "CLIP", (ckpt, 1))],
                       outputs=TRAINER_OUTPUTS)
    right = w.column(mid.right, 440)
    right.node("PreviewImage", 320, inputs=[("images", "IMAGE", (trainer, 2))], title="Reward curve")
    right.node("FlowCPS_SaveLoRA", 180, widgets=["flow_cps/grpo_sd35_pickscore"],
               inputs=[("lora", "LORA_MODEL", (trainer, 1)), ("run_info", "STRING", (trainer, 3))],
               outputs=[("path", "STRING")])
    return w


@dataclass(frozen=True)
class Template:
    """One shipped workflow. Both frontends (1.27 and 1.49) take a custom-node template's card title from its file
    name (and its description from the same name with - and _ as spaces): the file name is the title. The one-line
    description goes into the thumbnail's caption."""
    title: str
    description: str
    build: Callable[[], Workflow]
    runs_here: bool  # the toy workflows run as shipped, on a CPU, with no downloads


TEMPLATES = [
    Template("CPS sampler in KSampler (toy digits)",
             "flow_cps picked in the stock KSampler: four digits from the shipped toy model", ksampler_flow_cps, True),
    Template("CPS sampler with SamplerCustomAdvanced (toy digits)",
             "Sampler CPS node + CFGGuider + BasicScheduler: the same digits, custom sampling", sampler_custom_cps,
             True),
    Template("Sampler noise grid and noise-level plot (toy digits)",
             "every sampler x eta on one seed, and the noise std each rule leaves per step", noise_comparison_grid,
             True),
    Template("GRPO LoRA training with a live reward chart (toy digits)",
             "30 GRPO iterations on CPU teach bold strokes: reward and drift chart, LoRA, before/after samples",
             grpo_toy, True),
    Template("GRPO with CPS vs Flow-SDE, reward curves compared (toy digits)",
             "the same GRPO run with CPS and with Flow-SDE rollouts, both curves on one y-axis",
             grpo_cps_vs_flow_sde_toy, True),
    Template("GRPO, MixGRPO-Flash and DiffusionNFT compared (toy digits)",
             "the toy task trained with GRPO, MixGRPO-Flash + trust region and DiffusionNFT, curves on one y-axis",
             grpo_methods_toy, True),
    Template("GRPO LoRA on SD3.5 Medium with PickScore (needs the model files)",
             "trains a LoRA of SD3.5 Medium against PickScore; needs the checkpoint and the reward model",
             grpo_sd35_pickscore, False),
]

THUMB = (512, 512)
CAPTION_H = 104


def _font(size):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _wrap(draw, text, font, width):
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + ([line] if line else [])


def compose_thumbnail(panels, template: Template):
    """A 512×512 card: the workflow's output images side by side above a caption (title + description)."""
    from PIL import Image, ImageDraw
    card = Image.new("RGB", THUMB, (24, 24, 24))
    area_w, area_h = THUMB[0], THUMB[1] - CAPTION_H
    if panels:
        share = area_w // len(panels)
        for k, panel in enumerate(panels):
            scale = min((share - 8) / panel.width, (area_h - 8) / panel.height)
            size = (max(1, int(panel.width * scale)), max(1, int(panel.height * scale)))
            resample = Image.NEAREST if scale >= 2 else Image.LANCZOS  # small digits stay crisp
            fitted = panel.convert("RGB").resize(size, resample)
            card.paste(fitted, (k * share + (share - size[0]) // 2, (area_h - size[1]) // 2))
    draw = ImageDraw.Draw(card)
    draw.rectangle([0, area_h, THUMB[0], THUMB[1]], fill=(40, 40, 48))
    y = area_h + 8
    for line in _wrap(draw, template.title, _font(19), THUMB[0] - 20)[:2]:
        draw.text((10, y), line, fill=(255, 255, 255), font=_font(19))
        y += 24
    for line in _wrap(draw, template.description, _font(14), THUMB[0] - 20)[:2]:
        draw.text((10, y), line, fill=(200, 200, 200), font=_font(14))
        y += 18
    return card


def neutral_card(template: Template, lines):
    """For a workflow that cannot run here: a plain card saying what it produces (no stand-in screenshot)."""
    from PIL import Image, ImageDraw
    panel = Image.new("RGB", (THUMB[0], THUMB[1] - CAPTION_H), (24, 24, 24))
    draw = ImageDraw.Draw(panel)
    y = 40
    for text, size, colour in lines:
        for line in _wrap(draw, text, _font(size), THUMB[0] - 40):
            draw.text((20, y), line, fill=colour, font=_font(size))
            y += size + 8
        y += 10
    return compose_thumbnail([panel], template)


SD35_CARD = [("SD3.5 Medium + PickScore", 26, (255, 255, 255)),
             ("Trains a LoRA with GRPO (CPS rollouts, 4 prompts, 300 iterations).", 17, (220, 220, 220)),
             ("Produces: a live reward chart on the trainer, a reward-curve image, the LoRA in output/loras.", 17,
              (220, 220, 220)),
             ("No preview image: this card is not a screenshot of the workflow's output (it needs a GPU and the "
              "model files, see README).", 15, (170, 170, 170))]


def _grid(images, cols=None):
    """A batch of images (one node's output) as one grid, near-square unless ``cols`` is given."""
    from PIL import Image
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    w, h = images[0].size
    sheet = Image.new("RGB", (cols * w + (cols - 1) * 2, rows * h + (rows - 1) * 2), (24, 24, 24))
    for k, image in enumerate(images):
        sheet.paste(image.convert("RGB"), ((k % cols) * (w + 2), (k // cols) * (h + 2)))
    return sheet


def render_outputs(server: str, workflow: Workflow, timeout: float = 1800.0):
    """Queue the workflow on a running ComfyUI (with this pack) and return one PIL image per thumbnail node."""
    import io as _io
    import sys
    import time
    import urllib.parse
    import urllib.request

    from PIL import Image
    sys.path.insert(0, os.path.join(ROOT, "tests", "host"))
    from workflow_convert import ui_to_api

    def get(path):
        with urllib.request.urlopen(server + path, timeout=60) as answer:
            return answer.read()

    info = json.loads(get("/object_info"))
    prompt = ui_to_api(workflow.to_json(), info)
    request = urllib.request.Request(server + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        prompt_id = json.loads(answer.read())["prompt_id"]
    deadline = time.monotonic() + timeout
    while True:
        entry = json.loads(get(f"/history/{prompt_id}")).get(prompt_id)
        status = (entry or {}).get("status", {}).get("status_str")
        if status == "success":
            break
        if status == "error" or time.monotonic() > deadline:
            raise RuntimeError(f"the workflow did not run: {status} {entry and entry.get('status')}")
        time.sleep(2)
    panels, images_of = [], {}
    for node_id in workflow.thumbnail_nodes:
        images = [Image.open(_io.BytesIO(get("/view?" + urllib.parse.urlencode(
            {"filename": i["filename"], "subfolder": i.get("subfolder", ""), "type": i.get("type", "output")}))))
            for i in entry["outputs"][str(node_id)]["images"]]
        images_of[node_id] = images
        panels.append(_grid(images, workflow.grid_columns.get(node_id)))
    for relative, node_ids in workflow.readme_images:  # e.g. before above after: one row of images per node
        rows = [_grid(images_of[n], len(images_of[n])) for n in node_ids]
        sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows) + 2 * (len(rows) - 1)),
                          (24, 24, 24))
        for k, row in enumerate(rows):
            sheet.paste(row, (0, sum(r.height + 2 for r in rows[:k])))
        path = os.path.join(ROOT, relative)
        sheet.save(path)
        print(f"wrote {path}")
    return panels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--render", metavar="URL",
                        help="a running ComfyUI with this pack (e.g. http://127.0.0.1:8188): run every toy workflow "
                             "there and make its thumbnail from what it outputs. Without it, thumbnails are kept.")
    parser.add_argument("--only", metavar="TEXT", default="",
                        help="with --render: render only the templates whose title contains TEXT")
    args = parser.parse_args(argv)
    folder = os.path.join(ROOT, "workflows")
    os.makedirs(folder, exist_ok=True)
    wanted = set()
    for template in TEMPLATES:
        workflow = template.build()
        path = os.path.join(folder, f"{template.title}.json")
        thumbnail = os.path.join(folder, f"{template.title}.jpg")
        wanted |= {path, thumbnail}
        with open(path, "w") as handle:
            json.dump(workflow.to_json(), handle, indent=1)
        if not template.runs_here:
            neutral_card(template, SD35_CARD).save(thumbnail, quality=90)
        elif args.render and args.only in template.title:
            compose_thumbnail(render_outputs(args.render.rstrip("/"), workflow), template).save(thumbnail,
                                                                                                  quality=90)
        elif not os.path.exists(thumbnail):
            print(f"no thumbnail for {template.title!r} yet: run with --render URL")
        print(f"wrote {path}")
    for name in os.listdir(folder):  # files of workflows that are no longer shipped
        if os.path.join(folder, name) not in wanted and name.endswith((".json", ".jpg")):
            os.remove(os.path.join(folder, name))
            print(f"removed {name}")


if __name__ == "__main__":
    main()
