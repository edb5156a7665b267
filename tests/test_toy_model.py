"""The shipped toy flow model and digit classifier: loading, prompts, operations, and measured quality."""
import pytest
import torch

from training.toy.classifier import classify_images, classify_latents, load_classifier
from training.toy.data import load_digits_16
from training.toy.eval import toy_quality
from training.toy.model import (CONTEXT_DIM, DEFAULT_CONFIG, NULL_CLASS, ToyDiT, image_to_latent, latent_to_image,
                                load_toy_model, read_toy_checkpoint)
from training.toy.prompts import encode_prompts, parse_digit


@pytest.mark.parametrize("prompt,digit", [("a handwritten 7", 7), ("7", 7), ("seven", 7), ("digit Seven.", 7),
                                          ("the number 3", 3), ("Draw a ZERO", 0), ("", None), ("   ", None)])
def test_prompt_parsing(prompt, digit):
    assert parse_digit(prompt) == digit


@pytest.mark.parametrize("prompt,match", [("a cat", "names no digit"), ("3 or 4", r"several digits \(3, 4\)"),
                                          ("draw 12", "single digits"), ("one and two", "several digits")])
def test_prompt_errors_list_the_accepted_forms(prompt, match):
    with pytest.raises(ValueError, match=match) as info:
        parse_digit(prompt)
    assert "a handwritten 7" in str(info.value)


def test_encode_prompts_one_hot():
    cond = encode_prompts(["a 2", "", "nine"])
    assert cond.shape == (3, 1, CONTEXT_DIM)
    assert cond.argmax(-1).flatten().tolist() == [2, NULL_CLASS, 9]


def test_model_uses_the_given_operations_for_every_linear():
    built = []

    class RecordingLinear(torch.nn.Linear):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    class Ops:
        Linear = RecordingLinear
        LayerNorm = torch.nn.LayerNorm

    model = ToyDiT(**DEFAULT_CONFIG, operations=Ops)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m, RecordingLinear) for m in linears) and len(built) == len(linears)
    names = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert {"blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "y_embedder"} <= names


def test_shipped_weights_load_and_sample():
    state, config, metadata = read_toy_checkpoint()
    assert config == DEFAULT_CONFIG and "seed" in metadata
    assert all(v.dtype == torch.float16 for v in state.values())
    model = load_toy_model()
    x = torch.randn(4, 1, 16, 16)
    v = model(x, torch.full((4,), 500.0), encode_prompts(["1", "2", "3", ""]))
    assert v.shape == x.shape and torch.isfinite(v).all()
    images = latent_to_image(x.clamp(-1, 1), scale=8)
    assert images.shape == (4, 128, 128, 3) and 0 <= float(images.min()) <= float(images.max()) <= 1
    torch.testing.assert_close(image_to_latent(images), x.clamp(-1, 1), atol=1e-5, rtol=0)


def test_classifier_heldout_accuracy_is_at_least_95_percent():
    images, labels = load_digits_16("heldout")
    assert len(labels) == 500
    accuracy = (classify_latents(load_classifier(), images).argmax(-1) == labels).float().mean()
    assert float(accuracy) >= 0.95
    probs = classify_images(latent_to_image(images[:8], scale=4))  # the IMAGE path agrees with the latent path
    assert (probs.argmax(-1) == labels[:8]).float().mean() >= 0.875


def test_fast_quality_bar_fifty_samples():
    result = toy_quality(per_digit=5, steps=20)
    assert result["accuracy"] >= 0.85, result["per_digit"]
