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
  for (const v of ["view-overview", "view-jobs", "view-job", "view-workers", "view-org", "view-settings"]) $(v).hidden = true;
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

const SHADES = {throttle: "rgba(255,140,0,.25)", extended_delay: "rgba(70,110,255,.18)", pause: "rgba(120,120,120,.28)"};
function shade(u) {
  const ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
  for (const p of periods) {
    const x0 = u.valToPos(p.start, "x", true), x1 = u.valToPos(p.end || Date.now() / 1000, "x", true);
    ctx.fillStyle = SHADES[p.kind] || SHADES.extended_delay;
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
    const settings = link("settings", orgUrl(o.org)); settings.className = "small-link"; settings.title = "this org's limits and pauses";
    name.append(" ", flex, " ", settings);
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
  $("job-org-settings").href = orgUrl(record.org);
  $("job-org-settings").textContent = `settings of org ${record.org}`;
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

// ----- tenant settings: an org's page, and the fleet's tiers and queues ------------------
// Every value is shown with where it comes from (org, kind, key, tier:NAME or code). An
// input holds the scope's own value; emptied, it sends null: back to what it inherits.

const ORG_FIELDS = [["cap", "org cap (all kinds)"], ["min", "min slots"], ["weight", "weight"], ["per_key_cap", "per-key cap"],
  ["per_key_weight", "per-key weight"], ["daily_limit", "daily limit"], ["rate", "rate limit"], ["key_rate", "each key's rate"]];
const KIND_FIELDS = ["cap", "min", "weight", "rate"], KEY_FIELDS = ["cap", "weight", "rate"];
const SETTINGS_POLL_MS = 1000;
function orgUrl(org) { return `${ROOT}/orgs/${encodeURIComponent(org)}`; }
function orgApi(org, rest) { return `/api/orgs/${encodeURIComponent(org)}/settings${rest || ""}`; }
const isRate = field => field === "rate" || field === "key_rate";
const PERIODS = {1: "s", 60: "min", 3600: "h", 86400: "day"};  // what RateLimit.parse reads back
const rateText = r => `${Number(r.rate)}/${PERIODS[Number(r.per)] || `${Number(r.per)}s`}`;
function valueText(field, v) {
  if (v === null || v === undefined) return field.endsWith("cap") ? "no cap" : isRate(field) ? "no limit" : "—";
  if (isRate(field)) return `${rateText(v)} (burst ${v.burst})`;
  return typeof v === "number" ? num(v) : String(v);
}
const pauseText = p => `paused since ${when(p.since)} by ${p.by || "someone unnamed"}`;

// An input for one field: its own value (if the scope has one), the inherited one as placeholder.
function fieldInputs(field, resolved, own) {
  const wrap = el("span", null, "edit field-edit");
  const mine = resolved.source === own && resolved.value !== null && resolved.value !== undefined;
  const input = el("input"); input.dataset.field = field; input.size = isRate(field) ? 7 : 6;
  input.setAttribute("aria-label", field);
  input.value = mine ? (isRate(field) ? rateText(resolved.value) : String(resolved.value)) : (resolved.source === own ? "none" : "");
  input.placeholder = isRate(field) ? "10/s" : valueText(field, resolved.source === own ? null : resolved.value);
  input.dataset.original = input.value;
  wrap.append(input);
  if (isRate(field)) {
    const burst = el("input"); burst.dataset.burstOf = field; burst.size = 4; burst.placeholder = "burst";
    burst.setAttribute("aria-label", `${field} burst`);
    burst.value = mine ? String(resolved.value.burst) : ""; burst.dataset.original = burst.value;
    wrap.append(" ", burst);
  }
  return wrap;
}

// The changed fields of a row or form, as the API takes them (numbers as numbers; the rest,
// "none" or a typo, as text: the server says what is wrong with it).
function changedValues(container) {
  const values = {};
  for (const input of container.querySelectorAll("input[data-field]")) {
    const field = input.dataset.field, burst = container.querySelector(`input[data-burst-of="${field}"]`);
    const text = input.value.trim();
    if (text === input.dataset.original && (!burst || burst.value.trim() === burst.dataset.original)) continue;
    if (text === "") { values[field] = null; continue; }
    if (isRate(field)) {
      const b = burst ? burst.value.trim() : "";
      values[field] = {rate: text, burst: b === "" ? null : /^\d+$/.test(b) ? Number(b) : b};
    } else values[field] = /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : text;
  }
  return values;
}

const sourceClass = source => `source source-${source.split(":")[0]}`;
function sourceCell(resolved) { const td = el("td"); td.append(el("span", resolved.source, sourceClass(resolved.source))); return td; }
function valueCell(field, resolved) {
  const td = el("td");
  td.append(el("span", valueText(field, resolved.value), "value"), " ", el("span", resolved.source, sourceClass(resolved.source)));
  return td;
}

let orgShown = null;  // the settings version the org page shows
async function settingsAct(path, body, org) {
  $("settings-error").textContent = "";
  try {
    const answer = await api(path, body);
    $("settings-result").textContent = `saved: settings version ${answer.version}`;
    await drawOrgSettings(org, true);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) { showLogin(); return; }
    $("settings-error").textContent = e.message;
  }
}

function pauseButtons(org, pause, body, what) {
  const td = el("td", null, "edit actions");
  const b = el("button", pause ? `Resume ${what}` : `Pause ${what}`, "small"); b.type = "button";
  b.addEventListener("click", () => settingsAct(orgApi(org, pause ? "/resume" : "/pause"), body, org));
  return [td, b];
}

async function drawOrgSettings(org, force) {
  const dirty = new Map();  // what the reader is typing survives a redraw
  for (const input of $("view-org").querySelectorAll("input")) {
    if (input.value !== input.dataset.original) dirty.set(input.closest("[data-scope]").dataset.scope + "|" + (input.dataset.field || "b:" + input.dataset.burstOf), input.value);
  }
  const s = await api(`${orgApi(org)}`);
  if (!force && s.version === orgShown) return;
  orgShown = s.version;
  document.title = `${org} settings · fairqueue`;
  $("org-title").textContent = `Settings of org ${org}`;
  $("view-org").classList.toggle("editable", s.editable);
  $("settings-note").textContent = s.editable ? "" : viewer.read_only ? "read-only dashboard: settings are shown, not changed"
    : "you may see this org's settings but not change them";
  $("org-pause-state").textContent = s.paused ? pauseText(s.paused) : "running (not paused)";
  $("org-pause-state").classList.toggle("paused", !!s.paused);
  $("org-pause").hidden = !s.editable || !!s.paused;
  $("org-resume").hidden = !s.editable || !s.paused;
  $("org-jobs").href = `${ROOT}/jobs?${new URLSearchParams({org})}`;
  const orgRows = ORG_FIELDS.map(([field, label]) => {
    const tr = el("tr"); tr.dataset.field = field; const r = s.settings[field];
    const edit = el("td", null, "edit"); edit.append(fieldInputs(field, r, "org"));
    tr.append(el("th", label), el("td", valueText(field, r.value), "value"), sourceCell(r), edit);
    return tr;
  });
  const tier = el("tr"); tier.dataset.field = "tier";
  const tierEdit = el("td", null, "edit");
  if (s.tier_editable) {
    const select = el("select"); select.id = "org-tier"; select.dataset.original = s.settings.tier.source === "org" ? s.settings.tier.value : "";
    select.append(el("option", "default (none assigned)")); select.options[0].value = "";
    for (const t of s.tiers) if (t !== "default") { const o = el("option", t); o.value = t; select.append(o); }
    select.value = select.dataset.original;
    tierEdit.append(select);
  } else tierEdit.append(el("span", "set by the operator", "muted"));
  tier.append(el("th", "tier"), el("td", s.settings.tier.value, "value"), sourceCell(s.settings.tier), tierEdit);
  $("org-settings").querySelector("tbody").replaceChildren(...orgRows, tier);
  $("org-form").dataset.scope = "org";

  $("kind-settings").querySelector("tbody").replaceChildren(...Object.entries(s.kinds).map(([kind, values]) => {
    const tr = el("tr"); tr.dataset.kind = kind; tr.dataset.scope = `kind:${kind}`;
    tr.append(el("th", kind));
    for (const field of KIND_FIELDS) { const td = valueCell(field, values[field]); td.append(el("br", null, "edit"), fieldInputs(field, values[field], "kind")); tr.append(td); }
    const paused = s.paused_kinds[kind];
    tr.append(el("td", paused ? pauseText(paused) : "running", paused ? "pause-state paused" : "pause-state"));
    const [actions, pause] = pauseButtons(org, paused, {kind}, "kind");
    const save = el("button", "Save", "small"); save.type = "button";
    save.addEventListener("click", () => { const values = changedValues(tr); if (Object.keys(values).length) settingsAct(orgApi(org), {kind, values}, org); });
    actions.append(save, pause); tr.append(actions);
    return tr;
  }));

  const keyRows = Object.entries(s.keys).map(([key, values]) => {
    const tr = el("tr"); tr.dataset.key = key; tr.dataset.scope = `key:${key}`;
    tr.append(el("th", key));
    for (const field of KEY_FIELDS) { const td = valueCell(field, values[field]); td.append(el("br", null, "edit"), fieldInputs(field, values[field], "key")); tr.append(td); }
    const paused = s.paused_keys[key];
    tr.append(el("td", paused ? pauseText(paused) : "running", paused ? "pause-state paused" : "pause-state"));
    const [actions, pause] = pauseButtons(org, paused, {key}, "key");
    const save = el("button", "Save", "small"); save.type = "button";
    save.addEventListener("click", () => { const values = changedValues(tr); if (Object.keys(values).length) settingsAct(orgApi(org), {key, values}, org); });
    actions.append(save, pause); tr.append(actions);
    return tr;
  });
  // Keys paused without settings of their own are listed too (so they can be resumed).
  for (const [key, paused] of Object.entries(s.paused_keys)) {
    if (key in s.keys) continue;
    const tr = el("tr"); tr.dataset.key = key; tr.dataset.scope = `key:${key}`;
    tr.append(el("th", key), el("td", "—"), el("td", "—"), el("td", "—"), el("td", pauseText(paused), "pause-state paused"));
    const [actions, resume] = pauseButtons(org, paused, {key}, "key"); actions.append(resume); tr.append(actions);
    keyRows.push(tr);
  }
  if (s.editable) {  // a key's first setting, or its pause
    const tr = el("tr", null, "edit"); tr.dataset.scope = "key:+";
    const name = el("input"); name.id = "new-key"; name.size = 12; name.placeholder = "key"; name.dataset.original = "";
    name.setAttribute("aria-label", "new key"); const th = el("th"); th.append(name); tr.append(th);
    for (const field of KEY_FIELDS) {  // empty: the org's per-key settings
      const td = el("td"), inputs = fieldInputs(field, {value: null, source: "org"}, "key");
      inputs.querySelector("input").placeholder = isRate(field) ? "10/s" : "org's"; td.append(inputs); tr.append(td);
    }
    tr.append(el("td"));
    const actions = el("td", null, "actions"), save = el("button", "Add", "small"), pause = el("button", "Pause key", "small");
    save.type = pause.type = "button";
    save.addEventListener("click", () => settingsAct(orgApi(org), {key: name.value.trim(), values: changedValues(tr)}, org));
    pause.addEventListener("click", () => settingsAct(orgApi(org, "/pause"), {key: name.value.trim()}, org));
    actions.append(save, pause); tr.append(actions);
    keyRows.push(tr);
  }
  $("key-settings").querySelector("tbody").replaceChildren(...(keyRows.length ? keyRows : [emptyRow(6, "no key has settings of its own")]));
  for (const input of $("view-org").querySelectorAll("input")) {
    const id = input.closest("[data-scope]").dataset.scope + "|" + (input.dataset.field || "b:" + input.dataset.burstOf);
    if (dirty.has(id)) input.value = dirty.get(id);
  }
  say(`updated ${new Date().toLocaleTimeString()} (settings version ${s.version})`);
}

function orgPage(org) {
  $("view-org").hidden = false;
  $("org-form").addEventListener("submit", e => {
    e.preventDefault();
    const values = changedValues($("org-settings"));
    const tier = $("org-tier");
    if (tier && tier.value !== tier.dataset.original) values.tier = tier.value || null;
    if (!Object.keys(values).length) { $("settings-result").textContent = "nothing changed"; return; }
    settingsAct(orgApi(org), {values}, org);
  });
  $("org-pause").addEventListener("click", () => settingsAct(orgApi(org, "/pause"), {}, org));
  $("org-resume").addEventListener("click", () => settingsAct(orgApi(org, "/resume"), {}, org));
  drawOrgSettings(org, true).catch(failed);
  pollSettings(() => orgShown, () => drawOrgSettings(org, false));
}

// Live: one cheap read of the settings version a second; the panel redraws only when it
// differs from the version the panel shows (a change from another tab, the CLI, the app's code).
function pollSettings(shownVersion, redraw) {
  setInterval(async () => {
    try {
      const {version} = await api("/api/settings/version");
      if (version !== shownVersion()) await redraw();
    } catch (e) { failed(e); }
  }, SETTINGS_POLL_MS);
}

// ----- the fleet's settings: tiers, paused queues (fleet-wide viewers only) --------------

async function fleetAct(path, body) {
  $("fleet-error").textContent = "";
  try {
    const answer = await api(path, body);
    $("fleet-result").textContent = `saved: settings version ${answer.version}`;
    if (path.startsWith("/api/tiers/")) fillTierForm("", "", {});  // saved: the form starts afresh
    if (path.endsWith("/pause")) $("queue-name").value = "";
    await drawFleetSettings();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) { showLogin(); return; }
    $("fleet-error").textContent = e.message;
  }
}

