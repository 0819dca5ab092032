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
    err.body = data;
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
function sizeText(r) { return `${r.cpu} CPU units / ${r.memory} MiB`; }
// What runs (status.resources) and a change that applies at the next start
// (status.pendingResources): "1024 CPU units / 2048 MiB · 2048 → 4096 MiB at next start".
function resources(o) {
  const s = o.status || {};
  const run = s.resources;
  const next = s.pendingResources;
  if (!run) {
    if (next) return h("span", { class: "pending" }, `${sizeText(next)} at next start`);
    const r = o.spec && o.spec.resources;
    return r ? sizeText(r) : "template default";
  }
  if (!next) return sizeText(run);
  const changes = [];
  if (next.cpu !== run.cpu) changes.push(`${run.cpu} → ${next.cpu} CPU units`);
  if (next.memory !== run.memory) changes.push(`${run.memory} → ${next.memory} MiB`);
  return h("span", {}, sizeText(run),
    h("span", { class: "pending", title: "Applies when the workspace next starts" }, ` · ${changes.join(", ")} at next start`));
}
// Valid Fargate task sizes (operator/src/api/fargate.rs).
const FARGATE_CPU = [256, 512, 1024, 2048, 4096, 8192, 16384];
function fargateMemory(cpu) {
  const range = (lo, hi, step) => { const v = []; for (let m = lo; m <= hi; m += step) v.push(m); return v; };
  switch (Number(cpu)) {
    case 256: return [512, 1024, 2048];
    case 512: return range(1024, 4096, 1024);
    case 1024: return range(2048, 8192, 1024);
    case 2048: return range(4096, 16384, 1024);
    case 4096: return range(8192, 30720, 1024);
    case 8192: return range(16384, 61440, 4096);
    case 16384: return range(32768, 122880, 8192);
    default: return [];
  }
}
function nsPath(ns) { return `${API}/namespaces/${encodeURIComponent(ns)}`; }
// A template and the spec of the version `version` (the active one when unset).
async function templateVersion(ns, name, version) {
  const base = `${nsPath(ns)}/workspacetemplates/${encodeURIComponent(name)}`;
  const [tpl, vers] = await Promise.all([api(base), api(`${base}/versions`)]);
  const items = vers.items || [];
  const active = (tpl.status && tpl.status.latestVersion) || Math.max(0, ...items.map((v) => v.version));
  const want = version || active;
  const v = items.find((x) => x.version === want);
  return { tpl, versions: items, active, version: want, spec: v ? v.spec : tpl.spec };
}
function valueText(v) { return v === undefined || v === null ? "—" : typeof v === "string" ? v : JSON.stringify(v); }

// A form's fields: each names the API field path its errors come back on.
function formFields() {
  const errs = new Map(); // field path -> error element
  const general = h("div", { class: "error form-error", role: "alert" });
  return {
    general,
    errs,
    field(path, id, label, input, help) {
      const err = h("p", { class: "error field-error", id: `${id}-error`, "data-error-for": path });
      errs.set(path, err);
      input.setAttribute("aria-describedby", `${id}-help ${id}-error`);
      return h("div", { class: "field", "data-field": path }, h("label", { for: id }, label), input,
        help ? h("p", { class: "muted help", id: `${id}-help` }, help) : null, err);
    },
    clear() { general.replaceChildren(); errs.forEach((e) => { e.textContent = ""; e.parentElement && e.parentElement.classList.remove("invalid"); }); },
    // Shows a 422's causes next to the fields they name (the longest known
    // prefix of the path), the rest above the buttons.
    show(e) {
      const causes = (e.body && e.body.details && e.body.details.causes) || [];
      const rest = [];
      for (const c of causes) {
        let p = c.field || "";
        while (p && !errs.has(p)) p = p.includes(".") ? p.slice(0, p.lastIndexOf(".")) : "";
        const el = p ? errs.get(p) : null;
        if (el) {
          el.textContent = el.textContent ? `${el.textContent} ${c.message}` : c.message;
          el.parentElement.classList.add("invalid");
        } else rest.push(`${c.field ? c.field + ": " : ""}${c.message}`);
      }
      if (!causes.length) rest.push(e.message);
      general.replaceChildren(...rest.map((t) => h("p", {}, t)));
      const first = [...errs.values()].find((x) => x.textContent);
      if (first) { const inp = first.parentElement.querySelector("input, select"); if (inp) inp.focus(); }
    },
  };
}

