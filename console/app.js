// Spark Gateway operator console: one page, plain JavaScript, no dependencies.
//
// The key the operator types is kept in sessionStorage (this tab only) and sent as the
// X-API-Key header of every request; it never goes into a URL, a cookie or the page's HTML.
// Text from the API is always inserted as text (textContent), never as markup, so nothing a
// caller stored (a key name, an audit detail) can run here. The page's Content-Security-Policy
// allows scripts and styles from this origin only, so there is no inline script or style.
"use strict";

const STORE_KEY = "spark-console-key";
const PAGES = ["overview", "providers", "keys", "usage", "audit", "errors"];
const REFRESH_MS = 5000;

const $ = (id) => document.getElementById(id);
let refreshTimer = null;
let keysCursor = null;
let auditCursor = null;
let editing = null;

// ---- talking to the gateway -------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function key() {
  return sessionStorage.getItem(STORE_KEY);
}

async function api(method, path, body) {
  const headers = { "X-API-Key": key() || "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  if (resp.status === 401 || resp.status === 403) {
    // A refused key never shows data: back to the sign-in form.
    signOut("The key was refused. Sign in with the master key or an administrator's token.");
    throw new ApiError(resp.status, "unauthorized", "refused");
  }
  if (resp.status === 204) return null;
  const type = resp.headers.get("Content-Type") || "";
  if (!resp.ok) {
    let code = "error";
    let message = `The gateway answered ${resp.status}.`;
    if (type.includes("json")) {
      const e = await resp.json();
      if (e && e.error) {
        code = e.error.code || code;
        message = e.error.message || message;
      }
    }
    throw new ApiError(resp.status, code, message);
  }
  return type.includes("json") ? resp.json() : resp.text();
}

function say(text, isError) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", Boolean(isError));
}

function failed(e) {
  if (e instanceof ApiError && e.code === "unauthorized") return;
  say(e.message || String(e), true);
}

// ---- small DOM helpers --------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function row(cells) {
  return el("tr", {}, ...cells.map((c) => el("td", {}, c instanceof Node ? c : String(c ?? ""))));
}

function fill(tbody, rows, empty, columns) {
  tbody.replaceChildren(...rows);
  if (rows.length === 0) {
    tbody.append(el("tr", {}, el("td", { colspan: columns, class: "empty", text: empty })));
  }
}

const usd = (n) => (n === null || n === undefined ? "–" : `$${Number(n).toFixed(n < 1 ? 4 : 2)}`);
const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const pct = (n) => (n === null || n === undefined ? "–" : `${(n * 100).toFixed(1)}%`);
const ms = (n) => (n === null || n === undefined ? "–" : `${Number(n).toFixed(1)} ms`);
const when = (t) => (t ? new Date(t).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "–");

// ---- signing in and out -------------------------------------------------------------------

function signedIn(yes) {
  $("signin").hidden = yes;
  $("nav").hidden = !yes;
  $("signout").hidden = !yes;
  if (!yes) for (const p of PAGES) $(`page-${p}`).hidden = true;
}

function clearData() {
  for (const id of ["overview-cards", "providers-rows", "keys-rows", "usage-rows", "audit-rows",
    "errors-rows", "usage-cost-chart", "usage-tokens-chart"]) {
    $(id).replaceChildren();
  }
  for (const id of ["overview-window", "audit-chain", "errors-totals"]) $(id).textContent = "";
  $("new-key-value").value = "";
  $("new-key").hidden = true;
}

