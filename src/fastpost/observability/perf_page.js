"use strict";
// The live performance page (fastpost.observability.perf_page). It polls /_perf/data, whose
// figures are cumulative counters as the server holds them, and turns the difference between
// two answers into rates, percentiles and shares: the server keeps nothing between polls.

const DATA_URL = new URL("data", document.currentScript.src);
const POLL_MS = 1000;
const WINDOW = 5; // polls each figure covers: a worker flushes its counts once a second
const HISTORY = 60; // points in each chart

const snapshots = []; // the last answers of /_perf/data, oldest first
const viewSelect = document.getElementById("view");

// --- figures between two answers ------------------------------------------------------

// A counter that went back belongs to a worker that restarted: count from zero.
const grown = (now, before) => Math.max(0, (now || 0) - (before || 0));

function bucketsGrown(now, before) {
  const earlier = new Map((before || []).map(([bound, count]) => [bound, count]));
  return (now || []).map(([bound, count]) => [bound, grown(count, earlier.get(bound))]);
}

// The q-quantile of observations in cumulative buckets [[upper bound, count], ...], by
// linear interpolation inside a bucket, as Prometheus' histogram_quantile does.
function quantile(q, buckets) {
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!total) return null;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const [bound, count] of buckets) {
    if (count >= rank) {
      if (bound === null) return lowerBound; // past the last finite bound: at least that
      return lowerBound + ((bound - lowerBound) * (rank - lowerCount)) / (count - lowerCount || 1);
    }
    [lowerBound, lowerCount] = [bound, count];
  }
  return lowerBound;
}

function addBuckets(into, buckets) {
  for (const [bound, count] of buckets) into.set(bound, (into.get(bound) || 0) + count);
}

// Requests, errors, seconds and buckets of one route, or of all routes when route is null.
function traffic(figures, route) {
  const routes = figures ? figures.routes : {};
  const names = route === null ? Object.keys(routes) : [route];
  const sum = { requests: 0, errors: 0, seconds: 0, buckets: new Map() };
  for (const name of names) {
    const r = routes[name];
    if (!r) continue;
    sum.requests += r.requests;
    sum.errors += r.errors;
    sum.seconds += r.seconds;
    addBuckets(sum.buckets, r.buckets);
  }
  sum.buckets = [...sum.buckets].sort((a, b) => (a[0] ?? Infinity) - (b[0] ?? Infinity));
  return sum;
}

function requestFigures(now, before, seconds) {
  const requests = grown(now.requests, before.requests);
  const buckets = bucketsGrown(now.buckets, before.buckets);
  return {
    rps: requests / seconds,
    errors: requests ? grown(now.errors, before.errors) / requests : null,
    p50: quantile(0.5, buckets),
    p95: quantile(0.95, buckets),
    p99: quantile(0.99, buckets),
    seconds: grown(now.seconds, before.seconds),
  };
}

function cacheHitRate(now, before) {
  let hits = 0;
  let lookups = 0;
  const parts = [];
  for (const [tier, t] of Object.entries(now.cache)) {
    const b = (before && before.cache[tier]) || {};
    const h = grown(t.hits, b.hits);
    const n = h + grown(t.misses, b.misses);
    hits += h;
    lookups += n;
    if (n) parts.push(`${tier} ${percent(h / n)}`);
  }
  return { rate: lookups ? hits / lookups : null, parts };
}

function poolUse(figures) {
  let inUse = 0;
  let size = 0;
  for (const pool of Object.values(figures.pools)) {
    inUse += pool.checked_out || 0;
    size += pool.size || 0;
  }
  return { inUse, size, share: size ? inUse / size : null };
}

// The lag at each worker's last check (the worst worker's, for several), and the p99 of
// every check in the window.
function eventLoopLag(now, before) {
  const lag = now.event_loop_lag;
  if (!lag) return { now: null, p99: null };
  const earlier = before && before.event_loop_lag && before.event_loop_lag.buckets;
  return {
    now: lag.seconds === undefined ? null : lag.seconds,
    p99: lag.buckets ? quantile(0.99, bucketsGrown(lag.buckets, earlier)) : null,
  };
}

