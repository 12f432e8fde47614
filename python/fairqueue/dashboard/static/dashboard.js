// The fairqueue dashboard: one page over the JSON API. Everything the store holds
// (org names, handlers, arguments, errors) is put in the page as text, never as HTML.
"use strict";

const ROOT = document.querySelector('meta[name="fairqueue-root"]').content;
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#ff7f0e"];
const REFRESH_MS = 5000;
let viewer = null;

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// Every change is a same-origin JSON POST with the header the server requires.
async function api(path, body) {
  const options = {credentials: "same-origin", headers: {"Accept": "application/json"}};
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.headers["X-Fairqueue-Request"] = "1";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(ROOT + path, options);
  let payload = null;
  try { payload = await response.json(); } catch (e) { payload = null; }
  if (!response.ok) throw new ApiError(response.status, (payload && payload.error) || response.statusText);
  return payload;
}

const $ = id => document.getElementById(id);
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function emptyRow(columns, text) { const tr = el("tr"), td = el("td", text, "muted"); td.colSpan = columns; tr.append(td); return tr; }
function link(text, href) { const a = el("a", text); a.href = href; return a; }
const secs = v => v === null || v === undefined ? "—" : v < 1 ? `${(v * 1000).toFixed(0)} ms` : v < 120 ? `${v.toFixed(1)} s` : `${(v / 60).toFixed(1)} min`;
const when = t => t ? new Date(t * 1000).toLocaleString() : "—";
const num = n => Number(n).toLocaleString();
function say(text, cls) { const s = $("status"); s.textContent = text; s.className = cls || "muted"; }
function failed(e) {
  if (e instanceof ApiError && e.status === 401) { showLogin(); return; }
  say(`error: ${e.message}`, "error");
}
function jobUrl(id) { return `${ROOT}/jobs/${encodeURIComponent(id)}`; }

// ----- sign-in ------------------------------------------------------------------------

function showLogin() {
  for (const v of ["view-overview", "view-jobs", "view-job", "view-workers"]) $(v).hidden = true;
  $("login").hidden = false;
  say("this dashboard needs a token");
}

$("login-form").addEventListener("submit", async e => {
  e.preventDefault();
  try { await api("/api/login", {token: $("login-token").value}); location.reload(); }
  catch (err) { $("login-error").textContent = err.message; }
});
$("sign-out").addEventListener("click", async () => { await api("/api/logout", {}); location.reload(); });

// ----- overview: chart, orgs, flex queue ------------------------------------------------

let plot = null, periods = [];
const orgState = {sort: "pending", order: "desc", offset: 0, search: ""};

function shade(u) {
  const ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
  for (const p of periods) {
    const x0 = u.valToPos(p.start, "x", true), x1 = u.valToPos(p.end || Date.now() / 1000, "x", true);
    ctx.fillStyle = p.kind === "throttle" ? "rgba(255,140,0,.25)" : "rgba(70,110,255,.18)";
    ctx.fillRect(x0, top, Math.max(x1 - x0, 2), height);
  }
}

async function drawChart() {
  const history = await api("/api/history?seconds=3600&series=10");
  periods = history.periods;
  const orgs = Object.keys(history.pending);
  const times = [...new Set(orgs.flatMap(o => history.pending[o].map(p => p[0])))].sort((a, b) => a - b);
  const series = orgs.map(o => { const at = new Map(history.pending[o]); return times.map(t => at.has(t) ? at.get(t) : null); });
  const chart = $("chart");
  if (plot) { plot.destroy(); plot = null; }
  $("chart-note").textContent = history.orgs > orgs.length ? `(the ${orgs.length} busiest of ${num(history.orgs)} orgs)` : "";
  if (!times.length) { chart.textContent = "No history yet: workers record it every few seconds."; return; }
  chart.textContent = "";
  plot = new uPlot({
    width: Math.min(window.innerWidth - 60, 1100), height: 300, spanGaps: true,
    series: [{}, ...orgs.map((o, i) => ({label: o, stroke: COLORS[i % COLORS.length], width: 2}))],
    // The x axis spans the hour asked for, so a lone sample sits at its time, not in a made-up range.
    scales: {x: {time: true, range: [history.since, history.now]}},
    axes: [{}, {label: "pending jobs"}], hooks: {drawClear: [shade]},
  }, [times, ...series], chart);
}

