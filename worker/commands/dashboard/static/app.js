// etl-worker dashboard: polls /api/runs and draws it. No framework, no build step, nothing remote.
"use strict";

const REFRESH_MS = 2000;
const RECENT_ROWS = 15;
const SVG_NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.setAttribute("class", value);
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role" || node instanceof SVGElement) {
      node.setAttribute(key, value);
    } else node[key] = value;
  }
}

const int = (n) => (n === null || n === undefined ? "-" : Math.round(n).toLocaleString("en-US"));
const pct = (f) => (f === null || f === undefined ? "-" : `${Math.round(f * 100)}%`);

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const s = Math.round(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

function when(iso) {
  if (!iso) return "never";
  const d = new Date(iso);
  return d.toISOString().slice(0, 19).replace("T", " ");
}

function ago(iso, now) {
  if (!iso) return "never";
  const s = Math.max(0, (now - new Date(iso)) / 1000);
  if (s < 90) return `${Math.round(s)}s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

const tableName = (run) => run.table || run.dest_table || run.run_id;

// --- summary -----------------------------------------------------------------------------------
function kpis(data) {
  const t = data.totals;
  const rate = t.success_rate;
  const cls = rate === null ? "" : rate >= 0.95 ? "good" : rate < 0.8 ? "bad" : "";
  const card = (label, value, note, extra) =>
    el("div", { class: `kpi ${extra || ""}`, "data-kpi": label }, el("div", { class: "label" }, label),
      el("div", { class: "value" }, value), el("div", { class: "note" }, note));
  return [
    card("active runs", String(data.active.length), "live from the events topic"),
    card("success rate", pct(rate), `${t.committed} of ${t.committed + t.failed} finished runs`, cls),
    card("rows loaded", int(t.rows), `since ${data.since.slice(0, 10)}`),
    card("failures", String(t.failed), "failed or dead-lettered", t.failed ? "bad" : "good"),
  ];
}

// --- live runs ---------------------------------------------------------------------------------
function progressBar(run) {
  const known = run.fraction !== null && run.fraction !== undefined;
  const value = known ? Math.round(run.fraction * 100) : null;
  const fill = el("div", { class: `fill ${run.phase} ${known ? "" : "indeterminate"}` });
  if (known) fill.style.width = `${value}%`;
  return el("div", {
    class: "track", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
    "aria-valuenow": known ? String(value) : null, "aria-label": `progress of ${run.run_id}`,
  }, fill, el("span", { class: "pct" }, known ? `${value}%` : run.phase));
}

function liveRun(run) {
  const rows = run.rows_expected ? `${int(run.rows)} / ${int(run.rows_expected)} rows` : `${int(run.rows)} rows`;
  const rate = run.rows_per_s ? ` · ${int(run.rows_per_s)} rows/s` : "";
  const tail = run.outcome ? run.outcome : `${rows}${rate} · ${duration(run.elapsed_s)}`;
  return el("div", { class: "run", "data-run-id": run.run_id, "data-phase": run.phase },
    el("div", {},
      el("div", { class: "name" }, tableName(run)),
      el("div", { class: "id mono" }, `${run.run_id} · attempt ${run.attempt} `,
        el("span", { class: `badge ${run.phase}` }, run.phase))),
    progressBar(run),
    el("div", { class: "meta" }, tail));
}

function liveList(runs, empty) {
  return runs.length ? runs.map(liveRun) : [el("div", { class: "empty" }, empty)];
}

// --- charts ------------------------------------------------------------------------------------
const W = 560, H = 190, PAD = { l: 44, r: 8, t: 16, b: 26 };

function axis(max, format) {
  const lines = [];
  for (let i = 0; i <= 4; i++) {
    const y = PAD.t + (H - PAD.t - PAD.b) * (1 - i / 4);
    lines.push(svg("line", { class: "grid-line", x1: PAD.l, x2: W - PAD.r, y1: y, y2: y }));
    lines.push(svg("text", { x: PAD.l - 6, y: y + 3, "text-anchor": "end" }, format((max * i) / 4)));
  }
  return lines;
}

function dayLabel(day) {
  const d = new Date(`${day}T00:00:00Z`);
  return d.toLocaleDateString("en-US", { weekday: "short", day: "numeric", timeZone: "UTC" });
}

function niceMax(value) {
  if (value <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(value)), n = value / p;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * p;
}

function short(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(n >= 1e4 ? 0 : 1)}k`;
  return String(Math.round(n));
}

function barChart(days) {
  const max = niceMax(Math.max(0, ...days.map((d) => d.rows)));
  const inner = W - PAD.l - PAD.r, slot = inner / Math.max(days.length, 1), bw = Math.min(42, slot * 0.62);
  const bars = days.map((d, i) => {
    const h = ((H - PAD.t - PAD.b) * d.rows) / max, x = PAD.l + slot * i + (slot - bw) / 2;
    const y = H - PAD.b - h;
    return svg("g", { "data-day": d.day, "data-rows": d.rows },
      svg("rect", { class: "bar", x, y, width: bw, height: Math.max(h, d.rows ? 1 : 0), rx: 3 },
        svg("title", {}, `${d.day}: ${int(d.rows)} rows`)),
      d.rows ? svg("text", { class: "value", x: x + bw / 2, y: y - 4, "text-anchor": "middle" }, short(d.rows)) : null,
      svg("text", { x: x + bw / 2, y: H - 8, "text-anchor": "middle" }, dayLabel(d.day)));
  });
  return svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "rows loaded per day" },
    axis(max, short), bars);
}