// CPU and memory as lists of valid Fargate pairs: CPU the template's
// cpuOptions (all Fargate CPUs when it lists none), memory the values
// Fargate runs with the chosen CPU, within the template's memoryOptions.
// The workspace's current value stays visible even when no longer offered
// (and is refused on save if invalid).
function cpuLabel(c) { return `${c} (${c / 1024} vCPU)`; }
function memLabel(m) { return `${m} MiB (${m % 1024 ? (m / 1024).toFixed(1) : m / 1024} GB)`; }
function resourceInputs(f, idp, tres, current) {
  const def = (tres && tres.default) || { cpu: 1024, memory: 2048 };
  const cur = current || def;
  const memOpts = (tres && tres.memoryOptions) || [];
  const memFor = (c) => fargateMemory(c).filter((m) => !memOpts.length || memOpts.includes(m));
  const offeredCpu = (tres && tres.cpuOptions && tres.cpuOptions.length ? [...tres.cpuOptions] : [...FARGATE_CPU])
    .sort((a, b) => a - b);
  // Only CPUs some offered memory runs with, and the current one.
  const cpuValues = offeredCpu.filter((c) => memFor(c).length || c === cur.cpu);
  if (!cpuValues.includes(cur.cpu)) cpuValues.unshift(cur.cpu);
  const note = (offered) => (offered ? "" : " — current, not offered");
  const cpu = h("select", { id: `${idp}-cpu`, name: `${idp}-cpu` },
    cpuValues.map((v) => h("option", { value: String(v), selected: v === cur.cpu },
      cpuLabel(v) + note(offeredCpu.includes(v) && FARGATE_CPU.includes(v)))));
  const mem = h("select", { id: `${idp}-memory`, name: `${idp}-memory` });
  const memHelp = h("span", {});
  // Fills memory for the chosen CPU: keeps the chosen memory while it is
  // valid (or is the workspace's own pair), else the smallest valid one.
  function fill() {
    const c = Number(cpu.value);
    const valid = memFor(c);
    const keep = Number(mem.value || cur.memory);
    const values = [...valid];
    const own = c === cur.cpu && !valid.includes(cur.memory);
    if (own) values.unshift(cur.memory);
    const chosen = values.includes(keep) ? keep : valid.length ? valid[0] : values[0];
    mem.replaceChildren(...(values.length
      ? values.map((v) => h("option", { value: String(v), selected: v === chosen },
        memLabel(v) + (own && v === cur.memory ? " — current, not offered" : "")))
      : [h("option", { value: "" }, "no valid memory for this CPU")]));
    mem.value = chosen === undefined ? "" : String(chosen);
    memHelp.textContent = valid.length
      ? `With ${c} CPU units: ${valid.join(", ")} MiB`
      : `No memory the template offers runs with ${c} CPU units on Fargate`;
  }
  cpu.addEventListener("change", fill);
  fill();
  return {
    els: [
      f.field("spec.resources.cpu", `${idp}-cpu`, "CPU (units)", cpu,
        `Template default ${def.cpu}${tres && tres.cpuOptions && tres.cpuOptions.length ? "; offered: " + tres.cpuOptions.join(", ") : "; any Fargate size"}`),
      f.field("spec.resources.memory", `${idp}-memory`, "Memory (MiB)", mem,
        [`Template default ${def.memory}. `, memHelp]),
    ],
    // The spec's resources: unset while it was unset and still is the default.
    read() {
      const r = { cpu: Number(cpu.value), memory: Number(mem.value) };
      if (!current && r.cpu === def.cpu && r.memory === def.memory) return undefined;
      return r;
    },
  };
}

