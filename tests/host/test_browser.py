"""Browser check: headless Chromium loads the ComfyUI frontend with the pack, opens the toy GRPO workflow, queues it
and the trainer node's chart fills from the websocket events. Saves a screenshot (for the README when
FLOW_CPS_SCREENSHOT_DIR is set).

Needs Chromium (Debian: `apt-get install chromium`; or CHROMIUM=/path) and `pip install playwright` (only its
driver is used; no browser download). Skips without them.
"""
import json
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent


def _chromium():
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("no Chromium: apt-get install chromium (or set CHROMIUM=/path/to/chrome)")
    return path


def test_trainer_node_chart_fills_in_the_browser(comfy, tmp_path):
    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (driver only)")
    workflow = json.loads((REPO / "workflows" / "flow_cps_grpo_toy.json").read_text())
    iterations = next(n for n in workflow["nodes"] if n["type"] == "FlowCPS_GRPOTrainLoRA")["widgets_values"][11]
    errors = []
    out_dir = Path(os.environ.get("FLOW_CPS_SCREENSHOT_DIR") or tmp_path)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1700, "height": 1100})
        page.on("pageerror", lambda error: errors.append(str(error))
                if "flow_cps" in (error.stack or "") or "flow-cps" in (error.stack or "") else None)
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "flow_cps" in msg.text
                else None)
        page.goto(f"http://127.0.0.1:{comfy.port}/", wait_until="domcontentloaded")
        page.wait_for_function("window.app && window.app.graph && window.app.extensionManager", timeout=120_000)
        page.wait_for_function("window.app.extensions.some(e => e.name === 'flow_cps.grpo_chart')")
        # open the example the way a user does: Templates → Custom Nodes → flow-cps → the card
        page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        page.get_by_text("flow-cps", exact=True).first.click()
        page.get_by_text("flow_cps_grpo_toy", exact=True).first.click()
        page.wait_for_function("window.app.graph._nodes.some(n => n.type === 'FlowCPS_GRPOTrainLoRA')",
                               timeout=30_000)
        loaded = page.evaluate("() => window.app.graph._nodes.map(n => n.type).sort()")
        assert loaded == sorted(n["type"] for n in workflow["nodes"])
        has_chart = page.evaluate("""() => {
            const node = window.app.graph._nodes.find(n => n.type === 'FlowCPS_GRPOTrainLoRA');
            return !!(node && node.flowCpsChart && node.widgets.some(w => w.name === 'reward_chart'));
        }""")
        assert has_chart, "the chart widget was not added to the trainer node"
        page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
        page.wait_for_function(f"""() => {{
            const node = window.app.graph._nodes.find(n => n.type === 'FlowCPS_GRPOTrainLoRA');
            return node.flowCpsChart.state.points.length >= {iterations};
        }}""", timeout=300_000)
        points = page.evaluate("""() => window.app.graph._nodes.find(n => n.type === 'FlowCPS_GRPOTrainLoRA')
            .flowCpsChart.state.points.map(p => p.mean)""")
        page.wait_for_timeout(4000)  # the run finishes (LoRA saved, trained model sampled) and the canvas redraws
        page.screenshot(path=str(out_dir / "grpo_trainer_ui.png"))
        browser.close()
    assert len(points) == iterations
    assert sum(points[-5:]) / 5 > sum(points[:5]) / 5
    assert not errors, errors
