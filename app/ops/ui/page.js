// rowstream's operator page: the cluster's lag, time lag and per-shard throughput over the last
// 15 minutes, refreshed every few seconds from the worker's JSON views (/lag/history,
// /shards/history, /lag/, /shards/). They need an unscoped API key: asked for once, kept in
// this browser tab's session storage. Charts: uPlot (vendored, see vendor/uplot/VENDOR.json).
"use strict";

const REFRESH_MS = 3000;
const KEY_ITEM = "rowstream-api-key";
const COLORS = ["#1e88e5", "#e53935", "#43a047", "#fb8c00", "#8e24aa", "#00acc1", "#6d4c41",
                "#546e7a"];
const charts = {};
const state = { latest: null, charts };
window.rowstream = state; // for the browser test and the curious

function apiKey() {
  let key = sessionStorage.getItem(KEY_ITEM);
  if (!key) {
    key = (window.prompt("rowstream: an unscoped API key (kept for this tab only)") || "").trim();
    if (key) sessionStorage.setItem(KEY_ITEM, key);
  }
  return key;
}

async function get(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${apiKey()}` } });
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(KEY_ITEM); // asked again next round
    throw new Error(`${path}: the key was refused (${response.status})`);
  }
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function fill(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren();
  for (const build of rows) build(body.insertRow());
}

// One uPlot line chart per element; its series are re-made when their names change.
function draw(id, names, xs, columns) {
  const element = document.getElementById(id);
  const key = names.join("|");
  let chart = charts[id];
  if (!chart || chart.key !== key) {
    if (chart) chart.plot.destroy();
    const series = [{}].concat(names.map((name, n) => ({
      label: name, stroke: COLORS[n % COLORS.length], width: 2, points: { show: false },
    })));
    const width = Math.max(480, element.parentElement.clientWidth - 20);
    chart = charts[id] = {
      key, plot: new uPlot({ width, height: 220, series, scales: { x: { time: true } } },
                           [xs, ...columns], element),
    };
  } else {
    chart.plot.setData([xs, ...columns]);
  }
  chart.names = names;
  chart.data = [xs, ...columns];
}

function lagSeries(samples, field) {
  const topics = new Set(), shards = new Set();
  for (const sample of samples) {
    Object.keys(sample.topics || {}).forEach((t) => topics.add(t));
    (sample.shards || []).forEach((s) => shards.add(s.shard));
  }
  const topicNames = [...topics].sort(), shardIds = [...shards].sort((a, b) => a - b);
  const names = topicNames.map((t) => `topic ${t}`).concat(shardIds.map((s) => `shard ${s}`));
  const columns = names.map(() => []);
  for (const sample of samples) {
    topicNames.forEach((t, n) => columns[n].push(sample.topics?.[t]?.[field] ?? null));
    shardIds.forEach((shard, n) => { // the shard's worst partition over both topics
      const values = (sample.shards || []).filter((s) => s.shard === shard).map((s) => s[field]);
      const value = values.length ? (field === "time_lag_seconds" ? Math.max(...values)
        : values.reduce((a, b) => a + b, 0)) : null;
      columns[topicNames.length + n].push(value);
    });
  }
  return { names, columns };
}

function rates(samples, field, shard) { // per second, from the differences of the totals
  const out = [null];
  for (let i = 1; i < samples.length; i++) {
    const pick = (sample) => (sample.shards || []).filter((s) => s.shard === shard)
      .reduce((sum, s) => sum + (s[field] || 0), 0);
    const seconds = samples[i].at - samples[i - 1].at;
    out.push(seconds > 0 ? Math.max(0, (pick(samples[i]) - pick(samples[i - 1])) / seconds) : null);
  }
  return out;
}

async function refresh() {
  const [lagHistory, shardHistory, lag, shards] = await Promise.all([
    get("/lag/history"), get("/shards/history"), get("/lag/"), get("/shards/"),
  ]);
  const lagSamples = lagHistory.samples, shardSamples = shardHistory.samples;
  const xs = lagSamples.map((s) => s.at);
  const timeLag = lagSeries(lagSamples, "time_lag_seconds");
  draw("chart-time-lag", timeLag.names, xs, timeLag.columns);
  const messageLag = lagSeries(lagSamples, "message_lag");
  draw("chart-message-lag", messageLag.names, xs, messageLag.columns);
  const shardIds = shards.shards.map((s) => s.shard);
  const sx = shardSamples.map((s) => s.at);
  draw("chart-rows", shardIds.map((s) => `shard ${s}`), sx,
       shardIds.map((s) => rates(shardSamples, "rows", s)));
  draw("chart-updates",
       shardIds.flatMap((s) => [`shard ${s} applied`, `shard ${s} coalesced`]), sx,
       shardIds.flatMap((s) => [rates(shardSamples, "events", s),
                                rates(shardSamples, "coalesced", s)]));

  const now = {};
  for (const entry of lag.shards) { // per shard: the worst time lag, the lag summed over topics
    const shard = (now[entry.shard] ??= { time_lag: 0, message_lag: 0, waiting_updates: 0 });
    shard.time_lag = Math.max(shard.time_lag, entry.time_lag_seconds);
    shard.message_lag += entry.message_lag;
    shard.waiting_updates += entry.waiting_updates;
  }
  const lastRows = Object.fromEntries(shardIds.map((s) => [s, rates(shardSamples, "rows", s).at(-1)]));
  fill("shards", shards.shards.map((s) => (row) => {
    const figures = now[s.shard] || { time_lag: 0, message_lag: 0, waiting_updates: 0 };
    row.dataset.shard = s.shard;
    cell(row, s.shard);
    cell(row, s.up ? "up" : "down", s.up ? "up" : "down");
    cell(row, figures.time_lag.toFixed(1), figures.time_lag >= 10 ? "time-lag late" : "time-lag");
    cell(row, figures.message_lag, "message-lag");
    cell(row, figures.waiting_updates, "waiting-updates");
    cell(row, lastRows[s.shard] == null ? "" : Math.round(lastRows[s.shard]), "rows");
    cell(row, s.total.errors_transient, "errors-transient");
    cell(row, s.total.errors_rejected, "errors-rejected");
  }));
  const top = [...lag.partitions].sort((a, b) => b.time_lag_seconds - a.time_lag_seconds
    || b.message_lag - a.message_lag).slice(0, 10);
  fill("partitions", top.map((p) => (row) => {
    cell(row, p.topic); cell(row, p.partition); cell(row, p.message_lag);
    cell(row, p.time_lag_seconds.toFixed(1)); cell(row, p.owner);
  }));
  fill("dead-letters", Object.entries(lag.dead_letters || {}).map(([reason, count]) => (row) => {
    cell(row, reason); cell(row, count);
  }));
  state.latest = { shards: now, samples: lagSamples.length, at: Date.now() };
}

async function loop() {
  const status = document.getElementById("status");
  try {
    await refresh();
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.className = "";
  } catch (error) {
    status.textContent = String(error.message || error);
    status.className = "error";
  }
  setTimeout(loop, REFRESH_MS);
}

loop();
