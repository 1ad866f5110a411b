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
        const { events, lastSeq: journalSeq } = await allEvents(run.run_id, after);
        const usage = known ? known.usage : emptyUsage();
        let lastSeq = after;
        for (const e of events) {
          if (e.seq <= lastSeq) continue;
          addUsage(usage, e);
          lastSeq = e.seq;
        }
        // The last page said where the journal ends: read through there (no re-read of it).
        if (typeof journalSeq === "number") lastSeq = Math.max(lastSeq, journalSeq);
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