function signOut(message) {
  sessionStorage.removeItem(STORE_KEY);
  clearInterval(refreshTimer);
  refreshTimer = null;
  clearData();
  signedIn(false);
  say(message || "Signed out.");
  $("key").value = "";
  $("key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const value = $("key").value.trim();
  if (!value) return;
  sessionStorage.setItem(STORE_KEY, value);
  $("key").value = "";
  try {
    await api("GET", "/api/admin/summary");
  } catch (e) {
    if (!(e instanceof ApiError && e.code === "unauthorized")) {
      sessionStorage.removeItem(STORE_KEY);
      failed(e);
    }
    return;
  }
  signedIn(true);
  say("Signed in.");
  if (!location.hash) location.hash = "#overview";
  else show();
}

// ---- pages ---------------------------------------------------------------------------------

function current() {
  const name = location.hash.slice(1);
  return PAGES.includes(name) ? name : "overview";
}

function show() {
  if (!key()) return;
  const name = current();
  for (const p of PAGES) $(`page-${p}`).hidden = p !== name;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · Spark Gateway console`;
  clearInterval(refreshTimer);
  refreshTimer = null;
  const load = LOADERS[name];
  load().catch(failed);
  if (name === "overview" || name === "providers") {
    refreshTimer = setInterval(() => load().catch(failed), REFRESH_MS);
  }
}

async function loadOverview() {
  const s = await api("GET", "/api/admin/summary");
  const live = s.live;
  $("overview-window").textContent =
    `Last ${Math.round(live.windowSeconds)} s of API traffic on this replica; spend from the ledger (UTC).`;
  const cards = [
    ["Requests per second", live.requestsPerSecond.toFixed(2)],
    ["Error rate (5xx)", pct(live.errorRate)],
    ["Latency p50", ms(live.p50Ms)],
    ["Latency p99", ms(live.p99Ms)],
    ["Cache hit rate", pct(live.cacheHitRate)],
    ["Spend today", s.spend ? usd(s.spend.todayUsd) : "unavailable"],
    ["Spend this month", s.spend ? usd(s.spend.monthUsd) : "unavailable"],
    ["Requests this month", s.spend ? num(s.spend.monthRequests) : "unavailable"],
  ];
  $("overview-cards").replaceChildren(
    ...cards.map(([k, v]) => el("div", { class: "card" }, el("dt", { text: k }), el("dd", { text: v }))),
  );
}

async function resetCircuit(provider) {
  if (!confirm(`Close the ${provider} circuit now? It is recorded in the audit trail.`)) return;
  try {
    await api("POST", `/api/admin/breakers/${encodeURIComponent(provider)}/reset`);
    say(`The ${provider} circuit was reset.`);
    await loadProviders();
  } catch (e) {
    failed(e);
  }
}

async function loadProviders() {
  const s = await api("GET", "/api/admin/summary");
  const rows = Object.entries(s.circuits).map(([name, c]) => {
    const next = c.openUntil ? `${Math.max(0, Math.round((c.openUntil - Date.now()) / 1000))} s` : "–";
    const state = el("span", { class: `state state-${c.circuit}`, text: c.circuit.replace("_", "-") });
    const notes = c.misconfigured ? el("span", { class: "warn", text: " key refused" }) : "";
    return row([
      name,
      el("span", {}, state, notes),
      pct(c.failureRate),
      num(c.consecutiveFailures),
      next,
      el("button", { type: "button", onclick: () => resetCircuit(name), "aria-label": `Reset the ${name} circuit` }, "Reset"),
    ]);
  });
  fill($("providers-rows"), rows, "No provider is configured.", 6);
}

function spendCell(k) {
  if (!k.budget) return el("span", { text: `${usd(k.spentUsd)} (no budget)` });
  const limit = k.budget.limitUsd;
  const meter = el("meter", {
    min: 0, max: limit, value: Math.min(k.spentUsd, limit), high: limit * 0.8, optimum: 0,
    "aria-label": `Spend of key ${k.prefix}`,
  });
  return el("span", { class: "spend" }, meter, ` ${usd(k.spentUsd)} of ${usd(limit)} / ${k.budget.period}`);
}

async function revokeKey(k) {
  if (!confirm(`Revoke ${k.prefix} (${k.userId})? Every replica refuses it within seconds.`)) return;
  try {
    await api("DELETE", `/api/admin/keys/${encodeURIComponent(k.id)}`);
    say(`${k.prefix} was revoked.`);
    await loadKeys();
  } catch (e) {
    failed(e);
  }
}

function editKey(k) {
  editing = k;
  $("edit-title").textContent = `Edit ${k.prefix} (${k.userId})`;
  $("e-budget").value = k.budget ? k.budget.limitUsd : "";
  $("e-period").value = k.budget ? k.budget.period : "month";
  $("e-rate").value = k.rateLimit || "";
  $("e-models").value = (k.models || []).join(", ");
  $("edit-dialog").showModal();
}

function keyRow(k) {
  const revoked = Boolean(k.revokedAt);
  const expired = k.expiresAt && Date.parse(k.expiresAt) <= Date.now();
  const state = revoked ? `revoked ${when(k.revokedAt)}` : expired ? "expired" : "active";
  const actions = revoked ? "" : el("span", { class: "actions" },
    el("button", { type: "button", onclick: () => editKey(k), "aria-label": `Edit ${k.prefix}` }, "Edit"),
    el("button", { type: "button", class: "danger", onclick: () => revokeKey(k), "aria-label": `Revoke ${k.prefix}` }, "Revoke"));
  return row([
    el("code", { text: k.prefix }), k.userId, k.name, spendCell(k), k.rateLimit || "default",
    (k.models || []).join(", ") || "all", state, actions,
  ]);
}

async function loadKeys(more) {
  const q = more && keysCursor ? `?cursor=${encodeURIComponent(keysCursor)}` : "";
  const page = await api("GET", `/api/admin/keys${q}`);
  const rows = page.keys.map(keyRow);
  if (more) $("keys-rows").append(...rows);
  else fill($("keys-rows"), rows, "No managed key yet.", 8);
  keysCursor = page.nextCursor;
  $("keys-more").hidden = !keysCursor;
}

function optionalFields(form, prefix) {
  const out = {};
  const budget = $(`${prefix}-budget`).value.trim();
  out.budget = budget === "" ? null : { limitUsd: Number(budget), period: $(`${prefix}-period`).value };
  const rate = $(`${prefix}-rate`).value.trim();
  out.rateLimit = rate === "" ? null : rate;
  const models = $(`${prefix}-models`).value.split(",").map((m) => m.trim()).filter(Boolean);
  out.models = models.length ? models : null;
  return out;
}

async function createKey(event) {
  event.preventDefault();
  const body = { userId: $("c-user").value.trim() };
  const name = $("c-name").value.trim();
  if (name) body.name = name;
  for (const [k, v] of Object.entries(optionalFields($("create-form"), "c"))) if (v !== null) body[k] = v;
  const expires = $("c-expires").value;
  if (expires) body.expiresAt = new Date(expires).toISOString();
  try {
    const created = await api("POST", "/api/admin/keys", body);
    $("create-form").reset();
    $("new-key-value").value = created.key;
    $("new-key").hidden = false;
    $("new-key-value").focus();
    $("new-key-value").select();
    say(`Key ${created.prefix} created for ${created.userId}.`);
    await loadKeys();
  } catch (e) {
    failed(e);
  }
}

async function copyKey() {
  const value = $("new-key-value").value;
  try {
    await navigator.clipboard.writeText(value);
    say("The key was copied to the clipboard.");
  } catch (_) {
    $("new-key-value").select();
    say("Copying is not allowed here: the key is selected, press Ctrl+C (or Cmd+C).", true);
  }
}

async function saveEdit(event) {
  event.preventDefault();
  const k = editing;
  if (!k) return;
  try {
    await api("PATCH", `/api/admin/keys/${encodeURIComponent(k.id)}`, optionalFields($("edit-form"), "e"));
    $("edit-dialog").close();
    say(`${k.prefix} was updated.`);
    await loadKeys();
  } catch (e) {
    failed(e);
  }
}

const isoDay = (d) => d.toISOString().slice(0, 10);

function usageRange() {
  const from = $("u-from").value;
  const to = $("u-to").value;
  return `from=${from}T00:00:00Z&to=${to}T00:00:00Z&groupBy=${encodeURIComponent($("u-group").value)}`;
}

// A horizontal bar chart drawn as SVG: one bar per group, labelled, with a text alternative.
function barChart(target, rows, value, format, title) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 640;
  const bar = 22;
  const gap = 6;
  const labelWidth = 150;
  const height = Math.max(1, rows.length) * (bar + gap) + gap;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${title}: ${rows.map((r) => `${r.group} ${format(value(r))}`).join(", ") || "no data"}`);
  const max = Math.max(...rows.map(value), 0) || 1;
  rows.forEach((r, i) => {
    const y = gap + i * (bar + gap);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", labelWidth - 8);
    label.setAttribute("y", y + bar * 0.7);
    label.setAttribute("text-anchor", "end");
    label.textContent = r.group.length > 22 ? `${r.group.slice(0, 21)}…` : r.group;
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", labelWidth);
    rect.setAttribute("y", y);
    rect.setAttribute("height", bar);
    rect.setAttribute("width", Math.max(1, ((width - labelWidth - 110) * value(r)) / max));
    rect.setAttribute("class", "bar");
    const amount = document.createElementNS(ns, "text");
    amount.setAttribute("x", labelWidth + Math.max(1, ((width - labelWidth - 110) * value(r)) / max) + 6);
    amount.setAttribute("y", y + bar * 0.7);
    amount.textContent = format(value(r));
    svg.append(label, rect, amount);
  });
  target.replaceChildren(svg);
}

