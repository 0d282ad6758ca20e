// splitter console: reads /admin/overview every second and renders it; actions go to the
// admin API with the token the operator typed (sessionStorage only, sent as the Bearer
// header; reads carry it too, for `admin: {reads: token}`). A route's cohorts are shown in a box
// of their own, never in the old-vs-new table. Each route's card ends with its change history
// (who, when, what, why). Every value from the server is put on the page as text (textContent, SVG
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

function none(x) { return x === null || x === undefined; }
function pct(x) { return none(x) ? "-" : (100 * x).toFixed(2) + " %"; }
function ms(x) { return none(x) ? "-" : x.toFixed(x >= 100 ? 0 : x >= 10 ? 1 : 2) + " ms"; }
function num(x) { return none(x) ? "-" : Number(x).toLocaleString("en-US"); }
function clock(t) { return none(t) ? "-" : new Date(t * 1000).toLocaleTimeString("en-GB", { hour12: false }); }

// A gate's numbers in the units the window table uses: rates as %, latency in ms, ratios as ×.
const GATE_UNITS = {
  max_error_rate: pct, max_error_increase: pct, max_p95_ms: ms, min_requests: num,
  max_p95_ratio: x => (none(x) ? "-" : "×" + x.toFixed(2)),
};
function gateValue(gate, x) { return (GATE_UNITS[gate] || String)(x); }

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
  svg.setAttribute("viewBox", "0 0 300 50");
  svg.setAttribute("preserveAspectRatio", "none");
  const n = Math.max(series.new.length, 1);
  const max = Math.max(1, ...series.new.map(p => p.rps), ...series.legacy.map(p => p.rps));
  const line = (points, value, scale, cls) => {
    const path = document.createElementNS(svgNS, "polyline");
    path.setAttribute("class", cls);
    const xy = (p, i) => `${(i * 300) / Math.max(1, n - 1)},${49 - (value(p) / scale) * 47}`;
    path.setAttribute("points", points.map(xy).join(" "));
    svg.append(path);
  };
  line(series.legacy, p => p.rps, max, "legacy");
  line(series.new, p => p.rps, max, "new");
  line(series.new, p => p.error_rate, 1, "new-err");
  const title = document.createElementNS(svgNS, "title");
  title.textContent = "requests/s over the last 5 minutes: legacy (grey), new (blue); new's error rate (red, 0..100 %)";
  svg.append(title);
  const top = max >= 10 ? Math.round(max) : max.toFixed(1);
  return el("div", { class: "spark" },
    el("div", { class: "spark-y" }, el("span", {}, `${top} req/s`), el("span", {}, "0")),
    svg,
    el("div", { class: "spark-x" }, el("span", {}, "−5 min"),
      el("span", {}, el("i", { class: "k legacy" }, "legacy"), el("i", { class: "k new" }, "new"),
        el("i", { class: "k new-err" }, "new errors (0–100 %)")),
      el("span", {}, "now")));
}

function windowTable(w, label) {
  const row = (name, side) => el("tr", {}, el("td", {}, name), el("td", {}, num(side.requests)),
    el("td", { class: side.errors ? "err" : "" }, num(side.errors)), el("td", { class: side.error_rate > 0.01 ? "err" : "" }, pct(side.error_rate)), el("td", {}, ms(side.p95_ms)));
  return el("table", {},
    el("tr", {}, el("th", {}, label || `last ${Math.round(w.span_s)} s (${w.scope})`),
      el("th", {}, "requests"), el("th", {}, "errors"), el("th", {}, "error rate"), el("th", {}, "p95")),
    row("old (legacy)", w.legacy), row("new", w.new));
}

// Percents move in 0.01 steps: 1.5 splits bucket 1 by its sub-bucket (README "Bucketing").
function isPercent(x) { return Number.isFinite(x) && x >= 0 && x <= 100 && Math.abs(Math.round(x * 100) - x * 100) < 1e-6; }

function usersLine(name, from, to, route) {
  const rate = route.series ? route.series.new.concat(route.series.legacy).slice(-2).reduce((a, p) => a + p.rps, 0) : 0;
  const moved = Math.round(Math.abs(to - from) * 100) / 100;
  const dir = to > from ? "to new" : "back to legacy";
  const perMin = Math.round((rate * 60 * moved) / 100);
  const lo = Math.floor(Math.min(from, to)), hi = Math.ceil(Math.max(from, to)) - 1;  // the buckets the users are in
  return `${name}: ${from} % → ${to} %, ${moved} % of users (${lo === hi ? `bucket ${lo}` : `buckets ${lo}–${hi}`}) move ${dir}` +
    (perMin ? `, about ${perMin.toLocaleString("en-US")} requests/min at the current rate` : "");
}

