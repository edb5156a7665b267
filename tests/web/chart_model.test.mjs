import assert from "node:assert/strict";
import test from "node:test";

import { applyEvent, caption, layoutChart, niceTicks } from "../../web/chart_model.js";

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