// A template's parameters. `set` holds the workspace's values; without
// `creating`, immutable ones are read-only.
function parameterInputs(f, idp, params, set, creating) {
  const reads = [];
  const els = (params || []).map((p) => {
    const id = `${idp}-param-${p.name}`;
    const has = Object.prototype.hasOwnProperty.call(set || {}, p.name);
    const value = has ? set[p.name] : p.default;
    const locked = !creating && !p.mutable;
    let input;
    let read;
    if (p.options && p.options.length) {
      input = h("select", { id, name: id, disabled: locked },
        p.default === undefined && !has ? h("option", { value: "" }, "— choose —") : null,
        p.options.map((o, i) => h("option", { value: String(i), selected: valueText(o) === valueText(value) }, valueText(o))));
      read = () => (input.value === "" ? undefined : p.options[Number(input.value)]);
    } else if (p.type === "bool") {
      input = h("input", { id, name: id, type: "checkbox", disabled: locked, checked: value === true || value === "true" });
      read = () => input.checked;
    } else {
      input = h("input", { id, name: id, type: p.type === "number" ? "number" : "text", disabled: locked, value: value === undefined ? "" : String(value), step: p.type === "number" ? "any" : undefined });
      read = () => (input.value === "" ? undefined : p.type === "number" ? Number(input.value) : input.value);
    }
    const help = [
      p.type,
      p.default === undefined ? "required" : `default ${valueText(p.default)}`,
      p.mutable ? "mutable" : creating ? "immutable: cannot change after creation" : "immutable: set at creation",
    ].join(" · ");
    reads.push({ p, read, has, locked });
    return f.field(`spec.parameters.${p.name}`, id, p.displayName || p.name, input, p.description ? `${p.description} (${help})` : help);
  });
  return {
    els,
    // The spec's parameters: `set` with the editable values applied (a
    // value equal to the default that was unset stays unset).
    read() {
      const out = { ...(set || {}) };
      for (const { p, read, has, locked } of reads) {
        if (locked) continue;
        const v = read();
        if (v === undefined) delete out[p.name];
        else if (!has && valueText(v) === valueText(p.default)) continue;
        else out[p.name] = v;
      }
      return out;
    },
  };
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
    h("div", { class: "title-row" }, h("h1", {}, session.admin ? "All workspaces" : "My workspaces"),
      h("a", { href: "/new", id: "create-workspace", class: "button-link" }, "Create workspace")),
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

  // Settings (Coder's workspace settings): a PUT of the whole workspace
  // with the resourceVersion its spec was read at.
  const settingsBox = h("div", { id: "settings" }, h("p", { class: "muted" }, "Loading…"));
  const stale = h("div", { id: "settings-stale", class: "notice", role: "status", hidden: true },
    "These settings were changed elsewhere since you opened them. ",
    h("button", { type: "button", class: "secondary", onclick: () => loadSettings() }, "Reload settings"));
  let form = null; // {gen, rv} of the spec the form shows
  let settingsStarted = false;
  function drawStale() {
    stale.hidden = !form || !ws || ws.metadata.generation === form.gen;
  }
  async function loadSettings() {
    const shown = ws;
    let t;
    try {
      t = await templateVersion(ns, shown.spec.template.name, shown.spec.template.version || (shown.status && shown.status.templateVersion));
    } catch (e) {
      settingsBox.replaceChildren(h("p", { class: "error" }, `Cannot read template ${shown.spec.template.name}: ${e.message}`));
      return;
    }
    const f = formFields();
    const sched = shown.spec.schedule || {};
    const stop = sched.autostop || {};
    const start = sched.autostart || {};
    const res = resourceInputs(f, "set", t.spec.resources, shown.spec.resources);
    const params = parameterInputs(f, "set", t.spec.parameters, shown.spec.parameters, false);
    const eff = shown.status && shown.status.lifecycle && shown.status.lifecycle.afterInactivity;
    const after = h("input", { id: "set-after", name: "set-after", value: stop.afterInactivity || "", placeholder: eff || "e.g. 2h" });
    const never = h("input", { id: "set-never", name: "set-never", type: "checkbox", checked: !!stop.disabled });
    const cron = h("input", { id: "set-cron", name: "set-cron", value: start.cron || "", placeholder: "e.g. 0 9 * * 1-5" });
    const tz = h("input", { id: "set-tz", name: "set-tz", value: start.timezone || "", placeholder: "UTC" });
    const saved = h("p", { id: "settings-saved", class: "ok", role: "status" });
    const save = h("button", { type: "submit", id: "settings-save" }, "Save settings");
    form = { gen: shown.metadata.generation, rv: shown.metadata.resourceVersion };
    const el = h("form", { id: "settings-form", class: "settings", novalidate: true, onsubmit: async (ev) => {
      ev.preventDefault();
      f.clear();
      saved.textContent = "";
      const spec = JSON.parse(JSON.stringify(ws.spec));
      const r = res.read();
      if (r) spec.resources = r; else delete spec.resources;
      spec.parameters = params.read();
      if (!Object.keys(spec.parameters).length) delete spec.parameters;
      const schedule = {};
      if (cron.value.trim()) schedule.autostart = { cron: cron.value.trim(), timezone: tz.value.trim() || "UTC" };
      if (after.value.trim() || never.checked) {
        schedule.autostop = {};
        if (after.value.trim()) schedule.autostop.afterInactivity = after.value.trim();
        if (never.checked) schedule.autostop.disabled = true;
      }
      if (Object.keys(schedule).length) spec.schedule = schedule; else delete spec.schedule;
      const m = ws.metadata;
      // The newest resourceVersion while the spec is the one shown (status
      // writes bump it too); the shown one otherwise, which the API refuses.
      const rv = m.generation === form.gen ? m.resourceVersion : form.rv;
      const body = { apiVersion: ws.apiVersion, kind: ws.kind,
        metadata: { name: m.name, namespace: m.namespace, labels: m.labels, annotations: m.annotations, resourceVersion: rv },
        spec };
      save.disabled = true;
      try {
        const out = await api(base, { method: "PUT", body });
        form = { gen: out.metadata.generation, rv: out.metadata.resourceVersion };
        if (Number(out.metadata.resourceVersion) > Number(ws.metadata.resourceVersion)) { ws = out; draw(); }
        drawStale();
        saved.textContent = "Saved. CPU and memory changes apply at the next start.";
        toast("Settings saved");
      } catch (e) {
        if (e.status === 409) {
          f.general.replaceChildren(h("p", {}, "This workspace was changed elsewhere since you opened its settings; nothing was saved. ",
            h("button", { type: "button", class: "secondary", id: "settings-reload", onclick: () => loadSettings() }, "Reload settings")));
        } else if (e.status === 422) {
          f.show(e);
        } else {
          f.general.replaceChildren(h("p", {}, `Save failed: ${e.message}`));
        }
      }
      save.disabled = false;
    } },
      h("fieldset", {}, h("legend", {}, "Size"), h("div", { class: "row" }, ...res.els)),
      t.spec.parameters && t.spec.parameters.length
        ? h("fieldset", {}, h("legend", {}, `Parameters (${t.tpl.metadata.name}@${t.version})`), h("div", { class: "row" }, ...params.els))
        : null,
      h("fieldset", {}, h("legend", {}, "Schedule"), h("div", { class: "row" },
        f.field("spec.schedule.autostop.afterInactivity", "set-after", "Autostop after inactivity", after, eff ? `Empty: the policy's ${eff}` : "Empty: the policy's default"),
        h("div", { class: "field check" }, never, h("label", { for: "set-never" }, "Never autostop")),
        f.field("spec.schedule.autostart.cron", "set-cron", "Autostart (cron)", cron, "Empty: no autostart"),
        f.field("spec.schedule.autostart.timezone", "set-tz", "Timezone", tz, "IANA name, e.g. Europe/Berlin"))),
      f.general,
      h("div", { class: "actions" }, save),
      saved);
    settingsBox.replaceChildren(el);
    drawStale();
  }

  main.replaceChildren(
    h("p", {}, h("a", { href: "/" }, "← Workspaces")),
    title, actions,
    h("div", { class: "grid" },
      h("section", { class: "card", "aria-labelledby": "h-ov" }, h("h2", { id: "h-ov" }, "Overview"), overview),
      h("section", { class: "card", "aria-labelledby": "h-up" }, h("h2", { id: "h-up" }, "Upcoming"), upcoming,
        h("h2", { style: "margin-top:12px" }, "Apps"), appBox)),
    h("section", { class: "card", "aria-labelledby": "h-set" }, h("h2", { id: "h-set" }, "Settings"), stale, settingsBox),
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
    if (!settingsStarted) { settingsStarted = true; loadSettings(); } else drawStale();
  }, (type, o) => {
    if (o.metadata.name !== name) return;
    if (type === "DELETED") { toast("This workspace was deleted"); return; }
    ws = o; draw(); maybeFollow(); loadEvents(); drawStale();
  }));
  cleanup.push(() => { if (logCtl) logCtl.abort(); clearTimeout(evTimer); });
  const tick = setInterval(() => { if (ws) draw(); }, 15000);
  cleanup.push(() => clearInterval(tick));
}

