"""Write the example workflows in workflows/ (ComfyUI's UI format) from the small graph descriptions below.

    python scripts/make_workflows.py

Every workflow whose name ends in ``_toy`` runs as shipped on the toy digit model (no downloads); the others need
the model files they name (see README).
"""
import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


class Workflow:
    def __init__(self):
        self.nodes, self.links = [], []

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

    def to_json(self):
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def toy_base(w, prompt="a handwritten 7"):
    model = w.node("FlowCPS_ToyDigitModel", outputs=[("MODEL", "MODEL"), ("VAE", "VAE")], pos=(20, 60))
    positive = w.node("FlowCPS_ToyDigitPrompt", [prompt], outputs=[("CONDITIONING", "CONDITIONING")],
                      pos=(20, 220), title="Positive prompt")
    negative = w.node("FlowCPS_ToyDigitPrompt", [""], outputs=[("CONDITIONING", "CONDITIONING")], pos=(20, 380),
                      title="Negative prompt (empty = unconditional)")
    latent = w.node("EmptyLatentImage", [128, 128, 4], outputs=[("LATENT", "LATENT")], pos=(20, 540))
    return model, positive, negative, latent


def ksampler_flow_cps():
    w = Workflow()
    model, positive, negative, latent = toy_base(w)
    sampled = w.node("KSampler", [0, "fixed", 10, 3.0, "flow_cps", "normal", 1.0],
                     inputs=[("model", "MODEL", (model, 0)), ("positive", "CONDITIONING", (positive, 0)),
                             ("negative", "CONDITIONING", (negative, 0)), ("latent_image", "LATENT", (latent, 0))],
                     outputs=[("LATENT", "LATENT")], pos=(380, 60), size=(320, 270))
    image = w.node("VAEDecode", inputs=[("samples", "LATENT", (sampled, 0)), ("vae", "VAE", (model, 1))],
                   outputs=[("IMAGE", "IMAGE")], pos=(740, 60))
    w.node("SaveImage", ["flow-cps/ksampler_cps"], inputs=[("images", "IMAGE", (image, 0))], pos=(740, 200),
           size=(320, 320))
    return w


def sampler_custom_cps():
    w = Workflow()
    model, positive, negative, latent = toy_base(w)
    sampler = w.node("FlowCPS_SamplerCPS", [0.8, 0, 10000, "gaussian"], outputs=[("SAMPLER", "SAMPLER")],
                     pos=(380, 60), size=(320, 170))
    noise = w.node("RandomNoise", [0, "fixed"], outputs=[("NOISE", "NOISE")], pos=(380, 260))
    guider = w.node("CFGGuider", [3.0], inputs=[("model", "MODEL", (model, 0)),
                                                ("positive", "CONDITIONING", (positive, 0)),
                                                ("negative", "CONDITIONING", (negative, 0))],
                    outputs=[("GUIDER", "GUIDER")], pos=(380, 380))
    sigmas = w.node("BasicScheduler", ["normal", 10, 1.0], inputs=[("model", "MODEL", (model, 0))],
                    outputs=[("SIGMAS", "SIGMAS")], pos=(380, 520))
    sampled = w.node("SamplerCustomAdvanced",
                     inputs=[("noise", "NOISE", (noise, 0)), ("guider", "GUIDER", (guider, 0)),
                             ("sampler", "SAMPLER", (sampler, 0)), ("sigmas", "SIGMAS", (sigmas, 0)),
                             ("latent_image", "LATENT", (latent, 0))],
                     outputs=[("output", "LATENT"), ("denoised_output", "LATENT")], pos=(740, 60))
    image = w.node("VAEDecode", inputs=[("samples", "LATENT", (sampled, 0)), ("vae", "VAE", (model, 1))],
                   outputs=[("IMAGE", "IMAGE")], pos=(1080, 60))
    w.node("SaveImage", ["flow-cps/custom_cps"], inputs=[("images", "IMAGE", (image, 0))], pos=(1080, 200),
           size=(320, 320))
    return w


def noise_comparison_grid():
    w = Workflow()
    model, positive, negative, latent = toy_base(w, "a handwritten 3")
    grid = w.node("FlowCPS_SamplerGrid", [0, "fixed", 10, 3.0, "normal", "euler, flow_sde, flow_cpws, flow_cps, "
                                          "flow_precise", "0.5, 0.8, 1.0"],
                  inputs=[("model", "MODEL", (model, 0)), ("positive", "CONDITIONING", (positive, 0)),
                          ("negative", "CONDITIONING", (negative, 0)), ("latent_image", "LATENT", (latent, 0)),
                          ("vae", "VAE", (model, 1))],
                  outputs=[("grid", "IMAGE")], pos=(380, 60), size=(340, 330))
    w.node("SaveImage", ["flow-cps/sampler_grid"], inputs=[("images", "IMAGE", (grid, 0))], pos=(760, 60),
           size=(420, 520))
    plot = w.node("FlowCPS_NoiseLevelPlot", ["flow_sde=0.7, cps=0.8, cpws=0.7, precise=1.5", 10, "normal"],
                  inputs=[("model", "MODEL", (model, 0))], outputs=[("plot", "IMAGE")], pos=(380, 430),
                  size=(340, 170))
    w.node("PreviewImage", inputs=[("images", "IMAGE", (plot, 0))], pos=(760, 600), size=(420, 300))
    return w


