// #/approvals: every pending interrupt (oldest first); approve, reject with a reason, or edit
// the arguments and approve. The list follows the live feed.

import { api, ApiError, needs, runPath } from "../api.js";
import { fmtAgo, fmtTime, h, pretty, replace, toast } from "../dom.js";
import * as live from "../live.js";

export function approvalsView(root, query) {
  const filters = { graph: query.get("graph") || "", thread: query.get("thread") || "" };
  const cards = new Map(); // "run/iid" -> element (kept, so typed text survives updates)
  const list = h("div", { class: "cards", id: "approvals-list" });
  const summary = h("span", { class: "muted" });
  const error = h("p", { class: "form-error", role: "alert" });
  let destroyed = false;
  let timer = null;
  let loadSeq = 0;

  const input = (name, label) => h("div", { class: "field" },
    h("label", { for: `a-${name}` }, label),
    h("input", { id: `a-${name}`, name, value: filters[name], placeholder: `any ${name}`,
      autocomplete: "off" }));
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter approvals" },
    input("graph", "Graph"), input("thread", "Thread"));
  form.addEventListener("input", () => {
    filters.graph = form.elements.graph.value.trim();
    filters.thread = form.elements.thread.value.trim();
    const params = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    history.replaceState(null, "", `#/approvals${params.toString() ? "?" + params : ""}`);
    schedule();
  });
  form.addEventListener("submit", (e) => e.preventDefault());

  replace(root, h("div", { class: "page-head" }, h("h1", {}, "Approvals"), summary), form, error,
    list);

  async function load() {
    const mine = ++loadSeq;
    try {
      const data = await api("/v1/interrupts", { query: { ...filters, limit: 500 } });
      if (destroyed || mine !== loadSeq) return;
      error.textContent = "";
      render(data.interrupts);
    } catch (err) {
      if (destroyed || mine !== loadSeq) return;
      if (!(err instanceof ApiError && err.status === 401)) error.textContent = err.message;
    }
  }

  function render(interrupts) {
    const keep = new Set();
    const order = [];
    for (const i of interrupts) {
      const key = `${i.run_id}/${i.interrupt_id}`;
      keep.add(key);
      let card = cards.get(key);
      if (!card) {
        card = interruptCard(i, { onDone: schedule });
        cards.set(key, card);
      }
      order.push(card);
    }
    for (const [key, card] of cards) {
      if (!keep.has(key)) {
        card.remove();
        cards.delete(key);
      }
    }
    if (order.length) replace(list, order);
    else replace(list, h("p", { class: "empty" }, "Nothing is waiting for a person."));
    summary.textContent = `${order.length} pending`;
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(load, 250);
  }

  const unsubscribe = live.subscribe(() => !destroyed && schedule());
  load();
  return {
    destroy() {
      destroyed = true;
      unsubscribe();
      clearTimeout(timer);
    },
  };
}

/** One pending interrupt with its three answers. onDone(): after one is sent. */
export function interruptCard(i, { onDone = () => {}, showRun = true } = {}) {
  const base = `${runPath(i.run_id)}/interrupts/${encodeURIComponent(i.interrupt_id)}`;
  const id = `i-${i.run_id}-${i.interrupt_id}`.replace(/[^A-Za-z0-9_-]/g, "_");
  const status = h("p", { class: "form-error", role: "alert" });
  const comment = h("input", { id: `${id}-comment`, autocomplete: "off",
    placeholder: "optional" });
  const reason = h("input", { id: `${id}-reason`, autocomplete: "off",
    placeholder: "why (sent to the run)" });
  const args = h("textarea", { id: `${id}-args`, rows: 6, spellcheck: "false", class: "mono" },
    pretty(editable(i.payload)));
  const buttons = [];

  async function send(action, body, done) {
    status.textContent = "";
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await api(`${base}/${action}`, { method: "POST", body });
      card.classList.add("answered");
      replace(card.querySelector(".answer"), h("p", { class: "ok" }, done));
      toast(`${i.run_id}: ${done}`);
      onDone();
    } catch (err) {
      status.textContent = err.message;
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  const approve = h("button", { type: "button", class: "primary", dataset: { action: "approve" } },
    "Approve");
  approve.addEventListener("click", () =>
    send("approve", comment.value.trim() ? { comment: comment.value.trim() } : {}, "approved"));
  const reject = h("button", { type: "button", class: "danger", dataset: { action: "reject" } },
    "Reject");
  reject.addEventListener("click", () =>
    send("reject", reason.value.trim() ? { reason: reason.value.trim() } : {}, "rejected"));
  const edit = h("button", { type: "button", dataset: { action: "edit" } }, "Approve with edits");
  edit.addEventListener("click", () => {
    let parsed;
    try {
      parsed = JSON.parse(args.value);
    } catch (err) {
      status.textContent = `The arguments are not valid JSON: ${err.message}`;
      args.focus();
      return;
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      status.textContent = "The arguments must be a JSON object ({\"name\": value, ...}).";
      return;
    }
    send("edit", { args: parsed }, "approved with edits");
  });
  buttons.push(approve, reject, edit);
  // A key without the approve scope sees the card, not buttons that can only fail.
  const refused = needs("approve");
  if (refused.disabled) for (const b of buttons) Object.assign(b, refused);

  const card = h("article", { class: "card interrupt", dataset: { runId: i.run_id,
    interruptId: i.interrupt_id }, "aria-label": `Approval for run ${i.run_id}` },
    h("header", {},
      showRun ? h("a", { class: "mono", href: `#/runs/${encodeURIComponent(i.run_id)}` },
        i.run_id) : null,
      h("span", { class: "tag" }, i.graph || ""),
      h("span", { class: "muted" }, "node ", h("b", {}, i.node || "?")),
      i.thread ? h("span", { class: "muted" }, "thread ", h("span", { class: "mono" }, i.thread))
        : null,
      i.tenant ? h("span", { class: "muted" }, "tenant ", i.tenant) : null,
      h("span", { class: "muted", title: fmtTime(i.since) }, i.since ? fmtAgo(i.since) : ""),
    ),
    h("pre", { class: "payload", "aria-label": "What the run asks" }, pretty(i.payload)),
    h("div", { class: "answer" },
      h("div", { class: "answer-row" },
        h("label", { for: comment.id }, "Comment"), comment, approve),
      h("div", { class: "answer-row" },
        h("label", { for: reason.id }, "Reason"), reason, reject),
      h("details", {},
        h("summary", {}, "Edit the arguments"),
        h("label", { for: args.id, class: "sr-only" }, "Arguments (JSON object)"),
        args, h("div", { class: "answer-row" }, edit)),
      status,
    ),
  );
  return card;
}

/** What "edit" starts from: the call's arguments when the payload names them. */
function editable(payload) {
  if (payload && typeof payload === "object" && !Array.isArray(payload)) {
    if (payload.args && typeof payload.args === "object") return payload.args;
    return payload;
  }
  return {};
}
