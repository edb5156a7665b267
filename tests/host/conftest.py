"""Host tests: a real ComfyUI server with this pack loaded, driven over HTTP + websocket on 127.0.0.1.

Run them with (the interpreter must have ComfyUI's requirements; pytest itself may be any Python):

    COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/comfy-venv/bin/python python -m pytest tests/host -x

Without COMFYUI_PATH every test that uses the `comfy` fixture is skipped. Optional environment:
- COMFYUI_DEVICE_ARGS: device flags for main.py (default "--cpu"; set it to "" to use a GPU).
- COMFYUI_EXTRA_ARGS: further main.py flags, appended as they are (split like a shell would).
- COMFYUI_START_TIMEOUT: seconds to wait for the server to answer GET /object_info (default 180).

The server never touches the ComfyUI checkout's own folders: --base-directory (models/, custom_nodes/),
--output/--input/--temp/--user-directory and the sqlite database all point into a pytest temp dir. The pack is
loaded through a `custom_nodes:` entry of an extra-model-paths YAML that names a temp dir holding a symlink
`flow-cps` -> the repository root (and `flow-cps-test-fixtures` -> tests/host/fixture_pack, test-only nodes); the
checkout's own custom_nodes/ folder is not loaded.
"""
from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HOST_DIR = Path(__file__).resolve().parent
REPO_ROOT = HOST_DIR.parent.parent
PACK_NAME = "flow-cps"
if str(HOST_DIR) not in sys.path:  # tests/ is no package: make comfy_client / workflow_convert importable
    sys.path.insert(0, str(HOST_DIR))

import model_files  # noqa: E402
from comfy_client import ComfyClient  # noqa: E402


def declared_model_files(session) -> list:
    """The generated model files (model_files.Generated) that the collected test modules name in MODEL_FILES, in
    the order the tests run."""
    found = []
    for item in session.items:
        for generated in getattr(getattr(item, "module", None), "MODEL_FILES", ()):
            if generated not in found:
                found.append(generated)
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n_lines: int = 80) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-n_lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen):
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the server runs in its own session/process group
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


@pytest.fixture(scope="session")
def comfy(tmp_path_factory, request):
    """A running ComfyUI server with the pack loaded; yields a ComfyClient. Stopped at the end of the session.
    Beside its start-up, one process builds the model files the session's test modules name (model_files.py)."""
    comfy_path = os.environ.get("COMFYUI_PATH", "")
    if not comfy_path:
        pytest.skip("host tests need ComfyUI: set COMFYUI_PATH=/path/to/ComfyUI "
                    "(and COMFYUI_PYTHON=the python of a venv with its requirements)")
    comfy_dir = Path(comfy_path).expanduser().resolve()
    if not (comfy_dir / "main.py").is_file():
        pytest.skip(f"COMFYUI_PATH={comfy_path} holds no main.py")
    python = os.environ.get("COMFYUI_PYTHON") or sys.executable

    root = tmp_path_factory.mktemp("comfy_host")
    packs = root / "packs"
    base = root / "base"
    dirs = {name: root / name for name in ("output", "input", "temp", "user")}
    for d in [packs, base / "custom_nodes", base / "models", *dirs.values()]:
        d.mkdir(parents=True, exist_ok=True)
    (packs / PACK_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
    (packs / "flow-cps-test-fixtures").symlink_to(HOST_DIR / "fixture_pack", target_is_directory=True)
    extra_yaml = root / "extra_model_paths.yaml"
    extra_yaml.write_text(f"flow_cps_host_tests:\n    custom_nodes: {packs}\n", encoding="utf-8")
    log_path = root / "comfyui.log"

    port = _free_port()
    device_args = shlex.split(os.environ.get("COMFYUI_DEVICE_ARGS", "--cpu"))
    cmd = [python, "main.py", *device_args,
           "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", str(base),
           "--extra-model-paths-config", str(extra_yaml),
           "--output-directory", str(dirs["output"]),
           "--input-directory", str(dirs["input"]),
           "--temp-directory", str(dirs["temp"]),  # ComfyUI uses <this>/temp and wipes it at start and exit
           "--user-directory", str(dirs["user"]),
           "--database-url", f"sqlite:///{root / 'comfyui.db'}",  # default would be <ComfyUI>/user/comfyui.db
           "--disable-auto-launch",
           "--disable-api-nodes",  # paid cloud nodes: not needed, and fewer imports at start-up
           # a preview per sampler step: newer ComfyUI throttles plain progress messages but never previews, so
           # tests can still see that a sampler's callback ran once per step
           "--preview-method", "latent2rgb",
           *shlex.split(os.environ.get("COMFYUI_EXTRA_ARGS", ""))]
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               DO_NOT_TRACK="1", HF_HUB_DISABLE_TELEMETRY="1")
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # see test_headless.environment: ComfyUI's bytecode, as it runs anyway

    log = open(log_path, "w", encoding="utf-8")
    log.write("$ cd " + shlex.quote(str(comfy_dir)) + " && " + shlex.join(cmd) + "\n")
    log.flush()
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=comfy_dir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    model_files.start_building(declared_model_files(request.session))
    client = ComfyClient(port, log_path=str(log_path), output_dir=str(dirs["output"]),
                         input_dir=str(dirs["input"]), temp_dir=str(dirs["temp"] / "temp"),
                         user_dir=str(dirs["user"]), models_dir=str(base / "models"), process=proc)
    try:
        timeout = float(os.environ.get("COMFYUI_START_TIMEOUT", "180"))
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with code {proc.returncode} during start-up; log {log_path}:\n"
                            f"{_tail(log_path)}", pytrace=False)
            if time.monotonic() - started > timeout:
                pytest.fail(f"ComfyUI did not answer GET /object_info within {timeout:.0f} s; log {log_path}:\n"
                            f"{_tail(log_path)}", pytrace=False)
            try:
                status, _ = client.request("GET", "/object_info", timeout=10)
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.25)
        client.startup_seconds = time.monotonic() - started
        client.connect_ws()
        yield client
    finally:
        client.close()
        _stop(proc)
        model_files.stop_building()
        log.close()