// An org's pending jobs over the last hour, as inline SVG built node by node: the org's
// name goes into the title and label as text, never as markup.
const SVG = "http://www.w3.org/2000/svg", SPARK_W = 120, SPARK_H = 22;
function sparkline(org, points) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", SPARK_W); svg.setAttribute("height", SPARK_H);
  svg.setAttribute("viewBox", `0 0 ${SPARK_W} ${SPARK_H}`);
  svg.setAttribute("role", "img");
  const known = points.filter(v => v !== null), peak = Math.max(0, ...known);
  const summary = known.length ? `${org}: pending jobs over the last hour, peak ${num(peak)}, now ${num(known[known.length - 1])}`
    : `${org}: no history in the last hour`;
  svg.setAttribute("aria-label", summary);
  const title = document.createElementNS(SVG, "title"); title.textContent = summary; svg.append(title);
  const base = document.createElementNS(SVG, "line");  // the hour's zero line, so a short run shows when it was
  base.setAttribute("class", "base");
  for (const [k, v] of [["x1", 1], ["x2", SPARK_W - 1], ["y1", SPARK_H - 2], ["y2", SPARK_H - 2]]) base.setAttribute(k, v);
  svg.append(base);
  const x = i => (i * (SPARK_W - 2)) / Math.max(points.length - 1, 1) + 1;
  const y = v => SPARK_H - 2 - (peak ? (v / peak) * (SPARK_H - 4) : 0);
  // One polyline per run of sampled points: a gap (no worker sampling) stays a gap.
  let run = [];
  const flush = () => {
    if (run.length === 1) {  // a lone point: a dot
      const dot = document.createElementNS(SVG, "circle");
      dot.setAttribute("cx", run[0][0].toFixed(1)); dot.setAttribute("cy", run[0][1].toFixed(1)); dot.setAttribute("r", 1.8);
      svg.append(dot);
    } else if (run.length) {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", run.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" "));
      svg.append(line);
    }
    run = [];
  };
  points.forEach((v, i) => { if (v === null) flush(); else run.push([x(i), y(v)]); });
  flush();
  return svg;
}

async function drawOrgs() {
  const limit = Number($("org-limit").value);
  const q = new URLSearchParams({sort: orgState.sort, order: orgState.order, offset: orgState.offset, limit, search: orgState.search});
  const page = await api(`/api/orgs?${q}`);
  $("orgs").querySelector("tbody").replaceChildren(...page.orgs.map(o => {
    const tr = el("tr"); tr.dataset.org = o.org;
    const name = el("td"); name.append(link(o.org, `${ROOT}/jobs?${new URLSearchParams({org: o.org})}`));
    const flex = el("button", "flex", "small"); flex.type = "button"; flex.title = "show this org's flex queue";
    flex.addEventListener("click", () => { $("flex-org").value = o.org; drawFlex().catch(failed); });
    name.append(" ", flex);
    const spark = el("td", null, "spark"); spark.append(sparkline(o.org, o.spark || []));
    tr.append(name, el("td", num(o.pending), "n"), spark, el("td", num(o.running), "n"), el("td", num(o.finished), "n"),
      el("td", secs(o.wait_p50), "n"), el("td", secs(o.wait_p95), "n"), el("td", secs(o.wait_p99), "n"));
    return tr;
  }));
  const last = Math.min(page.offset + page.orgs.length, page.total);
  $("org-range").textContent = page.total ? `${num(page.offset + 1)}–${num(last)} of ${num(page.total)} org${page.total === 1 ? "" : "s"}` : "no orgs";
  if (!page.orgs.length) $("orgs").querySelector("tbody").replaceChildren(emptyRow(8, orgState.search ? "no org matches" : "no jobs yet"));
  $("org-prev").disabled = page.offset === 0;
  $("org-next").disabled = last >= page.total;
  for (const th of $("orgs").querySelectorAll("th[data-sort]")) {
    th.classList.toggle("sorted", th.dataset.sort === orgState.sort);
    th.classList.toggle("asc", th.dataset.sort === orgState.sort && orgState.order === "asc");
  }
}