// Everything the page shows of one view (all workers, or one pid) between two answers.
function figuresBetween(older, newer, view, route = null) {
  const now = pick(newer, view);
  if (!now) return null;
  const before = pick(older, view) || emptyFigures();
  const seconds = Math.max(newer.time - older.time, 1e-3);
  const requests = requestFigures(traffic(now, route), traffic(before, route), seconds);
  const cpu = now.cpu_seconds === null ? null : grown(now.cpu_seconds, before.cpu_seconds) / seconds;
  return {
    ...requests,
    cache: cacheHitRate(now, before),
    dbShare: requests.seconds ? grown(now.db_seconds, before.db_seconds) / requests.seconds : null,
    pool: poolUse(now),
    lag: eventLoopLag(now, before),
    cpu,
    memory: now.memory_bytes,
  };
}

function pick(snapshot, view) {
  if (view === "total") return snapshot.total;
  if (view === "exited") return snapshot.exited;
  return snapshot.workers[view];
}

const emptyFigures = () => ({ routes: {}, db_seconds: 0, cache: {}, pools: {}, cpu_seconds: 0 });

// The figures over the window that ends at snapshot `index`.
function windowEndingAt(index, view, route) {
  if (index < 1) return null;
  return figuresBetween(snapshots[Math.max(0, index - WINDOW)], snapshots[index], view, route);
}

function history(view, route, read) {
  const points = [];
  for (let i = Math.max(1, snapshots.length - HISTORY); i < snapshots.length; i++) {
    const f = windowEndingAt(i, view, route);
    points.push(f ? read(f) : null);
  }
  return points;
}

// --- drawing --------------------------------------------------------------------------

const percent = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
const rate = (x) => (x === null || x === undefined ? "–" : x.toFixed(1));

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds >= 1) return `${seconds.toFixed(2)} s`;
  const ms = seconds * 1000;
  return `${ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2)} ms`;
}

function bytes(n) {
  return n === null || n === undefined ? "–" : `${(n / 2 ** 20).toFixed(0)} MiB`;
}

