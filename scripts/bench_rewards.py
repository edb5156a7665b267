"""Benchmark: per-image latency of every reward on 512×512 images, measured side by side in one run.

    python scripts/bench_rewards.py [--batch 8] [--repeats 5] [--full-size]

CLIP-family rewards use tiny randomly initialised models of the real architectures (built in a temporary folder by
tests/clip_fixtures.py), so their numbers measure this pack's preprocessing and plumbing, not CLIP-H itself. OCR
runs the real rapidocr models. ``--full-size`` adds randomly initialised CLIP models at the real ViT-H/14 (PickScore,
HPSv2) and ViT-L/14 (CLIPScore, aesthetic) sizes: the cost a real model has, minus its weights. Prints a markdown table: median ms per image for a batch, and for one image alone.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import torch  # noqa: E402

from training.script_args import HelpFormatter, whole_number  # noqa: E402
from training import rewards  # noqa: E402


def text_images(batch: int, size: int = 512) -> torch.Tensor:
    """Dark text on a light, slightly noisy background: something every reward can score."""
    from PIL import Image, ImageDraw, ImageFont
    generator = torch.Generator().manual_seed(0)
    images = []
    for k in range(batch):
        canvas = Image.new("RGB", (size, size), (235, 230, 220))
        draw = ImageDraw.Draw(canvas)
        draw.text((40, size // 2 - 40), f"HELLO {k}", fill=(20, 20, 30), font=ImageFont.load_default(size=72))
        image = torch.from_numpy(__import__("numpy").asarray(canvas).copy()).float() / 255
        images.append((image + 0.03 * torch.randn(image.shape, generator=generator)).clamp(0, 1))
    return torch.stack(images)


def build_rewards(model_root: str):
    from clip_fixtures import make_tiny_reward_models
    folders = make_tiny_reward_models(model_root)
    built = {"digit": rewards.DigitReward()}
    for name in ("pickscore", "hpsv2", "aesthetic", "clipscore"):
        built[f"{name} (tiny)"] = rewards.load_clip_reward(name, path=folders[name])
    for name in getattr(rewards, "WEIGHT_FREE_REWARDS", {}):
        built[name] = rewards.WEIGHT_FREE_REWARDS[name]()
    if hasattr(rewards, "OCRReward"):
        built["ocr (rapidocr)"] = rewards.OCRReward()
    return built


FULL_SIZES = {  # (vision width, layers, heads, patch), (text width, layers, heads), projection
    "ViT-H/14": ((1280, 32, 16, 14), (1024, 24, 16), 1024),
    "ViT-L/14": ((1024, 24, 16, 14), (768, 12, 12), 768),
}


def full_size_reward(arch: str, folder: str):
    """A PickScore-style reward around a random CLIPModel of the real size (built in memory, not saved)."""
    from clip_fixtures import tiny_vocab_size, write_processor
    from transformers import CLIPConfig, CLIPModel

    from training.rewards.clip_family import ClipRewardBase, ImageSpec, PickScoreReward
    from training.rewards.clip_family.model import _load_tokenizer
    (width, layers, heads, patch), (text_width, text_layers, text_heads), projection = FULL_SIZES[arch]
    vocab = tiny_vocab_size()
    processor = write_processor(os.path.join(folder, arch.replace("/", "_")), image_size=224, max_length=77)
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=text_width, intermediate_size=4 * text_width,
                         num_hidden_layers=text_layers, num_attention_heads=text_heads, max_position_embeddings=77,
                         bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1,
                         projection_dim=projection),
        vision_config=dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                           num_attention_heads=heads, image_size=224, patch_size=patch, projection_dim=projection),
        projection_dim=projection)
    reward = PickScoreReward.__new__(PickScoreReward)
    reward.scale = 1.0
    ClipRewardBase.__init__(reward, CLIPModel(config), _load_tokenizer("pickscore", processor),
                            ImageSpec.from_preprocessor_config(os.path.join(processor, "preprocessor_config.json")))
    return reward


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (lazy model moves, ONNX session start)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--batch", type=whole_number(1), default=8, help="images per reward call")
    parser.add_argument("--repeats", type=whole_number(1), default=5, help="timed calls per reward")
    parser.add_argument("--full-size", action="store_true", help="also time random CLIP models of the real sizes")
    args = parser.parse_args()
    torch.manual_seed(0)
    images = text_images(args.batch)
    prompts = [f'a sign that says "hello {k}" with the digit {k % 10}' for k in range(args.batch)]
    with tempfile.TemporaryDirectory() as root:
        built = build_rewards(root)
        if args.full_size:
            for arch in FULL_SIZES:
                built[f"CLIP {arch} at full size (random weights)"] = full_size_reward(arch, root)
        print(f"## Reward latency ({args.batch}×512×512 RGB, {torch.get_num_threads()} threads, median of "
              f"{args.repeats})\n")
        print("| reward | ms per image (batch of %d) | ms for 1 image |" % args.batch)
        print("|---|---:|---:|")
        for name, reward in built.items():
            batch_ms = median_ms(lambda: reward(images, prompts), args.repeats) / args.batch
            single_ms = median_ms(lambda: reward(images[:1], prompts[:1]), args.repeats)
            print(f"| {name} | {batch_ms:.1f} | {single_ms:.1f} |")


if __name__ == "__main__":
    main()