function gateRow(g) {
  // min_requests not reached yet is waiting for traffic, never a failure
  const verdict = g.verdict || (g.ok === true ? "pass" : g.ok === false && g.gate !== "min_requests" ? "fail" : "wait");
  const value = g.estimate !== undefined ? g.estimate : g.value;
  const [low, high] = g.interval || [null, null];
  const iv = none(low) ? "" : `[${gateValue(g.gate, low)} .. ${none(high) ? "∞" : gateValue(g.gate, high)}]`;
  const p = none(g.p_value) ? "" : `p=${g.p_value.toPrecision(2)}`;
  const limit = g.gate === "min_requests" ? `≥ ${num(g.threshold)}` : `≤ ${gateValue(g.gate, g.threshold)}`;
  const word = { pass: "ok", fail: "FAILS", wait: "waiting" }[verdict];
  const detail = g.detail ? ` (${g.detail})` : "";  // a count gate names what it counted: type, counts, a path
  return el("tr", { class: "gate " + verdict },
    el("td", { class: "mark" }), el("td", {}, g.gate), el("td", {}, gateValue(g.gate, value)),
    el("td", { class: "iv" }, `${iv} ${p}${detail}`.trim()), el("td", {}, limit), el("td", { class: "word" }, word));
}

function gateTable(gates) { return el("table", { class: "gates" }, ...gates.map(gateRow)); }

function evidenceLine(w) {
  const n = w.new;
  const l = w.legacy;
  const legacy = l && l.requests ? `  ·  legacy ${num(l.requests)} requests, p95 ${ms(l.p95_ms)}` : "";
  return `new ${num(n.requests)} requests, ${pct(n.error_rate)} errors, p95 ${ms(n.p95_ms)}` + legacy;
}

function rolloutHeadline(ro, kill) {
  if (kill && ["running", "awaiting_approval", "paused", "pending"].includes(ro.status)) {
    const at = ro.step === null ? "its start" : ro.step + " %";
    return [`KILL SWITCH ON: everything goes to legacy; the rollout holds (at ${at})`, "bad"];
  }
  switch (ro.status) {
    case "awaiting_approval":
      return [`AWAITING APPROVAL: at ${ro.percent} %, next ${ro.awaiting} % needs a promote`, "hold"];
    case "rolled_back": return [`ROLLED BACK at ${clock(ro.since)}: ${ro.reason}`, "bad"];
    case "aborted": return [`ABORTED at ${clock(ro.since)}`, "bad"];
    case "paused": return [`PAUSED at ${ro.percent} %: ${ro.reason}`, "hold"];
    case "done": return [`done at ${ro.percent} % (${clock(ro.since)})`, "good"];
    case "baking": return [`BAKING at ${ro.percent} %: done in ${Math.round(ro.bake_ends_in_s)} s if the gates hold`, "hold"];
  }
  const next = none(ro.next_step_in_s) ? "" : `, next step in ${Math.round(ro.next_step_in_s)} s if the gates hold`;
  return [`${ro.status} at ${ro.percent} %${next}`, ""];
}

function rolloutButtons(ro) {
  const name = ro.route;
  const post = (action, body, what) =>
    act("POST", `/admin/rollouts/${encodeURIComponent(name)}/${action}`, body, `${name}: ${what}`);
  const button = (label, cls, action, body, what) =>
    el("button", { type: "button", class: cls, onclick: () => post(action, body, what) }, label);
  const buttons = [
    button("pause", "", "pause", {}, "pause the rollout"),
    button("resume", "", "resume", {}, "resume the rollout"),
    button("abort", "danger", "abort", {}, "abort the rollout (percent to 0)")];
  if (["running", "awaiting_approval", "paused", "baking"].includes(ro.status)) {
    const last = ro.steps[ro.steps.length - 1];
    buttons.unshift(
      button("promote", ro.status === "awaiting_approval" ? "primary" : "", "promote", {}, "promote to the next step"),
      button("promote --full", "", "promote", { full: true }, `promote straight to ${last} % (done)`));
  }
  return el("div", { class: "actions" }, ...buttons);
}

