// Charts of the console: line, area, bar and scatter drawn by uPlot (from the installed
// uplot-python package, loaded by index.html as the global `uPlot`), pie drawn here as SVG.
//
//   const chart = drawChart(container, {
//     kind: "line" | "area" | "bar" | "scatter" | "pie",
//     x: {values: [...], time: true},      // time: values are epoch seconds; else numbers or labels
//                                          // (utc: true labels a time axis in UTC)
//     series: [{name: "hits", values: [...]}, ...],
//     height: 240,
//     onSelect: (lo, hi) => ...,           // drag across the chart to select an x range (zoom)
//     markers: [{x: 1700000000, label: "alert: errors", kind: "alert" | "anomaly"}],
//   });
//   chart.update(spec); chart.destroy();
//
// The container gets data-kind and data-points (values drawn: non-null y values of every series,
// or slices of a pie) and data-markers, which the end-to-end tests read.

import {el} from "./api.js";

export const COLORS = ["#2f6fdb", "#e8743b", "#19a979", "#d64e4e", "#945ecf", "#13a4b4", "#c4a000", "#6c8893", "#ed4a7b", "#525df4"];

export function drawChart(container, spec) {
  let plot = null;
  let resize = null;
  // read by the draw hook; kept here so update() can change them without a rebuild
  let markers = spec.markers || [];

  function build(s) {
    markers = s.markers || [];
    container.replaceChildren();
    if (plot) plot.destroy();
    plot = null;
    const points = s.kind === "pie" ? s.series[0].values.filter((v) => v !== null && v > 0).length : countPoints(s);
    container.dataset.kind = s.kind;
    container.dataset.points = String(points);
    container.dataset.markers = String((s.markers || []).length);
    if (s.kind === "pie") {
      container.append(pie(s));
      return;
    }
    plot = new uPlot(options(s, container.clientWidth || 600), data(s), container);
  }

  build(spec);
  resize = new ResizeObserver(() => {
    // The first observation comes in the first frame, at the size the chart was built with, and
    // uPlot's setSize() repaints every point even when the size is unchanged: a second full draw
    // in the first frame (seen in benchmarks/console_charts.py). Only a real change resizes.
    const width = container.clientWidth;
    const height = spec.height || 240;
    if (plot && width && (width !== plot.width || height !== plot.height)) plot.setSize({width, height});
  });
  resize.observe(container);
  return {
    update(next) {
      spec = next;
      if (plot && next.kind !== "pie" && sameShape(plot, next)) {
        plot.setData(data(next));
        container.dataset.points = String(countPoints(next));
        container.dataset.markers = String((next.markers || []).length);
        markers = next.markers || [];
      } else {
        build(next);
      }
    },
    destroy() {
      if (resize) resize.disconnect();
      if (plot) plot.destroy();
      container.replaceChildren();
    },
  };

  function options(s, width) {
    const labels = !s.x.time && s.x.values.some((v) => typeof v === "string") ? s.x.values : null;
    const series = [
      {label: s.xLabel || "x"},
      ...s.series.map((one, i) => {
        const color = one.color || COLORS[i % COLORS.length];
        const line = {label: one.name, stroke: color, width: 1.5, spanGaps: false};
        if (s.kind === "bar") {
          const bars = s.series.length > 1 ? groupedBars(i, s.series.length) : uPlot.paths.bars({size: [0.8, 64], align: 0});
          Object.assign(line, {fill: color + "cc", paths: bars, points: {show: false}});
        } else if (s.kind === "area") {
          Object.assign(line, {fill: color + "40"});
        } else if (s.kind === "scatter") {
          Object.assign(line, {paths: () => null, points: {show: true, size: 6, fill: color}});
        }
        return line;
      }),
    ];
    return {
      width,
      height: s.height || 240,
      series,
      // x.utc: time axis labels in UTC (as the console's times are written) instead of the browser's zone
      ...(s.x.time && s.x.utc ? {tzDate: (t) => uPlot.tzDate(new Date(t * 1e3), "Etc/UTC")} : {}),
      // bars: half a step of room at each end, so the first and last bars are whole; bars and
      // areas stand on zero (a bar cut at its base misstates its size)
      scales: {
        x: s.kind === "bar" ? {time: !!s.x.time, range: (u, lo, hi) => padded(u, lo, hi)} : {time: !!s.x.time},
        ...(s.kind === "bar" || s.kind === "area" ? {y: {range: (u, lo, hi) => fromZero(lo, hi)}} : {}),
      },
      axes: [
        labels ? labelAxis(labels, width) : {},
        {size: 60},
      ],
      cursor: {drag: {x: !!s.onSelect, y: false, setScale: false}},
      legend: {show: s.series.length > 1 || !!s.legend},
      hooks: {
        setSelect: [
          (u) => {
            if (!s.onSelect || u.select.width < 2) return;
            const lo = u.posToVal(u.select.left, "x");
            const hi = u.posToVal(u.select.left + u.select.width, "x");
            u.setSelect({left: 0, width: 0, top: 0, height: 0}, false);
            s.onSelect(lo, hi);
          },
        ],
        draw: [(u) => drawMarkers(u, markers)],
      },
    };
  }
}

