// The trace waterfall: the run's spans (derived from its journal by the server), nested,
// bars to scale on one time axis.

import { api, runPath } from "../api.js";
import { fmtDuration, h, replace } from "../dom.js";

export class TracePanel {
  constructor(runId) {
    this.runId = runId;
    this.body = h("div", { class: "trace-body" }, h("p", { class: "muted" }, "Loading…"));
    this.el = h("section", { class: "panel", "aria-labelledby": "trace-title" },
      h("h2", { id: "trace-title" }, "Trace"), this.body);
    this.timer = null;
    this.loading = false;
  }

  /** Load again soon (a burst of events makes one request). */
  refresh(delay = 1000) {
    if (this.timer && delay >= 1000) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.load();
    }, delay);
  }

  destroy() {
    clearTimeout(this.timer);
  }

  async load() {
    if (this.loading) return this.refresh();
    this.loading = true;
    try {
      const trace = await api(`${runPath(this.runId)}/trace`);
      this.render(Array.isArray(trace) ? trace : trace.spans || []);
    } catch (err) {
      replace(this.body, h("p", { class: "form-error" }, `The trace: ${err.message}`));
    } finally {
      this.loading = false;
    }
  }

  render(spans) {
    if (!spans.length) {
      replace(this.body, h("p", { class: "muted" }, "No spans yet."));
      return;
    }
    const start = Math.min(...spans.map((sp) => sp.start_ns));
    // Open spans (a run still going, parked) end where the journal ends, as the CLI draws them.
    const end = Math.max(...spans.map((sp) => sp.end_ns ?? sp.start_ns));
    const total = Math.max(1, end - start);
    const rows = spans.map((sp) => {
      const open = sp.end_ns === null || sp.end_ns === undefined;
      const spEnd = open ? end : sp.end_ns;
      const bar = h("div", { class: `bar kind-${sp.kind} status-${sp.status}` +
        (open ? " open" : "") + (sp.critical ? " critical" : "") });
      bar.style.left = `${((sp.start_ns - start) / total) * 100}%`;
      bar.style.width = `${Math.max(0.3, ((spEnd - sp.start_ns) / total) * 100)}%`;
      const label = h("div", { class: "span-label", title: spanTitle(sp) },
        sp.critical ? h("span", { class: "crit", title: "on the critical path" }, "● ") : "",
        sp.name);
      label.style.paddingLeft = `${(sp.depth || 0) * 12 + 4}px`;
      return h("div", { class: "span-row", role: "row" },
        h("div", { role: "cell" }, label),
        h("div", { class: "track", role: "cell" }, bar),
        h("div", { class: "num dur", role: "cell" },
          open ? `${fmtDuration((spEnd - sp.start_ns) / 1e9)}…` :
            fmtDuration((sp.end_ns - sp.start_ns) / 1e9)));
    });
    replace(this.body, h("div", { class: "waterfall", role: "table",
      "aria-label": `Trace, ${spans.length} spans over ${fmtDuration(total / 1e9)}` },
    h("div", { class: "span-row head", role: "row" },
      h("div", { role: "columnheader" }, "span"),
      h("div", { role: "columnheader" }, `0 → ${fmtDuration(total / 1e9)}`),
      h("div", { role: "columnheader", class: "num" }, "duration")),
    rows));
  }
}

function spanTitle(sp) {
  const attrs = Object.entries(sp.attributes || {}).slice(0, 12)
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
  return [`${sp.kind} ${sp.name} (${sp.status})`, sp.status_message, ...attrs]
    .filter(Boolean).join("\n");
}
