// qec-kiln watch: polls api/state every second and updates the page in place (no reload).
// Everything from the bucket (sweep, batch and circuit names, log lines) goes in as text
// (textContent / createTextNode), never as HTML. The task table's two parts (done, still
// sampling) are fetched from api/tasks only when their version in api/state changed, and the
// plot is swapped only once the table of the same data is in (tasks.js sorts and filters it).
"use strict";

const POLL_MS = 1000;
const sections = new Map();   // sweep name -> {root, parts..., offset}
let shownVersion = null;
let lastState = null;
let failedPolls = 0;

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(typeof c === "string" ? document.createTextNode(c) : c);
  return node;
}

function n(x) { return x === null || x === undefined ? "–" : Number(x).toLocaleString("en-US"); }
function pct(f) { return (100 * f).toFixed(1) + "%"; }
function dur(s) {
  if (s === null || s === undefined) return "–";
  if (s < 90) return s.toFixed(0) + " s";
  if (s < 5400) return (s / 60).toFixed(1) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}
function money(x) { return x === null || x === undefined ? "–" : x.toFixed(2); }
function stateClass(s) { return "state-" + String(s).split(/[ _]/)[0]; }

function row(cells, cls) {
  const tr = el("tr", cls ? {class: cls} : {});
  for (const [text, c] of cells) tr.append(el("td", c ? {class: c} : {}, String(text)));
  return tr;
}

function batchRows(tbody, batches) {
  tbody.replaceChildren(...batches.map((b) => {
    const tr = row([[b.id], [b.state, stateClass(b.state)], [b.job_id || ""],
                    [n(b.shots), "n"], [n(b.errors), "n"], [pct(b.fraction), "n"],
                    [dur(b.eta_seconds), "n"], [b.problem || b.job_detail || ""]]);
    tr.dataset.batch = b.id;
    return tr;
  }));
}

function makeSection(name, columns) {
  const s = {offset: 0, parts: {done: {version: null, entries: []}, left: {version: null, entries: []}}};
  s.columns = columns;
  s.title = el("h2", {}, "sweep ", el("code", {text: name}));
  s.sub = el("p", {class: "muted"});
  s.bar = el("span");
  s.fleet = el("div", {class: "fleet"});
  s.warnings = el("ul", {class: "warnings"});
  s.img = el("img", {alt: "threshold plot of sweep " + name});
  s.plotNote = el("p", {class: "muted"});
  s.failHead = el("h3", {}, "failures");
  s.failures = el("tbody");
  s.failTable = el("table", {class: "failures"},
    el("thead", {}, el("tr", {}, el("th", {}, "batch"), el("th", {}, "state"),
                        el("th", {}, "detail"), el("th", {}, "last log line"))), s.failures);
  s.tasksHead = el("h3");
  s.filter = el("input", {type: "search", class: "task-filter", placeholder: "filter tasks: d=5 pymatching sampling",
                          "aria-label": "filter tasks"});
  s.count = el("span", {class: "task-count muted"});
  s.csv = el("a", {class: "csv", download: ""}, "merged CSV (as qec-kiln merge writes it)");
  s.tasksTable = el("table", {class: "tasks"},
    el("thead", {}, el("tr", {}, ...columns.map((c) =>
      el("th", Object.assign(c.numeric ? {class: "n"} : {}, c.title ? {title: c.title} : {}), c.label)))),
    el("tbody"));
  s.table = new KilnTasks.Table(s.tasksTable, s.filter, s.count, columns.map((c) => c.numeric));
  s.batches = el("tbody");
  s.pagerText = el("span", {class: "muted"});
  s.prev = el("button", {type: "button"}, "◀ previous");
  s.next = el("button", {type: "button"}, "next ▶");
  s.prev.addEventListener("click", () => page(name, -1));
  s.next.addEventListener("click", () => page(name, +1));
  s.root = el("section", {class: "sweep"},
    s.title, s.sub, el("div", {class: "bar"}, s.bar), s.fleet, s.warnings,
    el("div", {class: "plot"}, s.img, s.plotNote),
    s.failHead, s.failTable,
    s.tasksHead,
    el("div", {class: "task-tools"}, s.filter, s.count, s.csv),
    el("div", {class: "task-scroll"}, s.tasksTable), s.table.more,
    el("h3", {}, "batches"),
    el("p", {class: "pager"}, s.prev, s.next, s.pagerText),
    el("table", {class: "batches"},
      el("thead", {}, el("tr", {}, el("th", {}, "batch"), el("th", {}, "state"),
        el("th", {}, "job"), el("th", {class: "n"}, "shots"), el("th", {class: "n"}, "errors"),
        el("th", {class: "n"}, "done"), el("th", {class: "n"}, "ETA"), el("th", {}, "detail"))),
      s.batches));
  s.root.dataset.sweep = name;
  return s;
}