const TIER_FIELDS = ["cap", "min", "weight", "per_key_cap", "daily_limit", "rate"];
function fillTierForm(name, kind, values) {
  $("tier-name").value = name; $("tier-kind").value = kind;
  for (const field of TIER_FIELDS) {
    const input = $(`tier-${field}`), v = values[field];
    input.value = v === undefined || v === null ? "" : isRate(field) ? rateText(v) : String(v);
    input.dataset.original = input.value;
  }
  const burst = $("tier-rate-burst"); burst.value = values.rate ? String(values.rate.burst) : ""; burst.dataset.original = burst.value;
}

let fleetShown = null;  // the settings version the fleet page shows
async function drawFleetSettings() {
  const s = await api("/api/settings");
  fleetShown = s.version;
  $("view-settings").classList.toggle("editable", s.editable);
  const rows = [];
  for (const [name, tier] of Object.entries(s.tiers)) {
    for (const [kind, values] of [["", tier.settings], ...Object.entries(tier.kinds)]) {
      if (kind && !Object.keys(values).length) continue;
      const tr = el("tr"); tr.dataset.tier = name; tr.dataset.kind = kind;
      const text = Object.entries(values).map(([f, v]) => `${f} ${valueText(f, v === "none" ? null : v)}`).join(", ") || "—";
      const edit = el("td", null, "edit"), button = el("button", "Edit", "small"); button.type = "button";
      button.addEventListener("click", () => fillTierForm(name, kind, values));
      edit.append(button);
      tr.append(el("td", name), el("td", kind || "all"), el("td", text), edit);
      rows.push(tr);
    }
  }
  $("tiers").querySelector("tbody").replaceChildren(...(rows.length ? rows : [emptyRow(4, "no tier is stored: every org takes the code's limits")]));
  const queues = Object.entries(s.paused_queues).map(([name, p]) => {
    const tr = el("tr"); tr.dataset.queue = name;
    const edit = el("td", null, "edit"), button = el("button", "Resume", "small"); button.type = "button";
    button.addEventListener("click", () => fleetAct(`/api/queues/${encodeURIComponent(name)}/resume`, {}));
    edit.append(button);
    tr.append(el("td", name), el("td", when(p.since)), el("td", p.by || "someone unnamed"), edit);
    return tr;
  });
  $("paused-queues").querySelector("tbody").replaceChildren(...(queues.length ? queues : [emptyRow(4, "no queue is paused")]));
  $("settings-orgs").replaceChildren(...s.orgs.map(o => { const li = el("li"); li.append(link(o, orgUrl(o))); return li; }));
  if (!s.orgs.length) $("settings-orgs").replaceChildren(el("li", "none: every org takes its tier's and the code's limits", "muted"));
  say(`updated ${new Date().toLocaleTimeString()} (settings version ${s.version})`);
}