// An x axis of text labels; slanted when they would run into one another.
function labelAxis(labels, width) {
  const axis = {values: (u, ticks) => ticks.map((t) => (Number.isInteger(t) && labels[t] !== undefined ? String(labels[t]) : ""))};
  const longest = labels.reduce((most, label) => Math.max(most, String(label).length), 0);
  if (labels.length * (longest * 7 + 8) > width - 60) Object.assign(axis, {rotate: 30, size: Math.min(160, 24 + longest * 3.6)});
  return axis;
}

// Bars of several series side by side (uPlot would draw them over one another): series i of n
// takes its share of 80 % of the narrowest step between x values.
function groupedBars(i, n) {
  const width = (u) => step(u.data[0]) * 0.8;
  return uPlot.paths.bars({
    disp: {
      x0: {unit: 1, values: (u) => u.data[0].map((x) => x - width(u) / 2 + (i * width(u)) / n)},
      size: {unit: 1, values: (u) => [width(u) / n]},
    },
  });
}

function step(xs) {
  let least = Infinity;
  for (let k = 1; k < xs.length; k++) least = Math.min(least, Math.abs(xs[k] - xs[k - 1]) || Infinity);
  return Number.isFinite(least) ? least : 1;
}

function fromZero(lo, hi) {
  const low = Math.min(0, lo ?? 0);
  const high = Math.max(0, hi ?? 0);
  return high === low ? [low, low + 1] : [low, high + (high - low) * 0.05];
}

function padded(u, lo, hi) {
  const half = step(u.data[0]) / 2;
  return [lo - half, hi + half];
}

function data(s) {
  const labels = !s.x.time && s.x.values.some((v) => typeof v === "string");
  const xs = labels ? s.x.values.map((_, i) => i) : s.x.values;
  return [xs, ...s.series.map((one) => one.values)];
}

function countPoints(s) {
  let n = 0;
  for (const one of s.series) for (const v of one.values) if (v !== null && v !== undefined) n++;
  return n;
}

function sameShape(plot, s) {
  return plot.series.length === s.series.length + 1;
}

function drawMarkers(u, markers) {
  if (!markers || !markers.length) return;
  const ctx = u.ctx;
  ctx.save();
  for (const m of markers) {
    const left = u.valToPos(m.x, "x", true);
    if (left < u.bbox.left || left > u.bbox.left + u.bbox.width) continue;
    ctx.strokeStyle = m.kind === "anomaly" ? "#945ecf" : "#d64e4e";
    ctx.lineWidth = 2 * devicePixelRatio;
    ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
    ctx.beginPath();
    ctx.moveTo(left, u.bbox.top);
    ctx.lineTo(left, u.bbox.top + u.bbox.height);
    ctx.stroke();
    if (m.label) {
      ctx.fillStyle = ctx.strokeStyle;
      ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
      ctx.fillText(m.label, left + 4 * devicePixelRatio, u.bbox.top + 12 * devicePixelRatio);
    }
  }
  ctx.restore();
}

