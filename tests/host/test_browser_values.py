"""Browser check of typed widget values: headless Chromium opens the toy GRPO workflow in the ComfyUI frontend, a
user types small values into the trainer's FLOAT widgets (click on the widget, type into the value dialog, Enter),
and the prompt the browser queues (the POST /prompt request, intercepted and never run) holds exactly those values.

Needs Chromium and playwright like test_browser.py; skips without them.
"""
import json
from pathlib import Path

import pytest

from test_browser import _chromium, has_vue_nodes, set_vue_nodes

REPO = Path(__file__).resolve().parent.parent.parent
TRAINER = "FlowCPS_GRPOTrainLoRA"
TYPED = {"learning_rate": "3e-6", "beta": "0.0004", "clip_range": "5e-5", "eta": "0.7071"}


def sync_api_errors():
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    return PlaywrightTimeout


def _open_workflow(page, comfy, seed_control):
    # the frontend's first start (this setting unset) opens the template browser and sets it
    first_start = not comfy.get_json("/settings/Comfy.TutorialCompleted")
    page.goto(f"http://127.0.0.1:{comfy.port}/", wait_until="domcontentloaded")
    page.wait_for_function("window.app && window.app.graph && window.app.canvas", timeout=120_000)
    if has_vue_nodes(page):  # the setting lives on the server: start from the canvas, whatever ran before
        set_vue_nodes(page, False)
    workflow = json.loads((REPO / "workflows" / "GRPO LoRA training with a live reward chart (toy digits).json").read_text())
    values = next(n for n in workflow["nodes"] if n["type"] == TRAINER)["widgets_values"]
    values[values.index("fixed")] = seed_control  # the mode saved with the workflow
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    page.wait_for_function(f"window.app.graph._nodes.some(n => n.type === '{TRAINER}')", timeout=30_000)
    dialogs = page.locator("[role=dialog]:visible")
    try:  # a first start opens the template browser over the canvas (shortly after load): close it like a user
        dialogs.first.wait_for(state="visible", timeout=5_000 if first_start else 500)
    except sync_api_errors():
        pass
    for _ in range(5):
        if not dialogs.count():
            break
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    assert not dialogs.count(), "a dialog stays open over the canvas"


def _type_into_canvas_widget(page, name, text):
    """Scroll the canvas so the widget sits in the middle of the view, click its centre (not the arrows), type."""
    point = page.evaluate("""([type, name]) => {
        const canvas = window.app.canvas;
        const node = window.app.graph._nodes.find(n => n.type === type);
        const widget = node.widgets.find(w => w.name === name);
        const height = widget.computedHeight || window.LiteGraph?.NODE_WIDGET_HEIGHT || 20;
        const gx = node.pos[0] + node.size[0] / 2, gy = node.pos[1] + widget.y + height / 2;
        const rect = canvas.canvas.getBoundingClientRect();
        canvas.ds.scale = 1;
        canvas.ds.offset[0] = rect.width / 2 - gx;
        canvas.ds.offset[1] = rect.height / 2 - gy;
        canvas.setDirty(true, true);
        return [rect.left + rect.width / 2, rect.top + rect.height / 2];
    }""", [TRAINER, name])
    dialog = page.locator(".graphdialog input").last
    for attempt in range(3):  # a busy machine may draw late: the click must land where the widget is drawn now
        page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
        page.wait_for_timeout(300)
        page.mouse.click(*point)
        try:
            dialog.wait_for(state="visible", timeout=10_000)
            break
        except sync_api_errors():
            if attempt == 2:
                raise
    dialog.fill(text)
    dialog.press("Enter")
    page.wait_for_timeout(200)


def _prompt_interceptor(sent):
    """A Playwright route handler that records every queued prompt in ``sent`` and answers it without running it."""
    def intercept(route):
        request = route.request
        if request.method == "POST" and request.url.rstrip("/").endswith("/prompt"):
            sent.append(request.post_data_json)
            route.fulfill(status=200, content_type="application/json",
                          body=json.dumps({"prompt_id": "intercepted", "number": 0, "node_errors": {}}))
        else:
            route.continue_()
    return intercept


