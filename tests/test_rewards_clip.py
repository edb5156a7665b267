"""CLIP-family rewards on tiny random models of the real architectures (no weights are downloaded): loading from
the documented layouts, the score formulas against direct transformers computations, the open_clip → transformers
conversion against a forward written straight from the open_clip state dict, and the missing-file errors."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from clip_fixtures import (OPENAI_MEAN, OPENAI_STD, TINY_OPENCLIP, TINY_PROMPTS, make_tiny_aesthetic,  # noqa: E402
                           make_tiny_clip_dir, make_tiny_hpsv2, make_tiny_reward_models, tiny_openclip_state_dict)
from training.rewards import (AestheticReward, CLIPScoreReward, HPSv2Reward, PickScoreReward,  # noqa: E402
                              RewardDependencyMissing, RewardError, RewardModelNotFound, find_reward_model,
                              load_clip_reward, reward_model_layout)
from training.rewards import clip_family  # noqa: E402
from training.rewards.clip_family import ImageSpec, preprocess_images, projected_features  # noqa: E402
from training.rewards.openclip_convert import (clip_config_for, convert_openclip_state_dict,  # noqa: E402
                                               load_state_dict_file, openclip_architecture)

NAMES = ["pickscore", "clipscore", "aesthetic", "hpsv2"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("reward_models")
    make_tiny_reward_models(root)
    return root


@pytest.fixture(scope="module")
def rewards(tiny_root):
    return {name: load_clip_reward(name, [tiny_root.parent / "elsewhere", tiny_root]) for name in NAMES}


def _images(b, h=40, w=56, seed=0):
    return torch.rand(b, h, w, 3, generator=torch.Generator().manual_seed(seed))


def _pixels(images):
    """Reference normalisation for images already at the model size (no resize/crop needed)."""
    mean, std = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2) - mean) / std


# ------------------------------------------------------------------------------------------- contract behaviour
@pytest.mark.parametrize("name", NAMES)
def test_loads_from_layout_shape_and_determinism(rewards, name):
    reward = rewards[name]
    images, prompts = _images(3), ["a red cat", "the dog", "a red cat"]
    out = reward(images, prompts)
    assert out.shape == (3,) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert not out.requires_grad
    assert torch.equal(out, reward(images, prompts))
    if name != "aesthetic":  # the prompt matters (the aesthetic predictor ignores it)
        assert not torch.equal(out, reward(images, ["the dog", "a red cat", "cat"]))
    grey = reward(images[..., :1], prompts)  # grey and RGBA inputs go through base.rgb
    rgba = reward(torch.cat([images, torch.ones_like(images[..., :1])], -1), prompts)
    assert torch.isfinite(grey).all() and torch.equal(rgba, out)


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_one_by_one(rewards, name):
    reward = rewards[name]
    images, prompts = _images(4, seed=1), TINY_PROMPTS[:4]
    batch = reward(images, prompts)
    single = torch.cat([reward(images[i:i + 1], prompts[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------- formulas
def test_pickscore_is_logit_scale_times_cosine(rewards, tiny_root):
    from transformers import CLIPModel, CLIPTokenizer

    folder = tiny_root / "pickscore"
    model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
    tok = CLIPTokenizer.from_pretrained(str(folder / "processor"), local_files_only=True)
    images, prompts = _images(3, 32, 32, seed=2), TINY_PROMPTS[:3]
    t = tok(prompts, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"], pixel_values=_pixels(images))
    expected = out.logits_per_image.diagonal()
    assert math.isclose(float(model.logit_scale.detach().exp()), 100.0, rel_tol=1e-5)
    torch.testing.assert_close(rewards["pickscore"](images, prompts), expected, rtol=1e-5, atol=1e-4)
    scaled = PickScoreReward(folder, scale=1 / 26)  # Flow-GRPO's normalisation
    torch.testing.assert_close(scaled(images, prompts), expected / 26, rtol=1e-5, atol=1e-5)


def test_clipscore_is_weighted_clamped_cosine(rewards, tiny_root, monkeypatch):
    from transformers import CLIPModel, CLIPTokenizer

    folder = tiny_root / "clip-vit-large-patch14"
    model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
    tok = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    images, prompts = _images(6, 32, 32, seed=3), TINY_PROMPTS
    t = tok(prompts, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"], pixel_values=_pixels(images))
    cos = (out.image_embeds * out.text_embeds).sum(-1)  # CLIPOutput embeds are normalised
    assert (cos > 0).any() and (cos < 0).any()  # the tiny model exercises both branches of max(cos, 0)
    torch.testing.assert_close(rewards["clipscore"](images, prompts), 2.5 * cos.clamp(min=0), rtol=1e-5, atol=1e-5)
    prefixed = CLIPScoreReward(folder, prefix="A photo depicts ", weight=1.0)
    t = tok(["A photo depicts " + p for p in prompts], padding=True, truncation=True, max_length=16,
            return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"], pixel_values=_pixels(images))
    torch.testing.assert_close(prefixed(images, prompts), (out.image_embeds * out.text_embeds).sum(-1).clamp(min=0),
                               rtol=1e-5, atol=1e-5)


def test_aesthetic_is_mlp_of_normalised_embedding(rewards, tiny_root):
    from transformers import CLIPModel

    reward = rewards["aesthetic"]
    assert reward.clip_path == tiny_root / "clip-vit-large-patch14"  # the shared sibling folder
    model = CLIPModel.from_pretrained(str(reward.clip_path), local_files_only=True).eval()
    sd = torch.load(str(tiny_root / "aesthetic" / "sac+logos+ava1-l14-linearMSE.pth"), weights_only=True)
    images = _images(3, 32, 32, seed=4)
    with torch.no_grad():
        x = model.visual_projection(model.vision_model(pixel_values=_pixels(images)).pooler_output)
    x = x / x.norm(dim=-1, keepdim=True)
    for i in (0, 2, 4, 6, 7):  # no activations between the layers, dropout is identity at inference
        x = x @ sd[f"layers.{i}.weight"].T + sd[f"layers.{i}.bias"]
    torch.testing.assert_close(reward(images, ["", "", ""]), x[:, 0], rtol=1e-5, atol=1e-5)


def test_aesthetic_formats_and_clip_locations(tmp_path, rewards):
    images = _images(2, seed=5)
    sub = AestheticReward(make_tiny_aesthetic(tmp_path / "a", clip="subdir"))
    st = AestheticReward(make_tiny_aesthetic(tmp_path / "b", clip="subdir", fmt="safetensors"))
    torch.testing.assert_close(sub(images, ["", ""]), st(images, ["", ""]), rtol=0, atol=0)
    direct = AestheticReward(tmp_path / "a" / "sac+logos+ava1-l14-linearMSE.pth",
                             clip_path=tmp_path / "a" / "clip-vit-large-patch14" / "config.json")
    torch.testing.assert_close(direct(images, ["", ""]), sub(images, ["", ""]), rtol=0, atol=0)
    assert sub.model.text_model is None  # only the image tower is kept
    make_tiny_aesthetic(tmp_path / "c", clip=None, embed_dim=16)
    with pytest.raises(RewardError, match="expects 16-d CLIP image embeddings"):
        AestheticReward(tmp_path / "c", clip_path=tmp_path / "a" / "clip-vit-large-patch14")


# ----------------------------------------------------------------------- HPSv2: open_clip → transformers conversion
def _ln(x, sd, p):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], 1e-5)


def _block(x, sd, p, heads, mask=None):
    """open_clip ResidualAttentionBlock: x + attn(ln_1 x); x + mlp(ln_2 x), nn.MultiheadAttention maths, exact GELU."""
    b, n, w = x.shape
    h = _ln(x, sd, p + "ln_1") @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]
    q, k, v = (t.reshape(b, n, heads, w // heads).transpose(1, 2) for t in h.split(w, dim=-1))
    att = q @ k.transpose(-1, -2) / math.sqrt(w // heads)
    if mask is not None:
        att = att + mask
    o = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, n, w)
    x = x + o @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
    h = F.gelu(_ln(x, sd, p + "ln_2") @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"])
    return x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]


def _n_blocks(sd, prefix):
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def openclip_encode_image(sd, pixels, heads):
    patch = sd["visual.conv1.weight"].shape[-1]
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=patch).flatten(2).transpose(1, 2)
    x = torch.cat([sd["visual.class_embedding"].expand(x.shape[0], 1, -1), x], 1) + sd["visual.positional_embedding"]
    x = _ln(x, sd, "visual.ln_pre")
    for i in range(_n_blocks(sd, "visual.transformer.resblocks.")):
        x = _block(x, sd, f"visual.transformer.resblocks.{i}.", heads)
    return _ln(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]


def openclip_encode_text(sd, ids, heads):
    n = ids.shape[1]
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][:n]
    causal = torch.full((n, n), float("-inf")).triu(1)
    for i in range(_n_blocks(sd, "transformer.resblocks.")):
        x = _block(x, sd, f"transformer.resblocks.{i}.", heads, causal)
    x = _ln(x, sd, "ln_final")
    return x[torch.arange(len(ids)), ids.argmax(-1)] @ sd["text_projection"]  # eot = largest id


def test_hpsv2_conversion_matches_openclip_forward(rewards, tiny_root):
    reward = rewards["hpsv2"]
    sd = torch.load(str(tiny_root / "hpsv2" / "HPS_v2.1_compressed.pt"), weights_only=True)["state_dict"]
    v_heads = TINY_OPENCLIP["vision_width"] // TINY_OPENCLIP["vision_head_width"]
    images, prompts = _images(3, 32, 32, seed=6), TINY_PROMPTS[:3]
    ids = reward.tokenizer(prompts, padding="max_length", max_length=TINY_OPENCLIP["context_length"],
                           truncation=True, return_tensors="pt")["input_ids"]  # open_clip pads to the context with 0
    assert (ids[0, -1] == 0) and reward.tokenizer.pad_token == "!"
    ref_img = openclip_encode_image(sd, _pixels(images), v_heads)
    ref_txt = openclip_encode_text(sd, ids, TINY_OPENCLIP["text_heads"])
    with torch.no_grad():
        img = projected_features(reward.model.get_image_features(pixel_values=_pixels(images)))
        tok = reward.tokenizer(prompts, padding=True, truncation=True, max_length=16, return_tensors="pt")
        txt = projected_features(reward.model.get_text_features(**tok))
    torch.testing.assert_close(img, ref_img, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(txt, ref_txt, rtol=1e-5, atol=1e-5)
    expected = (F.normalize(ref_img, dim=-1) @ F.normalize(ref_txt, dim=-1).T).diagonal()  # HPSv2's score()
    torch.testing.assert_close(reward(images, prompts), expected, rtol=1e-5, atol=1e-5)
    assert reward.model.config.vision_config.hidden_act == "gelu"
    assert reward.model.config.vision_config.num_attention_heads == v_heads


def test_hpsv2_file_variants(tmp_path, rewards):
    images, prompts = _images(2, seed=7), TINY_PROMPTS[:2]
    ref = rewards["hpsv2"](images, prompts)
    st = make_tiny_hpsv2(tmp_path / "st", fmt="safetensors", processor="same")  # unwrapped, processor beside it
    torch.testing.assert_close(HPSv2Reward(st)(images, prompts), ref, rtol=0, atol=0)
    ddp = tmp_path / "ddp"
    make_tiny_hpsv2(ddp, processor=None)
    sd = load_state_dict_file(ddp / "HPS_v2.1_compressed.pt")
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, str(ddp / "x.pt"))
    proc = rewards["hpsv2"].checkpoint.parent / "processor"
    torch.testing.assert_close(HPSv2Reward(ddp / "x.pt", processor_path=proc)(images, prompts), ref, rtol=0, atol=0)
    make_tiny_hpsv2(tmp_path / "nocfg", write_config=False)
    with pytest.raises(RewardError, match="open_clip_config.json"):
        HPSv2Reward(tmp_path / "nocfg")


def test_vit_h_14_conversion_keys_and_shapes():
    """The full-size HPSv2 architecture (shape-only tensors): numbers, head counts, GELU, transposes, every key."""
    from transformers import CLIPModel

    vit_h = dict(image_size=224, patch_size=14, embed_dim=1024, vision_width=1280, vision_head_width=80,
                 vision_layers=32, text_width=1024, text_heads=16, text_layers=24, context_length=77)
    sd = tiny_openclip_state_dict(49408, meta=True, **vit_h)
    arch = openclip_architecture(sd)  # no open_clip_config.json: the known ViT-H-14 head counts
    assert arch["hidden_act"] == "gelu" and arch["embed_dim"] == 1024
    assert arch["vision"] == {"hidden_size": 1280, "num_attention_heads": 16, "patch_size": 14, "image_size": 224,
                              "num_hidden_layers": 32, "intermediate_size": 5120}
    assert arch["text"] == {"hidden_size": 1024, "num_attention_heads": 16, "vocab_size": 49408,
                            "max_position_embeddings": 77, "num_hidden_layers": 24, "intermediate_size": 4096}
    converted = convert_openclip_state_dict(sd, arch)
    with torch.device("meta"):
        model = CLIPModel(clip_config_for(arch, bos_token_id=49406, eos_token_id=49407, pad_token_id=0))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in converted.items()}
    assert shapes["visual_projection.weight"] == (1024, 1280) and shapes["text_projection.weight"] == (1024, 1024)


# ------------------------------------------------------------------------------------ transformers 4.x / 5.x
def test_projected_features_handles_tensor_and_output_object(rewards):
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    model = rewards["clipscore"].model
    pixels = _pixels(_images(2, 32, 32, seed=8))
    with torch.no_grad():
        expected = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        out = model.get_image_features(pixel_values=pixels)
        ids = torch.tensor([[514, 320, 515]])
        text = model.get_text_features(input_ids=ids)
        text_expected = model.text_projection(model.text_model(input_ids=ids).pooler_output)
    assert isinstance(out, (torch.Tensor, BaseModelOutputWithPooling))  # 4.x: tensor, 5.x: output object
    torch.testing.assert_close(projected_features(out), expected)
    torch.testing.assert_close(projected_features(text), text_expected)
    assert projected_features(expected) is expected  # the 4.x return type
    obj = BaseModelOutputWithPooling(last_hidden_state=torch.zeros(2, 5, 32), pooler_output=expected)
    assert projected_features(obj) is expected
    assert projected_features((torch.zeros(2, 5, 32), expected)) is expected  # return_dict=False tuple
    with pytest.raises(RewardError):
        projected_features({"nothing": 1})


# ---------------------------------------------------------------------------------------------- preprocessing
def test_preprocessing_matches_clip_image_processor():
    try:
        from transformers import CLIPImageProcessor
        proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    except Exception as e:  # pragma: no cover - depends on the transformers build
        pytest.skip(f"CLIPImageProcessor unavailable: {e}")
    smooth = F.interpolate(torch.rand(1, 3, 9, 13, generator=torch.Generator().manual_seed(9)), size=(60, 90),
                           mode="bilinear")
    img = (smooth[0].permute(1, 2, 0) * 255).round().to(torch.uint8)
    expected = proc(images=[img.numpy()], return_tensors="pt")["pixel_values"]
    ours = preprocess_images(img[None].float() / 255, ImageSpec(crop=(32, 32), resize=32))
    assert ours.shape == expected.shape == (1, 3, 32, 32)
    assert float((ours - expected).abs().max()) < 0.06 and float((ours - expected).abs().mean()) < 0.01


def test_hpsv2_letterbox_preprocessing():
    spec = ImageSpec(crop=(32, 32), resize=32, mode="pad", clamp=False, normalize=False)
    out = preprocess_images(torch.ones(1, 16, 64, 3), spec)  # 1:4 → 8×32 image, 12 black rows above and below
    assert out.shape == (1, 3, 32, 32)
    assert out[..., :12, :].abs().max() == 0 and out[..., 20:, :].abs().max() == 0
    torch.testing.assert_close(out[..., 12:20, :], torch.ones(1, 3, 8, 32))
    square = _images(2, 64, 64, seed=11)  # square images: letterbox == resize + centre crop
    crop_spec = ImageSpec(crop=(32, 32), resize=32, normalize=False, clamp=False)
    torch.testing.assert_close(preprocess_images(square, spec), preprocess_images(square, crop_spec), rtol=0, atol=0)


def test_dtype_option_and_scores_float32(tiny_root):
    reward = PickScoreReward(tiny_root / "pickscore", dtype="bfloat16")
    images, prompts = _images(2, 32, 32, seed=10), TINY_PROMPTS[:2]
    out = reward(images, prompts)
    assert out.dtype == torch.float32 and next(reward.model.parameters()).dtype == torch.bfloat16
    full = PickScoreReward(tiny_root / "pickscore")(images, prompts)
    assert float((out - full).abs().max()) < 0.05 * float(full.abs().max()) + 1.0


# ----------------------------------------------------------------------------------------- paths and errors
def _raises_not_found(fn, *needles):
    with pytest.raises(RewardModelNotFound) as info:
        fn()
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, RewardError)
    for needle in needles:
        assert str(needle) in str(info.value), (needle, str(info.value))
    return str(info.value)


def test_missing_files_name_the_files_the_folder_and_the_source(tmp_path):
    nope = tmp_path / "reward_models" / "pickscore"
    _raises_not_found(lambda: PickScoreReward(nope), nope, "does not exist", "config.json", "model.safetensors",
                      "huggingface.co/yuvalkirstain/PickScore_v1", "processor", "nothing is downloaded")
    pick = make_tiny_clip_dir(tmp_path / "pick", processor=None)
    _raises_not_found(lambda: PickScoreReward(pick), pick / "processor", "preprocessor_config.json", "tokenizer.json",
                      "laion/CLIP-ViT-H-14-laion2B-s32B-b79K")
    (pick / "model.safetensors").unlink()
    _raises_not_found(lambda: PickScoreReward(pick), "missing model.safetensors or pytorch_model.bin", pick)

    clip = make_tiny_clip_dir(tmp_path / "clip", processor=None)
    _raises_not_found(lambda: CLIPScoreReward(clip), clip, "preprocessor_config.json", "tokenizer.json",
                      "huggingface.co/openai/clip-vit-large-patch14")

    aes = tmp_path / "aesthetic"
    aes.mkdir()
    _raises_not_found(lambda: AestheticReward(aes), aes, "sac+logos+ava1-l14-linearMSE.pth", "improved-aesthetic")
    make_tiny_aesthetic(aes, clip=None)
    _raises_not_found(lambda: AestheticReward(aes), aes / "clip-vit-large-patch14", "config.json",
                      "huggingface.co/openai/clip-vit-large-patch14", tmp_path / "clip-vit-large-patch14")

    hps = tmp_path / "hpsv2"
    hps.mkdir()
    _raises_not_found(lambda: HPSv2Reward(hps), hps, "HPS_v2.1_compressed.pt", "huggingface.co/xswu/HPSv2")
    make_tiny_hpsv2(hps, processor=None)
    _raises_not_found(lambda: HPSv2Reward(hps), hps / "processor", "preprocessor_config.json",
                      "laion/CLIP-ViT-H-14-laion2B-s32B-b79K")


def test_find_reward_model_and_layout(tmp_path, tiny_root):
    assert find_reward_model("pickscore", [tmp_path, tiny_root]) == tiny_root / "pickscore"
    assert find_reward_model("clip", str(tiny_root)) == tiny_root / "clip-vit-large-patch14"
    assert find_reward_model("HPSv2.1", [tiny_root]) == tiny_root / "hpsv2"
    (tmp_path / "PickScore_v1").mkdir()
    assert find_reward_model("pickscore", [tmp_path, tiny_root]) == tmp_path / "PickScore_v1"  # alias folder
    msg = _raises_not_found(lambda: find_reward_model("aesthetic", [tmp_path / "models" / "reward_models"]),
                            tmp_path / "models" / "reward_models" / "aesthetic", "sac+logos+ava1-l14-linearMSE.pth")
    assert "improved-aesthetic-predictor" in msg
    with pytest.raises(RewardError, match="unknown CLIP-family reward"):
        find_reward_model("imagereward", [tiny_root])
    layout = reward_model_layout()
    for needle in ("pickscore/", "processor/", "clip-vit-large-patch14/", "aesthetic/", "hpsv2/",
                   "HPS_v2.1_compressed.pt", "sac+logos+ava1-l14-linearMSE.pth", "yuvalkirstain/PickScore_v1",
                   "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "openai/clip-vit-large-patch14", "xswu/HPSv2"):
        assert needle in layout


def test_missing_transformers_gives_the_pip_command(tiny_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(RewardDependencyMissing, match="pip install"):
        PickScoreReward(tiny_root / "pickscore")
    with pytest.raises(ImportError):
        clip_family.require_transformers("x")


def test_package_import_does_not_import_transformers():
    code = ("import sys, training.rewards as r; assert 'transformers' not in sys.modules, 'eager import'; "
            "assert r.PickScoreReward and r.HPSv2Reward")
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)
