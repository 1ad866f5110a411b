// The journal as a timeline: one row per event, appended live; a row selects its step.

import { brief, fmtDuration, fmtInt, fmtTime, h } from "../dom.js";

/** What a row says about an event, by kind. */
export function describe(e) {
  const d = e.data || {};
  const err = (x) => (x ? `${x.type}: ${x.message || ""}` : "");
  switch (e.kind) {
    case "run_started":
      return [d.graph, d.forked_from ? `forked from ${d.forked_from.run_id} @${d.forked_from.seq}`
        : `input ${brief(d.input, 80)}`];
    case "step_started":
      return [d.node, `step ${d.step}` + (d.attempt > 1 ? `, attempt ${d.attempt}` : "") +
        (d.rerun ? ", rerun" : "")];
    case "step_finished":
      return [d.node, `update ${brief(d.update, 90)}`];
    case "step_failed":
      return [d.node, `${err(d.error)}${d.retry ? ` (retry in ${fmtDuration(d.delay)})` : ""}`];
    case "effect_started":
      return [d.node, `${d.effect_kind || "effect"} ${d.name}` +
        (d.args !== undefined ? ` ${brief(d.args, 70)}` : "")];
    case "effect_decided":
      return [d.node, `${d.name}: ${d.decision}${d.reason ? ` (${d.reason})` : ""}`];
    case "effect_finished": {
      const usage = d.usage ? ` · ${fmtInt((d.usage.input_tokens || 0) +
        (d.usage.output_tokens || 0))} tok` : "";
      return [d.node, d.error ? `${d.name} failed: ${err(d.error)}`
        : `${d.name} → ${brief(d.result, 70)}${usage}`];
    }
    case "interrupted":
      return [d.node, `waits for a person: ${brief(d.payload, 80)}`];
    case "resumed":
      return ["", `resumed with ${brief(d.values, 80)}${d.actor ? ` by ${d.actor}` : ""}`];
    case "emitted":
      return [d.node, brief(d.data, 90)];
    case "discarded":
      return [d.node, `late result discarded after ${fmtDuration(d.seconds)}`];
    case "failed":
      return [d.error && d.error.node ? d.error.node : "", err(d.error)];
    case "finished":
      return ["", "finished"];
    case "cancelled":
      return ["", `cancelled${d.reason ? `: ${d.reason}` : ""}${d.actor ? ` by ${d.actor}` : ""}`];
    default:
      return [d.node || "", brief(d, 90)];
  }
}

export class Timeline {
  /** onSelect(event): a row was chosen. */
  constructor(onSelect) {
    this.onSelect = onSelect;
    this.t0 = null;
    this.rows = new Map(); // seq -> tr
    this.body = h("tbody");
    this.delta = h("div", { class: "delta", hidden: true, "aria-live": "off" });
    this.el = h("div", { class: "timeline-wrap" },
      // A grid: one tab stop (the chosen row), arrow keys move between rows.
      h("table", { class: "timeline", role: "grid", "aria-label": "Journal" },
        h("thead", {}, h("tr", {},
          ["#", "+time", "event", "node", "what"].map((c) => h("th", { scope: "col" }, c)))),
        this.body),
      this.delta);
    this.body.addEventListener("click", (ev) => {
      const tr = ev.target.closest("tr[data-seq]");
      if (tr) this.choose(Number(tr.dataset.seq));
    });
    this.body.addEventListener("keydown", (ev) => {
      const tr = ev.target.closest("tr[data-seq]");
      if (!tr) return;
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        this.choose(Number(tr.dataset.seq));
      } else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        ev.preventDefault();
        const next = ev.key === "ArrowDown" ? tr.nextElementSibling : tr.previousElementSibling;
        if (next) {
          next.focus();
          this.choose(Number(next.dataset.seq));
        }
      }
    });
    this.events = new Map();
  }

  add(events) {
    const follow = this.atBottom();
    for (const e of events) {
      if (this.rows.has(e.seq)) continue;
      if (this.t0 === null) this.t0 = e.ts;
      const [node, what] = describe(e);
      const first = this.rows.size === 0;
      const tr = h("tr", { dataset: { seq: e.seq, kind: e.kind }, tabindex: first ? "0" : "-1",
        class: `ev ev-${e.kind}`, "aria-selected": "false" },
      h("td", { class: "num" }, String(e.seq)),
      h("td", { class: "num", title: fmtTime(e.ts) }, `+${fmtDuration(e.ts - this.t0)}`),
      h("td", {}, h("span", { class: `kind kind-${e.kind}` }, e.kind)),
      h("td", { class: "mono" }, node || ""),
      h("td", { class: "what", title: what }, what));
      this.rows.set(e.seq, tr);
      this.events.set(e.seq, e);
      this.body.append(tr);
    }
    if (follow) this.el.scrollTop = this.el.scrollHeight;
    this.delta.hidden = true;
  }

  atBottom() {
    return this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight < 40;
  }

  /** Choose the event `seq` (auto: the view did, following the newest; not a person). */
  choose(seq, auto = false) {
    const tr = this.rows.get(seq);
    if (!tr) return;
    for (const other of this.body.querySelectorAll("tr[aria-selected=true], tr[tabindex='0']")) {
      other.setAttribute("aria-selected", "false");
      other.setAttribute("tabindex", "-1");
    }
    tr.setAttribute("aria-selected", "true");
    tr.setAttribute("tabindex", "0");
    this.onSelect(this.events.get(seq), auto);
  }

  /** A model's tokens as they stream (never journaled): one live line under the rows. */
  showDelta(e) {
    const d = e.data || {};
    if (d.restart) this.delta.textContent = "";
    if (this.delta.hidden || this.delta.dataset.effect !== `${d.step}/${d.task}/${d.effect}`) {
      this.delta.textContent = `${d.node} · ${d.name}: `;
      this.delta.dataset.effect = `${d.step}/${d.task}/${d.effect}`;
    }
    this.delta.hidden = false;
    this.delta.append(document.createTextNode(d.text || d.reasoning || ""));
  }
}