async function drawFlex() {
  const org = $("flex-org").value.trim(), body = $("flex").querySelector("tbody");
  $("flex-error").textContent = "";
  if (!org) { body.replaceChildren(); return; }
  const holding = await api(`/api/flex/${encodeURIComponent(org)}`);
  if (!holding.length) { body.replaceChildren(emptyRow(4, `org ${org} has no batch jobs holding`)); return; }
  body.replaceChildren(...holding.map((j, i) => {
    const tr = el("tr"); tr.dataset.id = j.id;
    const moves = el("td");
    const move = (label, where) => {
      const b = el("button", label, "small"); b.type = "button"; b.disabled = viewer.read_only;
      b.addEventListener("click", async () => {
        try { await api(`/api/flex/${encodeURIComponent(org)}/move`, {job_id: j.id, ...where}); await drawFlex(); }
        catch (e) { $("flex-error").textContent = e.message; }
      });
      moves.append(b);
    };
    if (i > 0) { move("front", {to: "front"}); move("up", {before: holding[i - 1].id}); }
    if (i < holding.length - 1) { move("down", {after: holding[i + 1].id}); move("end", {to: "end"}); }
    const id = el("td", null, "n"); id.append(link(j.id, jobUrl(j.id)));
    tr.append(el("td", i + 1, "n"), id, el("td", j.handler), moves);
    return tr;
  }));
}

function overview() {
  $("view-overview").hidden = false;
  if (viewer.org !== null) { $("flex-org").value = viewer.org; $("flex-org").readOnly = true; }
  let searchTimer = null;
  $("org-search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { orgState.search = $("org-search").value.trim(); orgState.offset = 0; drawOrgs().catch(failed); }, 150);
  });
  $("org-limit").addEventListener("change", () => { orgState.offset = 0; drawOrgs().catch(failed); });
  $("org-prev").addEventListener("click", () => { orgState.offset = Math.max(0, orgState.offset - Number($("org-limit").value)); drawOrgs().catch(failed); });
  $("org-next").addEventListener("click", () => { orgState.offset += Number($("org-limit").value); drawOrgs().catch(failed); });
  for (const th of $("orgs").querySelectorAll("th[data-sort]")) {
    th.tabIndex = 0;
    const sort = () => {
      const key = th.dataset.sort;
      orgState.order = orgState.sort === key ? (orgState.order === "asc" ? "desc" : "asc") : key === "org" ? "asc" : "desc";
      orgState.sort = key; orgState.offset = 0; drawOrgs().catch(failed);
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", e => { if (e.key === "Enter") sort(); });
  }
  $("flex-org").addEventListener("input", () => drawFlex().catch(failed));
  const refresh = async () => {
    try {
      const t0 = performance.now();
      await drawOrgs();
      say(`updated ${new Date().toLocaleTimeString()} (orgs in ${Math.round(performance.now() - t0)} ms)`);
      await Promise.all([drawChart(), drawFlex()]);
    } catch (e) { failed(e); }
  };
  refresh();
  setInterval(refresh, REFRESH_MS);
}

// ----- jobs: filters, cursor pagination, bulk retry and abort ---------------------------

const FILTERS = ["org", "kind", "status", "handler", "limit"];
const LIVE = ["holding", "queued", "processing"], RERUNNABLE = ["failed", "discarded", "aborted"];
const selected = new Map();  // job id -> the job as last shown: which bulk action applies to it
let cursors = [null], shown = [];

function jobsQuery() {
  const q = new URLSearchParams();
  for (const f of FILTERS) { const v = $(`filter-${f}`).value.trim(); if (v) q.set(f, v); }
  return q;
}

async function drawJobs() {
  const q = jobsQuery();
  history.replaceState(null, "", `${ROOT}/jobs${q.toString() ? "?" + q : ""}`);
  const before = cursors[cursors.length - 1];
  if (before !== null) q.set("before", before);
  const page = await api(`/api/jobs?${q}`);
  shown = page.jobs;
  for (const j of shown) if (selected.has(j.id)) selected.set(j.id, j);  // statuses change (a refresh, another tab)
  $("jobs").querySelector("tbody").replaceChildren(...page.jobs.map(j => {
    const tr = el("tr"); tr.dataset.id = j.id;
    const box = el("input"); box.type = "checkbox"; box.checked = selected.has(j.id); box.setAttribute("aria-label", `select job ${j.id}`);
    box.disabled = viewer.read_only;
    box.addEventListener("change", () => { box.checked ? selected.set(j.id, j) : selected.delete(j.id); bulkState(); });
    const pick = el("td"); pick.append(box);
    const id = el("td"); id.append(link(j.id, jobUrl(j.id)));
    tr.append(pick, id, el("td", j.org), el("td", j.kind), el("td", j.handler), el("td", j.status, `status ${j.status}`),
      el("td", when(j.created_at)), el("td", j.attempts, "n"));
    return tr;
  }));
  if (!page.jobs.length) $("jobs").querySelector("tbody").replaceChildren(emptyRow(8, "no jobs match"));
  $("jobs-prev").disabled = $("jobs-first").disabled = cursors.length === 1;
  $("jobs-next").disabled = page.next === null;
  $("jobs-next").dataset.next = page.next === null ? "" : page.next;
  const partial = page.partial ? " (handler filter: more may follow, next › reads on)" : "";
  $("jobs-range").textContent = `page ${cursors.length}: ${page.jobs.length} jobs${partial}`;
  $("select-all").checked = shown.length > 0 && shown.every(j => selected.has(j.id));
  bulkState();
  say(`updated ${new Date().toLocaleTimeString()}`);
}

