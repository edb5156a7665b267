import assert from "node:assert/strict";
import test from "node:test";

import {
  applyEvent, caption, layoutChart, monitorCaption, niceTicks, outputText, restoreState, serializeState, sharedSpan,
  stoppedText,
} from "../../web/chart_model.js";

test("niceTicks covers the range with 1/2/5 steps", () => {
  assert.deepEqual(niceTicks(0.9, 1.0), [0.9, 0.95, 1]);
  const ticks = niceTicks(0.13, 0.87);
  assert.ok(ticks[0] <= 0.13 && ticks[ticks.length - 1] >= 0.87);
  const step = ticks[1] - ticks[0];
  assert.ok([0.1, 0.2, 0.5].some((s) => Math.abs(s - step) < 1e-9), `step ${step}`);
  assert.deepEqual(niceTicks(0, 10, 6), [0, 2, 4, 6, 8, 10]);
  const flat = niceTicks(2, 2);
  assert.ok(flat[0] < 2 && flat[flat.length - 1] > 2);
  assert.deepEqual(niceTicks(NaN, 1), []);
  // ticks crossing 0 land on it exactly (no 3.5e-18 label)
  assert.deepEqual(niceTicks(-0.0255, 0.0), [-0.03, -0.02, -0.01, 0]);
  assert.ok(niceTicks(-0.07, 0.03).includes(0));
});

test("applyEvent keeps the latest full history and drops malformed points", () => {
  const state = applyEvent(null, { run: "a", iterations: 4, history: [[0, 0.5, 0.1], [1, 0.6, 0.1], [2, "x", 0]] });
  assert.equal(state.points.length, 2);
  assert.equal(state.iterations, 4);
  const next = applyEvent(state, { history: [[0, 0.5, 0.1]] });
  assert.equal(next.run, "a");
  assert.equal(next.points.length, 1);
});

test("layoutChart maps iterations to x and rewards to y inside the padding", () => {
  const state = applyEvent(null, { iterations: 3, history: [[0, 0.2, 0], [1, 0.5, 0.1], [2, 0.8, 0]] });
  const g = layoutChart(state, 200, 100, { left: 10, right: 10, top: 10, bottom: 10 });
  assert.equal(g.line.length, 3);
  assert.equal(g.line[0][0], 10);
  assert.equal(g.line[2][0], 190);
  assert.ok(g.line[2][1] < g.line[0][1], "a higher reward is drawn higher");
  const lo = g.yTicks[0];
  const hi = g.yTicks[g.yTicks.length - 1];
  assert.equal(lo.y, 90);
  assert.equal(hi.y, 10);
  // the mean sits halfway between its ±std band edges
  const mid = g.line[1][1];
  assert.ok(Math.abs((g.band[1][1] + g.band[4][1]) / 2 - mid) < 1e-9);
  assert.equal(g.band.length, 6);
});

test("empty state and caption", () => {
  assert.equal(layoutChart(applyEvent(null, { history: [] }), 100, 100).empty, true);
  assert.match(caption(applyEvent(null, { iterations: 5, history: [[1, 0.25, 0.05]] })), /iteration 2\/5 {2}reward 0\.2500 ± 0\.0500/);
});

