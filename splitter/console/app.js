// splitter console: reads /admin/overview every second and renders it; actions go to the
// admin API with the token the operator typed (sessionStorage only, sent as the Bearer
// header; reads carry it too, for `admin: {reads: token}`). Each route's card ends with its
// change history (who, when, what, why). Every value from the server is put on the page as text (textContent, SVG
// attributes), never as HTML: route names and shadow diffs are untrusted.
"use strict";

const TOKEN_KEY = "splitter-admin-token";
let last = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function pct(x) { return x === null || x === undefined ? "-" : (100 * x).toFixed(2) + " %"; }
function ms(x) { return x === null || x === undefined ? "-" : x.toFixed(1) + " ms"; }
function num(x) { return x === null || x === undefined ? "-" : Number(x).toLocaleString("en-US"); }

function status(text, ok) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = ok ? "ok" : "error";
}

function readHeaders() {
  const token = document.getElementById("token").value.trim();
  return token ? { "Authorization": "Bearer " + token } : {};
}

async function whoami() {
  const who = document.getElementById("whoami");
  const token = document.getElementById("token").value.trim();
  if (!token) { who.textContent = "no token"; who.className = "pill"; return; }
  try {
    const resp = await fetch("/admin/whoami", { headers: readHeaders(), credentials: "omit" });
    const data = await resp.json();
    who.textContent = resp.ok ? `token: ${data.name} (${data.role})` : "token: not valid";
    who.className = "pill " + (resp.ok ? "good" : "bad");
  } catch (e) {
    who.textContent = "token: not checked";
    who.className = "pill";
  }
}

async function act(method, path, body, what) {
  const token = document.getElementById("token").value.trim();
  if (!token) { status("type the admin token first (SPLITTER_ADMIN_TOKEN)", false); return; }
  sessionStorage.setItem(TOKEN_KEY, token);
  if (!window.confirm(what)) return;
  const reason = document.getElementById("reason").value.trim();
  if (reason) body = Object.assign({}, body || {}, { reason });
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers: Object.assign(readHeaders(), { "Content-Type": "application/json", "X-Splitter-Source": "console" }),
      body: body === null ? undefined : JSON.stringify(body),
      credentials: "omit",
    });
  } catch (e) {
    status("the admin API cannot be reached: " + e, false);
    return;
  }
  let data = {};
  try { data = await resp.json(); } catch (e) { data = {}; }
  if (!resp.ok) status(resp.status + ": " + (data.error || resp.statusText), false);
  else {
    status("done: " + what, true);
    document.getElementById("reason").value = "";
  }
  refresh();
}

function chart(series) {
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 300 70");
  svg.setAttribute("preserveAspectRatio", "none");
  const n = Math.max(series.new.length, 1);
  const max = Math.max(1, ...series.new.map(p => p.rps), ...series.legacy.map(p => p.rps));
  const line = (points, value, scale, cls) => {
    const path = document.createElementNS(svgNS, "polyline");
    path.setAttribute("class", cls);
    path.setAttribute("points", points.map((p, i) => `${(i * 300) / Math.max(1, n - 1)},${68 - (value(p) / scale) * 64}`).join(" "));
    svg.append(path);
  };
  line(series.legacy, p => p.rps, max, "legacy");
  line(series.new, p => p.rps, max, "new");
  line(series.new, p => p.error_rate, 1, "new-err");
  const title = document.createElementNS(svgNS, "title");
  title.textContent = "requests/s over the last 5 minutes: legacy (grey), new (blue); new's error rate (red, 0..100 %)";
  svg.append(title);
  return svg;
}

function windowTable(w) {
  const row = (name, side) => el("tr", {}, el("td", {}, name), el("td", {}, num(side.requests)),
    el("td", { class: side.errors ? "err" : "" }, num(side.errors)), el("td", { class: side.error_rate > 0.01 ? "err" : "" }, pct(side.error_rate)), el("td", {}, ms(side.p95_ms)));
  return el("table", {},
    el("tr", {}, el("th", {}, `last ${Math.round(w.span_s)} s (${w.scope})`), el("th", {}, "requests"), el("th", {}, "errors"), el("th", {}, "error rate"), el("th", {}, "p95")),
    row("old (legacy)", w.legacy), row("new", w.new));
}