// The selected jobs a bulk action applies to: retry the finished-unsuccessfully, abort the live.
const BULK = {
  // A batch's chunks cannot be re-run (the server refuses): not counted.
  retry: {label: "Retry", verb: "retry", done: "retried", applies: j => RERUNNABLE.includes(j.status) && j.kind !== "batch"},
  abort: {label: "Abort", verb: "abort", done: "aborted", applies: j => LIVE.includes(j.status)},
};
function bulkIds(action) { return [...selected.values()].filter(BULK[action].applies).map(j => j.id); }

function bulkState() {
  for (const action of Object.keys(BULK)) {
    const n = bulkIds(action).length, button = $(`bulk-${action}`);
    button.disabled = viewer.read_only || n === 0;
    button.textContent = n ? `${BULK[action].label} selected (${n})` : `${BULK[action].label} selected`;
  }
  $("bulk-retry-all").disabled = viewer.read_only || !["", ...RERUNNABLE].includes($("filter-status").value);
}

// A bulk action asks first, in the page, saying how many jobs it touches.
let pendingBulk = null;
function askBulk(action) {
  const ids = bulkIds(action);
  if (!ids.length) return;
  pendingBulk = {action, ids};
  const skipped = selected.size - ids.length;
  $("bulk-question").textContent = `${BULK[action].label} ${ids.length} job${ids.length === 1 ? "" : "s"}?` +
    (skipped ? ` (${skipped} selected job${skipped === 1 ? "" : "s"} cannot be ${BULK[action].done}: left as ${skipped === 1 ? "it is" : "they are"})` : "");
  $("bulk-yes").textContent = `${BULK[action].label} ${ids.length}`;
  $("bulk-confirm").hidden = false;
  $("bulk-yes").focus();
}

// Every job the filters match, on every page: the server counts them first (a dry run).
async function askRetryAll() {
  const body = {};
  for (const f of ["org", "kind", "status", "handler"]) { const v = $(`filter-${f}`).value.trim(); if (v) body[f] = v; }
  const described = Object.entries(body).map(([k, v]) => `${k} ${v}`).join(", ");
  if (!described) body.all = true;
  try {
    const {matched} = await api("/api/jobs/retry", {...body, dry_run: true});
    if (!matched) { $("bulk-result").textContent = "retry: no failed, discarded or aborted job matches"; return; }
    pendingBulk = {action: "retry", body};
    $("bulk-question").textContent = `Retry ${body.status ? "" : "every failed, discarded and aborted job: "}up to ${num(matched)} ` +
      `job${matched === 1 ? "" : "s"} ${described ? `matching ${described}` : "of every org and kind"}, on every page?`;
    $("bulk-yes").textContent = `Retry ${num(matched)}`;
    $("bulk-confirm").hidden = false;
    $("bulk-yes").focus();
  } catch (e) { $("bulk-result").textContent = e.message; }
}

async function runBulk() {
  const {action, ids, body} = pendingBulk; pendingBulk = null;
  $("bulk-confirm").hidden = true;
  try {
    const {results} = await api(`/api/jobs/${action}`, body || {ids});
    const counts = {}, reasons = [];
    for (const r of results) { const k = r.status || "refused"; counts[k] = (counts[k] || 0) + 1; if (r.error) reasons.push(`${r.id}: ${r.error}`); }
    $("bulk-result").textContent = `${BULK[action].verb}: ` + (Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(", ") || "none matched");
    $("bulk-result").title = reasons.join("\n");
    selected.clear();  // done with this selection (what it left is in the result line)
    await drawJobs();
  } catch (e) { $("bulk-result").textContent = e.message; }
}

