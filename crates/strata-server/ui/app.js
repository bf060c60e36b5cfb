// The Strata dashboard: plain JavaScript over the REST API, with the token the user gives
// (kept in this tab's sessionStorage). Everything shown is what that token may see: a viewer
// of a project sees its project's volumes, clients and policies, nothing else.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("strata-token");
let timer = null;
const history = []; // [time, total written bytes, rpc calls]

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + token } });
  if (r.status === 401) {
    logout("the token was refused (expired or revoked?)");
    throw new Error("unauthenticated");
  }
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(path + ": " + msg);
  }
  return r.json();
}

function text(s) { return document.createTextNode(s == null ? "" : String(s)); }

function row(tbody, cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.appendChild(text(c));
    tr.appendChild(td);
  }
  tbody.appendChild(tr);
}

function fill(id, items, cells, empty) {
  const tbody = $(id).querySelector("tbody");
  tbody.replaceChildren();
  if (!items.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.className = "empty";
    td.colSpan = $(id).querySelectorAll("th").length;
    td.textContent = empty;
    tr.appendChild(td);
    tbody.appendChild(tr);
    return;
  }
  for (const it of items) row(tbody, cells(it));
}

function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function bar(used, quota, fmt) {
  const wrap = document.createElement("span");
  const b = document.createElement("span");
  b.className = "bar";
  const fillEl = document.createElement("span");
  const frac = quota > 0 ? Math.min(1, used / quota) : 0;
  fillEl.style.width = (frac * 100).toFixed(1) + "%";
  if (frac >= 0.95) b.classList.add("full"); else if (frac >= 0.8) b.classList.add("warn");
  b.appendChild(fillEl);
  const l = document.createElement("span");
  l.className = "barlabel";
  l.textContent = quota > 0 ? `${fmt(used)} / ${fmt(quota)} (${(frac * 100).toFixed(0)}%)` : `${fmt(used)} (no quota)`;
  wrap.append(b, l);
  wrap.dataset.used = used;
  wrap.dataset.quota = quota;
  return wrap;
}

function backend(b) {
  if (!b) return "";
  if (b.kind === "s3") return `s3://${b.bucket}/${b.prefix || ""}`;
  return b.path ? `directory ${b.path}` : "the server's disks";
}

function policyText(p) {
  const parts = [];
  if (p.allowed_classes) parts.push(`classes ${p.allowed_classes.value.join(", ")} (from ${p.allowed_classes.from})`);
  if (p.enforced_class) parts.push(`enforced class ${p.enforced_class.value} (from ${p.enforced_class.from})`);
  if (p.default_class) parts.push(`default class ${p.default_class.value} (from ${p.default_class.from})`);
  if (p.max_volume_size) parts.push(`volumes ≤ ${bytes(p.max_volume_size.value)} (from ${p.max_volume_size.from})`);
  for (const q of p.quotas || []) parts.push(`quota ${bytes(q.value)} (from ${q.from})`);
  if (p.access_modes) parts.push(`access modes ${p.access_modes.value.join(", ")} (from ${p.access_modes.from})`);
  return parts.length ? parts.join("; ") : "no rules";
}

async function loadStatic() {
  const [status, classes, scopes, volumes, dvs] = await Promise.all([
    api("/v1/status"), api("/v1/storageclasses"), api("/v1/scopes"), api("/v1/volumes"), api("/v1/datavolumes"),
  ]);
  $("server").textContent = `strata ${status.version}, ${status.engine} metadata, started ${status.started}` +
    (status.pending_slices != null ? `, ${status.pending_slices} slices waiting for collection` : "");
  const scopeNames = scopes.map((s) => s.path);
  $("who").textContent = scopeNames.length ? "scope: " + scopeNames[0] : "";
  fill("classes", classes, (c) => [c.name + (c.is_default ? " (default)" : ""), backend(c.backend),
    bytes(c.block_size), c.compression,
    (c.qos && (c.qos.bytes_per_sec || c.qos.ops_per_sec))
      ? `${c.qos.bytes_per_sec ? bytes(c.qos.bytes_per_sec) + "/s" : "∞"}, ${c.qos.ops_per_sec || "∞"} ops/s` : "unlimited",
    c.description], "no storage classes");
  const policies = await Promise.all(scopes.map((s) =>
    api("/v1/policies/" + encodeURIComponent(s.path) + "/effective").catch(() => null)));
  fill("scopes", scopes.map((s, i) => [s, policies[i]]),
    ([s, p]) => [s.path, s.kind, p ? policyText(p) : "(not visible)"], "no scopes");
  fill("sessions", status.sessions, (s) => [s.id, s.volume, s.client, s.version || "?", s.since, s.last_seen], "no clients connected");
  fill("datavolumes", dvs, (d) => [d.name, d.scope,
    d.versions.map((v) => `v${v.number} ${bytes(v.bytes)}`).join(", "), d.shares.join(", ") || "–", d.description],
    "no data volumes");
  const snaps = (await Promise.all(volumes.map((v) =>
    api("/v1/volumes/" + encodeURIComponent(v.name) + "/snapshots").catch(() => [])))).flat();
  fill("snapshots", snaps, (s) => [s.volume, s.name, s.created, bytes(s.bytes), bytes(s.held_bytes)], "no snapshots");
  const byName = Object.fromEntries(volumes.map((v) => [v.name, v]));
  return byName;
}