TOY_PROMPTS = "a handwritten 5\na handwritten 1\na handwritten 8\na handwritten 7"
LORA_TARGETS = "*attn.qkv, *attn.proj, *mlp.fc1, *mlp.fc2"


def trainer_widgets(prompts=TOY_PROMPTS, negative="", cfg=1.0, rule="cps", eta=0.8, steps=4, scheduler="normal",
                    group_size=8, prompts_per_iteration=4, iterations=30, rank=8, alpha=8.0, targets=LORA_TARGETS,
                    lr=1e-3, beta=0.0, clip_range=1e-2, seed=0, checkpoint_every=5, run_name="grpo_toy_cps",
                    sample_batch_size=32, train_batch_size=32, gradient_checkpointing="auto", train_dtype="float32"):
    return [prompts, negative, cfg, rule, eta, steps, scheduler, 0, 100, group_size, prompts_per_iteration,
            iterations, rank, alpha, targets, lr, beta, clip_range, "gaussian", False, seed, "fixed",
            checkpoint_every, run_name, "", sample_batch_size, train_batch_size, gradient_checkpointing, train_dtype]


TRAINER_OUTPUTS = [("model", "MODEL"), ("lora", "LORA_MODEL"), ("reward_curve", "IMAGE"), ("run_info", "STRING")]


def grpo_toy():
    w = Workflow()
    model = w.node("FlowCPS_ToyDigitModel", outputs=[("MODEL", "MODEL"), ("VAE", "VAE")], pos=(20, 60))
    reward = w.node("FlowCPS_RewardDigit", outputs=[("reward", "REWARD")], pos=(20, 220))
    latent = w.node("EmptyLatentImage", [128, 128, 1], outputs=[("LATENT", "LATENT")], pos=(20, 340))
    trainer = w.node("FlowCPS_GRPOTrainLoRA", trainer_widgets(),
                     inputs=[("model", "MODEL", (model, 0)), ("vae", "VAE", (model, 1)),
                             ("reward", "REWARD", (reward, 0)), ("latent", "LATENT", (latent, 0))],
                     outputs=TRAINER_OUTPUTS, pos=(380, 60), size=(400, 1020))
    w.node("PreviewImage", inputs=[("images", "IMAGE", (trainer, 2))], pos=(820, 60), size=(420, 320))
    w.node("FlowCPS_SaveLoRA", ["flow_cps/grpo_toy_cps"],
           inputs=[("lora", "LORA_MODEL", (trainer, 1)), ("run_info", "STRING", (trainer, 3))],
           outputs=[("path", "STRING")], pos=(820, 420), size=(420, 120))
    positive = w.node("FlowCPS_ToyDigitPrompt", ["a handwritten 8"], outputs=[("CONDITIONING", "CONDITIONING")],
                      pos=(820, 580), title="Try the trained model")
    negative = w.node("FlowCPS_ToyDigitPrompt", [""], outputs=[("CONDITIONING", "CONDITIONING")], pos=(820, 700))
    check_latent = w.node("EmptyLatentImage", [128, 128, 8], outputs=[("LATENT", "LATENT")], pos=(820, 820))
    sampled = w.node("KSampler", [1, "fixed", 4, 1.0, "flow_cps", "normal", 1.0],
                     inputs=[("model", "MODEL", (trainer, 0)), ("positive", "CONDITIONING", (positive, 0)),
                             ("negative", "CONDITIONING", (negative, 0)),
                             ("latent_image", "LATENT", (check_latent, 0))],
                     outputs=[("LATENT", "LATENT")], pos=(1280, 60), size=(320, 270))
    image = w.node("VAEDecode", inputs=[("samples", "LATENT", (sampled, 0)), ("vae", "VAE", (model, 1))],
                   outputs=[("IMAGE", "IMAGE")], pos=(1280, 380))
    w.node("PreviewImage", inputs=[("images", "IMAGE", (image, 0))], pos=(1280, 500), size=(420, 320))
    return w


def grpo_cps_vs_flow_sde_toy():
    w = Workflow()
    model = w.node("FlowCPS_ToyDigitModel", outputs=[("MODEL", "MODEL"), ("VAE", "VAE")], pos=(20, 60))
    reward = w.node("FlowCPS_RewardDigit", outputs=[("reward", "REWARD")], pos=(20, 220))
    latent = w.node("EmptyLatentImage", [128, 128, 1], outputs=[("LATENT", "LATENT")], pos=(20, 340))
    curves = []
    for k, (rule, eta) in enumerate((("cps", 0.8), ("flow_sde", 0.7))):
        trainer = w.node("FlowCPS_GRPOTrainLoRA", trainer_widgets(rule=rule, eta=eta, run_name=f"grpo_toy_{rule}"),
                         inputs=[("model", "MODEL", (model, 0)), ("vae", "VAE", (model, 1)),
                                 ("reward", "REWARD", (reward, 0)), ("latent", "LATENT", (latent, 0))],
                         outputs=TRAINER_OUTPUTS, pos=(380 + 440 * k, 60), size=(400, 1020),
                         title=f"GRPO with {rule}")
        curves.append(trainer)
    both = w.node("ImageBatch", inputs=[("image1", "IMAGE", (curves[0], 2)), ("image2", "IMAGE", (curves[1], 2))],
                  outputs=[("IMAGE", "IMAGE")], pos=(1280, 60))
    w.node("PreviewImage", inputs=[("images", "IMAGE", (both, 0))], pos=(1280, 180), size=(480, 400),
           title="Reward curves: CPS (first) vs Flow-SDE (second)")
    return w