function rolloutBox(ro, kill) {
  const [headline, tone] = rolloutHeadline(ro, kill);
  const approval = s => (ro.approval_steps && ro.approval_steps.includes(s) ? " (approval)" : "");
  const steps = ro.steps.map(s => (s === ro.step ? `[${s}]` : String(s)) + approval(s)).join(" → ");
  const box = el("div", { class: "box rollout " + tone },
    el("h3", {}, "rollout ", el("span", { class: "steps" }, steps)), el("div", { class: "headline" }, headline));
  if (ro.gates) {
    const since = `since ${ro.step} % at ${clock(ro.since)}` +
      (ro.legacy_from_step_before ? " (legacy: the step before)" : "") +
      (ro.confidence ? `, judged at ${ro.confidence}` : "");
    box.append(el("div", { class: "label" }, since + ": " + evidenceLine(ro)), gateTable(ro.gates));
  }
  if (ro.stalled) box.append(el("div", { class: "label waiting", "data-field": "stalled" }, "stalled: held past max_wait_s (still holding)"));
  for (const w of ro.waiting_for || []) box.append(el("div", { class: "label waiting", "data-gate": w.gate }, `waiting: ${w.says}`));
  const prev = ro.previous;
  if (prev) {
    const what = ro.status === "rolled_back" ? "evidence" : ro.status === "done" ? "last step" : "previous step";
    const when = `${prev.percent} % from ${clock(prev.since)} to ${clock(prev.until)}`;
    box.append(el("div", { class: "label prev" }, `${what}: ${when}: ${evidenceLine(prev)}`), gateTable(prev.gates));
  }
  box.append(rolloutButtons(ro));
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
  if (e.action === "cohort") return `cohort ${e.new.cohort}: ${e.old.runtime_members} → ${e.new.runtime_members} runtime members`;
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

// A route's cohorts send users by who they are, not at random: their requests are counted apart
// (same span and scope as the window table) and never enter old vs new, the guard or a rollout.
const COHORT_OPS = { equals: "=", in: "in", prefix: "starts with", suffix: "ends with" };

function cohortMatch(c) {
  if (c.matcher === "users") return `users: ${num(c.file_members)} in routes.yaml + ${num(c.runtime_members)} at runtime`;
  const shown = c.values.slice(0, 3).join(", ") + (c.values.length > 3 ? `, … (${c.values.length} values)` : "");
  const what = c.matcher === "jwt_claim" ? "JWT claim" : c.matcher;
  return `${what} ${c.key} ${COHORT_OPS[c.op] || c.op} ${c.op === "in" ? `[${shown}]` : shown}`;
}

function cohortBox(co) {
  const n = `${num(co.requests)} request${co.requests === 1 ? "" : "s"}`;
  const when = none(co.span_s) ? "" : `last ${Math.round(co.span_s)} s (${co.scope}): ${n} `;
  const rows = co.by_cohort.map(c => el("tr", { "data-cohort": c.name }, el("td", {}, c.name),
    el("td", { class: "match" }, cohortMatch(c)), el("td", { class: "to " + c.to }, "→ " + c.to), el("td", {}, num(c.requests))));
  return el("div", { class: "box cohorts" },
    el("h3", {}, "cohorts ", el("span", { class: "apart" }, "not in the comparison")),
    el("div", { class: "label" }, when + "sent by who they are, not at random: left out of old vs new above, " +
      "the guard and rollouts"),
    el("table", {}, el("tr", {}, el("th", {}, "cohort"), el("th", { class: "match" }, "matches"),
      el("th", { class: "to" }, "to"), el("th", {}, "requests")), ...rows));
}

function guardBox(r) {
  const g = r.guard;
  const tripped = (r.source_under_kill || r.source) === "guard";
  const box = el("div", { class: "box" + (tripped ? " bad" : "") }, el("h3", {}, "guard"),
    `max error rate ${pct(g.max_error_rate)} over ${g.window_s} s, at least ${g.min_requests} requests` +
    (g.max_p95_ratio ? `, p95 ≤ ×${g.max_p95_ratio} old` : "") +
    (g.confidence ? `, confidence ${g.confidence}` : ""));
  if (!tripped) return box;
  const t = r.guard_trip;
  box.append(el("div", { class: "headline" }, t
    ? `TRIPPED at ${clock(t.at)} (${t.reason.replace("_", " ")}): the route was rolled back to legacy`
    : "TRIPPED: the route was rolled back to legacy (by another replica: its log has the evidence)"));
  if (t) box.append(el("div", { class: "label prev" }, `evidence over ${t.window_s} s: ${evidenceLine(t)}`));
  if (t && t.checks) box.append(gateTable(t.checks));
  return box;
}

// The window a route's numbers come from restarts when its percent changes; what it showed is
// kept here (this page only) and labelled, so the evidence does not vanish without a word.
const before = {};

function windowLabel(r, rollout, now) {
  const w = r.window;
  if (rollout && rollout.gates && !none(rollout.since)) return `since ${rollout.step} % at ${clock(rollout.since)}`;
  if (!none(w.since) && w.since > now - w.span_s) return `since ${clock(w.since)}`;
  return null;
}

function previousWindow(r) {
  const seen = before[r.name];
  const restarted = seen && seen.since !== r.window.since && seen.window.new.requests + seen.window.legacy.requests > 0;
  const kept = restarted ? { percent: seen.percent, window: seen.window, until: r.window.since }
    : seen ? seen.kept : null;
  before[r.name] = { percent: r.percent, since: r.window.since, window: r.window, kept };
  if (!kept) return null;
  const when = `at ${kept.percent} % until ${clock(kept.until)}`;
  return el("div", { class: "label prev" }, `before: ${when}: ${evidenceLine(kept.window)}`);
}

function retireLine(r) {
  // the finish line: legacy's last request for this route, and whether `splitter retire` may pin it to new
  const says = r.retire_says || "legacy has served this route no request since splitter began counting";
  const text = r.ready_to_retire ? `READY TO RETIRE: ${says}: splitter retire ${r.name}`
    : none(r.ready_in_s) ? says : `${says}; ready to retire in ${Math.round(r.ready_in_s)} s`;
  return el("div", { class: "label" + (r.ready_to_retire ? " good" : ""), "data-field": "retire" }, text);
}

function routeCard(r, rollout, now, events) {
  const name = r.name;
  const input = el("input", { type: "number", min: "0", max: "100", step: "0.01", value: String(r.percent), "aria-label": `new percent for ${name}` });
  const card = el("section", { class: "route", "data-route": name },
    el("h2", {}, name, el("span", { class: "prefix" }, r.prefix)),
    el("div", {}, el("span", { class: "percent" }, `${r.percent} %`), " to new  ",
      el("span", { class: "source " + r.source, "data-field": "source" }, r.source), `  (routes.yaml: ${r.file_percent} %)`));
  if (r.error) card.append(el("div", { class: "err" }, r.error));
  if (r.window) card.append(windowTable(r.window, windowLabel(r, rollout, now)));
  const prev = r.window ? previousWindow(r) : null;  // a rollout's box labels its own previous step
  if (prev && !(rollout && rollout.previous)) card.append(prev);
  if (r.series) card.append(chart(r.series));
  if (r.cohorts) card.append(cohortBox(r.cohorts));
  if (r.guard) card.append(guardBox(r));
  if (r.ready_to_retire !== undefined) card.append(retireLine(r));
  if (rollout) card.append(rolloutBox(rollout, r.source === "kill"));
  if (r.shadow) card.append(shadowBox(r.shadow));
  if (events) card.append(timelineBox(events.slice(0, 5), "changes: who, when, what, why"));
  card.append(el("div", { class: "actions" },
    input,
    el("button", { type: "button", onclick: () => {
      const to = Number(input.value);
      if (input.value.trim() === "" || !isPercent(to)) { status("percent must be a number 0..100 with at most two decimals", false); return; }
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
  main.replaceChildren(...o.routes.map(r => routeCard(r, rollouts[r.name], o.time, byRoute[r.name] || [])));
  const fleet = document.getElementById("fleet-history");
  fleet.replaceChildren(...(byRoute.null ? [timelineBox(byRoute.null.slice(0, 3), "kill switch changes")] : []));
  summary(o, rollouts);
  document.getElementById("updated").textContent = "updated " + clock(o.time);
}

function plural(n, one, many) { return `${n} ${n === 1 ? one : many}`; }

// One line an on-call engineer reads first: what automation did, what waits for a person.
function summary(o, rollouts) {
  const ros = Object.values(rollouts);
  const rollouts_ = (status, what) => {
    const n = ros.filter(ro => ro.status === status).length;
    return n ? [`${plural(n, "rollout", "rollouts")} ${what}`] : [];
  };
  const guard = o.routes.filter(r => (r.source_under_kill || r.source) === "guard").length;
  const gates = ros.filter(ro => ro.status === "rolled_back" && !ro.reason.startsWith("guard")).length;
  const bad = [
    ...(o.kill ? ["KILL SWITCH ON: every route goes to legacy"] : []),
    ...(guard ? [`${plural(guard, "route", "routes")} rolled back by guard`] : []),
    ...(gates === 1 ? ["1 rollout rolled back by its gates"] : []),
    ...(gates > 1 ? [`${gates} rollouts rolled back by their gates`] : []),
    ...rollouts_("aborted", "aborted"),
    ...rollouts_("awaiting_approval", "awaiting approval"),
    ...rollouts_("paused", "paused")];
  const parts = [...bad, ...rollouts_("running", "running"), ...rollouts_("done", "done")];
  const line = document.getElementById("summary");
  const calm = `${plural(o.routes.length, "route", "routes")}, nothing rolled back, nothing waiting`;
  line.textContent = parts.length ? parts.join("  ·  ") : calm;
  line.className = bad.length ? "bad" : "good";
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
