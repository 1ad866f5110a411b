// The console's shell: who is signed in, the sections, the hash router, the live indicator.
//
// Routes: #/runs (the live run list), #/runs/{id} (one run), #/approvals (pending interrupts).

import { api, ApiError, getKey, onUnauthorized, setKey, setScopes } from "./api.js";
import { h, replace } from "./dom.js";
import * as live from "./live.js";
import { approvalsView } from "./views/approvals.js";
import { runView } from "./views/run.js";
import { runsView } from "./views/runs.js";

let mounted = null; // the view on screen: {destroy()}
let me = null; // GET /v1/me

const main = () => document.getElementById("main");

function parseHash() {
  const hash = window.location.hash.replace(/^#/, "") || "/runs";
  const [path, search = ""] = hash.split("?");
  return { path, query: new URLSearchParams(search) };
}

async function route() {
  if (mounted && mounted.destroy) mounted.destroy();
  mounted = null;
  if (!me) return; // the key prompt is on screen
  const { path, query } = parseHash();
  const el = main();
  replace(el);
  let section = "runs";
  const run = path.match(/^\/runs\/([^/]+)$/);
  if (run) {
    mounted = runView(el, decodeURIComponent(run[1]), query);
  } else if (path === "/approvals") {
    section = "approvals";
    mounted = approvalsView(el, query);
  } else {
    mounted = runsView(el, query);
  }
  for (const a of document.querySelectorAll("nav a[data-nav]")) {
    if (a.dataset.nav === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

// -- the key ------------------------------------------------------------------------------------

function showKeyPrompt(message) {
  me = null;
  setScopes(null);
  // No stream or polling with a forgotten or refused key (it would stay in /v1/watch's URL).
  live.stop();
  if (mounted && mounted.destroy) mounted.destroy();
  mounted = null;
  const input = h("input", {
    id: "api-key", type: "password", autocomplete: "off", spellcheck: "false", required: true,
    placeholder: "ms_…", "aria-describedby": "key-help",
  });
  const error = h("p", { class: "form-error", role: "alert" }, message || "");
  const form = h("form", { class: "key-form card", "aria-labelledby": "key-title" },
    h("h1", { id: "key-title" }, "Sign in with an API key"),
    h("p", { id: "key-help", class: "muted" },
      "The key is kept in this tab only (session storage) and sent as ",
      h("code", {}, "Authorization: Bearer"), ". Create one with ",
      h("code", {}, "mainspring keys create --tenant T --scopes read,run,approve"), "."),
    h("label", { for: "api-key" }, "API key"),
    input,
    error,
    h("button", { type: "submit", class: "primary" }, "Open the console"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setKey(input.value.trim());
    error.textContent = "";
    if (!(await signIn())) {
      error.textContent = "That key was not accepted: check it was copied whole and not revoked.";
      setKey("");
    }
  });
  replace(main(), form);
  input.focus();
  updateWho();
}

async function signIn() {
  try {
    me = await api("/v1/me");
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) return false;
    // The server is there but /v1/me is not (or failed): carry on without a name.
    me = { key_id: null, tenant: null, scopes: [] };
  }
  setScopes(me.key_id !== null && Array.isArray(me.scopes) ? me.scopes : null);
  updateWho();
  live.restart();
  // The nav's approvals count follows the live feed: subscribed once, after the first sign-in
  // (before it, the feed would call /v1/watch without a key).
  if (!countSubscribed) {
    countSubscribed = true;
    live.subscribe(() => scheduleApprovalsCount());
  }
  refreshApprovalsCount();
  await route();
  return true;
}

function updateWho() {
  const who = document.getElementById("who");
  const forget = document.getElementById("forget-key");
  if (!me) {
    who.textContent = "";
    forget.hidden = true;
    return;
  }
  const tenant = me.tenant === "*" ? "all tenants" : `tenant ${me.tenant}`;
  who.textContent = me.key_id ? `${me.key_id} · ${tenant} · ${(me.scopes || []).join(",")}` : "";
  forget.hidden = !getKey();
}

// -- the approvals count in the nav -----------------------------------------------------------

let countTimer = null;
let countSubscribed = false;

async function refreshApprovalsCount() {
  const badge = document.getElementById("approvals-count");
  try {
    const data = await api("/v1/interrupts", { query: { limit: 500 } });
    const n = data.interrupts.length;
    badge.textContent = String(n);
    badge.hidden = n === 0;
  } catch {
    badge.hidden = true;
  }
}

function scheduleApprovalsCount() {
  if (countTimer) return;
  countTimer = setTimeout(() => {
    countTimer = null;
    if (me) refreshApprovalsCount();
  }, 400);
}

// -- boot ---------------------------------------------------------------------------------------

function start() {
  // Signed in, then refused (the key was revoked, the server restarted with auth on): ask again.
  onUnauthorized(() => {
    if (me) showKeyPrompt("The server no longer accepts this key: enter one again.");
  });
  document.getElementById("forget-key").addEventListener("click", () => {
    setKey("");
    showKeyPrompt("");
  });
  const mode = document.getElementById("live-mode");
  live.onMode((m) => {
    const label = { live: "● live", connecting: "○ connecting", polling: "◌ polling", off: "" }[m];
    mode.textContent = label;
    mode.className = `live live-${m}`;
    mode.title = m === "polling"
      ? "The live stream (/v1/watch) is not available: the console polls every 3 s"
      : m === "live" ? "Updates arrive as they happen (Server-Sent Events)" : "";
  });
  window.addEventListener("hashchange", route);
  firstSignIn();
}

/** Sign in with the saved key; with none and auth on, ask for one before any /v1 call (no
 * 401s on a fresh load); with auth off, /v1/me answers without a key: in at once. */
async function firstSignIn() {
  if (!getKey() && (await authRequired())) {
    showKeyPrompt("");
    return;
  }
  if (!(await signIn())) showKeyPrompt(getKey() ? "The saved key was not accepted." : "");
}

async function authRequired() {
  try {
    const response = await fetch("/console/auth.json", { cache: "no-store" });
    if (response.ok) return Boolean((await response.json()).auth);
  } catch {
    // An older server: find out from /v1/me.
  }
  return false;
}

start();
