"""Where the CLIP-family reward models live: the expected folders and files under a ``reward_models`` root, the
checks that name what is missing and where to get it (:class:`RewardModelNotFound`), and loading a reward by name."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, NoReturn, Optional, Sequence, Tuple, Union

from ..base import RewardError

PathLike = Union[str, os.PathLike]

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
