// Berth dashboard: plain JavaScript, no build step. Calls the JSON API with
// the session cookie; state-changing requests carry the CSRF token.
"use strict";

const API = "/apis/berth.dev/v1alpha1";
let session = null; // {user, admin, csrf}
const main = document.getElementById("main");

// ---- helpers ----------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function toast(text, bad) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.className = "show" + (bad ? " error" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = ""; }, 5000);
}

async function api(path, opts) {
  opts = opts || {};
  const headers = { "Accept": "application/json" };
  const method = opts.method || "GET";
  if (method !== "GET" && method !== "HEAD") {
    headers["X-Berth-CSRF"] = session ? session.csrf : "";
    headers["Content-Type"] = "application/json";
  }
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin", signal: opts.signal,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  if (opts.raw) return resp;
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { message: text }; }
  if (!resp.ok) {
    const err = new Error((data && data.message) || resp.statusText);
    err.status = resp.status;
    throw err;
  }
  return data;
}

// Reads a newline-delimited JSON response, calling onLine per object.
async function ndjson(resp, onLine) {
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line) onLine(JSON.parse(line));
    }
  }
}

// Lists `path`, then follows its watch from the list's resourceVersion,
// reopening from the last one seen (and relisting after 410 Gone).
function liveList(path, onReset, onChange) {
  const ctl = new AbortController();
  let stopped = false;
  (async () => {
    let rv = null;
    while (!stopped) {
      try {
        if (rv === null) {
          const list = await api(path, { signal: ctl.signal });
          rv = list.metadata.resourceVersion;
          onReset(list.items || []);
        }
        const sep = path.includes("?") ? "&" : "?";
        const resp = await api(`${path}${sep}watch=true&resourceVersion=${encodeURIComponent(rv)}`,
          { raw: true, signal: ctl.signal });
        if (!resp.ok) { rv = null; throw new Error(`watch: ${resp.status}`); }
        await ndjson(resp, (ev) => {
          if (ev.type === "ERROR") { rv = null; return; }
          const o = ev.object;
          if (o && o.metadata && o.metadata.resourceVersion) rv = o.metadata.resourceVersion;
          onChange(ev.type, o);
        });
      } catch (e) {
        if (stopped) return;
        if (e.status === 401) { location.reload(); return; }
      }
      if (!stopped) await new Promise((r) => setTimeout(r, 1000));
    }
  })();
  return () => { stopped = true; ctl.abort(); };
}

function key(o) { return `${o.metadata.namespace}/${o.metadata.name}`; }
function cond(o, type) {
  return ((o.status && o.status.conditions) || []).find((c) => c.type === type);
}
function when(ts) {
  if (!ts) return "—";
  const d = new Date(ts);
  const s = Math.round((d - Date.now()) / 1000);
  const abs = Math.abs(s);
  const rel = abs < 60 ? `${abs}s` : abs < 3600 ? `${Math.round(abs / 60)}m` : abs < 86400 ? `${Math.round(abs / 3600)}h` : `${Math.round(abs / 86400)}d`;
  const text = abs < 5 ? "just now" : s >= 0 ? `in ${rel}` : `${rel} ago`;
  return h("time", { datetime: d.toISOString(), title: d.toLocaleString() }, text);
}
function phaseOf(o) { return (o.status && o.status.phase) || "Pending"; }
function agentText(o) {
  const a = o.status && o.status.agent;
  if (!a) return "—";
  return `${a.connected ? "connected" : "disconnected"}${a.lifecycle ? " · " + a.lifecycle : ""}`;
}
function templateText(o) {
  const t = (o.spec && o.spec.template) || {};
  const v = (o.status && o.status.templateVersion) || t.version;
  return `${t.name || "?"}${v ? "@" + v : ""}`;
}
function outdated(o) { const c = cond(o, "Outdated"); return !!c && c.status === "True"; }
function resources(o) {
  const r = o.spec && o.spec.resources;
  return r ? `${r.cpu} CPU units / ${r.memory} MiB` : "template default";
}
function activity(o) {
  const s = o.status || {};
  if (!s.lastActivityAt) return "—";
  return h("span", {}, when(s.lastActivityAt), s.lastActivitySource ? ` (${s.lastActivitySource})` : "");
}
function badge(text, cls) { return h("span", { class: `badge ${cls || text}` }, text); }

let cleanup = [];
function leave() { cleanup.forEach((f) => f()); cleanup = []; }