function fleet(sw) {
  const items = [
    ["done", pct(sw.fraction_done)],
    ["shots", n(sw.shots)],
    ["errors", n(sw.errors)],
    ["shots/s", sw.shots_per_second === null ? "–" : n(Math.round(sw.shots_per_second))],
    ["ETA" + (sw.eta_from === "batches" ? " (slowest batch)" : ""), dur(sw.eta_seconds)],
    ["tasks at target", sw.tasks_reached + " / " + sw.tasks],
  ];
  for (const [state, count] of Object.entries(sw.states)) items.push(["batches " + state, n(count)]);
  if (sw.cost) {
    items.push(["cost so far", money(sw.cost.so_far)]);
    items.push(["cost predicted", money(sw.cost.predicted)]);
  }
  return items.map(([label, value]) => {
    const d = el("div", {}, el("b", {text: value}), label);
    d.dataset.label = label;
    return d;
  });
}

function renderSweep(s, sw) {
  s.sub.textContent = "backend " + sw.backend + " · " + n(sw.batch_count) + " batches · " +
    n(sw.tasks) + " tasks";
  s.bar.style.width = pct(Math.min(1, sw.fraction_done));
  s.fleet.replaceChildren(...fleet(sw));
  s.warnings.replaceChildren(...sw.warnings.map((w) => el("li", {text: w})));
  if (sw.plot_url) {  // the table of the same data is in already (syncTasks)
    if (s.img.getAttribute("src") !== sw.plot_url) s.img.setAttribute("src", sw.plot_url);
    s.img.hidden = false;
  } else {
    s.img.hidden = true;
  }
  if (sw.csv_url) s.csv.setAttribute("href", sw.csv_url);
  s.csv.hidden = !sw.csv_url;
  s.plotNote.textContent = sw.plot_problem || "";
  s.failHead.hidden = s.failTable.hidden = sw.failures.length === 0;
  s.failHead.textContent = "failures (" + sw.failures.length + ")";
  s.failures.replaceChildren(...sw.failures.map((f) =>
    row([[f.id], [f.state], [f.detail || ""], [f.last_log_line || "(no log yet)", "log"]])));
  s.tasksHead.textContent = "tasks: " + n(sw.tasks_reached) + " of " + n(sw.tasks) +
    " at their targets" + (sw.tasks_left_total === 0 ? " (every task reached its targets)" :
      ", " + n(sw.tasks_left_total) + " still sampling");
  s.pageSize = sw.page_size;
  s.batchCount = sw.batch_count;
  if (s.offset === 0) {
    batchRows(s.batches, sw.batches);
    pager(s, 0, sw.batches.length);
  } else {
    loadPage(sw.name, s.offset);
  }
}

function pager(s, offset, shown) {
  const paged = s.batchCount > s.pageSize;
  s.prev.hidden = s.next.hidden = !paged;
  s.prev.disabled = offset === 0;
  s.next.disabled = offset + shown >= s.batchCount;
  s.pagerText.textContent = paged ?
    "batches " + n(offset + 1) + "–" + n(offset + shown) + " of " + n(s.batchCount) : "";
}

