// flow-cps frontend: the live reward chart inside the "GRPO Train LoRA (flow)" node (fed by the server's
// flow_cps.grpo websocket events) and a read-only text box on every flow-cps output node that returns text
// (scores, noise estimates, saved paths, the calibrated η schedule, what a stopped run saved).
// Chart and text are kept in node.properties, so they survive a page reload and a workflow-tab switch.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import {
  CHART_EVENT, CHART_PROPERTY, TEXT_PROPERTY, applyEvent, caption, layoutChart, monitorCaption, outputText,
  restoreState, serializeState, sharedSpan, stoppedText,
} from "./chart_model.js";

const TRAINER = "FlowCPS_GRPOTrainLoRA";
const HEIGHT = 190;
const TEXT_HEIGHT = 84;
// flow-cps nodes that return text but are no output nodes (their text still reaches the browser)
const TEXT_NODES = new Set(["FlowCPS_CalibrateExploration"]);

function chartNodes() {
  return (app.graph?._nodes ?? []).filter((node) => node.flowCpsChart);
}

// Trainer nodes of the same reward are drawn on one y-range (e.g. CPS vs Flow-SDE side by side).
function peerSpan(node) {
  const reward = node.flowCpsChart.state.reward;
  if (!reward) return null;
  const peers = chartNodes().filter((other) => other.flowCpsChart.state.reward === reward);
  return peers.length > 1 ? sharedSpan(peers.map((other) => other.flowCpsChart.state)) : null;
}

function draw(node) {
  const { canvas, state } = node.flowCpsChart;
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 300;
  canvas.width = width * ratio;
  canvas.height = HEIGHT * ratio;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.fillStyle = "#1b1b1b";
  ctx.fillRect(0, 0, width, HEIGHT);
  ctx.font = "11px sans-serif";
  ctx.fillStyle = state.stopped ? "#ffb347" : "#ddd";
  ctx.fillText(caption(state), 8, 14);
  const geometry = layoutChart(state, width, HEIGHT, undefined, peerSpan(node));
  node.flowCpsChart.geometry = geometry;
  canvas.dataset.points = String(state.points.length);
  canvas.dataset.yRange = geometry.empty ? "" : geometry.yRange.join(",");
  canvas.dataset.monitorPoints = String(state.monitor?.points.length ?? 0);
  canvas.dataset.monitorRange = geometry.monitor?.range ? geometry.monitor.range.join(",") : "";
  canvas.dataset.monitorCaption = monitorCaption(state);
  if (geometry.empty) return;
  ctx.strokeStyle = "#333";
  ctx.fillStyle = "#999";
  for (const tick of geometry.yTicks) {
    ctx.beginPath();
    ctx.moveTo(44, tick.y);
    ctx.lineTo(width - 10, tick.y);
    ctx.stroke();
    ctx.fillText(Number(tick.value.toPrecision(3)).toString(), 4, tick.y + 4);
  }
  ctx.fillStyle = "rgba(80, 160, 255, 0.25)";
  ctx.beginPath();
  geometry.band.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  ctx.closePath();
  ctx.fill();
  ctx.strokeStyle = "#50a0ff";
  ctx.lineWidth = 2;
  ctx.beginPath();
  geometry.line.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  ctx.stroke();
  if (geometry.monitor) drawMonitor(ctx, geometry.monitor, state, width);
}

// The drift monitor: held-out reward as dots on the reward axis (dashed: the base model's), the monitor's measure
// as an orange line on its own right-hand axis (dashed: the base model's), and a caption line at the bottom.
function drawMonitor(ctx, monitor, state, width) {
  const dashed = (y, colour) => {
    ctx.save();
    ctx.setLineDash([4, 4]);
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(44, y);
    ctx.lineTo(width - 48, y);
    ctx.stroke();
    ctx.restore();
  };
  if (monitor.heldOutBaseline !== null) dashed(monitor.heldOutBaseline, "#9fd0ff");
  ctx.fillStyle = "#e8f4ff";
  for (const [x, y] of monitor.heldOut) {
    ctx.beginPath();
    ctx.arc(x, y, 2.5, 0, 2 * Math.PI);
    ctx.fill();
  }
  if (monitor.baseline !== null) dashed(monitor.baseline, "#ffb347");
  ctx.strokeStyle = "#ff9f1c";
  ctx.lineWidth = 2;
  ctx.beginPath();
  monitor.line.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  ctx.stroke();
  ctx.fillStyle = "#ffb347";
  for (const tick of monitor.ticks) ctx.fillText(Number(tick.value.toPrecision(3)).toString(), width - 44, tick.y + 4);
  ctx.fillText(monitorCaption(state), 8, HEIGHT - 6);
}