function usersLine(name, from, to, route) {
  const rate = route.series ? route.series.new.concat(route.series.legacy).slice(-2).reduce((a, p) => a + p.rps, 0) : 0;
  const moved = Math.abs(to - from);
  const dir = to > from ? "to new" : "back to legacy";
  const perMin = Math.round((rate * 60 * moved) / 100);
  return `${name}: ${from} % → ${to} %, ${moved} % of users (buckets ${Math.min(from, to)}–${Math.max(from, to) - 1}) move ${dir}` +
    (perMin ? `, about ${perMin.toLocaleString("en-US")} requests/min at the current rate` : "");
}

function rolloutBox(ro) {
  const box = el("div", { class: "box" }, el("h3", {}, "rollout"));
  const steps = ro.steps.map(s => (s === ro.step ? `[${s}]` : String(s))).join(" → ");
  box.append(el("div", {}, `${ro.status} at ${ro.percent} %  ·  steps ${steps}` + (ro.next_step_in_s !== null && ro.next_step_in_s !== undefined ? `  ·  next step in ${Math.round(ro.next_step_in_s)} s` : "")));
  for (const g of ro.gates || []) {
    const verdict = g.verdict || (g.ok === true ? "pass" : g.ok === false ? "fail" : "wait");
    const value = g.estimate !== undefined ? g.estimate : g.value;
    const interval = g.interval && g.interval[0] !== null ? ` [${g.interval[0]} .. ${g.interval[1]}]` : "";
    box.append(el("div", { class: "gate " + verdict }, `${g.gate}: ${value === null ? "-" : value}${interval} (threshold ${g.threshold})`));
  }
  if (ro.reason) box.append(el("div", {}, "reason: " + ro.reason));
  const name = ro.route;
  box.append(el("div", { class: "actions" },
    el("button", { type: "button", onclick: () => act("POST", `/admin/rollouts/${encodeURIComponent(name)}/pause`, {}, `${name}: pause the rollout`) }, "pause"),
    el("button", { type: "button", onclick: () => act("POST", `/admin/rollouts/${encodeURIComponent(name)}/resume`, {}, `${name}: resume the rollout`) }, "resume"),
    el("button", { type: "button", class: "danger", onclick: () => act("POST", `/admin/rollouts/${encodeURIComponent(name)}/abort`, {}, `${name}: abort the rollout (percent to 0)`) }, "abort")));
  return box;
}

function shadowBox(mismatches) {
  const box = el("div", { class: "box" }, el("h3", {}, `shadow: ${mismatches.length ? "latest mismatches" : "no recent mismatches"}`));
  for (const m of mismatches) {
    box.append(el("div", {}, `${m.method} ${m.path} (primary ${m.primary}, shadow ${m.shadow})`));
    for (const d of m.diff) box.append(el("div", { class: "mismatch" }, `${d.path}: ${JSON.stringify(d.primary)} != ${JSON.stringify(d.shadow)}`));
  }
  return box;
}

function change(e) {
  const v = x => (x === true ? "on" : x === false ? "off" : x === null || x === undefined ? "-" : `${x} %`);
  return e.action === "kill" ? `kill switch ${v(e.new)}` : `${e.action.replace(/_/g, " ")} ${v(e.old)} → ${v(e.new)}`;
}

function timelineBox(events, title) {
  const box = el("div", { class: "box timeline" }, el("h3", {}, title));
  if (!events.length) box.append(el("div", { class: "muted" }, "no changes recorded"));
  for (const e of events) {
    box.append(el("div", { class: "event " + e.source, "data-action": e.action },
      el("span", { class: "when" }, new Date(e.at * 1000).toLocaleTimeString()),
      el("span", { class: "who" }, e.who + (e.on_behalf ? ` for ${e.on_behalf}` : ""), el("small", {}, ` ${e.source}`)),
      el("span", { class: "what" }, change(e)),
      el("span", { class: "why" }, e.reason || "")));
  }
  return box;
}