// Fetch the parts of the task table whose version changed, then show done + sampling rows.
async function syncTasks(s, sw) {
  let changed = false, building = 0;
  await Promise.all(Object.entries(sw.task_parts).map(async ([part, info]) => {
    if (s.parts[part].version === info.version) return;
    const q = "api/tasks?sweep=" + encodeURIComponent(sw.name) + "&part=" + part;
    const r = await fetch(q, {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status + " for " + q);
    const data = await r.json();
    const t0 = performance.now();
    s.parts[part] = {version: data.version, entries: data.rows.map((row) =>
      KilnTasks.entry(KilnTasks.rowOf(row, s.columns), row.sort, row.n,
                      KilnTasks.searchExtra(row.reached, row.id)))};
    building += performance.now() - t0;
    changed = true;
  }));
  if (!changed) return;
  const t1 = performance.now();
  s.table.setEntries(s.parts.done.entries.concat(s.parts.left.entries));
  void s.tasksTable.offsetHeight;  // layout included: the figure is the time to a shown table
  s.tasksTable.dataset.buildMs = (building + performance.now() - t1).toFixed(1);
}

async function loadPage(name, offset) {
  const s = sections.get(name);
  const q = "api/batches?sweep=" + encodeURIComponent(name) + "&offset=" + offset;
  try {
    const r = await fetch(q, {cache: "no-store"});
    if (!r.ok) return;
    const data = await r.json();
    s.offset = data.offset;
    batchRows(s.batches, data.batches);
    pager(s, data.offset, data.batches.length);
  } catch (e) { /* the next poll says whether the server is gone */ }
}

function page(name, step) {
  const s = sections.get(name);
  const offset = Math.max(0, s.offset + step * s.pageSize);
  if (offset === 0) {
    s.offset = 0;
    const sw = lastState && lastState.sweeps.find((x) => x.name === name);
    if (sw) {
      batchRows(s.batches, sw.batches);
      pager(s, 0, sw.batches.length);
    }
  } else {
    loadPage(name, offset);
  }
}

async function render(state) {
  document.getElementById("bucket").textContent = "bucket " + state.bucket;
  const problem = document.getElementById("problem");
  problem.hidden = !state.problem;
  problem.textContent = state.problem || "";
  if (!state.taken && !state.unreachable) {
    problem.hidden = false;
    problem.textContent = "reading the bucket…";
  }
  document.getElementById("bucket-warnings").replaceChildren(
    ...state.warnings.map((w) => el("li", {text: w})));
  const main = document.getElementById("sweeps");
  const names = new Set(state.sweeps.map((sw) => sw.name));
  for (const [name, s] of sections) {
    if (!names.has(name)) { s.root.remove(); sections.delete(name); }
  }
  for (const sw of state.sweeps) {
    if (!sections.has(sw.name)) {
      const s = makeSection(sw.name, state.task_columns);
      sections.set(sw.name, s);
      main.append(s.root);
    }
  }
  await Promise.all(state.sweeps.map((sw) => syncTasks(sections.get(sw.name), sw)));
  for (const sw of state.sweeps) renderSweep(sections.get(sw.name), sw);
  const all = document.getElementById("csv-all");
  all.hidden = state.sweeps.filter((sw) => sw.csv_url).length < 2;
  document.body.dataset.version = String(state.version);
}

function banner(text) {
  const b = document.getElementById("banner");
  b.hidden = !text;
  b.textContent = text || "";
}

function clock(state) {
  const ago = state && state.taken ? Math.max(0, Date.now() / 1000 - state.taken) : null;
  document.getElementById("clock").textContent = ago === null ? "" : "data from " + dur(ago) + " ago";
}

async function poll() {
  try {
    const r = await fetch("api/state", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const state = await r.json();
    failedPolls = 0;
    lastState = state;
    if (state.version !== shownVersion) {
      await render(state);
      shownVersion = state.version;
    }
    banner(state.unreachable ? "bucket unreachable, showing the last data read: " + state.unreachable : "");
    clock(state);
  } catch (e) {
    failedPolls += 1;
    if (failedPolls >= 3) banner("qec-kiln watch is not answering; showing the last data");
    clock(lastState);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