test("a known reward range bounds the y-axis (a probability never shows above 1 or below 0)", () => {
  const state = applyEvent(null, { iterations: 3, value_range: [0, 1],
                                   history: [[0, 0.9, 0.2], [1, 0.95, 0.1], [2, 0.05, 0.2]] });
  assert.deepEqual(state.range, [0, 1]);
  const g = layoutChart(state, 200, 100, { left: 10, right: 10, top: 10, bottom: 10 });
  assert.ok(g.yRange[0] >= 0 && g.yRange[1] <= 1, `y-range ${g.yRange}`);
  assert.deepEqual(g.yRange, [0, 1]);
  for (const [, y] of [...g.line, ...g.band]) assert.ok(y >= 10 - 1e-9 && y <= 90 + 1e-9, `y ${y} outside the plot`);
  for (const tick of g.yTicks) assert.ok(tick.value >= 0 && tick.value <= 1, `tick ${tick.value}`);
  // a one-sided range (CLIPScore ≥ 0) only bounds that side; without a range the data decide
  const oneSided = applyEvent(null, { iterations: 2, value_range: [0, null], history: [[0, 0.1, 0.3], [1, 0.2, 0.3]] });
  const g2 = layoutChart(oneSided, 200, 100);
  assert.equal(g2.yRange[0], 0);
  assert.ok(g2.yRange[1] >= 0.5);
  const free = layoutChart(applyEvent(null, { iterations: 2, history: [[0, 0.1, 0.3], [1, 0.2, 0.3]] }), 200, 100);
  assert.ok(free.yRange[0] < 0);
  // later events without a range keep it; malformed ranges are ignored
  assert.deepEqual(applyEvent(state, { history: [[0, 0.5, 0]] }).range, [0, 1]);
  assert.equal(applyEvent(null, { value_range: [1, 0], history: [] }).range, null);
  // a flat curve at the top of the range still gets a proper axis inside it
  const flat = layoutChart(applyEvent(null, { iterations: 2, value_range: [0, 1], history: [[0, 1, 0], [1, 1, 0]] }),
                           200, 100);
  assert.ok(flat.yRange[1] === 1 && flat.yRange[0] < 1 && flat.yRange[0] >= 0, `${flat.yRange}`);
});

test("charts shown side by side share one y-range", () => {
  const a = applyEvent(null, { iterations: 3, reward: "digit", history: [[0, 0.2, 0.05], [1, 0.3, 0.05]] });
  const b = applyEvent(null, { iterations: 3, reward: "digit", history: [[0, 0.6, 0.05], [1, 0.9, 0.05]] });
  const span = sharedSpan([a, b]);
  const ga = layoutChart(a, 200, 100, undefined, span);
  const gb = layoutChart(b, 200, 100, undefined, span);
  assert.deepEqual(ga.yRange, gb.yRange);
  assert.ok(ga.yRange[0] <= 0.15 && ga.yRange[1] >= 0.95, `${ga.yRange}`);
  assert.notDeepEqual(layoutChart(a, 200, 100).yRange, layoutChart(b, 200, 100).yRange);
  assert.equal(sharedSpan([applyEvent(null, { history: [] })]), null);
});

test("the chart round-trips through node.properties (reload, tab switch)", () => {
  const state = applyEvent(null, { run: "r", reward: "digit", iterations: 6, value_range: [0, 1],
                                   history: [[0, 0.5, 0.1], [1, 0.6, 0.1]] });
  const stored = JSON.parse(JSON.stringify(serializeState(state)));
  assert.deepEqual(restoreState(stored), state);
  assert.equal(restoreState(undefined).points.length, 0);
  assert.equal(restoreState({ history: "junk" }).points.length, 0);
});

test("a stopped run reports what was saved and how to resume", () => {
  let state = applyEvent(null, { run: "grpo", iterations: 30, history: [[0, 0.5, 0.1], [1, 0.6, 0.1]] });
  state = applyEvent(state, { stopped: { reason: "cancelled", iteration: 2, run_name: "grpo", resume_from: "latest",
                                         saved: ["/out/flow_cps_grpo/grpo/lora_stopped_at_00002.safetensors",
                                                 "/out/flow_cps_grpo/grpo/checkpoint.safetensors"] } });
  assert.equal(state.points.length, 2, "a stop report without history keeps the chart");
  assert.match(caption(state), /cancelled after iteration 2\/30/);
  const text = stoppedText(state);
  assert.match(text, /lora_stopped_at_00002\.safetensors/);
  assert.match(text, /checkpoint\.safetensors/);
  assert.match(text, /resume_from to 'latest'/);
  assert.match(stoppedText(applyEvent(state, { stopped: { reason: "cancelled", iteration: 0, saved: [] } })),
               /Nothing was saved/);
  // the next run's first event clears the stop report
  assert.equal(applyEvent(state, { history: [[0, 0.4, 0.1]] }).stopped, null);
  assert.equal(stoppedText(applyEvent(null, { history: [] })), "");
});

