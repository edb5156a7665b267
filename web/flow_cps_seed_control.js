// Seeds of flow-cps nodes start on the control mode the node asks for (control_after_generate: "fixed", so the same
// seed gives the same run). Frontends up to 1.2x read that option as a boolean and start every seed control on
// "randomize"; newer ones honour the mode and nothing changes here. A loaded workflow keeps its saved mode (the
// values of a workflow are applied after the node is created).
import { app } from "../../scripts/app.js";

const MODES = ["fixed", "increment", "decrement", "randomize"];

function wantedModes(nodeData) {
  const modes = [];
  for (const section of ["required", "optional"]) {
    for (const [name, spec] of Object.entries(nodeData.input?.[section] ?? {})) {
      const mode = Array.isArray(spec) ? spec[1]?.control_after_generate : undefined;
      if (typeof mode === "string" && MODES.includes(mode)) modes.push([name, mode]);
    }
  }
  return modes;
}

app.registerExtension({
  name: "flow_cps.seed_control",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name?.startsWith("FlowCPS_")) return;
    const modes = wantedModes(nodeData);
    if (!modes.length) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = created?.apply(this, arguments);
      for (const [name, mode] of modes) {
        const control = this.widgets?.find((w) => w.name === name)?.linkedWidgets?.[0];
        if (control && control.value !== mode && control.options?.values?.includes(mode)) control.value = mode;
      }
      return result;
    };
  },
});