function stackedChart(days) {
  const kinds = ["committed", "failed", "dead-lettered", "other"];
  const total = (d) => kinds.reduce((s, k) => s + d[k], 0);
  const max = niceMax(Math.max(0, ...days.map(total)));
  const inner = W - PAD.l - PAD.r, slot = inner / Math.max(days.length, 1), bw = Math.min(42, slot * 0.62);
  const bars = days.map((d, i) => {
    const x = PAD.l + slot * i + (slot - bw) / 2;
    let y = H - PAD.b;
    const parts = kinds.filter((k) => d[k]).map((k) => {
      const h = ((H - PAD.t - PAD.b) * d[k]) / max;
      y -= h;
      return svg("rect", { class: k, x, y, width: bw, height: h }, svg("title", {}, `${d.day}: ${d[k]} ${k}`));
    });
    return svg("g", { "data-day": d.day, "data-runs": total(d) }, parts,
      total(d) ? svg("text", { class: "value", x: x + bw / 2, y: y - 4, "text-anchor": "middle" }, total(d)) : null,
      svg("text", { x: x + bw / 2, y: H - 8, "text-anchor": "middle" }, dayLabel(d.day)));
  });
  return svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "runs per day by outcome" },
    axis(max, (v) => (Number.isInteger(v) ? v : v.toFixed(1))), bars);
}

function sparkline(points) {
  const w = 120, h = 26;
  if (!points.length) return el("span", { class: "trend" }, "no committed run");
  const max = Math.max(...points.map((p) => p.seconds)) || 1;
  const step = points.length > 1 ? (w - 6) / (points.length - 1) : 0;
  const xy = points.map((p, i) => [3 + i * step, h - 3 - ((h - 6) * p.seconds) / max]);
  const last = xy[xy.length - 1];
  return svg("svg", { class: "spark", width: w, height: h, viewBox: `0 0 ${w} ${h}`,
    "aria-label": `durations of the last ${points.length} committed runs` },
    svg("polyline", { points: xy.map((p) => p.join(",")).join(" ") }),
    svg("circle", { cx: last[0], cy: last[1], r: 2.5 }),
    svg("title", {}, points.map((p) => `${when(p.at)}: ${duration(p.seconds)}`).join("\n")));
}

// --- tables ------------------------------------------------------------------------------------
function rate(value) {
  if (value === null || value === undefined) return "-";
  const fill = el("div", { class: `fill ${value < 0.8 ? "low" : value < 0.95 ? "mid" : ""}` });
  fill.style.width = `${Math.round(value * 100)}%`;
  return el("div", { class: "rate" }, el("div", { class: "track" }, fill), pct(value));
}

function tableRow(t, now) {
  return el("tr", { "data-table": t.dest_table || "", "data-source": t.data_source_id ?? "" },
    el("td", {}, t.data_source_id ?? "-"), el("td", {}, el("strong", {}, t.dest_table || "-")),
    el("td", { class: "num" }, t.runs), el("td", {}, rate(t.success_rate)),
    el("td", { title: when(t.last_success) }, ago(t.last_success, now)),
    el("td", { class: "num" }, duration(t.median_duration_s)),
    el("td", {}, sparkline(t.durations), t.trend ? el("span", { class: `trend ${t.trend}` }, t.trend) : null),
    el("td", { class: "num" }, int(t.rows_per_day)),
    el("td", {}, el("span", { class: `badge ${t.now}` }, t.now)));
}

function recentRow(r) {
  return el("tr", { "data-run-id": r.run_id, "data-outcome": r.outcome },
    el("td", { class: "mono" }, when(r.last_at)), el("td", { class: "mono" }, r.run_id),
    el("td", {}, r.data_source_id ?? "-"), el("td", {}, r.dest_table || "-"), el("td", {}, r.load_type || "-"),
    el("td", {}, el("span", { class: `badge ${r.outcome}` }, r.outcome)),
    el("td", { class: "num" }, r.attempt), el("td", { class: "num" }, int(r.rows_loaded)),
    el("td", { class: "num" }, duration(r.duration_seconds)),
    el("td", { class: "detail", title: r.error || r.window || "" },
      r.window || r.error || (r.outcome === "committed" ? "whole table" : "")));
}

function fill(id, nodes) {
  document.getElementById(id).replaceChildren(...nodes);
}

function render(data) {
  const now = new Date(data.generated_at);
  fill("kpis", kpis(data));
  fill("active", liveList(data.active, "no run in progress"));
  fill("ended", liveList(data.ended, "nothing yet since the dashboard started"));
  fill("chart-rows", [barChart(data.daily)]);
  fill("chart-outcomes", [stackedChart(data.daily)]);
  document.querySelector("#tables tbody").replaceChildren(
    ...(data.tables.length ? data.tables.map((t) => tableRow(t, now))
      : [el("tr", {}, el("td", { colSpan: 9, class: "detail" }, "no runs in the period"))]));
  document.querySelector("#recent tbody").replaceChildren(
    ...(data.recent.length ? data.recent.slice(0, RECENT_ROWS).map(recentRow)
      : [el("tr", {}, el("td", { colSpan: 10, class: "detail" }, "no runs in the history"))]));
  document.getElementById("recent-note").textContent = data.recent.length > RECENT_ROWS
    ? `newest ${RECENT_ROWS} of ${data.totals.runs} runs in the period (all of them at /api/runs)` : "";
  const banner = document.getElementById("history-error");
  banner.hidden = !data.history_error;
  banner.textContent = data.history_error || "";
  const status = document.getElementById("status");
  status.className = "status";
  status.textContent = `updated ${when(data.generated_at)} UTC · ${data.active.length} active`;
  document.body.dataset.ready = "true";
}

async function refresh() {
  try {
    const response = await fetch("/api/runs", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
  } catch (error) {
    const status = document.getElementById("status");
    status.className = "status down";
    status.textContent = `disconnected (${error.message}); retrying`;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