let classOf = {};

function drawSpark() {
  const c = $("spark");
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const rates = [];
  for (let i = 1; i < history.length; i++) {
    const dt = history[i][0] - history[i - 1][0];
    rates.push(dt > 0 ? (history[i][1] - history[i - 1][1]) / dt : 0);
  }
  if (!rates.length) return;
  const max = Math.max(...rates);
  ctx.fillStyle = "#5a6475";
  if (max <= 0) {
    ctx.fillText("no writes in the last " + Math.round(history[history.length - 1][0] - history[0][0]) + " s", 6, 12);
    return;
  }
  ctx.strokeStyle = "#3b82f6";
  ctx.lineWidth = 2;
  ctx.beginPath();
  rates.forEach((r, i) => {
    const x = (i / Math.max(1, rates.length - 1)) * (c.width - 4) + 2;
    const y = c.height - 4 - (r / max) * (c.height - 8);
    if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
  });
  ctx.stroke();
  ctx.fillText("peak " + bytes(max) + "/s", 6, 12);
}

async function poll() {
  try {
    const s = await api("/v1/stats");
    const written = s.volumes.reduce((a, v) => a + v.written_bytes, 0);
    const prev = history[history.length - 1];
    history.push([s.time, written, s.rpc_calls || 0]);
    if (history.length > 90) history.shift();
    if (prev) {
      const dt = s.time - prev[0];
      $("rate-write").textContent = bytes(Math.max(0, (written - prev[1]) / dt)) + "/s";
      $("rate-ops").textContent = s.rpc_calls != null ? Math.round((s.rpc_calls - prev[2]) / dt) + " /s" : "cluster only";
    }
    $("n-sessions").textContent = s.sessions;
    $("n-used").textContent = bytes(s.volumes.reduce((a, v) => a + v.used_bytes, 0));
    const tbody = $("volumes").querySelector("tbody");
    fill("volumes", s.volumes, (v) => {
      return [v.name, v.scope, classOf[v.name] || "", bar(v.used_bytes, v.capacity, bytes),
        bar(v.used_inodes, v.inode_limit, (n) => String(n)), bytes(v.written_bytes) + " since start"];
    }, "no volumes visible to this token");
    tbody.querySelectorAll("tr").forEach((tr, i) => { if (s.volumes[i]) tr.dataset.volume = s.volumes[i].name; });
    drawSpark();
    window.strataPolls = (window.strataPolls || 0) + 1;
    $("error").textContent = "";
  } catch (e) {
    if (e.message !== "unauthenticated") $("error").textContent = e.message;
  }
}

async function start() {
  $("login").hidden = true;
  $("dash").hidden = false;
  $("logout").hidden = false;
  try {
    const vols = await loadStatic();
    classOf = Object.fromEntries(Object.values(vols).map((v) => [v.name, v.class]));
  } catch (e) {
    if (e.message !== "unauthenticated") $("error").textContent = e.message;
    if (!token) return;
  }
  await poll();
  document.body.dataset.ready = "1";
  timer = setInterval(poll, 2000);
  setInterval(() => loadStatic().then((v) => {
    classOf = Object.fromEntries(Object.values(v).map((x) => [x.name, x.class]));
  }).catch(() => {}), 15000);
}

function logout(msg) {
  sessionStorage.removeItem("strata-token");
  token = null;
  if (timer) clearInterval(timer);
  location.hash = "";
  $("dash").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = msg || "";
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  token = $("token").value.trim();
  if (!token) return;
  const r = await fetch("/v1/status", { headers: { Authorization: "Bearer " + token } });
  if (!r.ok) {
    let msg = "refused";
    try { msg = (await r.json()).error.message; } catch (_) { /* not JSON */ }
    $("login-error").textContent = "Token refused: " + msg;
    token = null;
    return;
  }
  sessionStorage.setItem("strata-token", token);
  $("token").value = "";
  start();
});
$("logout").addEventListener("click", () => location.reload(sessionStorage.removeItem("strata-token")));

if (token) start();
