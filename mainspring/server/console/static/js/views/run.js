// #/runs/{id}: one run. The journal as a live timeline, the graph with the current node lit,
// the state at any step (diffed with the step before), the trace, tokens and cost, errors,
// pending approvals, and the buttons: cancel, resume, fork at a step, replay.

import { allEvents, api, ApiError, needs, runPath, streamUrl } from "../api.js";
import { actionButton, fmtAgo, fmtInt, fmtTime, h, replace, statusBadge } from "../dom.js";
import * as live from "../live.js";
import { cancelForm, forkForm, replayReport, resumeForm } from "../panels/actions.js";
import { drawGraph, highlight, marksFrom } from "../panels/graph.js";
import { StatePanel } from "../panels/state.js";
import { errorLine, errorsView, failures, usageView } from "../panels/summary.js";
import { Timeline } from "../panels/timeline.js";
import { TracePanel } from "../panels/trace.js";
import { emptyUsage, addUsage } from "../usage.js";
import { interruptCard } from "./approvals.js";

// Every journaled kind, and the live-only model_delta: EventSource delivers named events only
// to listeners of that name.
const KINDS = ["run_started", "step_started", "step_finished", "step_failed", "effect_started",
  "effect_decided", "effect_finished", "interrupted", "resumed", "emitted", "discarded", "failed",
  "finished", "cancelled", "model_delta"];
const TERMINAL = new Set(["finished", "failed", "cancelled"]);
const MOVES = new Set(["interrupted", "resumed", "finished", "failed", "cancelled",
  "run_started"]);
const POLL_MS = 2000;