function fleetSettings() {
  $("view-settings").hidden = false;
  fillTierForm("", "", {});
  $("tier-form").addEventListener("submit", e => {
    e.preventDefault();
    const values = changedValues($("tier-form"));
    if (!Object.keys(values).length) { $("fleet-result").textContent = "nothing changed"; return; }
    fleetAct(`/api/tiers/${encodeURIComponent($("tier-name").value.trim())}`, {kind: $("tier-kind").value || null, values});
  });
  $("queue-form").addEventListener("submit", e => {
    e.preventDefault();
    fleetAct(`/api/queues/${encodeURIComponent($("queue-name").value.trim())}/pause`, {});
  });
  drawFleetSettings().catch(failed);
  pollSettings(() => fleetShown, drawFleetSettings);
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
  $("nav-settings").hidden = viewer.org !== null;
  const path = location.pathname.slice(ROOT.length).replace(/\/+$/, "");
  const match = path.match(/^\/jobs\/([^/]+)$/), orgMatch = path.match(/^\/orgs\/(.+)$/);
  if (orgMatch) { orgPage(decodeURIComponent(orgMatch[1])); }
  else if (path === "/settings") { $("nav-settings").classList.add("current"); fleetSettings(); }
  else if (match) { $("nav-jobs").classList.add("current"); job(decodeURIComponent(match[1])); }
  else if (path === "/jobs") { $("nav-jobs").classList.add("current"); jobs(); }
  else if (path === "/workers") { $("nav-workers").classList.add("current"); workers(); }
  else { $("nav-overview").classList.add("current"); overview(); }
}
start();