// ---- create a workspace ---------------------------------------------------
function renderCreate() {
  document.title = "Create workspace · Berth";
  const params = new URLSearchParams(location.search);
  const f = formFields();
  const tplSel = h("select", { id: "new-template", name: "new-template", required: true });
  const nameIn = h("input", { id: "new-name", name: "new-name", required: true, autocomplete: "off", pattern: "[a-z0-9]([-a-z0-9]*[a-z0-9])?", maxlength: "63" });
  const ownerIn = session.admin ? h("input", { id: "new-owner", name: "new-owner", value: session.user }) : null;
  const details = h("div", { id: "new-details" });
  const submit = h("button", { type: "submit", id: "new-create", disabled: true }, "Create workspace");
  let chosen = null; // {ns, name, res, params}
  async function pickTemplate() {
    chosen = null;
    submit.disabled = true;
    f.clear();
    const [tns, tname] = tplSel.value.split("/");
    if (!tname) return;
    details.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    try {
      const t = await templateVersion(tns, tname);
      if (tplSel.value !== `${tns}/${tname}`) return;
      // Fields that belong to the previous template's form must not keep errors.
      for (const k of [...f.errs.keys()]) if (k.startsWith("spec.parameters.") || k.startsWith("spec.resources.")) f.errs.delete(k);
      const res = resourceInputs(f, "new", t.spec.resources, null);
      const ps = parameterInputs(f, "new", t.spec.parameters, {}, true);
      chosen = { ns: tns, name: tname, res, ps };
      details.replaceChildren(...[
        t.spec.description ? h("p", { class: "muted" }, t.spec.description) : null,
        h("p", { class: "muted" }, `Version ${t.version} (active) · namespace ${tns}`),
        h("fieldset", {}, h("legend", {}, "Size"), h("div", { class: "row" }, ...res.els)),
        t.spec.parameters && t.spec.parameters.length
          ? h("fieldset", {}, h("legend", {}, "Parameters"), h("div", { class: "row" }, ...ps.els))
          : h("p", { class: "muted" }, "This template has no parameters.")].filter(Boolean));
      submit.disabled = false;
    } catch (e) {
      details.replaceChildren(h("p", { class: "error" }, `Cannot read template ${tname}: ${e.message}`));
    }
  }
  tplSel.addEventListener("change", pickTemplate);
  const form = h("form", { id: "create-form", class: "card settings", novalidate: true, onsubmit: async (ev) => {
    ev.preventDefault();
    if (!chosen) return;
    f.clear();
    const name = nameIn.value.trim();
    if (!name) { f.errs.get("metadata.name").textContent = "A name is required."; nameIn.focus(); return; }
    const spec = { template: { name: chosen.name } };
    if (ownerIn && ownerIn.value.trim()) spec.owner = ownerIn.value.trim();
    const r = chosen.res.read();
    if (r) spec.resources = r;
    const p = chosen.ps.read();
    if (Object.keys(p).length) spec.parameters = p;
    const url = `${nsPath(chosen.ns)}/workspaces/${encodeURIComponent(name)}`;
    submit.disabled = true;
    try {
      // A PUT of an existing name would change that workspace: refuse it.
      const exists = await api(url).then(() => true, (e) => (e.status === 404 ? false : Promise.reject(e)));
      if (exists) {
        f.errs.get("metadata.name").textContent = `A workspace ${name} already exists in ${chosen.ns}.`;
        nameIn.focus();
      } else {
        await api(url, { method: "PUT", body: { apiVersion: "berth.dev/v1alpha1", kind: "Workspace", metadata: { name, namespace: chosen.ns }, spec } });
        location.assign(`/workspaces/${encodeURIComponent(chosen.ns)}/${encodeURIComponent(name)}`);
        return;
      }
    } catch (e) {
      if (e.status === 422 || e.status === 403) f.show(e);
      else f.general.replaceChildren(h("p", {}, `Create failed: ${e.message}`));
    }
    submit.disabled = false;
  } },
    f.field("spec.template.name", "new-template", "Template", tplSel),
    f.field("metadata.name", "new-name", "Name", nameIn, "Lowercase letters, digits and dashes"),
    ownerIn ? f.field("spec.owner", "new-owner", "Owner", ownerIn, "Admins may create workspaces for others") : null,
    details, f.general,
    h("div", { class: "actions" }, submit, h("a", { href: "/", class: "button-link secondary" }, "Cancel")));
  main.replaceChildren(h("p", {}, h("a", { href: "/" }, "← Workspaces")), h("h1", {}, "Create workspace"), form);
  api(`${API}/workspacetemplates`).then((list) => {
    const items = (list.items || []).sort((a, b) => key(a).localeCompare(key(b)));
    if (!items.length) { details.replaceChildren(h("p", { class: "muted" }, "There are no templates yet.")); return; }
    const want = params.get("template");
    tplSel.replaceChildren(...items.map((t) => h("option", { value: key(t), selected: key(t) === want },
      `${t.spec.displayName || t.metadata.name} (${t.metadata.namespace}/${t.metadata.name})`)));
    pickTemplate();
    nameIn.focus();
  }, (e) => details.replaceChildren(h("p", { class: "error" }, `Cannot list templates: ${e.message}`)));
}