function routeCard(r, rollout, events) {
  const name = r.name;
  const input = el("input", { type: "number", min: "0", max: "100", value: String(r.percent), "aria-label": `new percent for ${name}` });
  const card = el("section", { class: "route", "data-route": name },
    el("h2", {}, name, el("span", { class: "prefix" }, r.prefix)),
    el("div", {}, el("span", { class: "percent" }, `${r.percent} %`), " to new  ",
      el("span", { class: "source " + r.source, "data-field": "source" }, r.source), `  (routes.yaml: ${r.file_percent} %)`));
  if (r.error) card.append(el("div", { class: "err" }, r.error));
  if (r.window) card.append(windowTable(r.window));
  if (r.series) card.append(chart(r.series));
  if (r.guard) card.append(el("div", { class: "box" }, el("h3", {}, "guard"),
    `max error rate ${pct(r.guard.max_error_rate)} over ${r.guard.window_s} s, at least ${r.guard.min_requests} requests` +
    (r.guard.max_p95_ratio ? `, p95 ≤ ${r.guard.max_p95_ratio} × old` : "") + (r.guard.confidence ? `, confidence ${r.guard.confidence}` : "") +
    (r.source === "guard" ? "  —  TRIPPED: the route was rolled back" : "")));
  if (rollout) card.append(rolloutBox(rollout));
  if (r.shadow) card.append(shadowBox(r.shadow));
  if (events) card.append(timelineBox(events.slice(0, 5), "changes: who, when, what, why"));
  card.append(el("div", { class: "actions" },
    input,
    el("button", { type: "button", onclick: () => {
      const to = Number(input.value);
      if (!Number.isInteger(to) || to < 0 || to > 100) { status("percent must be an integer 0..100", false); return; }
      act("PUT", `/admin/routes/${encodeURIComponent(name)}`, { percent: to }, usersLine(name, r.percent, to, r));
    } }, "set percent"),
    el("button", { type: "button", onclick: () => act("DELETE", `/admin/routes/${encodeURIComponent(name)}/override`, null, `${name}: clear the override (back to routes.yaml: ${r.file_percent} %)`) }, "clear override"),
    el("button", { type: "button", class: "danger", onclick: () => act("POST", "/admin/rollback", { route: name }, usersLine(name, r.percent, 0, r) + " (roll back)") }, "roll back")));
  return card;
}

function render(o) {
  document.getElementById("env").textContent = `${o.environment} · v${o.version}`;
  const redis = document.getElementById("redis");
  redis.textContent = o.redis.configured ? `redis ${o.redis.up ? "up" : "DOWN"} · ${o.redis.scope} windows` : `no redis · ${o.redis.scope} windows`;
  redis.className = "pill " + (o.redis.configured && !o.redis.up ? "bad" : "good");
  const reloads = document.getElementById("reloads");
  reloads.textContent = o.reloads.failures ? `${o.reloads.failures} config reload failures` + (o.reloads.last_error.length ? `: ${o.reloads.last_error[0]}` : "") : "config ok";
  reloads.className = "pill " + (o.reloads.last_error.length ? "bad" : "good");
  const kill = document.getElementById("kill");
  kill.textContent = o.kill ? "KILL SWITCH ON: everything to legacy" : "kill switch off";
  kill.className = "pill " + (o.kill ? "bad" : "good");
  const rollouts = Object.fromEntries((o.rollouts || []).filter(x => x.route).map(x => [x.route, x]));
  const main = document.getElementById("routes");
  const history = Array.isArray(o.history) ? o.history : [];
  const byRoute = {};
  for (const e of history) (byRoute[e.route] = byRoute[e.route] || []).push(e);
  main.replaceChildren(...o.routes.map(r => routeCard(r, rollouts[r.name], byRoute[r.name] || [])));
  const fleet = document.getElementById("fleet-history");
  fleet.replaceChildren(...(byRoute.null ? [timelineBox(byRoute.null.slice(0, 3), "kill switch changes")] : []));
  document.getElementById("updated").textContent = "updated " + new Date(o.time * 1000).toLocaleTimeString();
}

async function refresh() {
  try {
    const resp = await fetch("/admin/overview", { headers: readHeaders(), credentials: "omit" });
    if (resp.status === 401 || resp.status === 403) {
      status("reads need a token here (admin.reads: token): type a viewer or operator token", false);
      return;
    }
    last = await resp.json();
    const focused = document.activeElement;
    if (focused && focused.tagName === "INPUT" && focused.id !== "token") return; // do not redraw under the operator's typing
    render(last);
  } catch (e) {
    status("cannot read /admin/overview: " + e, false);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const token = document.getElementById("token");
  token.value = sessionStorage.getItem(TOKEN_KEY) || "";
  token.addEventListener("change", () => { sessionStorage.setItem(TOKEN_KEY, token.value.trim()); whoami(); });
  whoami();
  document.getElementById("kill-toggle").addEventListener("click", () => {
    const on = last && last.kill;
    act(on ? "DELETE" : "PUT", "/admin/kill", null, on ? "kill switch OFF: routing by percent again" : "kill switch ON: every request of every route goes to legacy");
  });
  document.getElementById("rollback-all").addEventListener("click", () => act("POST", "/admin/rollback", { all: true }, "roll back EVERY route to legacy (percent 0)"));
  refresh();
  setInterval(refresh, 1000);
});
