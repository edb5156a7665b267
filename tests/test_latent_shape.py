"""The rollout latent is checked against the model before a GRPO run does any work, with the size to use."""
import pytest
import torch

from training.latent_shape import rollout_latent_shape
from training.toy.model import DEFAULT_CONFIG, PIXELS_PER_LATENT, ToyDiT, load_toy_model

TOY = dict(latent_channels=1, fixed_size=(16, 16), pixels_per_latent=PIXELS_PER_LATENT,
           model_name="the toy digit model")


def test_the_toy_model_says_which_empty_latent_size_to_use():
    # Empty Latent Image 512×512: a [1, 4, 64, 64] zero latent
    with pytest.raises(ValueError) as info:
        rollout_latent_shape((1, 4, 64, 64), **TOY)
    message = str(info.value)
    assert "the toy digit model takes a 16×16 latent" in message
    assert "set Empty Latent Image to width 128, height 128" in message
    assert "this latent is 64×64, i.e. a 512×512 image" in message
    with pytest.raises(ValueError, match=r"this latent is 8×12, i.e. a 96×64 image"):
        rollout_latent_shape((1, 4, 8, 12), **TOY)
    # 128×128 is right, and an empty latent takes the model's channel count as ComfyUI's samplers do
    assert rollout_latent_shape((1, 4, 16, 16), **TOY) == (1, 16, 16)
    assert rollout_latent_shape((2, 1, 16, 16), **TOY) == (1, 16, 16)


def test_the_advice_matches_the_model_and_its_vae():
    size = DEFAULT_CONFIG["image_size"]
    assert size * PIXELS_PER_LATENT == 128  # what the toy nodes' descriptions tell users
    model = load_toy_model()
    x = torch.zeros(1, 1, size, size)
    assert model(x, torch.full((1,), 500.0)).shape == x.shape


def test_the_toy_network_itself_rejects_another_size_with_the_advice():
    model = ToyDiT(**DEFAULT_CONFIG)
    with pytest.raises(ValueError, match=r"takes 1×16×16 latents \(in ComfyUI: Empty Latent Image of 128×128\); "
                                         r"got 1×64×64"):
        model(torch.zeros(1, 1, 64, 64), torch.full((1,), 500.0))
    with pytest.raises(ValueError, match=r"got 4×16×16"):
        model(torch.zeros(1, 4, 16, 16), torch.full((1,), 500.0))


def test_channel_count_of_a_non_empty_latent_from_another_family():
    assert rollout_latent_shape((1, 16, 128, 128), latent_channels=16) == (16, 128, 128)
    assert rollout_latent_shape((1, 4, 128, 128), latent_channels=16, is_empty=True) == (16, 128, 128)
    with pytest.raises(ValueError, match=r"the latent has 4 channels but this model's latents have 16"):
        rollout_latent_shape((1, 4, 128, 128), latent_channels=16, is_empty=False)


def test_image_and_video_latents():
    # an image latent on a video model is one frame (as ComfyUI's samplers treat it)
    assert rollout_latent_shape((1, 16, 60, 104), latent_channels=16, latent_dimensions=3) == (16, 1, 60, 104)
    assert rollout_latent_shape((1, 16, 21, 60, 104), latent_channels=16, latent_dimensions=3) == (16, 21, 60, 104)
    with pytest.raises(ValueError, match=r"takes an image latent \(Empty Latent Image.*but the latent input is a "
                                         r"video latent \[B, C, T, H, W\]"):
        rollout_latent_shape((1, 16, 21, 60, 104), latent_channels=16, latent_dimensions=2)
    with pytest.raises(ValueError, match=r"a 3-D latent"):
        rollout_latent_shape((1, 16, 60), latent_channels=16)
