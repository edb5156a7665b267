// Live reward chart inside the "GRPO Train LoRA (flow)" node, fed by the server's flow_cps.grpo websocket events.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { CHART_EVENT, applyEvent, caption, layoutChart } from "./chart_model.js";

const NODE_TYPE = "FlowCPS_GRPOTrainLoRA";
const HEIGHT = 190;

function draw(canvas, state) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 300;
  canvas.width = width * ratio;
  canvas.height = HEIGHT * ratio;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.fillStyle = "#1b1b1b";
  ctx.fillRect(0, 0, width, HEIGHT);
  ctx.font = "11px sans-serif";
  ctx.fillStyle = "#ddd";
  ctx.fillText(caption(state), 8, 14);
  const geometry = layoutChart(state, width, HEIGHT);
  if (geometry.empty) return;
  ctx.strokeStyle = "#333";
  ctx.fillStyle = "#999";
  for (const tick of geometry.yTicks) {
    ctx.beginPath();
    ctx.moveTo(44, tick.y);
    ctx.lineTo(width - 10, tick.y);
    ctx.stroke();
    ctx.fillText(tick.value.toPrecision(3), 4, tick.y + 4);
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
}

app.registerExtension({
  name: "flow_cps.grpo_chart",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = created?.apply(this, arguments);
      const canvas = document.createElement("canvas");
      canvas.style.width = "100%";
      canvas.style.height = `${HEIGHT}px`;
      this.flowCpsChart = { canvas, state: applyEvent(null, { history: [] }) };
      this.addDOMWidget("reward_chart", "flow_cps_chart", canvas, {
        serialize: false,
        getMinHeight: () => HEIGHT,
        getMaxHeight: () => HEIGHT,
      });
      requestAnimationFrame(() => draw(canvas, this.flowCpsChart.state));
      return result;
    };
    const executed = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      executed?.apply(this, arguments);
      const chart = output?.flow_cps_chart?.[0];
      if (chart && this.flowCpsChart) {
        this.flowCpsChart.state = applyEvent(this.flowCpsChart.state, chart);
        draw(this.flowCpsChart.canvas, this.flowCpsChart.state);
      }
    };
  },
  async setup() {
    api.addEventListener(CHART_EVENT, ({ detail }) => {
      const node = app.graph?.getNodeById(Number(detail.node)) ?? app.graph?.getNodeById(detail.node);
      if (!node?.flowCpsChart) return;
      node.flowCpsChart.state = applyEvent(node.flowCpsChart.state, detail);
      draw(node.flowCpsChart.canvas, node.flowCpsChart.state);
      node.setDirtyCanvas?.(true, false);
    });
  },
});