SD35_PROMPTS = ("a photo of a red fox reading a newspaper in a cafe\n"
               "an astronaut riding a horse on the moon, studio lighting\n"
               "a watercolor painting of a lighthouse at dawn\n"
               "a corgi wearing sunglasses on a surfboard")


def grpo_sd35_pickscore():
    """For users with the weights: models/checkpoints/sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors and
    models/reward_models/pickscore/ (see README). Settings follow Flow-GRPO's SD3.5 recipe scaled down."""
    w = Workflow()
    ckpt = w.node("CheckpointLoaderSimple", ["sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors"],
                  outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], pos=(20, 60), size=(340, 110))
    reward = w.node("FlowCPS_RewardCLIP", ["pickscore", "", "bfloat16"], outputs=[("reward", "REWARD")],
                    pos=(20, 220), size=(340, 110))
    latent = w.node("EmptySD3LatentImage", [512, 512, 1], outputs=[("LATENT", "LATENT")], pos=(20, 380))
    trainer = w.node("FlowCPS_GRPOTrainLoRA",
                     trainer_widgets(prompts=SD35_PROMPTS, cfg=4.5, steps=10, group_size=8, prompts_per_iteration=2,
                                     iterations=300, rank=32, alpha=64.0, targets="*attn.qkv, *attn.proj", lr=3e-4,
                                     beta=0.01, clip_range=1e-4, checkpoint_every=10,
                                     run_name="grpo_sd35_pickscore", sample_batch_size=4, train_batch_size=4),
                     inputs=[("model", "MODEL", (ckpt, 0)), ("vae", "VAE", (ckpt, 2)),
                             ("reward", "REWARD", (reward, 0)), ("latent", "LATENT", (latent, 0)),
                             ("clip", "CLIP", (ckpt, 1))],
                     outputs=TRAINER_OUTPUTS, pos=(400, 60), size=(420, 1020))
    w.node("PreviewImage", inputs=[("images", "IMAGE", (trainer, 2))], pos=(860, 60), size=(420, 320))
    w.node("FlowCPS_SaveLoRA", ["flow_cps/grpo_sd35_pickscore"],
           inputs=[("lora", "LORA_MODEL", (trainer, 1)), ("run_info", "STRING", (trainer, 3))],
           outputs=[("path", "STRING")], pos=(860, 420), size=(420, 120))
    return w


WORKFLOWS = {"flow_cps_ksampler_toy": ksampler_flow_cps, "flow_cps_sampler_custom_toy": sampler_custom_cps,
             "flow_cps_noise_comparison_toy": noise_comparison_grid, "flow_cps_grpo_toy": grpo_toy,
             "flow_cps_grpo_cps_vs_flow_sde_toy": grpo_cps_vs_flow_sde_toy,
             "flow_cps_grpo_sd35_pickscore": grpo_sd35_pickscore}


# The Templates dialog shows <name>.jpg from the same folder as the card's picture.
THUMBNAILS = {
    "flow_cps_ksampler_toy": ("node_ksampler_flow_cps.png", None),
    "flow_cps_sampler_custom_toy": ("node_ksampler_flow_cps.png", None),
    "flow_cps_noise_comparison_toy": ("node_sampler_grid.png", None),
    "flow_cps_grpo_toy": ("grpo_trainer_ui.png", (530, 200, 1500, 980)),
    "flow_cps_grpo_cps_vs_flow_sde_toy": ("grpo_convergence.png", None),
    "flow_cps_grpo_sd35_pickscore": ("grpo_trainer_ui.png", (530, 200, 1500, 980)),
}


def write_thumbnail(name: str, folder: str) -> str:
    from PIL import Image
    source, box = THUMBNAILS[name]
    image = Image.open(os.path.join(ROOT, "docs", "images", source)).convert("RGB")
    if box:
        image = image.crop(box)
    image.thumbnail((512, 512))
    path = os.path.join(folder, f"{name}.jpg")
    image.save(path, quality=85)
    return path


def main():
    folder = os.path.join(ROOT, "workflows")
    os.makedirs(folder, exist_ok=True)
    for name, build in WORKFLOWS.items():
        path = os.path.join(folder, f"{name}.json")
        with open(path, "w") as handle:
            json.dump(build().to_json(), handle, indent=1)
        print(f"wrote {path} and {write_thumbnail(name, folder)}")


if __name__ == "__main__":
    main()