// ---- templates ---------------------------------------------------------------
// What changed between two specs, by field path: [{path, before, after}]
// (undefined before: added; undefined after: removed). Lists of named
// things (parameters, scripts, apps) are matched by name or slug.
function specChanges(a, b) {
  const out = [];
  const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  const id = (x) => (isObj(x) ? (typeof x.name === "string" ? x.name : typeof x.slug === "string" ? x.slug : null) : null);
  const keyed = (l) => l.length > 0 && l.every((x) => id(x) !== null) && new Set(l.map(id)).size === l.length;
  function walk(x, y, path) {
    if (JSON.stringify(x) === JSON.stringify(y)) return;
    if (x === undefined || y === undefined) { out.push({ path, before: x, after: y }); return; }
    if (isObj(x) && isObj(y)) {
      for (const k of new Set([...Object.keys(y), ...Object.keys(x)])) walk(x[k], y[k], `${path}.${k}`);
      return;
    }
    if (Array.isArray(x) && Array.isArray(y) && keyed(x) && keyed(y)) {
      const mx = new Map(x.map((e) => [id(e), e]));
      const my = new Map(y.map((e) => [id(e), e]));
      for (const k of new Set([...my.keys(), ...mx.keys()])) walk(mx.get(k), my.get(k), `${path}[${k}]`);
      const ox = x.map(id).filter((k) => my.has(k));
      const oy = y.map(id).filter((k) => mx.has(k));
      if (ox.join("\0") !== oy.join("\0")) out.push({ path: `${path} (order)`, before: ox, after: oy });
      return;
    }
    out.push({ path, before: x, after: y });
  }
  walk(a || {}, b || {}, "spec");
  return out;
}
function shortValue(v) {
  const t = JSON.stringify(v);
  return t.length > 160 ? `${t.slice(0, 157)}…` : t;
}
function changeList(prev, v) {
  if (!prev) return h("p", { class: "muted changes", "data-changes": "" }, "First version.");
  const cs = specChanges(prev.spec, v.spec);
  if (!cs.length) return h("p", { class: "muted changes", "data-changes": "" }, `Same spec as version ${prev.version}.`);
  return h("ul", { class: "changes", "data-changes": "", "aria-label": `Changes from version ${prev.version}` },
    cs.map((c) => {
      const kind = c.before === undefined ? "added" : c.after === undefined ? "removed" : "changed";
      const what = kind === "added" ? ["added: ", h("code", {}, shortValue(c.after))]
        : kind === "removed" ? ["removed (was ", h("code", {}, shortValue(c.before)), ")"]
          : [h("code", {}, shortValue(c.before)), " → ", h("code", {}, shortValue(c.after))];
      return h("li", { class: kind, "data-path": c.path }, h("code", { class: "path" }, c.path), " ", ...what);
    }));
}