test("outputText reads ui.PreviewText / {text: [...]} outputs", () => {
  assert.equal(outputText({ text: ["image 0: 0.9", "image 1: 0.1"] }), "image 0: 0.9\nimage 1: 0.1");
  assert.equal(outputText({ text: "saved /x" }), "saved /x");
  assert.equal(outputText({ images: [] }), null);
  assert.equal(outputText(undefined), null);
});

test("the drift monitor is drawn beside the reward: held-out dots on the reward axis, the monitor on its own", () => {
  const monitor = { name: "paper_haze", value_range: [-1, 0], baseline: [0.9, -0.002],
                    points: [[4, 0.95, -0.002], [9, 1.0, -0.010], [9.5, "x", 1]] };
  const state = applyEvent(null, { run: "r", iterations: 10, value_range: [0, 1], monitor,
                                   history: [[0, 0.8, 0.05], [4, 0.9, 0.05], [9, 0.95, 0.02]] });
  assert.equal(state.monitor.points.length, 2, "malformed monitor points are dropped");
  const g = layoutChart(state, 300, 200);
  // the reward axis covers the held-out reward (1.0 sits above every rollout mean + std)
  assert.ok(g.yRange[1] >= 1.0 && g.yRange[0] <= 0.75);
  assert.equal(g.monitor.heldOut.length, 2);
  assert.ok(g.monitor.heldOut[1][1] < g.monitor.heldOut[0][1], "the higher held-out reward is drawn higher");
  assert.ok(Math.abs(g.monitor.heldOut[1][1] - g.yTicks.find((t) => t.value === 1).y) < 1e-9);
  // the monitor gets its own axis, inside its range, with the base model's value as a reference line
  const [lo, hi] = g.monitor.range;
  assert.ok(lo <= -0.010 && hi <= 0 && hi >= -0.002, `monitor axis ${lo}..${hi}`);
  assert.equal(g.monitor.line.length, 2);
  assert.ok(g.monitor.line[1][1] > g.monitor.line[0][1], "the hazier (lower) monitor value is drawn lower");
  assert.ok(Math.abs(g.monitor.baseline - g.monitor.line[0][1]) < 1e-9, "iteration 4 equals the base model");
  assert.equal(g.monitor.line[0][0], g.line[1][0], "monitor points sit at their iterations");
  assert.match(monitorCaption(state), /held-out reward 1 \(base 0\.9\)  ·  paper_haze -0\.01 \(base -0\.002\)/);
  // kept through node.properties, kept by a stop report, gone with a new run without a monitor
  assert.deepEqual(restoreState(JSON.parse(JSON.stringify(serializeState(state)))), state);
  assert.equal(applyEvent(state, { stopped: { reason: "cancelled", iteration: 9 } }).monitor.points.length, 2);
  assert.equal(applyEvent(state, { history: [[0, 0.5, 0]] }).monitor, null);
  assert.equal(monitorCaption(applyEvent(null, { history: [[0, 0.5, 0]] })), "");
  // a declared noticeable change widens the monitor's axis around the base value (clipped to its range)
  const noticed = applyEvent(state, { monitor: { ...monitor, noticeable_change: 0.02 } });
  const [nlo, nhi] = layoutChart(noticed, 300, 200).monitor.range;
  assert.ok(nlo <= -0.022 && nhi === 0, `noticeable axis ${nlo}..${nhi}`);
  const tiny = layoutChart(noticed, 300, 200).monitor.line;
  assert.ok(Math.abs(tiny[1][1] - tiny[0][1]) < Math.abs(g.monitor.line[1][1] - g.monitor.line[0][1]) / 2,
            "the same 0.008 change is drawn smaller on the wider axis");
  assert.deepEqual(restoreState(JSON.parse(JSON.stringify(serializeState(noticed)))), noticed);
});

test("a run without a monitor value (no monitor reward) still shows the held-out reward", () => {
  const state = applyEvent(null, { iterations: 3, history: [[0, 0.5, 0.1]],
                                   monitor: { name: null, baseline: [0.4, null], points: [[0, 0.6, null]] } });
  const g = layoutChart(state, 300, 200);
  assert.equal(g.monitor.heldOut.length, 1);
  assert.deepEqual(g.monitor.line, []);
  assert.equal(g.monitor.range, null);
  assert.equal(monitorCaption(state), "held-out reward 0.6 (base 0.4)");
});