export function runView(root, runId, query) {
  let run = null;
  let events = [];
  let lastSeq = 0;
  let selected = null; // the chosen event
  let usage = emptyUsage();
  let source = null;
  let pollTimer = null;
  let runTimer = null;
  let destroyed = false;
  let svg = null;

  const title = h("h1", { class: "mono" }, runId);
  const badge = h("span");
  const meta = h("div", { class: "run-meta" });
  const actions = h("div", { class: "actions", role: "toolbar", "aria-label": "Run actions" });
  const drawer = h("div", { class: "drawer" }); // the forms and reports of the actions
  const banner = h("div", { class: "stream-state muted", role: "status" });
  // Following: the chosen event is the newest one, as events arrive; choosing one in the
  // journal stops that (the checkbox starts it again).
  let following = true;
  const followBox = h("input", { type: "checkbox", id: "follow", checked: true });
  const follow = h("label", { class: "follow muted", for: "follow" }, followBox, " follow");
  followBox.addEventListener("change", () => {
    following = followBox.checked;
    if (following && events.length) timeline.choose(events[events.length - 1].seq, true);
  });
  const timeline = new Timeline((e, auto) => {
    if (!auto) {
      following = false;
      followBox.checked = false;
    }
    select(e);
  });
  const state = new StatePanel(runId);
  const trace = new TracePanel(runId);
  const graphBox = h("div", { class: "graph-box" }, h("p", { class: "muted" }, "Loading…"));
  const usageBox = h("div", { class: "usage" });
  const pendingBox = h("div", { class: "cards" });
  const pendingPanel = h("section", { class: "panel", "aria-labelledby": "pending-title",
    hidden: true }, h("h2", { id: "pending-title" }, "Waiting for a person"), pendingBox);
  const errorsBox = h("div", { class: "errors" });
  const errorsPanel = h("section", { class: "panel", "aria-labelledby": "errors-title",
    hidden: true }, h("h2", { id: "errors-title" }, "Errors"), errorsBox);

  replace(root,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/runs" }, "Runs"),
      " / ", h("span", { class: "mono" }, runId)),
    h("div", { class: "page-head" }, title, badge, h("span", { class: "spacer" }), actions),
    meta, drawer,
    h("div", { class: "run-grid" },
      h("div", { class: "side" },
        h("section", { class: "panel journal", "aria-labelledby": "journal-title" },
          h("div", { class: "panel-head" }, h("h2", { id: "journal-title" }, "Journal"),
            follow, banner),
          timeline.el),
        state.el),
      h("div", { class: "side" },
        pendingPanel,
        h("section", { class: "panel", "aria-labelledby": "graph-title" },
          h("h2", { id: "graph-title" }, "Graph"), graphBox),
        errorsPanel,
        h("section", { class: "panel", "aria-labelledby": "usage-title" },
          h("h2", { id: "usage-title" }, "Tokens and cost"), usageBox))),
    trace.el,
  );

  // -- the run's summary and buttons --

  function renderRun() {
    if (!run) return;
    const started = events.length && events[0].kind === "run_started" ? events[0] : null;
    const forkedFrom = started && started.data ? started.data.forked_from : null;
    replace(badge, statusBadge(run.status));
    badge.dataset.status = run.status;
    root.dataset.status = run.status;
    replace(meta,
      item("graph", run.graph + (run.version ? ` @${String(run.version).slice(0, 8)}` : "")),
      item("thread", run.thread || "—"),
      item("tenant", run.tenant || "—"),
      item("created", fmtTime(run.created_at), fmtAgo(run.created_at)),
      item("updated", fmtTime(run.updated_at), fmtAgo(run.updated_at)),
      item("events", fmtInt(run.last_seq)),
      run.parent_run_id ? runLink("parent run", run.parent_run_id) : null,
      forkedFrom ? runLink("forked from", forkedFrom.run_id, forkedFrom.seq) : null,
      run.error ? h("span", { class: "meta-item error-text" }, errorLine(run.error)) : null,
    );
    const open = run.status === "running" || run.status === "interrupted";
    const at = selected ? selected.seq : lastSeq;
    replace(actions,
      open ? h("button", { type: "button", class: "danger", dataset: { action: "cancel" },
        ...needs("run"), on: { click: () => show(cancelForm(runId, { close, onDone: (r) => {
          run = r;
          renderRun();
        } })) } }, "Cancel…") : null,
      open ? h("button", { type: "button", dataset: { action: "resume" }, on: { click: () => show(resumeForm(
        runId, run.status === "interrupted" ? pendingInterrupts() : null,
        { close, onDone: refreshRun })) },
        ...needs("approve", run.status === "interrupted" ? "Answer the pending interrupt with a value"
          : "Pick up a run whose process died (its journal says where it was)") },
      "Resume…") : null,
      h("button", { type: "button", dataset: { action: "fork" }, on: { click: () => show(forkForm(runId, at, { close })) },
        ...needs("run", "A new run from the state at the chosen event (choose one in the journal)") },
      `Fork at #${at}…`),
      actionButton("Replay", async () => show(await replayReport(runId, { close })), {
        dataset: { action: "replay" },
        ...needs("run", "Run the graph's code again over this journal: does it still decide the same?") }),
    );
    renderPending();
  }

  const close = () => replace(drawer);
  const show = (el) => replace(drawer, el);

  function runLink(label, id, seq) {
    const href = `#/runs/${encodeURIComponent(id)}` + (seq ? `?at=${seq}` : "");
    return h("span", { class: "meta-item" }, h("span", { class: "muted" }, `${label} `),
      h("a", { class: "mono", href }, id), seq ? h("span", { class: "muted" }, ` @#${seq}`) : null);
  }

  function item(label, value, title) {
    return h("span", { class: "meta-item", title: title || null },
      h("span", { class: "muted" }, `${label} `), value);
  }

  let pendingKey = "";

  function pendingInterrupts() {
    return run && run.status === "interrupted" && run.outcome ? run.outcome.interrupts || [] : [];
  }

  function renderPending() {
    const interrupts = pendingInterrupts();
    const key = interrupts.map((i) => i.interrupt_id).join(",");
    if (key === pendingKey) return; // the same cards: keep what the person typed in them
    pendingKey = key;
    pendingPanel.hidden = interrupts.length === 0;
    replace(pendingBox, interrupts.map((i) => interruptCard(
      { ...i, run_id: runId, graph: run.graph, thread: run.thread, tenant: run.tenant },
      { showRun: false, onDone: refreshRun })));
  }

  async function refreshRun() {
    try {
      run = await api(runPath(runId));
      renderRun();
      // Moving again (resumed after it ended, or the stream gave up): follow it again.
      if (!destroyed && !source && !pollTimer && !TERMINAL.has(run.status)) openStream();
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        replace(root, h("p", { class: "form-error" }, `No run ${runId} (or not your tenant's).`));
        destroy();
      }
    }
  }

  function scheduleRun() {
    clearTimeout(runTimer);
    runTimer = setTimeout(refreshRun, 150);
  }

  // -- events --

  function addEvents(batch) {
    const fresh = batch.filter((e) => e.seq > lastSeq);
    if (!fresh.length) return;
    fresh.sort((a, b) => a.seq - b.seq);
    for (const e of fresh) {
      events.push(e);
      usage = addUsage(usage, e);
    }
    lastSeq = fresh[fresh.length - 1].seq;
    timeline.add(fresh);
    if (following) timeline.choose(lastSeq, true);
    renderGraphMarks();
    renderUsage();
    renderErrors();
    // The trace at most once a second while events pour in; at once when the run stops.
    trace.refresh(fresh.some((e) => TERMINAL.has(e.kind) || e.kind === "interrupted") ? 50 : 1000);
    if (fresh.some((e) => MOVES.has(e.kind))) scheduleRun();
    if (fresh[0].seq === 1) renderRun(); // run_started names the run it was forked from
    else if (run) run.last_seq = lastSeq;
  }

  function select(e) {
    if (!e) return;
    selected = e;
    // Compare with the state after the step before this one (or the run's start).
    let prev = null;
    for (const x of events) {
      if (x.seq >= e.seq) break;
      if (x.kind === "step_finished" || x.kind === "run_started" || x.kind === "resumed") {
        prev = x.seq;
      }
    }
    state.show(e, prev);
    renderGraphMarks();
    renderRun();
  }

  function renderGraphMarks() {
    if (!svg) return;
    const marks = marksFrom(events, selected ? selected.seq : Infinity);
    const sel = selected && selected.data && selected.data.node;
    marks.selected = new Set(sel ? [sel] : []);
    highlight(svg, marks);
  }

  function renderUsage() {
    replace(usageBox, usageView(usage));
  }

  function renderErrors() {
    const failed = failures(events);
    errorsPanel.hidden = failed.length === 0;
    replace(errorsBox, errorsView(failed, (seq) => timeline.choose(seq)));
  }

  // -- live: the run's stream, with polling when it cannot be had --

  function openStream() {
    if (destroyed || (run && TERMINAL.has(run.status) && events.some((e) =>
      TERMINAL.has(e.kind)))) {
      banner.textContent = run ? `${run.status}` : "";
      return;
    }
    const es = new EventSource(streamUrl(`${runPath(runId)}/stream`,
      { after: lastSeq, tokens: "true" }));
    source = es;
    banner.textContent = "○ connecting";
    es.addEventListener("open", () => {
      stopPolling();
      banner.textContent = "● live";
    });
    for (const kind of KINDS) {
      es.addEventListener(kind, (msg) => {
        let e;
        try {
          e = JSON.parse(msg.data);
        } catch {
          return;
        }
        if (e.kind === "model_delta") timeline.showDelta(e);
        else addEvents([e]);
      });
    }
    es.addEventListener("end", () => {
      es.close();
      source = null;
      banner.textContent = "ended";
      scheduleRun();
    });
    es.addEventListener("error", () => {
      if (source !== es) return;
      if (es.readyState === EventSource.CLOSED) {
        source = null;
        startPolling(); // not a stream (404, 401...): read the journal every few seconds
      } else {
        banner.textContent = "○ reconnecting"; // the browser resumes with Last-Event-ID
      }
    });
  }

  function startPolling() {
    banner.textContent = "◌ polling";
    if (pollTimer) return;
    pollTimer = setInterval(async () => {
      try {
        const { events: more } = await allEvents(runId, lastSeq);
        addEvents(more);
        if (more.some((e) => TERMINAL.has(e.kind))) {
          stopPolling();
          banner.textContent = "ended";
        }
      } catch {
        // keep trying; the error shows in the next action
      }
    }, POLL_MS);
  }

  function stopPolling() {
    clearInterval(pollTimer);
    pollTimer = null;
  }

  // The watch feed names this run when its status changes: a cheap check on the header.
  const unsubscribe = live.subscribe((changed) => {
    if (changed && changed.run_id === runId && run && changed.status !== run.status) {
      scheduleRun();
    }
  });

  function destroy() {
    destroyed = true;
    if (source) source.close();
    source = null;
    stopPolling();
    clearTimeout(runTimer);
    trace.destroy();
    state.destroy();
    unsubscribe();
  }

  (async () => {
    try {
      run = await api(runPath(runId));
    } catch (err) {
      replace(root, h("p", { class: "form-error", role: "alert" },
        err instanceof ApiError && err.status === 404
          ? `No run ${runId} (or it belongs to another tenant).` : err.message),
      h("a", { href: "#/runs" }, "Back to the runs"));
      destroy();
      return;
    }
    renderRun();
    api(`/v1/graphs/${encodeURIComponent(run.graph)}`,
      { query: run.version ? { version: run.version } : {} })
      .then((g) => {
        if (destroyed) return;
        svg = drawGraph(g);
        replace(graphBox, svg);
        renderGraphMarks();
      })
      .catch((err) => replace(graphBox, h("p", { class: "muted" },
        `The graph is not available: ${err.message}`)));
    try {
      const page = await allEvents(runId, 0);
      if (destroyed) return;
      addEvents(page.events);
    } catch (err) {
      banner.textContent = `the journal: ${err.message}`;
    }
    renderUsage();
    trace.load();
    const at = Number(query.get("at"));
    if (at && timeline.events.has(at)) timeline.choose(at);
    openStream();
  })();

  return { destroy };
}
