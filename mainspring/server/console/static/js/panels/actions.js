// The forms behind a run's buttons: cancel (with a reason), resume (with a value), fork at an
// event (what to do with the effects after it), and the replay report. Each returns an
// element for the page's drawer; close() empties the drawer.

import { api, runPath } from "../api.js";
import { actionButton, h, pretty, toast } from "../dom.js";

const closeButton = (close, label = "Close") =>
  h("button", { type: "button", class: "link", on: { click: close } }, label);

/** onDone(run): the run after the cancel. */
export function cancelForm(runId, { close, onDone }) {
  const reason = h("input", { id: "cancel-reason", autocomplete: "off",
    placeholder: "why (kept in the journal)" });
  const form = h("form", { class: "inline-form card", "aria-label": "Cancel the run" },
    h("label", { for: "cancel-reason" }, "Cancel reason"), reason,
    actionButton("Cancel the run", async () => {
      const body = reason.value.trim() ? { reason: reason.value.trim() } : {};
      const run = await api(`${runPath(runId)}/cancel`, { method: "POST", body });
      close();
      toast(`${runId} cancelled`);
      onDone(run);
    }, { class: "danger", dataset: { action: "confirm-cancel" } }),
    closeButton(close, "Keep it running"));
  setTimeout(() => reason.focus());
  return form;
}

/** pending: the run's pending interrupts (null: not parked, it is picked up from its
 * journal). With several, the person picks the one the value answers (sent as interrupt_id:
 * without it the server cannot tell which, and refuses). */
export function resumeForm(runId, pending, { close, onDone }) {
  const parked = pending !== null;
  const value = h("textarea", { id: "resume-value", rows: 3, class: "mono",
    spellcheck: "false" }, "true");
  const several = parked && pending.length > 1;
  const which = several ? h("select", { id: "resume-interrupt" },
    pending.map((i) => h("option", { value: i.interrupt_id },
      `${i.interrupt_id}${i.node ? ` (${i.node})` : ""}`))) : null;
  return h("form", { class: "inline-form card", "aria-label": "Resume the run" },
    several ? [h("label", { for: "resume-interrupt" }, "Interrupt"), which] : null,
    parked ? [h("label", { for: "resume-value" },
      several ? "Value (JSON) for that interrupt" : "Value (JSON) for the pending interrupt"), value]
      : h("span", {}, "Pick the run up where its journal says it was."),
    actionButton("Resume", async () => {
      let body = {};
      if (parked) {
        try {
          body = { value: JSON.parse(value.value) };
        } catch (err) {
          throw new Error(`The value is not valid JSON: ${err.message}`);
        }
        if (several) body.interrupt_id = which.value;
      }
      await api(`${runPath(runId)}/resume`, { method: "POST", body });
      close();
      toast(`${runId} resumed`);
      onDone();
    }, { class: "primary", dataset: { action: "confirm-resume" } }),
    closeButton(close));
}

/** Fork at `at`; the new run's page opens. */
export function forkForm(runId, at, { close }) {
  const effects = h("select", { id: "fork-effects" },
    h("option", { value: "" }, "refuse if it would repeat recorded effects"),
    h("option", { value: "reuse" }, "reuse: answer them from this run's journal"),
    h("option", { value: "rerun" }, "rerun: call them again (new idempotency keys)"));
  const thread = h("input", { id: "fork-thread", autocomplete: "off",
    placeholder: "same thread", value: "" });
  return h("form", { class: "inline-form card", "aria-label": "Fork the run" },
    h("strong", {}, `Fork at #${at}`),
    h("label", { for: "fork-effects" }, "Effects after it"), effects,
    h("label", { for: "fork-thread" }, "Thread"), thread,
    actionButton("Fork", async () => {
      const body = { at };
      if (effects.value) body.effects = effects.value;
      if (thread.value.trim()) body.thread = thread.value.trim();
      const forked = await api(`${runPath(runId)}/fork`, { method: "POST", body });
      toast(`forked at #${at}: ${forked.run_id}`);
      window.location.hash = `#/runs/${encodeURIComponent(forked.run_id)}`;
    }, { class: "primary", dataset: { action: "confirm-fork" } }),
    closeButton(close));
}

/** Replay the run and show its report. */
export async function replayReport(runId, { close }) {
  const report = await api(`${runPath(runId)}/replay`, { method: "POST", body: {} });
  return h("div", { class: `card report ${report.ok ? "ok" : "bad"}`, role: "status",
    dataset: { replay: report.ok ? "ok" : "diverged" } },
  h("strong", {}, report.ok ? "Replay: the code decides as the journal says."
    : "Replay diverged from the journal."),
  h("pre", { class: "json" }, pretty(report)),
  closeButton(close));
}
