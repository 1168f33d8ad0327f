// qec-kiln's task table: sort by any column (click its header), filter with a text box. The same
// file runs on the watch page (rows built from api/tasks) and inline in `qec-kiln report` (rows
// already in the HTML). It only moves rows and sets text (textContent), never markup.
"use strict";

const KilnTasks = (() => {
  const collator = new Intl.Collator("en", {numeric: true, sensitivity: "base"});

  // Ascending order of two sort values; a missing value (null) sorts after every other.
  function compare(a, b) {
    if (a === b) return 0;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return collator.compare(String(a), String(b));
  }

  // An entry: {tr, sort: [value per column], hay: lower-case text the filter searches, n: order}.
  function entry(tr, sort, n, extra) {
    const hay = (Array.from(tr.cells, (td) => td.textContent).join(" ") + " " + (extra || ""))
      .toLowerCase();
    return {tr, sort, hay, n};
  }

  // A row of api/tasks as a <tr> (each cell's text from the server, set as text).
  function rowOf(row, columns) {
    const tr = document.createElement("tr");
    tr.className = row.reached === false ? "sampling" : row.reached ? "reached" : "imported";
    tr.dataset.id = row.id;
    row.text.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (columns[i].numeric) td.className = "n";
      tr.append(td);
    });
    tr.lastChild.title = row.note;
    return tr;
  }

  function searchExtra(reached, id) {
    return (reached === false ? "sampling" : reached ? "reached done" : "") + " " + id;
  }

  // Rows put in the page at once; "show all" adds the rest. Sorting and filtering see every
  // task; laying out a few hundred rows, not thousands, keeps each change well under a second.
  const SHOWN = 250;

  class Table {
    // table: a <table> with a <thead> row of <th> (one per column) and a <tbody>; the caller
    // puts this.more (the "show all" button) in the page.
    constructor(table, input, counter, numeric) {
      this.limit = SHOWN;
      this.more = document.createElement("button");
      this.more.type = "button";
      this.more.className = "task-more";
      this.more.hidden = true;
      this.more.addEventListener("click", () => { this.limit = Infinity; this.apply(); });
      this.table = table;
      this.tbody = table.tBodies[0];
      this.input = input;
      this.counter = counter;
      this.numeric = numeric;
      this.entries = [];
      this.column = null;
      this.descending = false;
      this.renderMs = null;
      input.addEventListener("input", () => this.apply());
      Array.from(table.tHead.rows[0].cells).forEach((th, i) => {
        th.tabIndex = 0;
        th.classList.add("sortable");
        th.addEventListener("click", () => this.sortBy(i));
        th.addEventListener("keydown", (e) => {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); this.sortBy(i); }
        });
      });
    }

    setEntries(entries) {
      this.entries = entries;
      this.apply();
    }

    // The first click sorts a text column A→Z and a numeric column largest first.
    sortBy(i) {
      if (this.column === i) this.descending = !this.descending;
      else { this.column = i; this.descending = this.numeric[i]; }
      this.apply();
    }

    apply() {
      const t0 = performance.now();
      const terms = this.input.value.toLowerCase().split(/\s+/).filter(Boolean);
      const shown = terms.length ?
        this.entries.filter((e) => terms.every((t) => e.hay.includes(t))) : this.entries.slice();
      const i = this.column;
      const sign = this.descending ? -1 : 1;
      shown.sort((a, b) => {
        if (i !== null) {
          const x = a.sort[i], y = b.sort[i];
          if (x === null && y !== null) return 1;
          if (y === null && x !== null) return -1;
          const c = x === null ? 0 : sign * compare(x, y);
          if (c !== 0) return c;
        }
        return a.n - b.n;
      });
      const put = shown.length > this.limit ? shown.slice(0, this.limit) : shown;
      this.tbody.replaceChildren(...put.map((e) => e.tr));
      Array.from(this.table.tHead.rows[0].cells).forEach((th, j) => {
        if (j === i) th.setAttribute("aria-sort", this.descending ? "descending" : "ascending");
        else th.removeAttribute("aria-sort");
      });
      const all = this.entries.length, fmt = (x) => x.toLocaleString("en-US");
      this.counter.textContent = (shown.length === all ? fmt(all) + " tasks" :
        fmt(shown.length) + " of " + fmt(all) + " tasks") +
        (put.length < shown.length ? " (first " + fmt(put.length) + " shown)" : "");
      this.more.hidden = put.length === shown.length;
      this.more.textContent = "show all " + fmt(shown.length);
      this.renderMs = performance.now() - t0;
      this.table.dataset.renderMs = this.renderMs.toFixed(1);
    }
  }

  // The report: every table.tasks already holds its rows; numeric cells carry data-s (their
  // value, "" for none). Sorting and filtering only reorder and hide those rows.
  function enhanceStatic() {
    document.querySelectorAll("table.tasks[data-columns]").forEach((table) => {
      const numeric = Array.from(table.tHead.rows[0].cells, (th) => th.classList.contains("n"));
      const around = table.closest(".tasks-box");
      const box = around.querySelector("input.task-filter");
      const counter = around.querySelector(".task-count");
      box.hidden = false;
      const t = new Table(table, box, counter, numeric);
      table.parentElement.after(t.more);
      t.setEntries(Array.from(table.tBodies[0].rows, (tr, n) => {
        const sort = Array.from(tr.cells, (td, j) => !numeric[j] ? td.textContent :
          td.dataset.s === "" ? null : Number(td.dataset.s));
        return entry(tr, sort, n, searchExtra(tr.classList.contains("sampling") ? false :
          tr.classList.contains("reached") ? true : null, tr.dataset.id));
      }));
    });
  }

  return {Table, entry, rowOf, searchExtra, enhanceStatic};
})();

if (document.body && document.body.dataset.report === "1") KilnTasks.enhanceStatic();