// Record a change of node.properties in the workflow (so the workflow persistence and tab switches keep it).
// The change tracker skips a capture while it is busy (e.g. loading a graph), so try again a little later too.
function captureNow() {
  const tracker = app.extensionManager?.workflow?.activeWorkflow?.changeTracker;
  try {
    if (tracker?.captureCanvasState) tracker.captureCanvasState();
    else tracker?.checkState?.();
  } catch (error) {
    console.warn("flow_cps: could not record the chart in the workflow", error);
  }
}

let retry = null;
function noteChange() {
  captureNow();
  clearTimeout(retry);
  retry = setTimeout(captureNow, 700);
}

function setText(node, text, { persist = true } = {}) {
  if (!node.flowCpsText) return;
  node.flowCpsText.value = text ?? "";
  if (persist) {
    node.properties ??= {};
    node.properties[TEXT_PROPERTY] = text ?? "";
  }
}

function updateChart(node, detail, { persist = true } = {}) {
  node.flowCpsChart.state = applyEvent(node.flowCpsChart.state, detail);
  const state = node.flowCpsChart.state;
  if (state.stopped) setText(node, stoppedText(state), { persist });
  if (persist) {
    node.properties ??= {};
    node.properties[CHART_PROPERTY] = serializeState(state);
  }
  for (const other of chartNodes()) {
    if (other === node || (state.reward && other.flowCpsChart.state.reward === state.reward)) draw(other);
  }
  node.setDirtyCanvas?.(true, false);
}

function addTextWidget(node) {
  const area = document.createElement("textarea");
  area.readOnly = true;
  area.className = "flow-cps-text";
  area.placeholder = "(the result appears here after a run)";
  Object.assign(area.style, {
    width: "100%", height: `${TEXT_HEIGHT}px`, boxSizing: "border-box", resize: "none", fontFamily: "monospace",
    fontSize: "11px", background: "#1b1b1b", color: "#ddd", border: "1px solid #333", whiteSpace: "pre",
  });
  node.flowCpsText = area;
  node.addDOMWidget("flow_cps_text", "flow_cps_text", area, {
    serialize: false,
    getValue: () => area.value,
    setValue: () => {},
    getMinHeight: () => TEXT_HEIGHT,
    getMaxHeight: () => TEXT_HEIGHT,
  });
}

function addChartWidget(node) {
  const canvas = document.createElement("canvas");
  canvas.className = "flow-cps-chart";
  canvas.style.width = "100%";
  canvas.style.height = `${HEIGHT}px`;
  node.flowCpsChart = { canvas, state: applyEvent(null, { history: [] }) };
  node.addDOMWidget("reward_chart", "flow_cps_chart", canvas, {
    serialize: false,
    getMinHeight: () => HEIGHT,
    getMaxHeight: () => HEIGHT,
  });
  requestAnimationFrame(() => node.flowCpsChart && draw(node));
}

app.registerExtension({
  name: "flow_cps.grpo_chart",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const isTrainer = nodeData.name === TRAINER;
    const ours = String(nodeData.category ?? "").startsWith("flow-cps");
    if (!ours) return;
    const showsText = isTrainer || nodeData.output_node || TEXT_NODES.has(nodeData.name);
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = created?.apply(this, arguments);
      if (isTrainer) addChartWidget(this);
      if (showsText) addTextWidget(this);
      return result;
    };
    // a loaded workflow (reload, tab switch, opened file) brings the chart and the text back from its properties
    const configure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function (info) {
      const result = configure?.apply(this, arguments);
      const props = info?.properties ?? this.properties ?? {};
      if (this.flowCpsChart && props[CHART_PROPERTY]) {
        this.flowCpsChart.state = restoreState(props[CHART_PROPERTY]);
        requestAnimationFrame(() => this.flowCpsChart && draw(this));
      }
      if (typeof props[TEXT_PROPERTY] === "string") setText(this, props[TEXT_PROPERTY], { persist: false });
      else if (this.flowCpsChart?.state.stopped) setText(this, stoppedText(this.flowCpsChart.state), { persist: false });
      return result;
    };
    const executed = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      executed?.apply(this, arguments);
      const chart = output?.flow_cps_chart?.[0];
      if (chart && this.flowCpsChart) updateChart(this, { ...chart, stopped: null });
      const text = outputText(output);
      if (text !== null) {
        if (!this.flowCpsText) addTextWidget(this); // a flow-cps node not known to return text
        setText(this, text);
      }
      noteChange();
    };
  },
  async setup() {
    api.addEventListener(CHART_EVENT, ({ detail }) => {
      const node = app.graph?.getNodeById(Number(detail.node)) ?? app.graph?.getNodeById(detail.node);
      if (!node?.flowCpsChart) return;
      updateChart(node, detail);
      noteChange();
    });
  },
});