// An admin's editor: the template as YAML, applied with `POST …/apply`
// (what `berth apply -f` does), all or nothing.
function templateEditor(t, onApplied) {
  const ns = t.metadata.namespace;
  const name = t.metadata.name;
  const id = `tpl-yaml-${ns}-${name}`;
  const ta = h("textarea", { id, name: id, rows: "18", spellcheck: "false", autocomplete: "off", class: "yaml", "aria-describedby": `${id}-help ${id}-error` });
  const err = h("div", { class: "error form-error", id: `${id}-error`, role: "alert" });
  const done = h("p", { class: "ok", role: "status" });
  const applyBtn = h("button", { type: "submit", class: "apply-template", disabled: true }, "Apply new version");
  const dryBtn = h("button", { type: "button", class: "secondary", disabled: true }, "Validate (dry run)");
  let loaded = false;
  async function load() {
    ta.value = "";
    err.replaceChildren();
    try {
      const resp = await fetch(`/dashboard/template-manifest/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`, { credentials: "same-origin" });
      if (!resp.ok) throw new Error(`${resp.status} ${resp.statusText}`);
      ta.value = await resp.text();
      loaded = true;
      applyBtn.disabled = false;
      dryBtn.disabled = false;
    } catch (e) { err.replaceChildren(h("p", {}, `Cannot read the template: ${e.message}`)); }
  }
  async function send(dry) {
    err.replaceChildren();
    done.textContent = "";
    applyBtn.disabled = dryBtn.disabled = true;
    try {
      const resp = await fetch(`${API}/apply${dry ? "?dryRun=true" : ""}`, {
        method: "POST", credentials: "same-origin",
        headers: { "Accept": "application/json", "Content-Type": "application/yaml", "X-Berth-CSRF": session ? session.csrf : "" },
        body: ta.value,
      });
      const text = await resp.text();
      let data = null;
      try { data = text ? JSON.parse(text) : null; } catch (_) { data = { message: text }; }
      if (!resp.ok) {
        const causes = (data && data.details && data.details.causes) || [];
        const lines = causes.length
          ? causes.map((c) => `${c.object ? c.object + ": " : ""}${c.field ? c.field + ": " : ""}${c.message}`)
          : [(data && data.message) || resp.statusText];
        err.replaceChildren(...[
          h("p", {}, resp.status === 409 ? "Not applied: the template changed since you opened it." : "Not applied; nothing was changed."),
          h("ul", {}, lines.map((l) => h("li", {}, l))),
          resp.status === 409 ? h("button", { type: "button", class: "secondary", onclick: load }, "Reload the template") : null].filter(Boolean));
        ta.focus({ preventScroll: true });
        err.scrollIntoView({ block: "nearest" });
      } else {
        const rs = (data && data.results) || [];
        const mine = rs.find((r) => r.kind === "WorkspaceTemplate" && r.namespace === ns && r.name === name);
        const v = mine && mine.object.status && mine.object.status.latestVersion;
        const others = rs.filter((r) => r !== mine).map((r) => `${r.kind} ${r.namespace}/${r.name} ${r.action}`);
        const msg = dry
          ? `Valid${mine ? `: ${mine.action === "unchanged" ? "no change" : "would publish a new version"}` : ""}.`
          : mine && mine.action === "unchanged" ? `No change: still version ${v || "?"}.`
            : `Applied${v ? `: version ${v} is active` : ""}.`;
        done.textContent = others.length ? `${msg} Also: ${others.join(", ")}.` : msg;
        if (!dry) { toast(msg); if (!mine || mine.action !== "unchanged") { onApplied(); return; } }
      }
    } catch (e) { err.replaceChildren(h("p", {}, `Apply failed: ${e.message}`)); }
    applyBtn.disabled = dryBtn.disabled = !loaded;
  }
  dryBtn.addEventListener("click", () => send(true));
  const box = h("details", { class: "editor", "data-editor": `${ns}/${name}`, ontoggle: () => { if (box.open && !loaded) load(); } },
    h("summary", {}, "Edit and publish a new version"),
    h("form", { class: "settings", onsubmit: (ev) => { ev.preventDefault(); send(false); } },
      h("label", { for: id }, `${name} as YAML`),
      ta,
      h("p", { class: "muted help", id: `${id}-help` }, "Applied like berth apply -f: validated first, all or nothing. A changed spec becomes a new version, the active one; workspaces that follow the template show Outdated until updated."),
      err,
      h("div", { class: "actions" }, applyBtn, dryBtn),
      done));
  return box;
}

