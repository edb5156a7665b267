// Pure chart logic for the GRPO reward chart (no DOM, no ComfyUI imports): unit-tested with `node --test`.

export const CHART_EVENT = "flow_cps.grpo";
export const CHART_PROPERTY = "flow_cps_chart"; // node.properties key: the chart survives reloads and tab switches
export const TEXT_PROPERTY = "flow_cps_text"; // node.properties key of the text shown on a node

// Round a span out to "nice" tick values (1, 2, 5 × 10^k steps).
export function niceTicks(lo, hi, count = 5) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (hi === lo) {
    const pad = Math.abs(lo) > 0 ? Math.abs(lo) * 0.05 : 0.5;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / Math.max(1, count - 1);
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const first = Math.floor(lo / step) * step;
  const ticks = [];
  // snap to the step's grid: repeated addition leaves e.g. 3.5e-18 where the tick is 0
  const snap = (v) => Number((Math.round(v / step) * step).toPrecision(12));
  for (let v = first; v <= hi + step * 1e-9; v += step) ticks.push(snap(v));
  if (ticks[ticks.length - 1] < hi) ticks.push(snap(ticks[ticks.length - 1] + step));
  return ticks;
}

// A reward's known [low, high] (either end may be null = unbounded), or null when nothing is known.
export function parseRange(value) {
  if (!Array.isArray(value) || value.length !== 2) return null;
  const [lo, hi] = value.map((v) => (Number.isFinite(v) ? v : null));
  if (lo === null && hi === null) return null;
  if (lo !== null && hi !== null && !(hi > lo)) return null;
  return [lo, hi];
}

// What the server reports when a run stops early (cancel or error): the files saved and how to resume.
function parseStopped(stopped) {
  if (!stopped || typeof stopped !== "object") return null;
  return {
    iteration: Number.isFinite(stopped.iteration) ? stopped.iteration : 0,
    reason: String(stopped.reason ?? "stopped"),
    saved: Array.isArray(stopped.saved) ? stopped.saved.map(String) : [],
    resume_from: stopped.resume_from ? String(stopped.resume_from) : "",
    run_name: String(stopped.run_name ?? ""),
  };
}

// The held-out drift monitor (training/monitor.py): its measure's values and the held-out reward at the iterations
// it ran, and both before training (the base model). `detail.monitor` = {name, value_range, baseline: [reward,
// monitor], points: [[iteration, held-out reward, monitor or null], ...]}; null when the run has no monitor.
function parseMonitor(monitor) {
  if (!monitor || typeof monitor !== "object") return null;
  const finite = (v) => (Number.isFinite(v) ? v : null);
  const points = (Array.isArray(monitor.points) ? monitor.points : [])
    .filter((p) => Array.isArray(p) && p.length >= 3 && Number.isFinite(p[0]) && Number.isFinite(p[1]))
    .map(([iteration, heldOut, value]) => ({ iteration, heldOut, value: finite(value) }));
  const base = Array.isArray(monitor.baseline) ? monitor.baseline : [];
  return {
    name: String(monitor.name ?? ""),
    range: parseRange(monitor.value_range),
    noticeable: Number.isFinite(monitor.noticeable_change) && monitor.noticeable_change > 0
      ? monitor.noticeable_change : null,
    baseline: { heldOut: finite(base[0]), value: finite(base[1]) },
    points,
  };
}

function serializeMonitor(monitor) {
  if (!monitor) return null;
  return {
    name: monitor.name,
    value_range: monitor.range,
    noticeable_change: monitor.noticeable,
    baseline: [monitor.baseline.heldOut, monitor.baseline.value],
    points: monitor.points.map((p) => [p.iteration, p.heldOut, p.value]),
  };
}

// Keep one run per node: a new run (different name, or history that restarted) replaces the old points.
// Events without a history (e.g. only a `stopped` report) keep the points they have.
export function applyEvent(state, detail) {
  const hasHistory = Array.isArray(detail.history);
  const points = hasHistory
    ? detail.history
        .filter((p) => Array.isArray(p) && p.length >= 3 && p.every(Number.isFinite))
        .map(([iteration, mean, std]) => ({ iteration, mean, std }))
    : state?.points ?? [];
  const range = "value_range" in detail ? parseRange(detail.value_range) : state?.range ?? null;
  // a new history without a stop report is a running (or finished) run: an older stop message no longer applies
  const stopped = "stopped" in detail ? parseStopped(detail.stopped) : hasHistory ? null : state?.stopped ?? null;
  const monitor = "monitor" in detail ? parseMonitor(detail.monitor) : hasHistory ? null : state?.monitor ?? null;
  return {
    run: detail.run ?? state?.run ?? "",
    reward: detail.reward ?? state?.reward ?? "",
    iterations: Number.isFinite(detail.iterations) ? detail.iterations : state?.iterations ?? points.length,
    points,
    range,
    stopped,
    monitor,
  };
}