// A line through the points (nulls skipped), scaled to the SVG's box from zero to the top.
function sparkline(svg, values) {
  const width = 120;
  const height = 30;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const top = Math.max(...values.filter((v) => v !== null), 0) || 1;
  const step = width / Math.max(HISTORY - 1, 1);
  const offset = width - step * (values.length - 1);
  const points = values
    .map((v, i) => (v === null ? null : `${(offset + i * step).toFixed(1)},${(height - 1 - (v / top) * (height - 2)).toFixed(1)}`))
    .filter((p) => p !== null)
    .join(" ");
  let line = svg.querySelector("polyline");
  if (!line) {
    line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    svg.appendChild(line);
  }
  line.setAttribute("points", points);
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function drawCards(view, f) {
  // A figure, and a line of detail under it.
  const set = (id, text, detail = "") => document.getElementById(id).replaceChildren(text, small(detail));
  set("rps", rate(f.rps));
  set("errors", percent(f.errors));
  set("latency", duration(f.p99), `p50 ${duration(f.p50)} · p95 ${duration(f.p95)}`);
  set("cache", percent(f.cache.rate), f.cache.parts.join(" · "));
  set("db", percent(f.dbShare), "of request time");
  set("pool", `${f.pool.inUse} / ${f.pool.size}`, `${percent(f.pool.share)} of their size`);
  set("lag", lagText(f.lag.now), f.lag.p99 === null ? "" : `p99 ${duration(f.lag.p99)}`);
  const charts = {
    "rps-chart": (x) => x.rps,
    "errors-chart": (x) => x.errors,
    "latency-chart": (x) => x.p99,
    "cache-chart": (x) => x.cache.rate,
    "db-chart": (x) => x.dbShare,
    "pool-chart": (x) => x.pool.share,
    "lag-chart": (x) => x.lag.now,
  };
  for (const [id, read] of Object.entries(charts)) sparkline(document.getElementById(id), history(view, null, read));
}

const lagText = (seconds) => (seconds === null ? "n/a" : duration(seconds));

function small(text) {
  const element = document.createElement("small");
  element.textContent = text;
  return element;
}

function drawRoutes(view, newest) {
  const body = document.querySelector("#routes tbody");
  body.innerHTML = "";
  const figures = pick(newest, view);
  const rows = Object.keys(figures ? figures.routes : {})
    .map((route) => [route, windowEndingAt(snapshots.length - 1, view, route)])
    .sort((a, b) => b[1].rps - a[1].rps || a[0].localeCompare(b[0]));
  for (const [route, f] of rows) {
    const row = body.insertRow();
    row.dataset.route = route;
    cell(row, route, "route");
    cell(row, rate(f.rps), "rps");
    const chart = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    chart.setAttribute("class", "spark");
    cell(row, "").appendChild(chart);
    sparkline(chart, history(view, route, (x) => x.rps));
    cell(row, duration(f.p50), "p50");
    cell(row, duration(f.p95), "p95");
    cell(row, duration(f.p99), "p99");
    cell(row, percent(f.errors), f.errors ? "errors bad" : "errors");
  }
}

function drawWorkers(newest) {
  const body = document.querySelector("#workers tbody");
  body.innerHTML = "";
  const views = [...Object.keys(newest.workers), ...(newest.exited ? ["exited"] : []), "total"];
  for (const view of views) {
    const f = windowEndingAt(snapshots.length - 1, view, null);
    if (!f) continue;
    const row = body.insertRow();
    row.dataset.worker = view;
    if (view === "total") row.className = "total";
    cell(row, view === "total" ? "all" : view === "exited" ? "exited workers" : `pid ${view}`);
    cell(row, rate(f.rps), "rps");
    cell(row, duration(f.p99));
    cell(row, percent(f.errors));
    cell(row, percent(f.cache.rate));
    cell(row, percent(f.dbShare));
    cell(row, `${f.pool.inUse} / ${f.pool.size}`);
    cell(row, lagText(f.lag.now));
    cell(row, f.cpu === null ? "–" : percent(f.cpu));
    cell(row, bytes(f.memory));
  }
}

function updateViewChoices(newest) {
  const wanted = ["total", ...Object.keys(newest.workers)];
  const present = [...viewSelect.options].map((o) => o.value);
  if (wanted.join() === present.join()) return;
  const selected = wanted.includes(viewSelect.value) ? viewSelect.value : "total";
  viewSelect.replaceChildren(...wanted.map((v) => new Option(v === "total" ? "all workers" : `worker ${v}`, v)));
  viewSelect.value = selected;
}

function draw() {
  const newest = snapshots[snapshots.length - 1];
  updateViewChoices(newest);
  const view = viewSelect.value;
  const f = windowEndingAt(snapshots.length - 1, view, null);
  const workers = Object.keys(newest.workers).length;
  document.getElementById("status").textContent =
    `updated ${new Date(newest.time * 1000).toLocaleTimeString()} · ` +
    (newest.multiprocess ? `${workers} worker${workers === 1 ? "" : "s"}` : "one process") +
    ` · answered by pid ${newest.answered_by}`;
  if (!f) return; // one answer: nothing to compare yet
  drawCards(view, f);
  drawRoutes(view, newest);
  drawWorkers(newest);
}

async function poll() {
  try {
    const response = await fetch(DATA_URL, { cache: "no-store" });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    snapshots.push(await response.json());
    if (snapshots.length > HISTORY + WINDOW) snapshots.shift();
    draw();
  } catch (error) {
    document.getElementById("status").textContent = `cannot read ${DATA_URL.pathname}: ${error.message}`;
  }
  setTimeout(poll, POLL_MS);
}

viewSelect.addEventListener("change", () => snapshots.length && draw());
poll();