function jobs() {
  $("view-jobs").hidden = false;
  const params = new URLSearchParams(location.search);
  for (const f of FILTERS) if (params.has(f)) $(`filter-${f}`).value = params.get(f);
  if (viewer.org !== null) { $("filter-org").value = viewer.org; $("filter-org").readOnly = true; }
  const restart = () => { cursors = [null]; selected.clear(); $("bulk-confirm").hidden = true; drawJobs().catch(failed); };
  let timer = null;
  for (const f of FILTERS) {
    const input = $(`filter-${f}`);
    input.addEventListener(input.tagName === "SELECT" ? "change" : "input", () => { clearTimeout(timer); timer = setTimeout(restart, 200); });
  }
  $("job-filters").addEventListener("submit", e => { e.preventDefault(); restart(); });
  $("jobs-first").addEventListener("click", () => { cursors = [null]; drawJobs().catch(failed); });
  $("jobs-prev").addEventListener("click", () => { if (cursors.length > 1) cursors.pop(); drawJobs().catch(failed); });
  $("jobs-next").addEventListener("click", () => { cursors.push(Number($("jobs-next").dataset.next)); drawJobs().catch(failed); });
  $("select-all").addEventListener("change", () => {
    for (const j of shown) $("select-all").checked ? selected.set(j.id, j) : selected.delete(j.id);
    drawJobs().catch(failed);
  });
  $("bulk-retry").addEventListener("click", () => askBulk("retry"));
  $("bulk-abort").addEventListener("click", () => askBulk("abort"));
  $("bulk-retry-all").addEventListener("click", askRetryAll);
  $("bulk-yes").addEventListener("click", () => { if (pendingBulk) runBulk(); });
  $("bulk-no").addEventListener("click", () => { pendingBulk = null; $("bulk-confirm").hidden = true; });
  drawJobs().catch(failed);
}

// ----- one job ---------------------------------------------------------------------------

async function drawJob(id) {
  const {record, explanation, batch_errors, attempt_errors, rerunnable, timeline} = await api(`/api/jobs/${encodeURIComponent(id)}`);
  document.title = `job ${record.id} · fairqueue`;
  $("job-title").textContent = `job ${record.id}: ${record.handler}`;
  $("job-summary").textContent = `${record.kind} job of org ${record.org}, ${record.status}`;
  $("job-summary").className = `status ${record.status}`;
  $("job-reasons").replaceChildren(...explanation.reasons.map(r => el("li", r.message)));
  $("job-estimate").textContent = explanation.estimated_start ? `estimated start ${when(explanation.estimated_start)} (${explanation.estimate_basis})`
    : explanation.estimate_basis ? `no estimate: ${explanation.estimate_basis}` : "";
  $("job-timeline").replaceChildren(...timeline.map(t => { const li = el("li"); li.append(el("time", when(t.at)), " ", t.event); return li; }));
  const fields = ["id", "org", "kind", "handler", "status", "handler_attempts", "attempts", "worker_deaths", "created_at", "run_at", "started_at", "finished_at",
    "items_processed", "items_total", "error_count", "extended_status", "parent_id", "chain_depth", "duplicate_signature", "lease_owner"];
  $("job-record").querySelector("tbody").replaceChildren(...fields.map(f => {
    const tr = el("tr"); const v = record[f];
    const shownValue = f.endsWith("_at") ? when(v) : v === null || v === undefined ? "—" : v;
    if (f === "parent_id" && v) { const td = el("td"); td.append(link(v, jobUrl(v))); tr.append(el("th", f), td); }
    else tr.append(el("th", f), el("td", shownValue));
    return tr;
  }));
  $("job-payload").textContent = pretty(record.payload);
  $("job-output").textContent = record.result === null || record.result === undefined ? "—" : pretty(record.result);
  $("job-attempts").textContent = `the handler ran ${record.handler_attempts} time${record.handler_attempts === 1 ? "" : "s"} in ` +
    `${record.attempts} deliver${record.attempts === 1 ? "y" : "ies"}` +
    (record.worker_deaths ? `; ${record.worker_deaths} lost to a dead worker` : "");
  $("job-attempt-errors").replaceChildren(...attempt_errors.map(a => {
    const li = el("li");
    li.append(el("strong", `attempt ${a.attempt}: ${a.type}`), " ", el("span", a.message), " ", el("time", when(a.at), "muted"));
    if (a.traceback) {
      const details = el("details"); details.append(el("summary", "traceback"), el("pre", a.traceback));
      details.open = openTracebacks.has(a.attempt);  // a refresh keeps what the reader opened
      details.addEventListener("toggle", () => details.open ? openTracebacks.add(a.attempt) : openTracebacks.delete(a.attempt));
      li.append(details);
    }
    return li;
  }));
  if (!attempt_errors.length && record.handler_attempts) $("job-attempts").append("; no attempt raised");
  $("job-attempt-errors").hidden = !attempt_errors.length;
  $("job-attempts-section").hidden = !record.attempts && !attempt_errors.length;  // never delivered: nothing to say
  const errors = batch_errors.map(e => { const li = el("li"); li.append(el("strong", `${e.phase}${e.chunk !== null ? " chunk " + e.chunk : ""}: ${e.exception_type}`), " ", e.message, el("pre", e.traceback)); return li; });
  // The outcome's own note, unless the attempts above already say it (a job failed by hand, or before #14, has none).
  if (["failed", "discarded"].includes(record.status) && record.extended_status && !attempt_errors.length) {
    errors.unshift(el("li", record.extended_status));
  }
  $("job-errors").replaceChildren(...errors);
  $("job-errors-section").hidden = !errors.length;
  const live = ["holding", "queued", "processing"].includes(record.status);
  $("job-abort").hidden = !live || viewer.read_only;
  $("job-retry").hidden = !rerunnable || viewer.read_only;
  say(`updated ${new Date().toLocaleTimeString()}`);
}

