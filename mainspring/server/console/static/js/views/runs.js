// #/runs: every run, newest first, live; filters by status, graph, thread, tenant, time, cost.

import { api, ApiError } from "../api.js";
import { fmtAgo, fmtCost, fmtInt, fmtTime, h, replace, statusBadge } from "../dom.js";
import * as live from "../live.js";
import { runUsage } from "../usage.js";

const STATUSES = ["running", "interrupted", "finished", "failed", "cancelled"];
const WINDOWS = [["", "any time"], ["900", "last 15 min"], ["3600", "last hour"],
  ["86400", "last 24 h"], ["604800", "last 7 days"]];
const PAGE = 50;

export function runsView(root, query) {
  const filters = {
    status: query.get("status") || "",
    graph: query.get("graph") || "",
    thread: query.get("thread") || "",
    tenant: query.get("tenant") || "",
    window: query.get("window") || "",
    min_cost: query.get("min_cost") || "",
  };
  let runs = []; // newest first
  let nextOffset = null;
  let loadSeq = 0;
  let reloadTimer = null;
  let destroyed = false;

  // -- the filter bar --
  const field = (name, label, control) => h("div", { class: "field" },
    h("label", { for: `f-${name}` }, label), control);
  const select = (name, options) => h("select", { id: `f-${name}`, name },
    options.map(([value, text]) => h("option", { value, selected: filters[name] === value }, text)));
  const text = (name, placeholder, type = "text") => h("input", {
    id: `f-${name}`, name, type, placeholder, value: filters[name], autocomplete: "off",
    ...(type === "number" ? { min: "0", step: "any" } : {}),
  });
  const graphSelect = select("graph", [["", "any graph"]]);
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter runs" },
    field("status", "Status", select("status", [["", "any status"],
      ...STATUSES.map((s) => [s, s])])),
    field("graph", "Graph", graphSelect),
    field("thread", "Thread", text("thread", "any thread")),
    field("tenant", "Tenant", text("tenant", "any tenant")),
    field("window", "Created", select("window", WINDOWS)),
    field("min_cost", "Min cost ($)", text("min_cost", "0", "number")),
    h("button", { type: "reset", class: "link" }, "Clear"),
  );
  const summary = h("span", { class: "muted", id: "runs-summary" });
  const tbody = h("tbody");
  const more = h("button", { type: "button", hidden: true, on: { click: () => load(true) } },
    "Load more");
  const error = h("p", { class: "form-error", role: "alert" });
  replace(root,
    h("div", { class: "page-head" }, h("h1", {}, "Runs"), summary),
    form,
    error,
    h("div", { class: "table-wrap" },
      h("table", { class: "runs", "aria-describedby": "runs-summary" },
        h("thead", {}, h("tr", {},
          ["Status", "Run", "Graph", "Thread", "Tenant", "Created", "Updated", "Events",
            "Tokens", "Cost"].map((c) => h("th", { scope: "col" }, c)))),
        tbody)),
    more,
  );

  api("/v1/graphs").then((data) => {
    for (const g of data.graphs || []) {
      graphSelect.append(h("option", { value: g.name, selected: filters.graph === g.name },
        g.name));
    }
    if (filters.graph && !graphSelect.value) {
      graphSelect.append(h("option", { value: filters.graph, selected: true }, filters.graph));
    }
  }).catch(() => {});

  const onChange = () => {
    for (const key of Object.keys(filters)) filters[key] = form.elements[key].value.trim();
    const params = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    const hash = `#/runs${params.toString() ? "?" + params : ""}`;
    history.replaceState(null, "", hash); // no hashchange: the view stays, the URL is shareable
    load(false);
  };
  form.addEventListener("change", onChange);
  form.addEventListener("input", (e) => {
    if (e.target.type === "text" || e.target.type === "number") debounceReload(onChange);
  });
  form.addEventListener("reset", () => setTimeout(onChange));
  form.addEventListener("submit", (e) => e.preventDefault());

  function apiQuery(offset) {
    const q = { status: filters.status, graph: filters.graph, thread: filters.thread,
      tenant: filters.tenant, limit: PAGE, offset };
    if (filters.window) q.created_after = Date.now() / 1000 - Number(filters.window);
    return q;
  }

  async function load(append) {
    const mine = ++loadSeq;
    try {
      const data = await api("/v1/runs", { query: apiQuery(append ? runs.length : 0) });
      if (destroyed || mine !== loadSeq) return;
      runs = append ? dedupe([...runs, ...data.runs]) : data.runs;
      nextOffset = data.next_offset;
      error.textContent = "";
      render();
    } catch (err) {
      if (destroyed || mine !== loadSeq) return;
      if (!(err instanceof ApiError && err.status === 401)) error.textContent = err.message;
    }
  }

  function debounceReload(fn = () => load(false)) {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(fn, 300);
  }

  function matches(run) {
    if (filters.status && run.status !== filters.status) return false;
    if (filters.graph && run.graph !== filters.graph) return false;
    if (filters.thread && run.thread !== filters.thread) return false;
    if (filters.tenant && run.tenant !== filters.tenant) return false;
    if (filters.window && run.created_at < Date.now() / 1000 - Number(filters.window)) {
      return false;
    }
    return true;
  }

  function onLive(run) {
    if (destroyed) return;
    if (!run) return debounceReload();
    const i = runs.findIndex((r) => r.run_id === run.run_id);
    if (!matches(run)) {
      if (i >= 0) runs.splice(i, 1);
    } else if (i >= 0) {
      runs[i] = run;
    } else {
      runs.push(run);
      runs.sort((a, b) => b.created_at - a.created_at);
      if (runs.length > PAGE && nextOffset === null) nextOffset = runs.length;
    }
    render();
  }

  function render() {
    const minCost = filters.min_cost ? Number(filters.min_cost) : null;
    const rows = [];
    let hidden = 0;
    for (const run of runs) {
      const usage = runUsage(run, () => !destroyed && render());
      if (minCost !== null && !(usage && usage.cost !== null && usage.cost >= minCost)) {
        hidden += 1;
        continue;
      }
      rows.push(row(run, usage));
    }
    replace(tbody, rows.length ? rows : h("tr", {}, h("td", { colspan: 10, class: "empty" },
      runs.length ? "No run matches the cost filter." : "No runs match these filters.")));
    summary.textContent = `${rows.length} shown` + (hidden ? `, ${hidden} under the cost filter` : "") +
      (nextOffset !== null ? ", more on the server" : "");
    more.hidden = nextOffset === null;
  }

  const unsubscribe = live.subscribe(onLive);
  load(false);
  const tick = setInterval(() => !destroyed && render(), 30000); // "3m ago" stays true

  return {
    destroy() {
      destroyed = true;
      unsubscribe();
      clearInterval(tick);
      clearTimeout(reloadTimer);
    },
  };
}