async function loadUsage() {
  if (!$("u-from").value) {
    const now = new Date();
    $("u-from").value = isoDay(new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)));
    $("u-to").value = isoDay(new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1)));
  }
  const u = await api("GET", `/api/usage?${usageRange()}`);
  const rows = u.rows.map((r) => row([r.group, num(r.requests), num(r.inputTokens), num(r.outputTokens), usd(r.costUsd)]));
  if (u.rows.length) {
    const t = u.totals;
    rows.push(el("tr", { class: "total" }, el("th", { scope: "row", text: "Total" }),
      ...[num(t.requests), num(t.inputTokens), num(t.outputTokens), usd(t.costUsd)].map((v) => el("td", { text: v }))));
  }
  fill($("usage-rows"), rows, "No usage in this range.", 5);
  $("usage-caption").textContent = `Usage by ${u.groupBy}, ${u.from} to ${u.to}`;
  barChart($("usage-cost-chart"), u.rows, (r) => r.costUsd, usd, "Spend");
  barChart($("usage-tokens-chart"), u.rows, (r) => r.inputTokens + r.outputTokens, num, "Tokens");
}

async function downloadCsv() {
  try {
    const text = await api("GET", `/api/usage?${usageRange()}&format=csv`);
    const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    const a = el("a", { href: url, download: `spark-usage-${$("u-from").value}-${$("u-group").value}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
    say("The CSV was downloaded.");
  } catch (e) {
    failed(e);
  }
}

async function loadAudit(more) {
  const params = new URLSearchParams();
  const action = $("a-action").value;
  if (action) params.set("action", action);
  if (more && auditCursor) params.set("cursor", auditCursor);
  const [page, chain] = await Promise.all([
    api("GET", `/api/admin/audit?${params}`),
    more ? Promise.resolve(null) : api("GET", "/api/admin/audit/verify"),
  ]);
  if (chain) {
    const c = $("audit-chain");
    c.textContent = chain.intact
      ? `Hash chain verified: ${num(chain.rows)} entries intact.`
      : `Hash chain BROKEN at entry ${chain.brokenAt}: ${chain.reason}.`;
    c.classList.toggle("error", !chain.intact);
    c.classList.toggle("ok", chain.intact);
  }
  const rows = page.entries.map((e) => row([
    e.id, when(e.time), e.actor, el("code", { text: e.action }), e.target || "",
    e.details ? JSON.stringify(e.details) : "",
  ]));
  if (more) $("audit-rows").append(...rows);
  else fill($("audit-rows"), rows, "No entry.", 6);
  auditCursor = page.nextCursor;
  $("audit-more").hidden = !auditCursor;
}

async function loadErrors() {
  const e = await api("GET", "/api/admin/errors");
  const by = Object.entries(e.bySeverity).map(([s, n]) => `${s} ${num(n)}`).join(", ");
  $("errors-totals").textContent = `${num(e.total)} errors since start-up (${by}).`;
  const rows = e.groups.map((g) => row([
    el("span", { class: `sev sev-${g.severity}`, text: g.severity }), el("code", { text: g.kind }), g.route,
    num(g.count), when(g.firstSeen), when(g.lastSeen), g.message,
  ]));
  fill($("errors-rows"), rows, "No error recorded.", 7);
}

const LOADERS = {
  overview: loadOverview,
  providers: loadProviders,
  keys: () => loadKeys(false),
  usage: loadUsage,
  audit: () => loadAudit(false),
  errors: loadErrors,
};

// ---- wiring ---------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", () => signOut());
  $("create-form").addEventListener("submit", createKey);
  $("copy-key").addEventListener("click", copyKey);
  $("hide-key").addEventListener("click", () => {
    $("new-key-value").value = "";
    $("new-key").hidden = true;
  });
  $("keys-more").addEventListener("click", () => loadKeys(true).catch(failed));
  $("edit-form").addEventListener("submit", saveEdit);
  $("edit-cancel").addEventListener("click", () => $("edit-dialog").close());
  $("usage-form").addEventListener("submit", (e) => {
    e.preventDefault();
    loadUsage().catch(failed);
  });
  $("usage-csv").addEventListener("click", downloadCsv);
  $("audit-form").addEventListener("submit", (e) => {
    e.preventDefault();
    loadAudit(false).catch(failed);
  });
  $("audit-more").addEventListener("click", () => loadAudit(true).catch(failed));
  window.addEventListener("hashchange", () => {
    say("");
    show();
    $("main").focus();
  });
  if (key()) {
    signedIn(true);
    show();
  } else {
    signedIn(false);
    $("key").focus();
  }
});