// JSON text shown indented (as text: never parsed as HTML).
function pretty(text) { try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; } }
const openTracebacks = new Set();

function job(id) {
  $("view-job").hidden = false;
  $("job-retry").addEventListener("click", async () => {
    try { const r = await api(`/api/jobs/${encodeURIComponent(id)}/retry`, {}); $("job-result").textContent = `retry: ${r.status}`; }
    catch (e) { $("job-result").textContent = e.message; }
    drawJob(id).catch(failed);
  });
  $("job-abort").addEventListener("click", async () => {
    try { const r = await api(`/api/jobs/${encodeURIComponent(id)}/abort`, {}); $("job-result").textContent = `abort: ${r.status}`; }
    catch (e) { $("job-result").textContent = e.message; }
    drawJob(id).catch(failed);
  });
  drawJob(id).catch(failed);
  setInterval(() => drawJob(id).catch(failed), REFRESH_MS);
}

// ----- workers (fleet-wide: not for an org-scoped viewer) -------------------------------

async function drawWorkers() {
  const workers = await api("/api/workers");
  $("workers").querySelector("tbody").replaceChildren(...workers.map(w => {
    const tr = el("tr"); tr.dataset.name = w.name;
    tr.append(el("td", w.name), el("td", w.host), el("td", w.pid, "n"), el("td", w.mode), el("td", w.slots, "n"),
      el("td", when(w.started_at)), el("td", `${when(w.last_seen)} (${secs(Math.max(Date.now() / 1000 - w.last_seen, 0))} ago)`),
      el("td", w.alive ? "alive" : "dead", w.alive ? "state alive" : "state dead"), el("td", w.running, "n"));
    return tr;
  }));
  if (!workers.length) $("workers").querySelector("tbody").replaceChildren(emptyRow(9, "no worker is registered"));
  say(`updated ${new Date().toLocaleTimeString()}`);
}

function workers() {
  $("view-workers").hidden = false;
  drawWorkers().catch(failed);
  setInterval(() => drawWorkers().catch(failed), REFRESH_MS);
}

// ----- start -----------------------------------------------------------------------------

async function start() {
  try { viewer = await api("/api/me"); } catch (e) { failed(e); return; }
  const parts = [];
  if (viewer.org !== null) parts.push(`org ${viewer.org}`);
  if (viewer.read_only) parts.push("read-only");
  $("viewer").textContent = parts.join(" · ");
  $("sign-out").hidden = !viewer.signed_in;
  $("nav-workers").hidden = viewer.org !== null;
  const path = location.pathname.slice(ROOT.length).replace(/\/+$/, "");
  const match = path.match(/^\/jobs\/([^/]+)$/);
  if (match) { $("nav-jobs").classList.add("current"); job(decodeURIComponent(match[1])); }
  else if (path === "/jobs") { $("nav-jobs").classList.add("current"); jobs(); }
  else if (path === "/workers") { $("nav-workers").classList.add("current"); workers(); }
  else { $("nav-overview").classList.add("current"); overview(); }
}
start();
