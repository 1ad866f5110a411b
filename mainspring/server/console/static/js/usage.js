// Tokens and cost of a run, summed from the usage its effect_finished events report.

import { api, runPath } from "./api.js";

export function emptyUsage() {
  return { input: 0, output: 0, cached: 0, reasoning: 0, cost: null, calls: 0, estimated: false,
    byNode: new Map() };
}

/** Add one event's usage (if it is an effect_finished that reports one) into `total`. */
export function addUsage(total, event) {
  if (event.kind !== "effect_finished") return total;
  const u = event.data && event.data.usage;
  if (!u || typeof u !== "object") return total;
  const input = num(u.input_tokens ?? u.prompt_tokens);
  const output = num(u.output_tokens ?? u.completion_tokens);
  const cost = typeof u.cost === "number" ? u.cost : null;
  total.input += input;
  total.output += output;
  total.cached += num(u.cached_tokens);
  total.reasoning += num(u.reasoning_tokens);
  total.calls += 1;
  total.estimated = total.estimated || Boolean(u.estimated);
  if (cost !== null) total.cost = (total.cost || 0) + cost;
  const node = event.data.node || "?";
  const row = total.byNode.get(node) || { node, calls: 0, input: 0, output: 0, cost: null };
  row.calls += 1;
  row.input += input;
  row.output += output;
  if (cost !== null) row.cost = (row.cost || 0) + cost;
  total.byNode.set(node, row);
  return total;
}

export function sumUsage(events) {
  return events.reduce(addUsage, emptyUsage());
}

function num(v) {
  return typeof v === "number" && Number.isFinite(v) ? v : 0;
}

// The run list shows tokens and cost per run: the Run JSON does not carry them, so they are
// read from each run's journal, incrementally (only the events after the seq already summed;
// a finished run's never changes), one read per run at a time, a few runs at a time.
const cache = new Map(); // run_id -> {lastSeq (summed through), usage, at}
const inflight = new Set(); // run_ids being read
const queue = [];
let active = 0;
const PARALLEL = 3;
const REFRESH_MS = 5000;

/** The usage of `run` if known for its last_seq, else the last known (or null), and it is
 * brought up to date in the background (onReady(run_id) then). */
export function runUsage(run, onReady) {
  if (run.usage && typeof run.usage === "object") return fromRunJson(run.usage);
  const hit = cache.get(run.run_id);
  if (hit && hit.lastSeq >= run.last_seq) return hit.usage;
  // A run that is still moving is read again at most every few seconds, not per event.
  if (hit && run.status === "running" && Date.now() - hit.at < REFRESH_MS) return hit.usage;
  if (!inflight.has(run.run_id)) {
    inflight.add(run.run_id);
    queue.push(async () => {
      try {
        const known = cache.get(run.run_id);
        const after = known ? known.lastSeq : 0;
        // A copy: a read that fails half-way must not leave its pages counted (they are read
        // again next time).
        const usage = known ? copyUsage(known.usage) : emptyUsage();
        const lastSeq = await readUsage(run.run_id, after, usage);
        cache.set(run.run_id, { lastSeq, usage, at: Date.now() });
        onReady(run.run_id);
      } catch {
        // The list shows "…"; the run's page reports the error.
      } finally {
        inflight.delete(run.run_id);
      }
    });
    pump();
  }
  return hit ? hit.usage : null;
}

/** Add the usage of the journal's effect_finished events after `after` into `usage`; the seq
 * read through. Only that kind is sent, in large pages: a long run costs a request or two. */
async function readUsage(runId, after, usage) {
  for (;;) {
    const page = await api(`${runPath(runId)}/events`,
      { query: { after, limit: 5000, kind: "effect_finished" } });
    for (const e of page.events) if (e.seq > after) addUsage(usage, e);
    // With `kind`, last_seq is where the page's range ended (it may hold none of that kind).
    if (typeof page.last_seq !== "number" || page.last_seq <= after) return after;
    after = page.last_seq;
    if (!page.more) return after;
  }
}

function copyUsage(u) {
  return { ...u, byNode: new Map([...u.byNode].map(([k, row]) => [k, { ...row }])) };
}

function fromRunJson(u) {
  const total = emptyUsage();
  total.input = num(u.input_tokens);
  total.output = num(u.output_tokens);
  total.cost = typeof u.cost === "number" ? u.cost : null;
  return total;
}

function pump() {
  while (active < PARALLEL && queue.length) {
    const job = queue.shift();
    active += 1;
    job().finally(() => {
      active -= 1;
      pump();
    });
  }
}
