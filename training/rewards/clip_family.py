"""CLIP-family rewards loaded from local files only: PickScore, CLIPScore, LAION aesthetic predictor v2, HPSv2/v2.1.

Nothing is ever downloaded: every loader takes a path (a folder or a file) and, if something is missing, raises
:class:`RewardModelNotFound` naming the files, the folder to put them in and where to get them.
:func:`reward_model_layout` describes the folders expected under a ``reward_models`` root (ComfyUI:
``models/reward_models``) and :func:`find_reward_model` looks for them in given roots.

Scores (one per (image, its prompt)); image/text features are the projected CLIP embeddings, L2-normalised:

* **PickScore** (Kirstain et al. 2023): ``logit_scale.exp() · cos(image, text)`` as in the PickScore repo
  (``logit_scale.exp()`` = 100 for PickScore_v1, so typical values are 18–23). Flow-GRPO divides this by 26 to get
  roughly [0, 1]; here the raw published value is the default and ``scale=1/26`` reproduces Flow-GRPO. GRPO's
  group-normalised advantages are invariant to a positive constant factor, so the scale only matters when rewards
  are mixed by weighted sums or compared across papers.
* **CLIPScore** (Hessel et al. 2021): ``w · max(cos(image, text), 0)`` with ``w = 2.5``. The paper prefixes captions
  with "A photo depicts"; pass ``prefix="A photo depicts "`` to do the same (default: prompts as given).
* **Aesthetic** (LAION improved aesthetic predictor v2, ``sac+logos+ava1-l14-linearMSE.pth``): an MLP
  ``Linear(768,1024) Dropout Linear(1024,128) Dropout Linear(128,64) Dropout Linear(64,16) Linear(16,1)`` (keys
  ``layers.0/2/4/6/7``; no activations, as in the original) on the L2-normalised CLIP ViT-L/14 image embedding.
  Scores are on the AVA 1–10 scale. The prompt is ignored.
* **HPSv2 / HPSv2.1** (Wu et al. 2023): ``cos(image, text)`` — HPSv2's ``score()`` takes the diagonal of
  ``image_features @ text_features.T`` with normalised features and no logit scale (typical values 0.2–0.35). The
  official checkpoint is an open_clip ViT-H-14 state dict; open_clip itself cannot be used (it imports torchvision,
  which does not import beside the CPU torch), so :mod:`.openclip_convert` converts it to a transformers
  ``CLIPModel`` (exact GELU as open_clip's ViT-H-14; heads from ``open_clip_config.json`` or the known ViT-H-14
  numbers; see that module). HPSv2 preprocesses with open_clip's ``ResizeMaxSize``: the longest side is resized to
  224 and the short side padded with black, centred (identical to resize + centre crop for square images); the
  same is done here. Prompts go through transformers' CLIP tokenizer instead of open_clip's (which also runs ftfy
  and HTML unescaping), so only prompts with broken unicode or HTML entities can tokenize differently.

Image preprocessing runs in torch on the images' device, batched: RGB (``base.rgb``), bicubic resize with
antialias of the shortest side to the processor's ``size`` (``int(size · long / short)`` for the long side, as
transformers' ``CLIPImageProcessor``), values clamped to [0, 1] (PIL clamps its uint8 output), centre crop to
``crop_size`` and normalisation with ``image_mean``/``image_std``, all read from ``preprocessor_config.json``. It
differs from the PIL pipeline only by PIL's uint8 rounding and its slightly different bicubic filter (≈ 0.004 mean
absolute difference after normalisation). Text goes through the CLIP tokenizer with padding and truncation to the
model's ``max_position_embeddings`` (77); identical prompts in a batch (GRPO groups) are encoded once.

transformers 4.x returns a tensor from ``get_image_features``/``get_text_features``; 5.x returns a
``BaseModelOutputWithPooling`` whose ``pooler_output`` holds the *projected* embedding. :func:`projected_features`
handles both. Models run in eval mode under ``torch.no_grad()`` in ``dtype`` (float32 default), on the device of
the images (moved on first use; a host's memory manager may place them instead, see managed.py); scores are
float32.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, NoReturn, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .base import Reward, RewardDependencyMissing, RewardError, rgb

PathLike = Union[str, os.PathLike]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

PICKSCORE_URL = "https://huggingface.co/yuvalkirstain/PickScore_v1"
VIT_H_PROCESSOR_URL = "https://huggingface.co/laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
CLIP_L14_URL = "https://huggingface.co/openai/clip-vit-large-patch14"
AESTHETIC_URL = ("https://github.com/christophschuhmann/improved-aesthetic-predictor, also mirrored at "
                 "https://huggingface.co/camenduru/improved-aesthetic-predictor")
HPSV2_URL = "https://huggingface.co/xswu/HPSv2"

AESTHETIC_FILES = ("sac+logos+ava1-l14-linearMSE.pth", "sac+logos+ava1-l14-linearMSE.safetensors")
HPSV2_FILES = ("HPS_v2.1_compressed.pt", "HPS_v2_compressed.pt", "HPS_v2.1_compressed.safetensors",
               "HPS_v2_compressed.safetensors")
OPENCLIP_CONFIG_FILE = "open_clip_config.json"

# alternatives per required item: (name, other accepted names...)
CLIP_CONFIG = ("config.json",)
CLIP_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
PREPROCESSOR = ("preprocessor_config.json",)
TOKENIZER = ("tokenizer.json", "vocab.json + merges.txt")
PROCESSOR_FILES = ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                   "special_tokens_map.json")
PROCESSOR_SUBDIR = "processor"


class RewardModelNotFound(RewardError, FileNotFoundError):
    """Reward model files are missing; the message says which files go where and where to get them."""
    __module__ = "flow_cps"  # ComfyUI shows f"{__module__}.{name}" as the error type; the real one is a folder path


# ---------------------------------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class RewardModelSpec:
    name: str  # canonical reward name
    folder: str  # sub-folder of a reward_models root
    reward_class: str
    contents: Tuple[str, ...]  # human-readable lines: what goes into the folder and where it comes from
    aliases: Tuple[str, ...] = ()  # other folder names accepted by find_reward_model
    names: Tuple[str, ...] = ()  # other reward names accepted by find_reward_model / load_clip_reward


REWARD_MODELS: Dict[str, RewardModelSpec] = {
    "pickscore": RewardModelSpec(
        "pickscore", "pickscore", "PickScoreReward",
        (f"config.json, model.safetensors (or pytorch_model.bin)  <- {PICKSCORE_URL}",
         f"{PROCESSOR_SUBDIR}/{{{', '.join(PROCESSOR_FILES)}}}  <- {VIT_H_PROCESSOR_URL} "
         "(may also sit directly in pickscore/)"),
        aliases=("PickScore_v1",)),
    "clipscore": RewardModelSpec(
        "clipscore", "clip-vit-large-patch14", "CLIPScoreReward",
        (f"config.json, model.safetensors, {', '.join(PROCESSOR_FILES)}  <- {CLIP_L14_URL} "
         "(any transformers CLIP folder works; this one is also the aesthetic predictor's image encoder)",),
        aliases=("clip",), names=("clip", "clip_score")),
    "aesthetic": RewardModelSpec(
        "aesthetic", "aesthetic", "AestheticReward",
        (f"{AESTHETIC_FILES[0]} (or .safetensors)  <- {AESTHETIC_URL}",
         f"CLIP ViT-L/14 (config.json, model.safetensors, preprocessor_config.json <- {CLIP_L14_URL}) in "
         "aesthetic/clip-vit-large-patch14/ or in the sibling reward_models/clip-vit-large-patch14/"),
        aliases=("laion-aesthetic", "improved-aesthetic-predictor"), names=("laion_aesthetic",)),
    "hpsv2": RewardModelSpec(
        "hpsv2", "hpsv2", "HPSv2Reward",
        (f"HPS_v2.1_compressed.pt (or HPS_v2_compressed.pt; optional open_clip_config.json)  <- {HPSV2_URL}",
         f"{PROCESSOR_SUBDIR}/{{{', '.join(PROCESSOR_FILES)}}}  <- {VIT_H_PROCESSOR_URL} "
         "(may also sit directly in hpsv2/)"),
        aliases=("HPSv2",), names=("hps", "hpsv2.1", "hpsv21")),
}


def reward_model_layout(root: str = "reward_models") -> str:
    """The expected folder layout under a reward_models root, as text (for the README and error messages)."""
    lines = [f"{root}/"]
    for spec in REWARD_MODELS.values():
        lines.append(f"  {spec.folder}/   ({spec.reward_class}, reward '{spec.name}')")
        lines.extend(f"    {c}" for c in spec.contents)
    lines.append("Download the files yourself; nothing is downloaded automatically.")
    return "\n".join(lines)


def _spec(name: str) -> RewardModelSpec:
    key = name.strip().lower().replace("-", "_")
    for spec in REWARD_MODELS.values():
        if key == spec.name or key in spec.names:
            return spec
    raise RewardError(f"unknown CLIP-family reward {name!r}; known: {', '.join(REWARD_MODELS)}")


def _as_roots(roots) -> List[Path]:
    if roots is None:
        return []
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    return [Path(r) for r in roots if r]


def find_reward_model(name: str, roots: Union[PathLike, Iterable[PathLike]]) -> Path:
    """The first ``<root>/<folder>`` (or an alias folder) of reward ``name`` that exists, searching ``roots`` in order.

    Raises :class:`RewardModelNotFound` telling where to create the folder and what to put in it.
    """
    spec, roots = _spec(name), _as_roots(roots)
    for root in roots:
        for folder in (spec.folder,) + spec.aliases:
            if (root / folder).is_dir():
                return root / folder
    where = f"{roots[0] / spec.folder}" if roots else f"<reward_models>/{spec.folder}"
    searched = ", ".join(str(r) for r in roots) or "(no folders given)"
    raise RewardModelNotFound(
        f"reward '{spec.name}': no model folder found (searched {searched}). Create {where}/ containing:\n  "
        + "\n  ".join(spec.contents) + "\nDownload the files yourself; nothing is downloaded automatically.")


def load_clip_reward(name: str, roots: Union[PathLike, Iterable[PathLike], None] = None, *,
                     path: Optional[PathLike] = None, **kwargs) -> Reward:
    """Construct a CLIP-family reward by name from ``path`` or from ``find_reward_model(name, roots)``."""
    spec = _spec(name)
    cls = {"pickscore": PickScoreReward, "clipscore": CLIPScoreReward, "aesthetic": AestheticReward,
           "hpsv2": HPSv2Reward}[spec.name]
    return cls(path if path is not None else find_reward_model(spec.name, roots), **kwargs)


# ------------------------------------------------------------------------------------------- file checks/loading
def _has(folder: Path, item: str) -> bool:
    return all((folder / part.strip()).is_file() for part in item.split("+"))


def _missing(folder: Path, groups: Sequence[Tuple[str, ...]]) -> List[str]:
    """The requirement groups of which no alternative is present in ``folder``."""
    return [" or ".join(g) for g in groups if not folder.is_dir() or not any(_has(folder, item) for item in g)]


def _not_found(reward: str, folder: Path, missing: Sequence[str], put: str, source: str, extra: str = "") -> NoReturn:
    state = "does not exist" if not folder.exists() else f"is missing {'; '.join(missing)}"
    raise RewardModelNotFound(
        f"reward '{reward}': {folder} {state}. Put {put} into {folder}{os.sep} (get them from {source}; "
        f"download them yourself, nothing is downloaded automatically).{extra}")


def _folder_of(path: PathLike) -> Path:
    p = Path(path).expanduser()
    return p.parent if p.is_file() else p


def _find_processor_dir(reward: str, candidates: Sequence[Path], source: str = VIT_H_PROCESSOR_URL) -> Path:
    """The first candidate folder with preprocessor_config.json and the tokenizer files."""
    groups = [PREPROCESSOR, TOKENIZER]
    for c in candidates:
        if not _missing(c, groups):
            return c
    others = "" if len(candidates) < 2 else f" (also looked in {', '.join(str(c) for c in candidates[1:])})"
    _not_found(reward, candidates[0], _missing(candidates[0], groups), ", ".join(PROCESSOR_FILES), source, others)


def require_transformers(reward: str):
    """Import transformers or raise :class:`RewardDependencyMissing` with the install command."""
    try:
        import transformers
    except ImportError as e:
        raise RewardDependencyMissing(
            f"reward '{reward}' needs the transformers package: pip install \"transformers>=4.40\" (into ComfyUI's "
            f"Python; it does not need a different torch). Import error: {e}") from None
    return transformers


def _load_tokenizer(reward: str, folder: Path):
    transformers = require_transformers(reward)
    cls = getattr(transformers, "CLIPTokenizerFast", None) or transformers.CLIPTokenizer
    try:
        return cls.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:
        raise RewardError(f"reward '{reward}': cannot load the CLIP tokenizer from {folder}: {e}") from None


def _load_clip_model(reward: str, folder: Path):
    transformers = require_transformers(reward)
    try:
        model = transformers.CLIPModel.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:
        raise RewardError(f"reward '{reward}': cannot load a transformers CLIPModel from {folder}: {e}") from None
    return model.eval()


def parse_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
    try:
        return names[str(dtype).lower().replace("torch.", "")]
    except KeyError:
        raise RewardError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16") from None


# ------------------------------------------------------------------------------------------ transformers 4.x/5.x
def projected_features(output) -> torch.Tensor:
    """The projected embedding [B, D] from ``get_image_features``/``get_text_features`` in any transformers version.

    4.x returns the tensor itself. 5.x returns ``BaseModelOutputWithPooling`` with the projection applied to
    ``pooler_output`` (``last_hidden_state`` stays unprojected); with ``return_dict=False`` it is the tuple
    ``(last_hidden_state, pooler_output, ...)``. ``image_embeds``/``text_embeds`` (CLIPOutput) are accepted too.
    """
    if isinstance(output, torch.Tensor):
        return output
    for attr in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, (tuple, list)) and len(output) > 1 and isinstance(output[1], torch.Tensor) \
            and output[1].dim() == 2:
        return output[1]
    raise RewardError(f"cannot find the projected embedding in a {type(output).__name__} returned by transformers")


# ------------------------------------------------------------------------------------------------ preprocessing
@dataclass(frozen=True)
class ImageSpec:
    """How images become ``pixel_values`` (read from ``preprocessor_config.json``)."""

    crop: Tuple[int, int]  # final (height, width)
    resize: Optional[Union[int, Tuple[int, int]]]  # shortest edge (int) or exact (h, w); None: no resize
    mean: Tuple[float, ...] = OPENAI_CLIP_MEAN
    std: Tuple[float, ...] = OPENAI_CLIP_STD
    mode: str = "crop"  # "crop": resize + centre crop (CLIPImageProcessor); "pad": longest side + pad (HPSv2)
    center_crop: bool = True
    normalize: bool = True
    clamp: bool = True  # clamp after resampling, as PIL's uint8 output is

    @classmethod
    def from_preprocessor_config(cls, path: PathLike, **overrides) -> "ImageSpec":
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)

        def hw(v):
            if isinstance(v, dict):
                if "height" in v:
                    return int(v["height"]), int(v["width"])
                if "shortest_edge" in v:
                    return int(v["shortest_edge"])
            return int(v) if not isinstance(v, (list, tuple)) else (int(v[0]), int(v[1]))

        size = hw(cfg.get("size", 224))
        crop = hw(cfg.get("crop_size", size))
        crop = (crop, crop) if isinstance(crop, int) else crop
        args = dict(crop=crop, resize=size if cfg.get("do_resize", True) else None,
                    mean=tuple(float(m) for m in cfg.get("image_mean", OPENAI_CLIP_MEAN)),
                    std=tuple(float(s) for s in cfg.get("image_std", OPENAI_CLIP_STD)),
                    center_crop=bool(cfg.get("do_center_crop", True)), normalize=bool(cfg.get("do_normalize", True)))
        args.update(overrides)
        return cls(**args)


def _resize(x: torch.Tensor, size: Tuple[int, int], clamp: bool) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    return x.clamp(0, 1) if clamp else x


def preprocess_images(images: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """ComfyUI IMAGE [B, H, W, C] in [0, 1] → normalised ``pixel_values`` [B, 3, h, w] float32, on the same device."""
    x = rgb(images).float().permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    if spec.mode == "pad":  # open_clip ResizeMaxSize: longest side -> crop size, centred black padding
        target = spec.crop[0]
        scale = target / max(h, w)
        nh, nw = round(h * scale), round(w * scale)
        x = _resize(x, (nh, nw), spec.clamp)
        ph, pw = target - nh, target - nw
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.0)
    else:
        if spec.resize is not None:
            if isinstance(spec.resize, int):
                short, long = (h, w) if h <= w else (w, h)
                new_short, new_long = spec.resize, int(spec.resize * long / short)
                size = (new_short, new_long) if h <= w else (new_long, new_short)
            else:
                size = spec.resize
            x = _resize(x, size, spec.clamp)
        if spec.center_crop:
            ch, cw = spec.crop
            h, w = x.shape[-2:]
            if h < ch or w < cw:  # as CLIPImageProcessor: pad with zeros to the crop size first
                x = F.pad(x, ((max(cw - w, 0)) // 2, (max(cw - w, 0) + 1) // 2,
                              (max(ch - h, 0)) // 2, (max(ch - h, 0) + 1) // 2))
                h, w = x.shape[-2:]
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top:top + ch, left:left + cw]
    if spec.normalize:
        mean = torch.tensor(spec.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        x = (x - mean) / std
    return x.contiguous()


# ------------------------------------------------------------------------------------------------------ rewards
class ClipRewardBase(Reward):
    """Shared machinery: a transformers ``CLIPModel`` (+ tokenizer), batched features on the images' device."""

    name = "clip"
    thread_safe = True  # its own model under no_grad (a host that places the model wraps it: see managed.py)

    def __init__(self, model, tokenizer, image_spec: ImageSpec, *, dtype: Union[str, torch.dtype] = "float32",
                 batch_size: int = 16):
        self.dtype = parse_dtype(dtype)
        self.model = model.eval().to(self.dtype)
        self.tokenizer = tokenizer
        self.image_spec = image_spec
        self.batch_size = max(1, int(batch_size))
        model_size = getattr(getattr(model.config, "vision_config", model.config), "image_size", None)
        if model_size is not None and tuple(image_spec.crop) != (model_size, model_size):
            raise RewardError(f"reward '{self.name}': preprocessor_config.json crops to {image_spec.crop} but the CLIP "
                              f"model takes {model_size}×{model_size} images; use the processor files that belong "
                              "to this model")

    @property
    def max_text_length(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    def models(self):
        return [self.model]

    def _to(self, device: torch.device) -> None:
        """Follow the images, reading where the weights are now: a host's memory manager may have moved them."""
        for module in self.models():
            if next(module.parameters()).device != device:
                module.to(device)
        self.model.eval()

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised projected image embeddings [B, D] (float32)."""
        self._to(images.device)
        pixels = preprocess_images(images, self.image_spec).to(self.dtype)
        feats = [projected_features(self.model.get_image_features(pixel_values=chunk))
                 for chunk in pixels.split(self.batch_size)]
        return F.normalize(torch.cat(feats).float(), dim=-1)

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str], device: torch.device) -> torch.Tensor:
        """L2-normalised projected text embeddings [B, D] (float32); repeated prompts are encoded once."""
        self._to(device)
        unique = list(dict.fromkeys(prompts))
        feats = []
        for i in range(0, len(unique), self.batch_size):
            tok = self.tokenizer(unique[i:i + self.batch_size], padding=True, truncation=True,
                                 max_length=self.max_text_length, return_tensors="pt")
            out = self.model.get_text_features(input_ids=tok["input_ids"].to(device),
                                               attention_mask=tok["attention_mask"].to(device))
            feats.append(projected_features(out))
        feats = F.normalize(torch.cat(feats).float(), dim=-1)
        index = torch.tensor([unique.index(p) for p in prompts], device=feats.device)
        return feats[index]

    def cosine(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        img = self.image_features(images)
        txt = self.text_features(prompts, images.device)
        return (img * txt).sum(-1)


def _clip_reward_files(reward: str, path: PathLike, source: str, processor_path: Optional[PathLike],
                       *, separate_processor: bool) -> Tuple[Path, Path]:
    """(model folder, processor folder) after checking that every file is there.

    ``separate_processor``: the processor files come from another repo (CLIP-ViT-H-14) and may sit in
    ``<folder>/processor/`` or ``<folder>``; otherwise they belong to the model's own repo and sit beside it.
    """
    folder = _folder_of(path)
    if processor_path is not None:
        candidates = [_folder_of(processor_path)]
    elif separate_processor:
        candidates = [folder / PROCESSOR_SUBDIR, folder]
    else:
        candidates = [folder]
    if candidates == [folder]:  # one folder holds everything: report all that is missing at once
        missing = _missing(folder, [CLIP_CONFIG, CLIP_WEIGHTS, PREPROCESSOR, TOKENIZER])
        if missing:
            _not_found(reward, folder, missing, "config.json, model.safetensors, " + ", ".join(PROCESSOR_FILES),
                       source)
        return folder, folder
    missing = _missing(folder, [CLIP_CONFIG, CLIP_WEIGHTS])
    if missing:
        extra = ""
        if separate_processor and processor_path is None:
            extra = (f" The processor files ({', '.join(PROCESSOR_FILES)}) of {VIT_H_PROCESSOR_URL} go into "
                     f"{folder / PROCESSOR_SUBDIR}{os.sep}.")
        _not_found(reward, folder, missing, "config.json and model.safetensors", source, extra)
    return folder, _find_processor_dir(reward, candidates, VIT_H_PROCESSOR_URL if separate_processor else source)


class PickScoreReward(ClipRewardBase):
    """PickScore: ``scale · logit_scale.exp() · cos(image, prompt)`` (raw PickScore for ``scale=1``; Flow-GRPO uses
    ``scale=1/26``).

    ``path``: the PickScore_v1 folder (config.json + model.safetensors) or a file in it; the CLIP-ViT-H-14
    processor files go into ``<path>/processor/`` or ``<path>`` itself (or pass ``processor_path``).
    """

    name = "pickscore"

    def __init__(self, path: PathLike, *, processor_path: Optional[PathLike] = None, scale: float = 1.0,
                 dtype: Union[str, torch.dtype] = "float32", batch_size: int = 16):
        folder, proc = _clip_reward_files(self.name, path, PICKSCORE_URL, processor_path, separate_processor=True)
        self.scale = float(scale)
        super().__init__(_load_clip_model(self.name, folder), _load_tokenizer(self.name, proc),
                         ImageSpec.from_preprocessor_config(proc / "preprocessor_config.json"),
                         dtype=dtype, batch_size=batch_size)

    @torch.no_grad()
    def compute(self, images, prompts):
        logit_scale = self.model.logit_scale.detach().float().exp()
        return self.scale * logit_scale * self.cosine(images, prompts)


class CLIPScoreReward(ClipRewardBase):
    """CLIPScore (Hessel et al. 2021): ``weight · max(cos(image, prefix + prompt), 0)``, weight 2.5.

    ``path``: a transformers CLIP folder with its processor files (default expectation openai/clip-vit-large-patch14)
    or a file in it; ``processor_path`` if the processor files live elsewhere.
    """

    name = "clipscore"
    value_range = (0.0, None)  # weight · max(cos, 0)

    def __init__(self, path: PathLike, *, processor_path: Optional[PathLike] = None, weight: float = 2.5,
                 prefix: str = "", dtype: Union[str, torch.dtype] = "float32", batch_size: int = 16):
        folder, proc = _clip_reward_files(self.name, path, CLIP_L14_URL, processor_path, separate_processor=False)
        self.weight, self.prefix = float(weight), str(prefix)
        super().__init__(_load_clip_model(self.name, folder), _load_tokenizer(self.name, proc),
                         ImageSpec.from_preprocessor_config(proc / "preprocessor_config.json"),
                         dtype=dtype, batch_size=batch_size)

    @torch.no_grad()
    def compute(self, images, prompts):
        cos = self.cosine(images, [self.prefix + p for p in prompts])
        return self.weight * cos.clamp(min=0)


def _aesthetic_head(sd: Dict[str, torch.Tensor], source: Path) -> torch.nn.Sequential:
    """The LAION aesthetic MLP from its state dict (Linear layers at the indices present, Dropout elsewhere)."""
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    linear = sorted({int(k.split(".")[1]) for k in sd if k.startswith("layers.") and k.endswith(".weight")})
    if not linear or set(sd) != {f"layers.{i}.{p}" for i in linear for p in ("weight", "bias")}:
        raise RewardError(f"reward 'aesthetic': {source} is not a LAION aesthetic predictor (expected keys "
                          f"layers.0/2/4/6/7.weight/bias, got {sorted(sd)[:6]})")
    layers: List[torch.nn.Module] = []
    for i in range(linear[-1] + 1):
        if i in linear:
            w = sd[f"layers.{i}.weight"]
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            lin.load_state_dict({"weight": w.float(), "bias": sd[f"layers.{i}.bias"].float()})
            layers.append(lin)
        else:
            layers.append(torch.nn.Dropout(0.0))  # Dropout(0.2/0.1) in training; identity at inference
    head = torch.nn.Sequential(*layers).eval()
    dims = [m.in_features for m in layers if isinstance(m, torch.nn.Linear)]
    outs = [m.out_features for m in layers if isinstance(m, torch.nn.Linear)]
    if outs[-1] != 1 or any(o != i for o, i in zip(outs[:-1], dims[1:])):
        raise RewardError(f"reward 'aesthetic': the layers in {source} do not chain to one output ({dims} -> {outs})")
    return head


class AestheticReward(ClipRewardBase):
    """LAION aesthetic predictor v2 (``sac+logos+ava1-l14-linearMSE``) on CLIP ViT-L/14 image embeddings.

    ``path``: the weights file (.pth or .safetensors) or its folder. The CLIP model comes from ``clip_path`` or, in
    this order, ``<folder>/clip-vit-large-patch14``, ``<folder>/clip``, ``<folder>`` itself and the sibling
    ``<folder>/../clip-vit-large-patch14`` (the CLIPScore folder of the reward_models layout). Its text tower is
    dropped after loading; prompts are ignored.
    """

    name = "aesthetic"

    def __init__(self, path: PathLike, *, clip_path: Optional[PathLike] = None,
                 dtype: Union[str, torch.dtype] = "float32", batch_size: int = 16):
        from .openclip_convert import load_state_dict_file

        p = Path(path).expanduser()
        if p.is_file():
            weights, folder = p, p.parent
        else:
            folder = p
            found = [folder / f for f in AESTHETIC_FILES if (folder / f).is_file()]
            if not found:
                extra = "" if clip_path is not None else (
                    f" It also needs CLIP ViT-L/14 (config.json, model.safetensors, preprocessor_config.json of "
                    f"{CLIP_L14_URL}) in {folder / 'clip-vit-large-patch14'}{os.sep} or "
                    f"{folder.parent / 'clip-vit-large-patch14'}{os.sep}.")
                _not_found(self.name, folder, [" or ".join(AESTHETIC_FILES)], AESTHETIC_FILES[0], AESTHETIC_URL, extra)
            weights = found[0]
        if clip_path is not None:
            candidates = [_folder_of(clip_path)]
        else:
            candidates = [folder / "clip-vit-large-patch14", folder / "clip", folder,
                          folder.parent / "clip-vit-large-patch14"]
        groups = [CLIP_CONFIG, CLIP_WEIGHTS, PREPROCESSOR]
        clip_dir = next((c for c in candidates if not _missing(c, groups)), None)
        if clip_dir is None:
            first = next((c for c in candidates if c.is_dir() and (c / "config.json").is_file()), candidates[0])
            others = [str(c) for c in candidates if c != first]
            _not_found(self.name, first, _missing(first, groups),
                       "config.json, model.safetensors and preprocessor_config.json of CLIP ViT-L/14", CLIP_L14_URL,
                       f" (looked for the CLIP image encoder also in {', '.join(others)})" if others else "")
        self.head = _aesthetic_head(load_state_dict_file(weights), weights)
        model = _load_clip_model(self.name, clip_dir)
        width = int(model.config.projection_dim)
        if self.head[0].in_features != width:
            raise RewardError(f"reward 'aesthetic': {weights.name} expects {self.head[0].in_features}-d CLIP image "
                              f"embeddings but the CLIP model in {clip_dir} gives {width}-d; use CLIP ViT-L/14 "
                              f"({CLIP_L14_URL})")
        model.text_model = None  # the image tower is all the predictor needs
        model.text_projection = None
        super().__init__(model, None, ImageSpec.from_preprocessor_config(clip_dir / "preprocessor_config.json"),
                         dtype=dtype, batch_size=batch_size)
        self.weights_path, self.clip_path = weights, clip_dir

    def models(self):
        return [self.model, self.head]

    @torch.no_grad()
    def compute(self, images, prompts):
        return self.head(self.image_features(images)).squeeze(-1)


class HPSv2Reward(ClipRewardBase):
    """HPSv2 / HPSv2.1: ``cos(image, prompt)`` of the HPS-finetuned open_clip ViT-H-14, converted to transformers.

    ``path``: the checkpoint (HPS_v2.1_compressed.pt, HPS_v2_compressed.pt or a .safetensors of the same state
    dict; possibly wrapped in ``{"state_dict": ...}``) or its folder (v2.1 preferred). An ``open_clip_config.json``
    beside it is used for the head counts if present. The CLIP-ViT-H-14 processor files go into
    ``<folder>/processor/`` or ``<folder>`` itself (or pass ``processor_path``).
    """

    name = "hpsv2"

    def __init__(self, path: PathLike, *, processor_path: Optional[PathLike] = None,
                 dtype: Union[str, torch.dtype] = "float32", batch_size: int = 16):
        from .openclip_convert import load_state_dict_file, openclip_to_transformers, read_openclip_config

        p = Path(path).expanduser()
        if p.is_file():
            ckpt, folder = p, p.parent
        else:
            folder = p
            found = [folder / f for f in HPSV2_FILES if (folder / f).is_file()]
            if not found:
                extra = "" if processor_path is not None else (
                    f" The processor files ({', '.join(PROCESSOR_FILES)}) of {VIT_H_PROCESSOR_URL} go into "
                    f"{folder / PROCESSOR_SUBDIR}{os.sep}.")
                _not_found(self.name, folder, [" or ".join(HPSV2_FILES[:2])], "HPS_v2.1_compressed.pt", HPSV2_URL,
                           extra)
            ckpt = found[0]
        if processor_path is not None:
            candidates = [_folder_of(processor_path)]
        else:
            candidates = [folder / PROCESSOR_SUBDIR, folder]
        proc = _find_processor_dir(self.name, candidates)
        tokenizer = _load_tokenizer(self.name, proc)
        eos = tokenizer.eos_token_id
        model = openclip_to_transformers(
            load_state_dict_file(ckpt), config=read_openclip_config(folder / "open_clip_config.json"),
            bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)
        if len(tokenizer) > model.config.text_config.vocab_size:
            raise RewardError(f"reward 'hpsv2': the tokenizer in {proc} has {len(tokenizer)} tokens but the model "
                              f"only {model.config.text_config.vocab_size}; use the CLIP-ViT-H-14 processor files "
                              f"({VIT_H_PROCESSOR_URL})")
        spec = ImageSpec.from_preprocessor_config(proc / "preprocessor_config.json", mode="pad", clamp=False)
        super().__init__(model, tokenizer, spec, dtype=dtype, batch_size=batch_size)
        self.checkpoint = ckpt

    @torch.no_grad()
    def compute(self, images, prompts):
        return self.cosine(images, prompts)


__all__ = ["AestheticReward", "CLIPScoreReward", "ClipRewardBase", "HPSv2Reward", "ImageSpec", "PickScoreReward",
           "REWARD_MODELS", "RewardDependencyMissing", "RewardModelNotFound", "RewardModelSpec", "find_reward_model",
           "load_clip_reward", "preprocess_images", "projected_features", "require_transformers",
           "reward_model_layout"]
