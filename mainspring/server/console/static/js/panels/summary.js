// A run's tokens and cost, and its errors with their tracebacks, from its journal.

import { fmtCost, fmtInt, h } from "../dom.js";

export function usageView(usage) {
  const rows = [...usage.byNode.values()];
  return [
    h("dl", { class: "stats" },
      stat("tokens in", fmtInt(usage.input)), stat("tokens out", fmtInt(usage.output)),
      stat("cached", fmtInt(usage.cached)), stat("reasoning", fmtInt(usage.reasoning)),
      stat("cost", fmtCost(usage.cost)), stat("calls", fmtInt(usage.calls))),
    usage.estimated ? h("p", { class: "muted" }, "Some counts are estimates.") : null,
    rows.length ? h("table", { class: "compact" },
      h("thead", {}, h("tr", {}, ["node", "calls", "in", "out", "cost"].map((c) =>
        h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, h("td", { class: "mono" }, r.node),
        h("td", { class: "num" }, fmtInt(r.calls)), h("td", { class: "num" }, fmtInt(r.input)),
        h("td", { class: "num" }, fmtInt(r.output)),
        h("td", { class: "num" }, fmtCost(r.cost))))))
      : h("p", { class: "muted" }, "No model calls reported usage."),
  ];
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("dt", {}, label), h("dd", {}, value));
}

/** The failures of a run: failed attempts, failed effects, the run's own failure. */
export function failures(events) {
  return events.filter((e) => e.kind === "step_failed" || e.kind === "failed" ||
    (e.kind === "effect_finished" && e.data && e.data.error));
}

/** One element per failure; onChoose(seq) when its #seq is clicked. */
export function errorsView(failed, onChoose) {
  return failed.map((e) => {
    const err = e.data.error || {};
    const where = [err.node || e.data.node, e.data.step !== undefined ? `step ${e.data.step}`
      : null, e.data.attempt ? `attempt ${e.data.attempt}` : null].filter(Boolean).join(", ");
    const link = h("a", { href: "#", title: "Show it in the journal" }, `#${e.seq}`);
    link.addEventListener("click", (ev) => {
      ev.preventDefault();
      onChoose(e.seq);
    });
    return h("article", { class: "error-item", dataset: { seq: e.seq } },
      h("header", {}, link, " ", h("span", { class: `kind kind-${e.kind}` }, e.kind), " ",
        h("strong", {}, `${err.type || "Error"}: `), err.message || "",
        where ? h("span", { class: "muted" }, ` (${where})`) : null,
        e.data.retry ? h("span", { class: "tag" }, "retried") : null),
      err.traceback ? h("pre", { class: "traceback" }, err.traceback)
        : h("p", { class: "muted" }, "No traceback was recorded."));
  });
}

export function errorLine(error) {
  if (typeof error === "string") return error;
  if (error && typeof error === "object") return `${error.type || "Error"}: ${error.message || ""}`;
  return String(error);
}
