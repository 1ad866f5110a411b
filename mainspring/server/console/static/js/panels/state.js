// The state at a chosen step, and what changed since the step before it.

import { api, runPath } from "../api.js";
import { brief, h, pretty, replace } from "../dom.js";

/** The differences between two JSON values: [{path, op: added|removed|changed, from, to}]. */
export function diff(a, b, path = "", out = []) {
  if (Object.is(a, b)) return out;
  const obj = (v) => v !== null && typeof v === "object";
  if (Array.isArray(a) && Array.isArray(b)) {
    const n = Math.max(a.length, b.length);
    for (let i = 0; i < n; i++) {
      const p = `${path}[${i}]`;
      if (i >= a.length) out.push({ path: p, op: "added", to: b[i] });
      else if (i >= b.length) out.push({ path: p, op: "removed", from: a[i] });
      else diff(a[i], b[i], p, out);
    }
    return out;
  }
  if (obj(a) && obj(b) && !Array.isArray(a) && !Array.isArray(b)) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const p = path ? `${path}.${k}` : k;
      if (!(k in a)) out.push({ path: p, op: "added", to: b[k] });
      else if (!(k in b)) out.push({ path: p, op: "removed", from: a[k] });
      else diff(a[k], b[k], p, out);
    }
    return out;
  }
  if (JSON.stringify(a) !== JSON.stringify(b)) {
    out.push({ path: path || "(state)", op: "changed", from: a, to: b });
  }
  return out;
}

export class StatePanel {
  constructor(runId) {
    this.runId = runId;
    this.cache = new Map(); // seq -> state answer
    this.title = h("h2", {}, "State");
    this.body = h("div", { class: "state-body" },
      h("p", { class: "muted" }, "Choose an event in the journal to see the state there."));
    this.el = h("section", { class: "panel", "aria-labelledby": "state-title" }, this.title,
      this.body);
    this.title.id = "state-title";
    this.want = null;
  }

  async at(seq) {
    if (!this.cache.has(seq)) {
      this.cache.set(seq, api(`${runPath(this.runId)}/state`, { query: { at: seq } }));
    }
    try {
      return await this.cache.get(seq);
    } catch (err) {
      this.cache.delete(seq);
      throw err;
    }
  }

  /** Show the state at `seq`, diffed against the state at `prevSeq` (null: no diff). */
  show(event, prevSeq) {
    // A burst of events (following a live run) makes one pair of requests, for the last.
    this.want = event.seq;
    this.title.textContent = `State at #${event.seq}`;
    // The first time only: later, the last state stays until the next (no flicker when
    // following a live run).
    if (!this.shown) replace(this.body, h("p", { class: "muted" }, "Loading…"));
    this.shown = true;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(event, prevSeq), 120);
  }

  destroy() {
    clearTimeout(this.timer);
  }

  async load(event, prevSeq) {
    const seq = event.seq;
    if (this.want !== seq) return;
    try {
      const [now, before] = await Promise.all([
        this.at(seq), prevSeq === null ? Promise.resolve(null) : this.at(prevSeq)]);
      if (this.want !== seq) return;
      const changes = before ? diff(before.state, now.state) : null;
      replace(this.body,
        h("div", { class: "state-meta muted" },
          `status ${now.status || "?"}`,
          now.next && now.next.length ? ` · next: ${now.next.join(", ")}` : ""),
        changes === null ? h("p", { class: "muted" }, "The first state: nothing to compare.")
          : h("div", { class: "diff", "aria-label": `Changes since #${prevSeq}` },
            h("h3", {}, `Changes since #${prevSeq}`),
            changes.length ? h("table", { class: "diff-table" }, h("tbody", {},
              changes.map((c) => h("tr", { class: `diff-${c.op}` },
                h("td", { class: "mono" }, c.path),
                h("td", {}, c.op),
                h("td", { class: "mono from" }, c.op === "added" ? "" : brief(c.from, 200)),
                h("td", { class: "mono to" }, c.op === "removed" ? "" : brief(c.to, 200)))))) :
              h("p", { class: "muted" }, "No change.")),
        h("details", { open: true }, h("summary", {}, "Whole state"),
          h("pre", { class: "json" }, pretty(now.state))),
        h("details", {}, h("summary", {}, `Event #${seq} (${event.kind})`),
          h("pre", { class: "json" }, pretty(event))),
      );
    } catch (err) {
      if (this.want !== seq) return;
      replace(this.body, h("p", { class: "form-error" }, `The state at #${seq}: ${err.message}`),
        h("details", { open: true }, h("summary", {}, `Event #${seq} (${event.kind})`),
          h("pre", { class: "json" }, pretty(event))));
    }
  }
}
