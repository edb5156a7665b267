"""Generated model files for the stock loaders, built once per host and kept in a cache across tests and runs.

A file is made by a generator script in the host's own Python (tiny_models.py for the architectures, or a script
string of a test) into ``<cache>/<host key>/<name>-<hash of the script>/``, then linked into the server's models
folder. The host key is the ComfyUI version plus a hash of the host files that decide what a loader builds, so
another host or another version of a generator gets its own files; a finished entry is never rewritten.

Every generator a test module names in its ``MODEL_FILES`` is built at the start of the session, in one process
beside the starting server (conftest.py calls :func:`start_building`): ComfyUI's import, most of a generator's
time, is paid once instead of once a file. A test that needs a file waits for that process, or builds the file
itself when the session started without it.

Environment: FLOW_CPS_HOST_MODEL_CACHE = the cache folder (default ~/.cache/flow-cps/host-models). Delete it to
start over.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HOST_DIR = Path(__file__).resolve().parent
ARCH_GENERATOR = (HOST_DIR / "tiny_models.py", HOST_DIR / "fixture_pack" / "tiny_architectures.py")
# what decides the model a loader builds from a file, and the classes it builds
HOST_FILES = ("comfyui_version.py", "comfy/model_detection.py", "comfy/supported_models.py", "comfy/sd.py",
              "comfy/model_base.py")
# runs each generator of a JSON job list in this one process, as ``python <script> ARGS`` would (its stdout into
# the job's file); ComfyUI is imported by the first and reused by the others. Each file a generator wrote that is
# identical to one of the same name in another cache entry (the same random VAE serves several architectures) is
# then hard-linked to it, so it is stored once, also while the other generators run.
BATCH_RUNNER = r"""
import contextlib, gc, glob, io, json, os, runpy, sys, traceback

def share_identical_files(folder, cache):
    for path in glob.glob(os.path.join(folder, "*", "*")):
        kind, name = path.split(os.sep)[-2:]
        for twin in glob.glob(os.path.join(cache, "*", kind, name)):
            if not twin.startswith(folder + os.sep) and os.path.getsize(twin) == os.path.getsize(path) \
                    and open(twin, "rb").read() == open(path, "rb").read():
                os.unlink(path)
                os.link(twin, path)
                break

failed = 0
for job in json.load(open(sys.argv[1])):
    sys.argv = [job["path"] or "-c", *job["argv"]]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            if job["path"]:
                runpy.run_path(job["path"], run_name="__main__")
            else:
                exec(compile(job["code"], job["name"], "exec"), {"__name__": "__main__"})
        share_identical_files(job["folder"], os.path.dirname(job["folder"]))
        open(job["stdout"] + ".tmp", "w").write(out.getvalue())
        os.replace(job["stdout"] + ".tmp", job["stdout"])  # its presence says the generator is done
    except BaseException:
        failed += 1
        print("generator", job["name"], "failed:", file=sys.stderr)
        traceback.print_exc()
    gc.collect()
sys.exit(1 if failed else 0)
"""

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


@dataclass(frozen=True)
class Generated:
    """Model files one generator writes. ``path``: a script file, run with ARGS = ``args`` + the output folder;
    else ``code``, run as ``python -c`` with ARGS = the path of each of ``files`` ((file name, models subfolder)
    pairs), then ``args``. What the generator prints goes to ``stdout.txt`` of the entry."""
    name: str
    path: str = ""
    code: str = ""
    files: tuple = ()
    args: tuple = ()

    def folder(self) -> Path:
        source = b"".join(p.read_bytes() for p in ARCH_GENERATOR) if self.path else self.code.encode()
        key = _hash(source, "\0".join(self.args).encode(), repr(self.files).encode())
        return cache_root() / host_key(os.environ["COMFYUI_PATH"]) / f"{self.name}-{key}"

    def job(self, partial: Path) -> dict:
        paths = []
        for file_name, kind in self.files:
            (partial / kind).mkdir(exist_ok=True)
            paths.append(str(partial / kind / file_name))
        argv = [*self.args, str(partial)] if self.path else [*paths, *self.args]
        return {"name": self.name, "path": self.path, "code": self.code, "argv": argv, "folder": str(partial),
                "stdout": str(partial / "stdout.txt")}


def arch_files(arch: str) -> Generated:
    """tiny_models.py's random checkpoint of ``arch`` and its VAE."""
    return Generated(name=f"arch_{arch}", path=str(ARCH_GENERATOR[0]), args=(arch,))


