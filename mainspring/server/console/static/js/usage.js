// Tokens and cost of a run, summed from the usage its effect_finished events report.

import { allEvents } from "./api.js";

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
// read from each run's journal, once per last_seq (a finished run's never changes), a few
// runs at a time.
const cache = new Map(); // run_id -> {lastSeq, usage}
const inflight = new Map();
const queue = [];
let active = 0;
const PARALLEL = 3;
const REFRESH_MS = 5000;

/** The usage of `run` if known for its last_seq, else null (and it is fetched: onReady). */
export function runUsage(run, onReady) {
  const hit = cache.get(run.run_id);
  if (hit && hit.lastSeq === run.last_seq) return hit.usage;
  if (run.usage && typeof run.usage === "object") return fromRunJson(run.usage);
  // A run that is still moving is read again at most every few seconds, not per event.
  const moving = run.status === "running";
  if (hit && moving && Date.now() - hit.at < REFRESH_MS) return hit.usage;
  const key = `${run.run_id}@${run.last_seq}`;
  if (!inflight.has(key)) {
    inflight.set(key, true);
    queue.push(async () => {
      try {
        const { events } = await allEvents(run.run_id);
        cache.set(run.run_id, { lastSeq: run.last_seq, usage: sumUsage(events), at: Date.now() });
        onReady(run.run_id);
      } catch {
        // The list shows "—"; the run's page reports the error.
      } finally {
        inflight.delete(key);
      }
    });
    pump();
  }
  return hit ? hit.usage : null;
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