function row(run, usage) {
  const href = `#/runs/${encodeURIComponent(run.run_id)}`;
  return h("tr", { dataset: { runId: run.run_id, status: run.status } },
    h("td", {}, statusBadge(run.status)),
    h("td", { class: "mono" }, h("a", { href }, run.run_id),
      run.parent_run_id ? h("span", { class: "muted", title: `forked from ${run.parent_run_id}` },
        " ⑂") : null),
    h("td", {}, filterLink("graph", run.graph)),
    h("td", { class: "mono" }, run.thread ? filterLink("thread", run.thread) : "—"),
    h("td", {}, run.tenant ? filterLink("tenant", run.tenant) : "—"),
    h("td", { title: fmtTime(run.created_at) }, fmtAgo(run.created_at)),
    h("td", { title: fmtTime(run.updated_at) }, fmtAgo(run.updated_at)),
    h("td", { class: "num" }, fmtInt(run.last_seq)),
    h("td", { class: "num" }, usage ? fmtInt(usage.input + usage.output) : "…"),
    h("td", { class: "num" }, usage ? fmtCost(usage.cost) : "…"),
  );
}

/** A value that filters the list by itself when clicked (the page reads the new URL).
 * The URL is made at the click, from the filters then: a row drawn before a filter
 * changed must not take it back. */
function filterLink(name, value) {
  const target = () => {
    const params = new URLSearchParams(window.location.hash.split("?")[1] || "");
    params.set(name, value);
    return `#/runs?${params}`;
  };
  return h("a", { href: target(), class: "filter-link",
    title: `Only runs with ${name} ${value}`,
    on: { click: (e) => { e.preventDefault(); window.location.hash = target(); } } }, value);
}

function dedupe(runs) {
  const seen = new Set();
  return runs.filter((r) => !seen.has(r.run_id) && seen.add(r.run_id));
}