class _Builder:
    """One host process building generators into partial folders; :meth:`finish` waits and moves each finished
    one into place (a failed or interrupted one leaves nothing in the cache)."""

    def __init__(self, generated: list):
        self.partials = {}
        jobs = []
        for item in generated:
            final = item.folder()
            if final.is_dir() or item in self.partials:
                continue
            final.parent.mkdir(parents=True, exist_ok=True)
            partial = final.with_name(f"{final.name}.partial-{os.getpid()}")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            self.partials[item] = partial
            jobs.append(item.job(partial))
        self.process = None
        if jobs:
            handle, self.job_file = tempfile.mkstemp(suffix=".json", prefix="flow_cps_generators_")
            with os.fdopen(handle, "w") as out:
                json.dump(jobs, out)
            self.log = tempfile.TemporaryFile(mode="w+")
            self.process = subprocess.Popen([os.environ.get("COMFYUI_PYTHON") or "python", "-c", BATCH_RUNNER,
                                             self.job_file], cwd=os.environ["COMFYUI_PATH"], stdout=self.log,
                                            stderr=subprocess.STDOUT)

    def __contains__(self, item) -> bool:
        return item in self.partials

    def finish(self, item=None, timeout=1800) -> str:
        """Wait until ``item`` is built (every item: None), and move what is built into place. Returns the output
        of the process (the tracebacks of failed generators) once it has ended."""
        deadline = time.monotonic() + timeout
        while self.process is not None and self.process.poll() is None:
            if item is not None and (self.partials[item] / "stdout.txt").is_file():
                break  # written once that generator has returned
            if time.monotonic() > deadline:
                raise TimeoutError(f"the model generators did not finish within {timeout} s")
            time.sleep(0.2)
        ended = self.process is None or self.process.poll() is not None
        for one, partial in self.partials.items():
            final = one.folder()
            if final.is_dir() or not (ended or one == item):
                continue
            try:
                if (partial / "stdout.txt").is_file():
                    os.rename(partial, final)
            except OSError:
                if not final.is_dir():  # another run finished it first otherwise
                    raise
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        if not ended or self.process is None:
            return ""
        self.process = None
        os.unlink(self.job_file)
        self.log.seek(0)
        output = self.log.read()
        self.log.close()
        return output


_started = []


def start_building(generated: list) -> None:
    """Build every missing one of ``generated`` in the background (conftest.py, at the start of the session)."""
    _started.append(_Builder(generated))


def stop_building() -> None:
    """End of the session: a build still running is stopped, and its unfinished folders removed."""
    while _started:
        builder = _started.pop()
        if builder.process is not None and builder.process.poll() is None:
            builder.process.kill()
        builder.finish()


def cached_folder(item: Generated) -> Path:
    """The cache folder of ``item`` on this host, built first where it is missing."""
    for builder in _started:
        if item in builder:
            builder.finish(item)
    final = item.folder()
    if not final.is_dir():
        output = _Builder([item]).finish()
        assert final.is_dir(), f"the generator {item.name} failed:\n{output[-4000:]}"
    return final


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
    folder = cached_folder(arch_files(arch))
    link_into(comfy.models_dir, folder)
    return json.loads((folder / "stdout.txt").read_text().strip().splitlines()[-1])


def script_files(comfy, item: Generated) -> None:
    """The files of a generator script (``item.code``), cached, then linked into the server's models folder."""
    link_into(comfy.models_dir, cached_folder(item))