// A pie of the first series, one slice per x value (labels), as SVG with a legend.
function pie(s) {
  const values = s.series[0].values.map((v) => (v === null || v < 0 ? 0 : Number(v)));
  const total = values.reduce((a, b) => a + b, 0) || 1;
  const size = s.height || 240;
  const r = size / 2 - 8;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", size);
  svg.setAttribute("height", size);
  svg.setAttribute("viewBox", `${-size / 2} ${-size / 2} ${size} ${size}`);
  let angle = -Math.PI / 2;
  const legend = el("ul", {class: "pie-legend"});
  values.forEach((v, i) => {
    if (v <= 0) return;
    const share = v / total;
    const next = angle + share * 2 * Math.PI;
    const color = COLORS[i % COLORS.length];
    const path = document.createElementNS(ns, share >= 0.9999 ? "circle" : "path");
    if (share >= 0.9999) {
      path.setAttribute("r", r);
    } else {
      const large = share > 0.5 ? 1 : 0;
      const [x1, y1, x2, y2] = [r * Math.cos(angle), r * Math.sin(angle), r * Math.cos(next), r * Math.sin(next)];
      path.setAttribute("d", `M0,0 L${x1},${y1} A${r},${r} 0 ${large} 1 ${x2},${y2} Z`);
    }
    path.setAttribute("fill", color);
    path.setAttribute("class", "slice");
    const title = document.createElementNS(ns, "title");
    title.textContent = `${s.x.values[i]}: ${v} (${(share * 100).toFixed(1)} %)`;
    path.append(title);
    svg.append(path);
    legend.append(el("li", {}, el("span", {class: "swatch", style: `background:${color}`}), `${s.x.values[i]} · ${(share * 100).toFixed(1)} %`));
    angle = next;
  });
  return el("div", {class: "pie"}, svg, legend);
}

// Zeppelin's pivot: rows of a result → a chart spec. x, y and group are column names (group may be
// empty); y values of rows with the same x (and group) are summed. x is a time axis when its values
// are timestamps ("YYYY-MM-DD HH:MM:SS..." text as the API sends them).
export function pivot(result, {x, y, group, kind}) {
  const names = result.columns.map((c) => c.name);
  const xi = names.indexOf(x);
  const yi = names.indexOf(y);
  const gi = group ? names.indexOf(group) : -1;
  if (xi < 0 || yi < 0) throw new Error(`choose x and y among the result's columns: ${names.join(", ")}`);
  const type = result.columns[xi].type;
  const time = type.startsWith("timestamp") || type.startsWith("date");
  const xs = result.data[xi].map((v) => (time ? parseTime(v) : v));
  const order = [];
  const index = new Map();
  xs.forEach((v) => {
    if (!index.has(v)) {
      index.set(v, order.length);
      order.push(v);
    }
  });
  if (time || order.every((v) => typeof v === "number")) order.sort((a, b) => a - b);
  order.forEach((v, i) => index.set(v, i));
  const groups = new Map();
  const ys = result.data[yi];
  for (let r = 0; r < xs.length; r++) {
    const key = gi >= 0 ? String(result.data[gi][r]) : y;
    if (!groups.has(key)) groups.set(key, new Array(order.length).fill(null));
    const values = groups.get(key);
    const at = index.get(xs[r]);
    const value = ys[r] === null ? null : Number(ys[r]);
    values[at] = value === null ? values[at] : (values[at] || 0) + value;
  }
  return {
    kind,
    x: {values: order, time, utc: true}, // the API writes times in UTC: label them so
    xLabel: x,
    series: [...groups.entries()].map(([name, values]) => ({name, values})),
  };
}

// "2024-03-01 10:01:00.000000" (UTC) → epoch seconds.
export function parseTime(value) {
  if (value === null || value === undefined) return null;
  const iso = String(value).replace(" ", "T").replace(/(\.\d{3})\d*/, "$1");
  const ms = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : iso + "Z");
  return Number.isNaN(ms) ? null : ms / 1000;
}