// ---- sign in -----------------------------------------------------------
function renderLogin() {
  document.getElementById("who").textContent = "";
  document.getElementById("signout").hidden = true;
  const err = h("p", { class: "error", id: "login-error", role: "alert" },
    location.hash === "#ticket-invalid" ? "That sign-in link was already used or has expired. Paste a token instead." : "");
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true, "aria-describedby": "token-help" });
  const form = h("form", { class: "card login", id: "login-form", onsubmit: async (ev) => {
    ev.preventDefault();
    err.textContent = "";
    try {
      await api("/login", { method: "POST", body: { token: input.value } });
      input.value = "";
      location.replace(location.pathname === "/login" ? "/" : location.pathname);
    } catch (e) {
      err.textContent = e.status === 401 ? "That token is unknown or was revoked." : `Sign-in failed: ${e.message}`;
      input.focus();
    }
  } },
    h("h1", {}, "Sign in to Berth"),
    h("label", { for: "token" }, "API token"),
    input,
    h("p", { class: "muted", id: "token-help" }, "Paste a token once (`berth token create USER` as an admin, or the CLI config's token). The dashboard keeps a session cookie, never the token."),
    h("button", { type: "submit", id: "signin" }, "Sign in"),
    err);
  main.replaceChildren(form);
  input.focus();
}

// ---- workspaces page ---------------------------------------------------
function renderWorkspaces() {
  document.title = "Workspaces · Berth";
  const items = new Map();
  const params = new URLSearchParams(location.search);
  const filters = { owner: params.get("owner") || "", namespace: params.get("namespace") || "" };
  const tbody = h("tbody", { id: "workspaces" });
  const count = h("p", { class: "muted", id: "count" });
  const filterBox = session.admin ? h("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
    h("div", {}, h("label", { for: "f-owner" }, "Owner"),
      h("input", { id: "f-owner", value: filters.owner, oninput: (e) => { filters.owner = e.target.value.trim(); sync(); } })),
    h("div", {}, h("label", { for: "f-ns" }, "Namespace"),
      h("input", { id: "f-ns", value: filters.namespace, oninput: (e) => { filters.namespace = e.target.value.trim(); sync(); } }))) : null;
  function sync() {
    const q = new URLSearchParams();
    if (filters.owner) q.set("owner", filters.owner);
    if (filters.namespace) q.set("namespace", filters.namespace);
    history.replaceState(null, "", q.toString() ? `/?${q}` : "/");
    draw();
  }
  function draw() {
    const rows = [...items.values()]
      .filter((o) => !filters.owner || (o.spec.owner || "") === filters.owner)
      .filter((o) => !filters.namespace || o.metadata.namespace === filters.namespace)
      .sort((a, b) => key(a).localeCompare(key(b)));
    count.textContent = `${rows.length} workspace${rows.length === 1 ? "" : "s"}`;
    tbody.replaceChildren(...rows.map((o) => {
      const s = o.status || {};
      const href = `/workspaces/${encodeURIComponent(o.metadata.namespace)}/${encodeURIComponent(o.metadata.name)}`;
      return h("tr", { "data-workspace": key(o) },
        h("td", { "data-label": "Name" }, h("a", { href }, o.metadata.name)),
        h("td", { "data-label": "Namespace" }, o.metadata.namespace),
        h("td", { "data-label": "Owner" }, o.spec.owner || ""),
        h("td", { "data-label": "Phase", class: "phase" }, badge(phaseOf(o))),
        h("td", { "data-label": "Agent", class: "agent" }, agentText(o)),
        h("td", { "data-label": "Template" }, templateText(o)),
        h("td", { "data-label": "Outdated" }, outdated(o) ? badge("Outdated", "warn") : "no"),
        h("td", { "data-label": "CPU / memory" }, resources(o)),
        h("td", { "data-label": "Last activity" }, activity(o)),
        h("td", { "data-label": "Autostop" }, when(s.autostopAt)),
        h("td", { "data-label": "Next autostart" }, when(s.nextAutostartAt)));
    }));
  }
  main.replaceChildren(...[
    h("h1", {}, session.admin ? "All workspaces" : "My workspaces"),
    filterBox,
    count,
    h("div", { class: "card table-wrap" }, h("table", { class: "responsive" },
      h("thead", {}, h("tr", {}, ["Name", "Namespace", "Owner", "Phase", "Agent", "Template", "Outdated", "CPU / memory", "Last activity", "Autostop", "Next autostart"].map((t) => h("th", { scope: "col" }, t)))),
      tbody))].filter(Boolean));
  cleanup.push(liveList(`${API}/workspaces`, (list) => {
    items.clear();
    list.forEach((o) => items.set(key(o), o));
    draw();
  }, (type, o) => {
    if (type === "DELETED") items.delete(key(o)); else items.set(key(o), o);
    draw();
  }));
  const tick = setInterval(draw, 15000);
  cleanup.push(() => clearInterval(tick));
}

