// Pure chart logic for the GRPO reward chart (no DOM, no ComfyUI imports): unit-tested with `node --test`.

export const CHART_EVENT = "flow_cps.grpo";

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
  for (let v = first; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < hi) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

// Keep one run per node: a new run (different name, or history that restarted) replaces the old points.
export function applyEvent(state, detail) {
  const history = Array.isArray(detail.history) ? detail.history : [];
  const points = history
    .filter((p) => Array.isArray(p) && p.length >= 3 && p.every(Number.isFinite))
    .map(([iteration, mean, std]) => ({ iteration, mean, std }));
  return {
    run: detail.run ?? state?.run ?? "",
    iterations: Number.isFinite(detail.iterations) ? detail.iterations : state?.iterations ?? points.length,
    points,
  };
}

// Map the state to pixel geometry inside a width × height box with the given padding.
export function layoutChart(state, width, height, pad = { left: 44, right: 10, top: 22, bottom: 22 }) {
  const points = state?.points ?? [];
  const plotW = Math.max(1, width - pad.left - pad.right);
  const plotH = Math.max(1, height - pad.top - pad.bottom);
  if (!points.length) return { empty: true, line: [], band: [], yTicks: [], xMax: state?.iterations ?? 0 };
  const lows = points.map((p) => p.mean - p.std);
  const highs = points.map((p) => p.mean + p.std);
  const yTicks = niceTicks(Math.min(...lows), Math.max(...highs));
  const yLo = yTicks[0];
  const yHi = yTicks[yTicks.length - 1];
  const xMax = Math.max(1, (state.iterations ?? points.length) - 1, points[points.length - 1].iteration);
  const x = (i) => pad.left + (i / xMax) * plotW;
  const y = (v) => pad.top + (1 - (v - yLo) / (yHi - yLo)) * plotH;
  return {
    empty: false,
    line: points.map((p) => [x(p.iteration), y(p.mean)]),
    band: [...points.map((p) => [x(p.iteration), y(p.mean + p.std)]),
           ...points.slice().reverse().map((p) => [x(p.iteration), y(p.mean - p.std)])],
    yTicks: yTicks.map((v) => ({ value: v, y: y(v) })),
    xMax,
    last: points[points.length - 1],
  };
}

export function caption(state) {
  const points = state?.points ?? [];
  if (!points.length) return "waiting for the first iteration…";
  const last = points[points.length - 1];
  return `iteration ${last.iteration + 1}/${state.iterations}  reward ${last.mean.toFixed(4)} ± ${last.std.toFixed(4)}`;
}
