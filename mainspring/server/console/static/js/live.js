// One live feed of run changes for the whole console: Server-Sent Events from /v1/watch, and
// polling while that stream cannot be had (a proxy that buffers, an older server).
//
// Subscribers get a Run each time one changes, or null when they should fetch again because
// changes may have been missed (the stream (re)connected, or a polling tick).

import { streamUrl } from "./api.js";

const POLL_MS = 3000;
const RETRY_STREAM_MS = 30000;

const subscribers = new Set();
const modeListeners = new Set();
let source = null;
let pollTimer = null;
let retryTimer = null;
let mode = "off"; // "live" | "connecting" | "polling" | "off"

export function subscribe(fn) {
  subscribers.add(fn);
  if (mode === "off") start();
  return () => subscribers.delete(fn);
}

/** Call fn(mode) now and on every change: "live", "connecting" or "polling". */
export function onMode(fn) {
  modeListeners.add(fn);
  fn(mode);
  return () => modeListeners.delete(fn);
}

export function currentMode() {
  return mode;
}

/** Reconnect (the key changed). */
export function restart() {
  stop();
  start();
}

function setMode(next) {
  if (next === mode) return;
  mode = next;
  modeListeners.forEach((fn) => fn(mode));
}

function notify(run) {
  for (const fn of subscribers) {
    try {
      fn(run);
    } catch (err) {
      console.error("live subscriber failed", err);
    }
  }
}

function start() {
  stop();
  setMode("connecting");
  const es = new EventSource(streamUrl("/v1/watch"));
  source = es;
  es.addEventListener("open", () => {
    stopPolling();
    setMode("live");
    notify(null); // whatever changed while we were away
  });
  es.addEventListener("run", (event) => {
    try {
      notify(JSON.parse(event.data));
    } catch (err) {
      console.error("bad run event", err);
    }
  });
  es.addEventListener("error", () => {
    if (source !== es) return;
    if (es.readyState === EventSource.CLOSED) {
      // The server answered but not with a stream (404, 401...): poll, try again later.
      source = null;
      startPolling();
      retryTimer = setTimeout(start, RETRY_STREAM_MS);
    } else {
      setMode("connecting"); // the browser reconnects by itself
    }
  });
}

function startPolling() {
  setMode("polling");
  if (pollTimer) return;
  notify(null);
  pollTimer = setInterval(() => notify(null), POLL_MS);
}

function stopPolling() {
  if (pollTimer) clearInterval(pollTimer);
  pollTimer = null;
}

/** Close the stream and stop polling (the key was forgotten or refused). */
export function stop() {
  if (source) source.close();
  source = null;
  stopPolling();
  if (retryTimer) clearTimeout(retryTimer);
  retryTimer = null;
  setMode("off");
}
