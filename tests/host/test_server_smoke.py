"""The pack loads into a real ComfyUI server (see conftest.py for how the server is started)."""
import os
import re
from pathlib import Path

from workflow_convert import ui_to_api

REPO_ROOT = Path(__file__).resolve().parents[2]
PACK_NAME = "flow-cps"  # the symlink name conftest.py gives the pack
PACK_MODULE = f"custom_nodes.{PACK_NAME}"


def pack_problems(log: str) -> list[str]:
    """Log lines that say the pack failed to load, or tracebacks that run through the pack's files."""
    problems = []
    for line in log.splitlines():
        names_pack = re.search(rf"[/\\]{re.escape(PACK_NAME)}([/\\\s:]|$)", line) or str(REPO_ROOT) in line
        if not names_pack:
            continue
        if ("IMPORT FAILED" in line or "Cannot import" in line or "Error while calling comfy_entrypoint" in line
                or "Skip " in line or line.lstrip().startswith("File ")):
            problems.append(line)
    return problems


def test_pack_problems_detector():
    log = ("   0.0 seconds (IMPORT FAILED): /tmp/x/packs/flow-cps\n"
           "IMPORT FAILED: nodes_audio.py\n"
           '  File "/tmp/x/packs/flow-cps/nodes/__init__.py", line 3, in <module>\n'
           "   0.1 seconds: /tmp/x/packs/flow-cps\n")
    assert pack_problems(log) == [log.splitlines()[0], log.splitlines()[2]]


def test_server_starts_with_pack_loaded(comfy):
    print(f"ComfyUI answered GET /object_info {comfy.startup_seconds:.1f} s after launch")
    log = comfy.log_text().split("Starting server")[0]  # start-up only: later tests may log tracebacks on purpose
    assert "Import times for custom nodes" in log, log[-3000:]
    import_lines = [l for l in log.splitlines() if "seconds" in l and l.rstrip().endswith(os.sep + PACK_NAME)]
    assert import_lines, f"the pack is not in the import-times list:\n{comfy.log_tail()}"
    assert not any("IMPORT FAILED" in l for l in import_lines), import_lines
    assert pack_problems(log) == [], "\n".join(pack_problems(log))


def test_object_info_has_stock_and_pack_nodes(comfy):
    info = comfy.object_info()
    assert "KSampler" in info
    assert "seed" in info["KSampler"]["input"]["required"]
    pack_nodes = sorted(name for name, spec in info.items() if spec.get("python_module") == PACK_MODULE)
    assert pack_nodes, f"no node in /object_info comes from {PACK_MODULE}"


def test_workflow_templates_endpoint(comfy):
    templates = comfy.workflow_templates()
    assert isinstance(templates, dict)
    shipped = sorted(p.stem for p in (REPO_ROOT / "workflows").glob("*.json"))
    if shipped:
        assert sorted(templates.get(PACK_NAME, [])) == shipped
    info = comfy.object_info()
    for name in shipped:  # each shipped example is served and names only nodes this server has
        api = ui_to_api(comfy.workflow_template(PACK_NAME, name), info)
        assert api, name


def _tiny_ui_workflow(mode_of_preview=0):
    """EmptyImage -> SaveImage, and EmptyImage -> PreviewImage, in UI format, with a Note."""
    return {
        "nodes": [
            {"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1, 2]}],
             "widgets_values": [32, 24, 1, 0xFF8000]},
            {"id": 2, "type": "SaveImage", "mode": 0,
             "inputs": [{"name": "images", "type": "IMAGE", "link": 1}], "outputs": [],
             "widgets_values": ["hosttest/smoke"]},
            {"id": 3, "type": "PreviewImage", "mode": mode_of_preview,
             "inputs": [{"name": "images", "type": "IMAGE", "link": 2}], "outputs": [], "widgets_values": []},
            {"id": 4, "type": "Note", "mode": 0, "inputs": [], "outputs": [], "widgets_values": ["hello"]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 1, 0, 3, 0, "IMAGE"]],
        "version": 0.4,
    }


def test_run_ui_workflow_and_read_images(comfy):
    api = ui_to_api(_tiny_ui_workflow(), comfy.object_info())
    assert set(api) == {"1", "2", "3"}
    assert api["1"]["inputs"] == {"width": 32, "height": 24, "batch_size": 1, "color": 0xFF8000}
    entry, messages = comfy.run(api, timeout=60)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert comfy.execution_error(messages) is None
    types = [m.get("type") for m in messages]
    assert "execution_start" in types and "executed" in types
    saved = comfy.output_images(entry, node_id="2")
    previewed = comfy.output_images(entry, node_id="3")
    assert len(saved) == 1 and len(previewed) == 1
    assert saved[0].shape == (24, 32, 3)
    assert tuple(saved[0][0, 0]) == (0xFF, 0x80, 0x00)
    assert comfy.image_paths(entry, "2")[0].startswith(comfy.output_dir)


def test_invalid_prompt_is_rejected_with_details(comfy):
    import pytest
    from comfy_client import PromptRejected

    api = ui_to_api(_tiny_ui_workflow(), comfy.object_info())
    api["1"]["inputs"]["width"] = -5
    with pytest.raises(PromptRejected) as err:
        comfy.queue(api)
    assert err.value.status == 400
    assert "1" in err.value.body["node_errors"]


def test_execution_error_is_reported(comfy):
    api = ui_to_api(_tiny_ui_workflow(), comfy.object_info())
    api["2"]["inputs"]["filename_prefix"] = "../../outside"  # SaveImage refuses this at run time
    entry, messages = comfy.run(api, timeout=60)
    assert entry["status"]["status_str"] == "error"
    error = comfy.execution_error(messages)
    assert error is not None and error["node_id"] == "2" and error["node_type"] == "SaveImage"
    assert "outside" in error["exception_message"]
