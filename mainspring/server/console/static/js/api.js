// The console's only way to the server: the public /v1 API, with the key kept in this tab.

const KEY = "mainspring.api_key";

export function getKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

/** An error answer of the API: its status, code and message ("what to fix"). */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

const unauthorizedListeners = new Set();

/** Call fn() whenever the server says the key is missing or wrong (401). */
export function onUnauthorized(fn) {
  unauthorizedListeners.add(fn);
}

// The scopes of the signed-in key (GET /v1/me); null while unknown (then nothing is disabled:
// the server still refuses what the key may not do).
let scopes = null;

export function setScopes(list) {
  scopes = Array.isArray(list) ? new Set(list) : null;
}

/** Whether the key has `scope` (read, run, approve, admin; admin implies all). */
export function can(scope) {
  return scopes === null || scopes.has("admin") || scopes.has(scope);
}

/** Attributes that disable a button the key lacks `scope` for, saying which scope it needs. */
export function needs(scope, title) {
  return can(scope) ? { title: title || null }
    : { disabled: true, title: `Needs a key with the ${scope} scope` };
}

// A 429 (the rate limit) is waited out and the request sent again, a couple of times, rather
// than shown as an error: the console's own bursts must not break a page.
const RETRIES_429 = 2;
const MAX_WAIT_MS = 10000;

/** A request to the API: JSON in and out; errors raised as ApiError. */
export async function api(path, options = {}) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await request(path, options);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 429 || attempt >= RETRIES_429) throw err;
      await sleep(err.retryAfterMs, options.signal);
    }
  }
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    if (signal) {
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(new DOMException("aborted", "AbortError"));
      }, { once: true });
    }
  });
}

function retryAfterMs(response, attempt) {
  const seconds = Number(response.headers.get("Retry-After"));
  const ms = Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 500 * 2 ** attempt;
  return Math.min(ms + Math.random() * 200, MAX_WAIT_MS); // jitter: not all at once again
}

async function request(path, { method = "GET", body, query, signal } = {}) {
  const headers = { Accept: "application/json" };
  const key = getKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url(path, query), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "unreachable", `the server did not answer (${err.message})`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { error: { code: "not_json", message: text.slice(0, 300) } };
    }
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    const detail = data && data.detail; // FastAPI's own shape, before the error handler runs
    const message = error.message || (typeof detail === "string" ? detail : null) ||
      `${method} ${path}: HTTP ${response.status}`;
    const err = new ApiError(response.status, error.code || `http_${response.status}`, message,
      error.details);
    if (response.status === 429) err.retryAfterMs = retryAfterMs(response, 0);
    if (response.status === 401) unauthorizedListeners.forEach((fn) => fn(err));
    throw err;
  }
  return data;
}

/** A URL of the API with query parameters (empty ones left out). */
export function url(path, query = {}) {
  const u = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") u.searchParams.set(k, String(v));
  }
  return u.pathname + u.search;
}

/** A URL for EventSource, which cannot send headers: the key goes as ?api_key=. */
export function streamUrl(path, query = {}) {
  const key = getKey();
  return url(path, key ? { ...query, api_key: key } : query);
}

/** Every page of a run's journal after `after`. */
export async function allEvents(runId, after = 0) {
  const events = [];
  for (;;) {
    const page = await api(`/v1/runs/${encodeURIComponent(runId)}/events`,
      { query: { after, limit: 500 } });
    events.push(...page.events);
    if (!page.more || page.events.length === 0) return { events, lastSeq: page.last_seq };
    after = page.events[page.events.length - 1].seq;
  }
}

export const runPath = (runId) => `/v1/runs/${encodeURIComponent(runId)}`;