// The state as stored in node.properties (plain JSON, compact) and back.
export function serializeState(state) {
  return {
    run: state?.run ?? "",
    reward: state?.reward ?? "",
    iterations: state?.iterations ?? 0,
    history: (state?.points ?? []).map((p) => [p.iteration, p.mean, p.std]),
    value_range: state?.range ?? null,
    stopped: state?.stopped ?? null,
    monitor: serializeMonitor(state?.monitor ?? null),
  };
}

export function restoreState(stored) {
  if (!stored || typeof stored !== "object") return applyEvent(null, { history: [] });
  return applyEvent(null, { ...stored, history: Array.isArray(stored.history) ? stored.history : [] });
}

function heldOutValues(state) {
  const monitor = state?.monitor;
  if (!monitor) return [];
  const values = monitor.points.map((p) => p.heldOut);
  if (monitor.baseline.heldOut !== null) values.push(monitor.baseline.heldOut);
  return values;
}

// The monitor's own y-axis (drawn on the right): its values and its baseline, inside its known range.
export function monitorAxis(monitor) {
  if (!monitor) return null;
  const values = monitor.points.map((p) => p.value).filter((v) => v !== null);
  if (!values.length) return null;
  const base = monitor.baseline.value;
  if (base !== null) values.push(base);
  // a monitor's noticeable change (e.g. 2 % grey for paper_haze): the axis spans at least that much either side of
  // the base model, so a flat monitor looks flat rather than being stretched over the whole chart
  if (base !== null && monitor.noticeable) values.push(base - monitor.noticeable, base + monitor.noticeable);
  return yAxis(spanWithin(values, monitor.range), monitor.range);
}

// [min, max] of the values, limited to a known [low, high] range (either end may be null = unbounded).
function spanWithin(values, range) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (range?.[0] !== null && range?.[0] !== undefined) lo = Math.max(lo, range[0]);
  if (range?.[1] !== null && range?.[1] !== undefined) hi = Math.min(hi, range[1]);
  return [lo, Math.max(lo, hi)];
}

// The y-span of the data (mean ± std, and the held-out reward), limited to the reward's known range.
export function dataSpan(state) {
  const points = state?.points ?? [];
  if (!points.length) return null;
  const values = [...points.map((p) => p.mean - p.std), ...points.map((p) => p.mean + p.std),
                  ...heldOutValues(state)];
  return spanWithin(values, state.range);
}

// One y-range for charts drawn next to each other (the same reward on several trainer nodes): the union of spans.
export function sharedSpan(states) {
  const spans = states.map(dataSpan).filter(Boolean);
  if (!spans.length) return null;
  return [Math.min(...spans.map((s) => s[0])), Math.max(...spans.map((s) => s[1]))];
}

// The axis: nice ticks around the span, but never outside the reward's known range.
export function yAxis(span, range) {
  if (!span) return null;
  let ticks = niceTicks(span[0], span[1]);
  const lo = range?.[0] ?? null;
  const hi = range?.[1] ?? null;
  let yLo = ticks[0];
  let yHi = ticks[ticks.length - 1];
  if (lo !== null && yLo < lo) yLo = lo;
  if (hi !== null && yHi > hi) yHi = hi;
  if (!(yHi > yLo)) {
    // a flat span pinned to a bound: open it towards the inside of the range
    const pad = lo !== null && hi !== null ? (hi - lo) * 0.05 : Math.abs(yLo) * 0.05 || 0.5;
    if (hi !== null && yHi >= hi) yLo = yHi - pad;
    else yHi = yLo + pad;
  }
  ticks = ticks.filter((v) => v >= yLo - 1e-12 && v <= yHi + 1e-12);
  if (!ticks.length || ticks[0] > yLo + 1e-12) ticks.unshift(yLo);
  if (ticks[ticks.length - 1] < yHi - 1e-12) ticks.push(yHi);
  return { lo: yLo, hi: yHi, ticks };
}

