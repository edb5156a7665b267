"""Generated model files for the stock loaders, built once per host and kept in a cache across tests and runs.

A file is made by a script in the host's own Python (tiny_models.py for the architectures, or a script string of a
test) into ``<cache>/<host key>/<name>-<hash of the script>/``, then linked into the server's models folder. The
host key is the ComfyUI version plus a hash of the host files that decide what a loader builds, so another host or
another version of a generator gets its own files; a finished entry is never rewritten.

Environment: FLOW_CPS_HOST_MODEL_CACHE = the cache folder (default ~/.cache/flow-cps/host-models). Delete it to
start over.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

HOST_DIR = Path(__file__).resolve().parent
ARCH_GENERATOR = (HOST_DIR / "tiny_models.py", HOST_DIR / "fixture_pack" / "tiny_architectures.py")
# what decides the model a loader builds from a file, and the classes it builds
HOST_FILES = ("comfyui_version.py", "comfy/model_detection.py", "comfy/supported_models.py", "comfy/sd.py",
              "comfy/model_base.py")


def cache_root() -> Path:
    return Path(os.environ.get("FLOW_CPS_HOST_MODEL_CACHE") or Path.home() / ".cache" / "flow-cps" / "host-models")


def host_key(comfy_path: str) -> str:
    """``comfyui-<version>-<hash>`` for the ComfyUI checkout at ``comfy_path``."""
    version = "unknown"
    digest = hashlib.sha256()
    for name in HOST_FILES:
        path = Path(comfy_path) / name
        if path.is_file():
            text = path.read_bytes()
            digest.update(name.encode() + b"\0" + text)
            if name == "comfyui_version.py":
                version = text.decode().split("__version__ =")[-1].strip().strip("\"'") or version
    return f"comfyui-{version}-{digest.hexdigest()[:12]}"


def _hash(*texts: bytes) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text + b"\0")
    return digest.hexdigest()[:12]


def cached_folder(name: str, generator: bytes, build) -> Path:
    """The cache folder for ``name`` made by ``generator`` (its source) on this host; ``build(folder)`` fills a new
    one. Built in a temporary folder and renamed, so a failed or interrupted build leaves nothing behind."""
    final = cache_root() / host_key(os.environ["COMFYUI_PATH"]) / f"{name}-{_hash(generator)}"
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f"{final.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        build(partial)
        share_identical_files(partial, final.parent)
        os.rename(partial, final)
    except OSError:
        if not final.is_dir():  # another run finished it first otherwise
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return final


def share_identical_files(folder: Path, cache: Path) -> None:
    """Hard-link each file of ``folder`` to an identical file of the same name in another entry of ``cache`` (the
    same random VAE serves several architectures), so it is stored once."""
    for path in folder.glob("*/*"):
        for twin in cache.glob(f"*/{path.parent.name}/{path.name}"):
            if twin.parent.parent != folder and twin.stat().st_size == path.stat().st_size and twin.read_bytes() == path.read_bytes():
                path.unlink()
                os.link(twin, path)
                break


def host_python(args, timeout=900) -> str:
    """Run the host's Python in the ComfyUI folder; returns its stdout."""
    done = subprocess.run([os.environ.get("COMFYUI_PYTHON") or "python", *args], cwd=os.environ["COMFYUI_PATH"],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def link_into(models_dir: str, folder: Path) -> None:
    """Symlink every file of ``folder/<kind>/`` into ``models_dir/<kind>/`` (no copy)."""
    for source in folder.glob("*/*"):
        target = Path(models_dir) / source.parent.name / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(source)


def stock_model_files(comfy, arch: str) -> dict:
    """The random checkpoint of ``arch`` and its VAE (tiny_models.py), linked into the server's models folder;
    returns tiny_models.py's description (file names, conditioning widths, ...)."""
    generator = b"".join(path.read_bytes() for path in ARCH_GENERATOR)

    def build(folder):
        out = host_python([str(ARCH_GENERATOR[0]), arch, str(folder)])
        (folder / "info.json").write_text(out.strip().splitlines()[-1])

    folder = cached_folder(f"arch_{arch}", generator, build)
    link_into(comfy.models_dir, folder)
    return json.loads((folder / "info.json").read_text())


def script_files(comfy, name: str, script: str, files: dict, *args: str) -> None:
    """Files a ``script`` (Python source, run as ``-c`` in the host's Python) writes: ``files`` maps each to its
    models subfolder, e.g. ``{"random_clip_l.safetensors": "text_encoders"}``; the script gets their paths as its
    first arguments (in that order), then ``args``. Cached, then linked into the server's models folder."""
    def build(folder):
        paths = []
        for file_name, kind in files.items():
            (folder / kind).mkdir(exist_ok=True)
            paths.append(str(folder / kind / file_name))
        host_python(["-c", script, *paths, *args], timeout=300)

    link_into(comfy.models_dir, cached_folder(name, (script + "\0".join(args)).encode(), build))