function renderTemplates() {
  document.title = "Templates · Berth";
  const box = h("div", { id: "templates" }, h("p", { class: "muted" }, "Loading…"));
  main.replaceChildren(h("h1", {}, "Templates"), box);
  function resText(r) {
    if (!r) return "—";
    const d = r.default ? sizeText(r.default) : "—";
    const opts = [r.cpuOptions && r.cpuOptions.length ? `CPU ${r.cpuOptions.join(", ")}` : null,
      r.memoryOptions && r.memoryOptions.length ? `memory ${r.memoryOptions.join(", ")} MiB` : null].filter(Boolean);
    return `${d} default${opts.length ? " · offered: " + opts.join("; ") : " · any valid Fargate size"}`;
  }
  function paramTable(ps) {
    if (!ps || !ps.length) return h("p", { class: "muted" }, "No parameters.");
    return h("div", { class: "table-wrap" }, h("table", { class: "params" },
      h("thead", {}, h("tr", {}, ["Name", "Type", "Default", "Mutable", "Options"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, ps.map((p) => h("tr", { "data-param": p.name },
        h("td", {}, p.displayName && p.displayName !== p.name ? `${p.displayName} (${p.name})` : p.name),
        h("td", {}, p.type), h("td", {}, p.default === undefined ? "required" : valueText(p.default)),
        h("td", {}, p.mutable ? "mutable" : "immutable"),
        h("td", {}, p.options && p.options.length ? p.options.map(valueText).join(", ") : "any"))))));
  }
  function created(ts) {
    if (!ts) return "—";
    const d = new Date(ts);
    return h("span", {}, when(ts), " ", h("span", { class: "muted" }, `(${d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC")})`));
  }
  api(`${API}/workspacetemplates`).then(async (list) => {
    const items = (list.items || []).sort((a, b) => key(a).localeCompare(key(b)));
    // Which workspaces (of those this user sees) run which version.
    let workspaces = [];
    try { workspaces = (await api(`${API}/workspaces`)).items || []; } catch (_) { /* shown as none */ }
    const running = (t, v) => workspaces.filter((w) => w.metadata.namespace === t.metadata.namespace
      && w.spec.template && w.spec.template.name === t.metadata.name
      && w.status && w.status.templateVersion === v);
    const wsLinks = (ws) => ws.length
      ? ws.map((w, i) => [i ? ", " : "", h("a", { href: `/workspaces/${encodeURIComponent(w.metadata.namespace)}/${encodeURIComponent(w.metadata.name)}` }, w.metadata.name)]).flat()
      : ["none"];
    if (!items.length) { box.replaceChildren(h("p", { class: "muted" }, "There are no templates yet.")); return; }
    const cards = await Promise.all(items.map(async (t) => {
      let versions = [];
      try { versions = (await api(`${nsPath(t.metadata.namespace)}/workspacetemplates/${encodeURIComponent(t.metadata.name)}/versions`)).items || []; } catch (_) { /* shown as none */ }
      const active = (t.status && t.status.latestVersion) || Math.max(0, ...versions.map((v) => v.version));
      const asc = [...versions].sort((a, b) => a.version - b.version);
      const prevOf = new Map(asc.map((v, i) => [v.version, i ? asc[i - 1] : null]));
      const vs = [...asc].reverse().map((v) => h("details", { class: "version", "data-version": String(v.version), open: v.version === active },
        h("summary", {}, h("strong", {}, `Version ${v.version}`), " ", v.version === active ? badge("active", "ok") : null, " ", h("span", { class: "muted" }, "created "), when(v.createdAt)),
        h("dl", { class: "kv" },
          h("dt", {}, "Created"), h("dd", { "data-key": "Created" }, created(v.createdAt)),
          h("dt", {}, prevOf.get(v.version) ? `Changes from version ${prevOf.get(v.version).version}` : "Changes"),
          h("dd", { "data-key": "Changes" }, changeList(prevOf.get(v.version), v)),
          h("dt", {}, "Resources"), h("dd", { "data-key": "Resources" }, resText(v.spec.resources)),
          h("dt", {}, "Image"), h("dd", {}, (v.spec.container && v.spec.container.image) || "—"),
          h("dt", {}, "Apps"), h("dd", {}, (v.spec.apps || []).map((a) => a.displayName || a.slug).join(", ") || "none"),
          h("dt", {}, "Workspaces on it"), h("dd", { "data-key": "Workspaces" }, ...wsLinks(running(t, v.version)))),
        paramTable(v.spec.parameters)));
      const id = `tpl-${t.metadata.namespace}-${t.metadata.name}`;
      return h("section", { class: "card", "data-template": key(t), "aria-labelledby": id },
        h("h2", { id }, t.spec.displayName || t.metadata.name, " ", h("span", { class: "muted" }, `${t.metadata.namespace}/${t.metadata.name}`)),
        t.spec.description ? h("p", {}, t.spec.description) : null,
        h("p", {}, h("a", { href: `/new?template=${encodeURIComponent(key(t))}`, class: "button-link" }, "Create workspace from this template")),
        session.admin ? templateEditor(t, renderTemplates) : null,
        vs.length ? vs : h("p", { class: "muted" }, "No versions."));
    }));
    box.replaceChildren(...cards);
  }, (e) => box.replaceChildren(h("p", { class: "error" }, `Cannot list templates: ${e.message}`)));
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
  else if (location.pathname === "/new") renderCreate();
  else if (location.pathname === "/templates") renderTemplates();
  else if (location.pathname === "/login") { location.replace("/"); }
  else renderWorkspaces();
}
boot();