// Map the state to pixel geometry inside a width × height box with the given padding. `span` (optional) is the
// y-span to use instead of this state's own, e.g. sharedSpan() over the charts shown side by side.
export function layoutChart(state, width, height, pad = null, span = null) {
  pad ??= { left: 44, right: state?.monitor ? 48 : 10, top: 22, bottom: 22 };
  const points = state?.points ?? [];
  const plotW = Math.max(1, width - pad.left - pad.right);
  const plotH = Math.max(1, height - pad.top - pad.bottom);
  if (!points.length) return { empty: true, line: [], band: [], yTicks: [], xMax: state?.iterations ?? 0 };
  const axis = yAxis(span ?? dataSpan(state), state.range);
  const yLo = axis.lo;
  const yHi = axis.hi;
  const xMax = Math.max(1, (state.iterations ?? points.length) - 1, points[points.length - 1].iteration);
  const x = (i) => pad.left + (i / xMax) * plotW;
  const clamp = (v) => Math.min(yHi, Math.max(yLo, v));
  const y = (v) => pad.top + (1 - (clamp(v) - yLo) / (yHi - yLo)) * plotH;
  const monitor = state.monitor;
  const mAxis = monitorAxis(monitor);
  let monitorGeometry = null;
  if (monitor) {
    const y2 = mAxis
      ? (v) => pad.top + (1 - (Math.min(mAxis.hi, Math.max(mAxis.lo, v)) - mAxis.lo) / (mAxis.hi - mAxis.lo)) * plotH
      : null;
    const valued = monitor.points.filter((p) => p.value !== null);
    monitorGeometry = {
      name: monitor.name,
      heldOut: monitor.points.map((p) => [x(p.iteration), y(p.heldOut)]),
      heldOutBaseline: monitor.baseline.heldOut === null ? null : y(monitor.baseline.heldOut),
      line: y2 ? valued.map((p) => [x(p.iteration), y2(p.value)]) : [],
      baseline: y2 && monitor.baseline.value !== null ? y2(monitor.baseline.value) : null,
      ticks: mAxis ? mAxis.ticks.map((v) => ({ value: v, y: y2(v) })) : [],
      range: mAxis ? [mAxis.lo, mAxis.hi] : null,
    };
  }
  return {
    empty: false,
    monitor: monitorGeometry,
    line: points.map((p) => [x(p.iteration), y(p.mean)]),
    band: [...points.map((p) => [x(p.iteration), y(p.mean + p.std)]),
           ...points.slice().reverse().map((p) => [x(p.iteration), y(p.mean - p.std)])],
    yTicks: axis.ticks.map((v) => ({ value: v, y: y(v) })),
    yRange: [yLo, yHi],
    xMax,
    last: points[points.length - 1],
  };
}

export function caption(state) {
  const points = state?.points ?? [];
  const stopped = state?.stopped;
  if (stopped) return `${stopped.reason} after iteration ${stopped.iteration}/${state.iterations} (see below)`;
  if (!points.length) return "waiting for the first iteration…";
  const last = points[points.length - 1];
  return `iteration ${last.iteration + 1}/${state.iterations}  reward ${last.mean.toFixed(4)} ± ${last.std.toFixed(4)}`;
}

// The second caption line when the run has a drift monitor: the held-out reward and the monitor, now and at the
// start (the base model), so "the reward rose while the quality held" reads at a glance.
export function monitorCaption(state) {
  const monitor = state?.monitor;
  if (!monitor) return "";
  const last = monitor.points[monitor.points.length - 1];
  const show = (v) => (v === null || v === undefined ? "–" : Number(v.toPrecision(4)).toString());
  const base = monitor.baseline;
  const parts = [`held-out reward ${show(last?.heldOut)} (base ${show(base.heldOut)})`];
  if (monitor.name) parts.push(`${monitor.name} ${show(last?.value)} (base ${show(base.value)})`);
  return parts.join("  ·  ");
}

// The text a stopped run shows on the node: what was saved and how to continue.
export function stoppedText(state) {
  const stopped = state?.stopped;
  if (!stopped) return "";
  const lines = [`Run ${stopped.reason} after iteration ${stopped.iteration} of ${state.iterations}.`];
  if (stopped.saved.length) {
    lines.push("Saved:", ...stopped.saved.map((path) => `  ${path}`));
    lines.push(`To continue: set resume_from to '${stopped.resume_from || "latest"}' (run_name '${stopped.run_name}'), ` +
               "set iterations to the new total and queue again.");
  } else {
    lines.push("Nothing was saved (no iteration finished, or the LoRA was not finite).");
  }
  return lines.join("\n");
}

// The text of a node's UI output ({"text": [...]}, e.g. ui.PreviewText), or null when there is none.
export function outputText(output) {
  const text = output?.text;
  if (text === undefined || text === null) return null;
  const parts = Array.isArray(text) ? text : [text];
  return parts.map((part) => (typeof part === "string" ? part : JSON.stringify(part))).join("\n");
}