// ---- a workspace's page ------------------------------------------------
function renderWorkspace(ns, name) {
  document.title = `${name} · Berth`;
  const base = `${API}/namespaces/${encodeURIComponent(ns)}/workspaces/${encodeURIComponent(name)}`;
  let ws = null;
  let apps = [];
  let appsFor = null;
  let appsDrawn = null;
  const title = h("h1", {}, name, " ", h("span", { id: "phase" }));
  const actions = h("div", { class: "actions", role: "group", "aria-label": "Power" });
  const overview = h("dl", { class: "kv", id: "overview" });
  const upcoming = h("dl", { class: "kv", id: "upcoming" });
  const appBox = h("div", { id: "apps", class: "actions" });
  const conds = h("tbody", { id: "conditions" });
  const scripts = h("div", { id: "scripts" });
  const events = h("tbody", { id: "events" });
  const termBox = h("div", { id: "terminal-box" });

  function act(action, label) {
    return h("button", { type: "button", id: `action-${label.toLowerCase()}`, onclick: async (e) => {
      e.target.disabled = true;
      try {
        await api(`${base}/${action}`, { method: "POST" });
        toast(`${label} requested`);
      } catch (err) { toast(`${label} failed: ${err.message}`, true); }
      e.target.disabled = false;
    } }, label);
  }
  // Created once, so that keyboard focus survives live updates.
  const updateBtn = act("restart", "Update");
  updateBtn.title = "Restart on the template's newest version";
  updateBtn.hidden = true;
  // A Dormant workspace is woken before it can start (berth wake).
  const wakeBtn = act("wake", "Wake");
  wakeBtn.title = "Dormant: wake it so that it can start";
  wakeBtn.hidden = true;
  actions.append(act("start", "Start"), act("stop", "Stop"), act("restart", "Restart"), updateBtn, wakeBtn);
  function same(parent, els) {
    return parent.children.length === els.length && els.every((e, i) => parent.children[i] === e);
  }
  function kv(dl, pairs) {
    dl.replaceChildren(...pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { "data-key": k }, v)]));
  }
  function draw() {
    const s = ws.status || {};
    const phase = phaseOf(ws);
    document.getElementById("phase").replaceChildren(badge(phase));
    const ready = cond(ws, "Ready");
    updateBtn.hidden = !outdated(ws);
    wakeBtn.hidden = phase !== "Dormant";
    kv(overview, [
      ["Owner", ws.spec.owner || ""],
      ["Namespace", ns],
      ["Template", templateText(ws)],
      ["Outdated", outdated(ws) ? badge("Outdated", "warn") : "no"],
      ["Ready", ready ? h("span", {}, badge(ready.status === "True" ? "Ready" : ready.reason || ready.status, ready.status === "True" ? "ok" : "warn"), ready.message ? ` ${ready.message}` : "") : "—"],
      ["Agent", h("span", { id: "agent-state" }, agentText(ws))],
      ["CPU / memory", resources(ws)],
      ["Last activity", activity(ws)],
    ]);
    kv(upcoming, [
      ["Autostop", when(s.autostopAt)],
      ["Lifetime ends", when(s.lifetimeEndsAt)],
      ["Next autostart", when(s.nextAutostartAt)],
      ...(s.dormantAt ? [["Dormant", when(s.dormantAt)]] : []),
      ...(s.dormantDeletionAt ? [["Deleted (dormant)", when(s.dormantDeletionAt)]] : []),
    ]);
    conds.replaceChildren(...(s.conditions || []).map((c) => h("tr", {},
      h("td", {}, c.type), h("td", {}, c.status), h("td", {}, c.reason || ""), h("td", {}, c.message || ""),
      h("td", {}, when(c.lastTransitionTime)))));
    drawScripts();
    drawApps();
  }
  // Scripts: state from status.agent.scripts, lines from the logs stream.
  const logs = new Map(); // script -> {pre, seen:Set}
  function scriptBlock(name) {
    let b = logs.get(name);
    if (!b) {
      const pre = h("pre", { class: "log", "data-script": name, tabindex: "0", "aria-label": `Output of ${name}` });
      const summary = h("summary", {}, name);
      b = { pre, summary, seen: new Set(), el: h("details", { class: "script", open: true, "data-script": name }, summary, pre) };
      logs.set(name, b);
    }
    return b;
  }
  function drawScripts() {
    const list = (ws.status && ws.status.agent && ws.status.agent.scripts) || [];
    for (const sc of list) {
      const b = scriptBlock(sc.name);
      b.summary.replaceChildren(h("strong", {}, sc.displayName || sc.name), " ", badge(sc.state),
        sc.exitCode !== undefined && sc.exitCode !== null ? ` exit ${sc.exitCode}` : "",
        sc.blocksLogin ? "" : h("span", { class: "muted" }, " · background"),
        sc.runOnStop ? h("span", { class: "muted" }, " · on stop") : "");
    }
    const names = new Set(list.map((s) => s.name));
    for (const n of logs.keys()) names.add(n);
    const els = [...names].map((n) => scriptBlock(n).el);
    if (!els.length) scripts.replaceChildren(h("p", { class: "muted" }, "No scripts have run in this start yet."));
    else if (!same(scripts, els)) scripts.replaceChildren(...els);
  }
  let logCtl = null;
  let logStart = null;
  function followLogs() {
    if (logCtl) logCtl.abort();
    const ctl = new AbortController();
    logCtl = ctl;
    logs.clear();
    (async () => {
      while (!ctl.signal.aborted) {
        try {
          const resp = await api(`${base}/logs?follow=true`, { raw: true, signal: ctl.signal });
          if (resp.ok) {
            await ndjson(resp, (l) => {
              if (!l.script) return;
              const b = scriptBlock(l.script);
              if (l.dropped) { b.pre.append(h("span", { class: "muted" }, `[${l.dropped} earlier lines dropped]\n`)); return; }
              if (b.seen.has(l.seq)) return;
              b.seen.add(l.seq);
              const atBottom = b.pre.scrollTop + b.pre.clientHeight >= b.pre.scrollHeight - 4;
              b.pre.append(h("span", { class: l.stream === "stderr" ? "stderr" : "" }, l.text + "\n"));
              if (atBottom) b.pre.scrollTop = b.pre.scrollHeight;
              if (!b.el.isConnected) drawScripts();
            });
          }
        } catch (_) { if (ctl.signal.aborted) return; }
        await new Promise((r) => setTimeout(r, 1500));
      }
    })();
  }
  // A new start has new logs: follow again when the agent (re)connects.
  function maybeFollow() {
    const s = ws.status || {};
    const a = s.agent;
    if (!a || !a.connected) return;
    const k = JSON.stringify(s.lastTransition || null);
    if (k !== logStart) { logStart = k; followLogs(); }
  }
  function drawApps() {
    const t = (ws.spec && ws.spec.template && ws.spec.template.name) || "";
    if (appsFor !== t) {
      appsFor = t;
      api(`${API}/namespaces/${encodeURIComponent(ns)}/workspacetemplates/${encodeURIComponent(t)}`)
        .then((tpl) => { apps = (tpl.spec && tpl.spec.apps) || []; drawApps(); })
        .catch(() => { apps = []; });
    }
    const running = phaseOf(ws) === "Running";
    const k = `${running}|${apps.map((a) => a.slug).join(",")}`;
    if (k === appsDrawn) return;
    appsDrawn = k;
    appBox.replaceChildren(...apps.map((a) => h("button", { type: "button", class: "secondary", "data-app": a.slug, disabled: !running, onclick: async () => {
      try {
        const r = await api(`${base}/open`, { method: "POST", body: { app: a.slug } });
        window.open(r.url, "_blank", "noopener");
      } catch (e) { toast(`Cannot open ${a.displayName || a.slug}: ${e.message}`, true); }
    } }, a.displayName || a.slug)));
    if (!apps.length) appBox.replaceChildren(h("span", { class: "muted" }, "This template has no apps."));
  }
  let evTimer = null;
  function loadEvents() {
    clearTimeout(evTimer);
    evTimer = setTimeout(async () => {
      try {
        const r = await api(`${API}/namespaces/${encodeURIComponent(ns)}/events?kind=Workspace&name=${encodeURIComponent(name)}`);
        events.replaceChildren(...(r.items || []).slice(0, 30).map((e) => h("tr", {},
          h("td", {}, when(e.lastTimestamp || e.firstTimestamp)), h("td", {}, e.type || ""),
          h("td", {}, e.reason || ""), h("td", {}, e.message || ""))));
      } catch (_) { /* shown on the next change */ }
    }, 300);
  }
  // Terminal.
  let term = null;
  function openTerminal() {
    if (term) { term.focus(); return; }
    if (!window.Terminal) { toast("The terminal is unavailable", true); return; }
    const el = h("div", { id: "terminal", role: "application", "aria-label": "Terminal" });
    termBox.replaceChildren(el);
    term = new window.Terminal({ cursorBlink: true, convertEol: false, fontSize: 14 });
    const fit = window.FitAddon ? new window.FitAddon.FitAddon() : null;
    if (fit) term.loadAddon(fit);
    term.open(el);
    window.berthTerminal = term; // for tests and the console
    if (fit) fit.fit();
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const sock = new WebSocket(`${proto}//${location.host}${base}/terminal?cols=${term.cols}&rows=${term.rows}`);
    sock.binaryType = "arraybuffer";
    const enc = new TextEncoder();
    sock.onmessage = (m) => term.write(typeof m.data === "string" ? m.data : new Uint8Array(m.data));
    sock.onclose = () => { term.write("\r\n[terminal closed]\r\n"); term = null; };
    term.onData((d) => { if (sock.readyState === 1) sock.send(enc.encode(d)); });
    term.onResize(({ cols, rows }) => { if (sock.readyState === 1) sock.send(JSON.stringify({ type: "resize", cols, rows })); });
    const onWin = () => { if (fit) fit.fit(); };
    window.addEventListener("resize", onWin);
    cleanup.push(() => { window.removeEventListener("resize", onWin); sock.close(); });
    term.focus();
  }
  const termBtn = h("button", { type: "button", id: "open-terminal", onclick: openTerminal }, "Open terminal");

  main.replaceChildren(
    h("p", {}, h("a", { href: "/" }, "← Workspaces")),
    title, actions,
    h("div", { class: "grid" },
      h("section", { class: "card", "aria-labelledby": "h-ov" }, h("h2", { id: "h-ov" }, "Overview"), overview),
      h("section", { class: "card", "aria-labelledby": "h-up" }, h("h2", { id: "h-up" }, "Upcoming"), upcoming,
        h("h2", { style: "margin-top:12px" }, "Apps"), appBox)),
    h("section", { class: "card", "aria-labelledby": "h-sc" }, h("h2", { id: "h-sc" }, "Scripts"), scripts),
    h("section", { class: "card", "aria-labelledby": "h-term" }, h("h2", { id: "h-term" }, "Terminal"), termBtn, termBox),
    h("section", { class: "card table-wrap", "aria-labelledby": "h-co" }, h("h2", { id: "h-co" }, "Conditions"),
      h("table", {}, h("thead", {}, h("tr", {}, ["Type", "Status", "Reason", "Message", "Since"].map((t) => h("th", { scope: "col" }, t)))), conds)),
    h("section", { class: "card table-wrap", "aria-labelledby": "h-ev" }, h("h2", { id: "h-ev" }, "Events"),
      h("table", {}, h("thead", {}, h("tr", {}, ["When", "Type", "Reason", "Message"].map((t) => h("th", { scope: "col" }, t)))), events)));

  cleanup.push(liveList(`${API}/namespaces/${encodeURIComponent(ns)}/workspaces`, (list) => {
    const o = list.find((x) => x.metadata.name === name);
    if (!o) { main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, `No workspace ${name} in ${ns}.`)); return; }
    ws = o; draw(); maybeFollow(); loadEvents();
  }, (type, o) => {
    if (o.metadata.name !== name) return;
    if (type === "DELETED") { toast("This workspace was deleted"); return; }
    ws = o; draw(); maybeFollow(); loadEvents();
  }));
  cleanup.push(() => { if (logCtl) logCtl.abort(); clearTimeout(evTimer); });
  const tick = setInterval(() => { if (ws) draw(); }, 15000);
  cleanup.push(() => clearInterval(tick));
}

// ---- boot ----------------------------------------------------------------
async function boot() {
  try {
    session = await api("/dashboard/session");
  } catch (e) {
    if (e.status === 401 || e.status === 403) { renderLogin(); return; }
    main.replaceChildren(h("p", { class: "error" }, `Cannot reach Berth: ${e.message}`));
    return;
  }
  document.getElementById("who").textContent = `${session.user}${session.admin ? " (admin)" : ""}`;
  const out = document.getElementById("signout");
  out.hidden = false;
  out.onclick = async () => {
    try { await api("/logout", { method: "POST" }); } catch (_) { /* the cookie is cleared anyway */ }
    location.replace("/");
  };
  leave();
  const m = location.pathname.match(/^\/workspaces\/([^/]+)\/([^/]+)\/?$/);
  if (m) renderWorkspace(decodeURIComponent(m[1]), decodeURIComponent(m[2]));
  else if (location.pathname === "/login") { location.replace("/"); }
  else renderWorkspaces();
}
boot();