def test_typed_small_values_reach_the_queued_prompt_exactly(comfy):
    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (driver only)")
    sent = []
    intercept = _prompt_interceptor(sent)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        _open_workflow(page, comfy, "increment")
        page.route("**/prompt", intercept)
        for name, text in TYPED.items():
            _type_into_canvas_widget(page, name, text)
        saved_mode = page.evaluate(f"""() => window.app.graph._nodes.find(n => n.type === '{TRAINER}')
            .widgets.find(w => w.name === 'seed').linkedWidgets[0].value""")
        shown = page.evaluate(f"""() => Object.fromEntries(window.app.graph._nodes.find(n => n.type === '{TRAINER}')
            .widgets.filter(w => {json.dumps(list(TYPED))}.includes(w.name)).map(w => [w.name, w.value]))""")
        page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
        page.wait_for_timeout(500)
        # a trainer / calibration node added by hand starts with its seed control on 'fixed'
        controls = page.evaluate("""(types) => types.map(type => {
            const node = window.LiteGraph.createNode(type);
            window.app.graph.add(node);
            const seed = node.widgets.find(w => w.name === 'seed');
            return [seed.value, (seed.linkedWidgets || []).map(w => w.value)];
        })""", [TRAINER, "FlowCPS_CalibrateExploration"])
        browser.close()
    assert shown == {name: float(text) for name, text in TYPED.items()}, shown
    assert len(sent) == 1, sent
    trainer = next(node for node in sent[0]["prompt"].values() if node["class_type"] == TRAINER)
    for name, text in TYPED.items():
        assert trainer["inputs"][name] == float(text), (name, trainer["inputs"][name])
    assert trainer["inputs"]["seed"] == 0  # the workflow's seed; the trainer's seed control is 'fixed'
    assert controls == [[0, ["fixed"]], [0, ["fixed"]]], controls
    assert saved_mode == "increment"  # a loaded workflow keeps the mode it was saved with


def _type_into_vue_widget(page, name, text):
    """Vue nodes: the number widget is an <input> inside an element labelled with the widget's name; a click on it
    (no drag) focuses the input, Enter commits what was typed."""
    field = page.locator(f'[aria-label="{name}"]').first
    field.scroll_into_view_if_needed()
    field.click()
    box = field.locator("input").first
    box.fill(text)
    box.press("Enter")
    page.wait_for_timeout(200)


def test_typed_small_values_survive_in_vue_nodes_mode(comfy):
    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (driver only)")
    sent = []
    intercept = _prompt_interceptor(sent)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        _open_workflow(page, comfy, "fixed")
        if not has_vue_nodes(page):
            browser.close()
            pytest.skip("this frontend has no Vue nodes mode")
        set_vue_nodes(page, True)
        try:
            page.wait_for_selector('[aria-label="learning_rate"]', timeout=15_000)
            page.route("**/prompt", intercept)
            for name, text in TYPED.items():
                _type_into_vue_widget(page, name, text)
            shown = page.evaluate(f"""() => Object.fromEntries(window.app.graph._nodes.find(n => n.type === '{TRAINER}')
                .widgets.filter(w => {json.dumps(list(TYPED))}.includes(w.name)).map(w => [w.name, w.value]))""")
            page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
            page.wait_for_timeout(500)
        finally:
            set_vue_nodes(page, False)  # the setting is stored on the server: leave it as it was
            browser.close()
    assert shown == {name: float(text) for name, text in TYPED.items()}, shown
    assert len(sent) == 1, sent
    trainer = next(node for node in sent[0]["prompt"].values() if node["class_type"] == TRAINER)
    for name, text in TYPED.items():
        assert trainer["inputs"][name] == float(text), (name, trainer["inputs"][name])
