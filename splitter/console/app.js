// splitter console: reads /admin/overview every second and renders it; actions go to the
// admin API with the token the operator typed (sessionStorage only, sent as the Bearer
// header; reads carry it too, for `admin: {reads: token}`). A route's cohorts are shown in a box
// of their own, never in the old-vs-new table. Each route's card ends with its change history
// (who, when, what, why). Every value from the server is put on the page as text (textContent, SVG
// attributes), never as HTML: route names and shadow diffs are untrusted.
"use strict";

const TOKEN_KEY = "splitter-admin-token";
let last = null;
let role = null;  // the typed token's role (whoami): change buttons only for an operator's token
const opened = new Set();  // the routes whose details are open (kept across the redraws)
let allOpen = false;

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
// One time format: 24-hour, the browser's zone (named once, in the header); a day other than today first.
const TIME = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
const DAY = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short" });
function clock(t) {
  if (none(t)) return "-";
  const d = new Date(t * 1000);
  return (d.toDateString() === new Date().toDateString() ? "" : DAY.format(d) + " ") + TIME.format(d);
}
function zone() {
  const name = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
  const off = -new Date().getTimezoneOffset();
  const hm = `${String(Math.floor(Math.abs(off) / 60)).padStart(2, "0")}:${String(Math.abs(off) % 60).padStart(2, "0")}`;
  return `times: 24-hour, ${name} (UTC${off < 0 ? "−" : "+"}${hm})`;
}
function canChange() { return role === "operator"; }

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
  role = null;
  if (!token) { who.textContent = "no token: read only"; who.className = "pill"; }
  else {
    try {
      const resp = await fetch("/admin/whoami", { headers: readHeaders(), credentials: "omit" });
      const data = await resp.json();
      role = resp.ok ? data.role : null;
      who.textContent = resp.ok ? `token: ${data.name} (${data.role})` : "token: not valid";
      who.className = "pill " + (resp.ok ? "good" : "bad");
    } catch (e) {
      who.textContent = "token: not checked";
      who.className = "pill";
    }
  }
  if (last) render(last);
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

function windowTable(w, label, legacyName) {
  const row = (name, side) => el("tr", {}, el("td", {}, name), el("td", {}, num(side.requests)),
    el("td", { class: side.errors ? "err" : "" }, num(side.errors)), el("td", { class: side.error_rate > 0.01 ? "err" : "" }, pct(side.error_rate)), el("td", {}, ms(side.p95_ms)));
  return el("table", {},
    el("tr", {}, el("th", {}, label || `last ${Math.round(w.span_s)} s (${w.scope})`),
      el("th", {}, "requests"), el("th", {}, "errors"), el("th", {}, "error rate"), el("th", {}, "p95")),
    row(legacyName || "old (legacy)", w.legacy), row("new", w.new));
}

// Percents move in 0.01 steps: 1.5 splits bucket 1 by its sub-bucket (docs/concepts.md).
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

function evidenceLine(w, legacyName) {
  const n = w.new;
  const l = w.legacy;
  const legacy = l && l.requests ? `  ·  ${legacyName || "legacy"} ${num(l.requests)} requests, p95 ${ms(l.p95_ms)}` : "";
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

// The buttons a rollout's status takes (its `actions`, from rollout.TRANSITIONS), for an operator only:
// nothing on the page answers 409.
const ROLLOUT_BUTTONS = [
  ["promote", "promote", {}, "promote to the next step"],
  ["finish", "promote --full", { full: true }, null],
  ["pause", "pause", {}, "pause the rollout"],
  ["resume", "resume", {}, "resume the rollout"],
  ["restart", "restart", {}, "start the rollout over at its first step"],
  ["abort", "abort", {}, "abort the rollout (percent to 0)"]];

function rolloutButtons(ro) {
  if (!canChange()) return null;
  const name = ro.route;
  const last = ro.steps[ro.steps.length - 1];
  const buttons = ROLLOUT_BUTTONS.filter(([action]) => (ro.actions || []).includes(action)).map(([action, label, body, what]) => {
    const path = `/admin/rollouts/${encodeURIComponent(name)}/${action === "finish" ? "promote" : action}`;
    const cls = action === "abort" ? "danger" : action === "promote" && ro.status === "awaiting_approval" ? "primary" : "";
    const said = `${name}: ${what || `promote straight to ${last} % (done)`}`;
    return el("button", { type: "button", class: cls, "data-action": action, onclick: () => act("POST", path, body, said) }, label);
  });
  return buttons.length ? el("div", { class: "actions" }, ...buttons) : null;
}

// The evidence of a step that ended: labelled with its percent and time; stale (muted, never the page's
// red) unless it is what rolled the rollout back.
function previousBlock(ro) {
  const prev = ro.previous;
  const cause = ro.status === "rolled_back";
  const what = cause ? "evidence" : ro.status === "done" ? "last step" : "previous step";
  const when = `at ${prev.percent} %, from ${clock(prev.since)} until ${clock(prev.until)}`;
  const legacyName = ro.legacy_from_step_before && prev.percent === 100 ? "legacy (remembered from the step before)" : null;
  const table = gateTable(prev.gates);
  if (!cause) table.classList.add("stale");
  return [el("div", { class: "label prev" + (cause ? "" : " stale") }, `${what}: ${when}: ${evidenceLine(prev, legacyName)}`), table];
}

function rolloutBox(ro, kill) {
  const [headline, tone] = rolloutHeadline(ro, kill);
  const approval = s => (ro.approval_steps && ro.approval_steps.includes(s) ? " (approval)" : "");
  const steps = ro.steps.map(s => (s === ro.step ? `[${s}]` : String(s)) + approval(s)).join(" → ");
  const box = el("div", { class: "box rollout " + tone },
    el("h3", {}, "rollout ", el("span", { class: "steps" }, steps)), el("div", { class: "headline" }, headline));
  if (ro.gates) {
    const remembered = ro.legacy_from_step_before && ro.previous
      ? `legacy (remembered: at ${ro.previous.percent} % until ${clock(ro.previous.until)})` : null;
    const since = `since ${ro.step} % at ${clock(ro.since)}` + (ro.confidence ? `, judged at ${ro.confidence}` : "");
    box.append(el("div", { class: "label" }, since + ": " + evidenceLine(ro, remembered)), gateTable(ro.gates));
  }
  if (ro.stalled) box.append(el("div", { class: "label waiting", "data-field": "stalled" }, "stalled: held past max_wait_s (still holding)"));
  for (const w of ro.waiting_for || []) box.append(el("div", { class: "label waiting", "data-gate": w.gate }, `waiting: ${w.says}`));
  if (ro.previous) box.append(...previousBlock(ro));
  const buttons = rolloutButtons(ro);
  if (buttons) box.append(buttons);
  return box;
}

// Identical mismatches (same method, statuses and differing fields) are one line with a count and their paths.
function shadowBox(mismatches) {
  const groups = new Map();
  for (const m of mismatches) {
    const key = JSON.stringify([m.method, m.primary, m.shadow, m.diff]);
    const g = groups.get(key) || { m, n: 0, paths: [] };
    g.n += 1;
    if (!g.paths.includes(m.path)) g.paths.push(m.path);
    groups.set(key, g);
  }
  const head = mismatches.length ? `latest ${plural(mismatches.length, "mismatch", "mismatches")}, ${plural(groups.size, "kind", "kinds")}` : "no recent mismatches";
  const box = el("div", { class: "box shadow" }, el("h3", {}, `shadow: ${head}`));
  for (const { m, n, paths } of groups.values()) {
    const more = paths.length > 3 ? ` and ${paths.length - 3} more` : "";
    box.append(el("div", { class: "group" }, el("b", { class: "count" }, `×${n}`),
      ` ${m.method} ${paths.slice(0, 3).join(", ")}${more} (primary ${m.primary}, shadow ${m.shadow})`));
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
      el("span", { class: "when" }, clock(e.at)),
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

// What a route's card says first, in one word and a tone (the chip in the compact view).
function routeState(r, ro) {
  if (r.source === "kill") return ["kill switch", "bad"];
  if ((r.source_under_kill || r.source) === "guard") return ["guard tripped", "bad"];
  if (r.ready_to_retire) return ["ready to retire", "good"];
  if (!ro) return [null, ""];
  const tone = { rolled_back: "bad", aborted: "bad", awaiting_approval: "hold", paused: "hold", done: "good", baking: "hold" };
  const failing = (ro.gates || []).some(g => g.verdict === "fail");
  return [ro.status.replace(/_/g, " ") + (failing ? ": a gate fails" : ""), failing ? "bad" : tone[ro.status] || ""];
}

// routes.yaml differs from what runs: said when someone should act on it (`splitter sync --write`), not while a
// rollout is still moving the route on purpose.
function fileLine(r, ro) {
  const moving = ro && !["done", "rolled_back", "aborted"].includes(ro.status);
  if (r.source === "kill" || r.file_percent === r.percent || moving) return el("span", { class: "file" }, `  (routes.yaml: ${r.file_percent} %)`);
  return el("span", { class: "file drift", "data-field": "drift" }, `  routes.yaml still says ${r.file_percent} %`);
}

function compactLine(r) {
  const w = r.window;
  if (!w) return null;
  const side = (name, x) => `${name} ${num(x.requests)} req, ${pct(x.error_rate)} err, p95 ${ms(x.p95_ms)}`;
  return el("div", { class: "compact" }, `${side("new", w.new)}  ·  ${side("legacy", w.legacy)}`);
}

function routeActions(r, input, name) {
  if (!canChange()) return null;
  const buttons = [input, el("button", { type: "button", onclick: () => {
    const to = Number(input.value);
    if (input.value.trim() === "" || !isPercent(to)) { status("percent must be a number 0..100 with at most two decimals", false); return; }
    act("PUT", `/admin/routes/${encodeURIComponent(name)}`, { percent: to }, usersLine(name, r.percent, to, r));
  } }, "set percent")];
  if (["override", "guard"].includes(r.source)) {
    buttons.push(el("button", { type: "button", onclick: () => act("DELETE", `/admin/routes/${encodeURIComponent(name)}/override`, null, `${name}: clear the override (back to routes.yaml: ${r.file_percent} %)`) }, "clear override"));
  }
  if (r.percent > 0) {
    buttons.push(el("button", { type: "button", class: "danger", onclick: () => act("POST", "/admin/rollback", { route: name }, usersLine(name, r.percent, 0, r) + " (roll back)") }, "roll back"));
  }
  return el("div", { class: "actions" }, ...buttons);
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
  const [word, tone] = routeState(r, rollout);
  const open = allOpen || opened.has(name);
  const card = el("section", { class: "route" + (open ? " open" : ""), "data-route": name },
    el("h2", {}, name, el("span", { class: "prefix" }, r.prefix), word ? el("span", { class: "state " + tone, "data-field": "state" }, word) : ""),
    el("div", {}, el("span", { class: "percent" }, `${r.percent} %`), " to new  ",
      el("span", { class: "source " + r.source, "data-field": "source" }, r.source), fileLine(r, rollout)));
  if (r.ready_to_retire !== undefined) card.append(retireLine(r));
  if (rollout) card.append(el("div", { class: "headline " + rolloutHeadline(rollout, r.source === "kill")[1] }, rolloutHeadline(rollout, r.source === "kill")[0]));
  if (r.error) card.append(el("div", { class: "err" }, r.error));
  const compact = compactLine(r);
  if (compact) card.append(compact);
  const details = el("details", {}, el("summary", {}, "details"));
  if (open) details.open = true;
  details.addEventListener("toggle", () => {
    if (details.open) opened.add(name); else { opened.delete(name); allOpen = false; }
    card.classList.toggle("open", details.open);
  });
  const remembered = rollout && rollout.legacy_from_step_before ? "old (legacy), remembered from the step before" : null;
  if (r.window) details.append(windowTable(r.window, windowLabel(r, rollout, now), remembered));
  const prev = r.window ? previousWindow(r) : null;  // a rollout's box labels its own previous step
  if (prev && !(rollout && rollout.previous)) details.append(prev);
  if (r.series) details.append(chart(r.series));
  if (r.cohorts) details.append(cohortBox(r.cohorts));
  if (r.guard) details.append(guardBox(r));
  if (rollout) details.append(rolloutBox(rollout, r.source === "kill"));
  if (r.shadow) details.append(shadowBox(r.shadow));
  if (events) details.append(timelineBox(events.slice(0, 5), "changes: who, when, what, why"));
  const actions = routeActions(r, input, name);
  if (actions) details.append(actions);
  card.append(details);
  return card;
}

// A redraw replaces every card's buttons: one between a button's press and its release would replace it
// under the pointer, and the click would never happen. So while a pointer is pressed (at most 2 s: a release
// outside the window may never reach the page) the overview is held and drawn once it is released.
let pressedAt = 0;
let held = null;
function release() {
  pressedAt = 0;
  if (held) { const o = held; held = null; render(o); }
}
document.addEventListener("pointerdown", () => { pressedAt = Date.now(); }, true);
// after the click the release dispatches (a task later), the held overview is drawn
document.addEventListener("pointerup", () => setTimeout(release, 0), true);
document.addEventListener("pointercancel", () => setTimeout(release, 0), true);

function render(o) {
  if (pressedAt && Date.now() - pressedAt < 2000) { held = o; return; }
  held = null;
  document.getElementById("env").textContent = `${o.environment} · v${o.version}`;
  document.getElementById("tz").textContent = zone();
  const redis = document.getElementById("redis");
  redis.textContent = o.redis.configured ? `redis ${o.redis.up ? "up" : "DOWN"} · ${o.redis.scope} windows` : `no redis · ${o.redis.scope} windows`;
  redis.className = "pill " + (o.redis.configured && !o.redis.up ? "bad" : "good");
  const reloads = document.getElementById("reloads");
  reloads.textContent = o.reloads.failures ? `${o.reloads.failures} config reload failures` + (o.reloads.last_error.length ? `: ${o.reloads.last_error[0]}` : "") : "config ok";
  reloads.className = "pill " + (o.reloads.last_error.length ? "bad" : "good");
  const kill = document.getElementById("kill");
  kill.textContent = o.kill ? "KILL SWITCH ON: everything to legacy" : "kill switch off";
  kill.className = "pill " + (o.kill ? "bad" : "good");
  const toggle = document.getElementById("kill-toggle");
  toggle.textContent = o.kill ? "turn kill switch off" : "kill switch on";
  for (const id of ["kill-toggle", "rollback-all"]) document.getElementById(id).hidden = !canChange();
  document.getElementById("expand-all").textContent = allOpen ? "collapse all" : "expand all";
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

// One line an on-call engineer reads first: what automation did, what waits for a person. Its colour is
// the worst thing on the page: red for anything rolled back, failing, down or broken; amber for what
// waits for a person; green only when nothing else is.
function summary(o, rollouts) {
  const ros = Object.values(rollouts);
  const rollouts_ = (status, what) => {
    const n = ros.filter(ro => ro.status === status).length;
    return n ? [`${plural(n, "rollout", "rollouts")} ${what}`] : [];
  };
  const guard = o.routes.filter(r => (r.source_under_kill || r.source) === "guard").length;
  const gates = ros.filter(ro => ro.status === "rolled_back" && !ro.reason.startsWith("guard")).length;
  const failing = ros.filter(ro => (ro.gates || []).some(g => g.verdict === "fail")).map(ro => ro.route);
  const bad = [
    ...(o.kill ? ["KILL SWITCH ON: every route goes to legacy"] : []),
    ...(guard ? [`${plural(guard, "route", "routes")} rolled back by guard`] : []),
    ...(gates === 1 ? ["1 rollout rolled back by its gates"] : []),
    ...(gates > 1 ? [`${gates} rollouts rolled back by their gates`] : []),
    ...(failing.length ? [`a gate fails on ${failing.join(", ")}`] : []),
    ...rollouts_("aborted", "aborted"),
    ...(o.redis.configured && !o.redis.up ? ["Redis is down"] : []),
    ...(o.reloads.last_error.length ? ["routes.yaml did not reload"] : []),
    ...o.routes.filter(r => r.error).map(r => `${r.name}: ${r.error}`)];
  const hold = [
    ...rollouts_("awaiting_approval", "awaiting approval"),
    ...rollouts_("paused", "paused"),
    ...(ros.some(ro => ro.stalled) ? [`${plural(ros.filter(ro => ro.stalled).length, "rollout", "rollouts")} stalled`] : [])];
  const parts = [...bad, ...hold, ...rollouts_("running", "running"), ...rollouts_("baking", "baking"), ...rollouts_("done", "done")];
  const line = document.getElementById("summary");
  const calm = `${plural(o.routes.length, "route", "routes")}, nothing rolled back, nothing waiting`;
  line.textContent = parts.length ? parts.join("  ·  ") : calm;
  line.className = bad.length ? "bad" : hold.length ? "hold" : "good";
}

// The Migration view: GET /admin/progress (what `splitter progress` prints) for the people the plan reports
// to — per route its summary line, state, timeline, each step's old vs new with 95 % intervals, incidents.
let view = "routes";

function ci(pair, f) { return pair ? `${f(pair[0])}–${none(pair[1]) ? "∞" : f(pair[1])}` : ""; }
function signed(x) { return none(x) ? "-" : `${x > 0 ? "+" : x < 0 ? "−" : "±"}${Math.abs(100 * x).toFixed(0)} %`; }

function stepRows(steps) {
  const head = el("tr", {}, ...["step", "days", "new errors (95 % CI)", "legacy errors", "new p95 (95 % CI)",
    "legacy p95", "p95 new vs legacy (95 % CI)"].map(h => el("th", {}, h)));
  const rows = steps.map(s => {
    const ch = s.p95_change;
    return el("tr", { "data-step": String(s.percent) }, el("td", {}, `${s.percent} %` + (none(s.until) ? " (now)" : "")),
      el("td", {}, s.days.toFixed(2)),
      el("td", {}, `${pct(s.new.error_rate)} (${ci(s.new.error_rate_ci, pct)})`), el("td", {}, pct(s.legacy.error_rate)),
      el("td", {}, `${ms(s.new.p95_ms)} (${ci(s.new.p95_ci_ms, ms)})`), el("td", {}, ms(s.legacy.p95_ms)),
      el("td", {}, ch ? `${signed(ch.estimate)} (${ci(ch.interval, signed)})` : "-"));
  });
  return el("table", { class: "steps" }, head, ...rows);
}

function migrationCard(r) {
  const card = el("section", { class: "route migration", "data-route": r.route },
    el("h2", {}, r.route, el("span", { class: "state", "data-field": "state" }, r.state)),
    el("div", { class: "summary-line", "data-field": "summary" }, r.summary));
  const tl = r.timeline.map(t => el("tr", {}, el("td", {}, clock(t.at)), el("td", {}, `${none(t.from) ? "-" : t.from} → ${t.percent} %`),
    el("td", {}, t.who), el("td", { class: "why" }, t.why), el("td", {}, t.days.toFixed(2))));
  card.append(el("h3", {}, "timeline"), tl.length ? el("table", { class: "timeline-table" },
    el("tr", {}, ...["when", "percent", "who", "why", "days"].map(h => el("th", {}, h))), ...tl) : el("div", { class: "muted" }, "no change recorded"));
  if (r.steps.length) card.append(el("h3", {}, "old vs new at each step"), stepRows(r.steps));
  if (r.incidents.length) {
    card.append(el("h3", {}, "incidents"), ...r.incidents.map(i => el("div", { class: "label incident" },
      `${clock(i.at)} ${i.kind} (${i.who})${i.why ? ": " + i.why : ""}`)));
  }
  return card;
}

async function migration() {
  const box = document.getElementById("migration");
  try {
    const resp = await fetch("/admin/progress", { headers: readHeaders(), credentials: "omit" });
    const doc = await resp.json();
    if (!resp.ok) { status(`${resp.status}: ${doc.error || resp.statusText}`, false); return; }
    box.replaceChildren(el("p", { class: "label" }, `generated ${clock(doc.generated_at)} · ${doc.environment} · ` +
      "each interval at 95 %; `splitter progress --format markdown` prints the same for a wiki"), ...doc.routes.map(migrationCard));
  } catch (e) {
    status("cannot read /admin/progress: " + e, false);
  }
}

function showView() {
  const routes = view === "routes";
  document.getElementById("routes").hidden = !routes;
  document.getElementById("migration").hidden = routes;
  document.getElementById("expand-all").hidden = !routes;
  document.getElementById("view-toggle").textContent = routes ? "migration" : "routes";
  if (!routes) migration();
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
  token.addEventListener("input", () => whoami());  // the buttons a token allows appear as it is typed
  whoami();
  document.getElementById("kill-toggle").addEventListener("click", () => {
    const on = last && last.kill;
    act(on ? "DELETE" : "PUT", "/admin/kill", null, on ? "kill switch OFF: routing by percent again" : "kill switch ON: every request of every route goes to legacy");
  });
  document.getElementById("rollback-all").addEventListener("click", () => act("POST", "/admin/rollback", { all: true }, "roll back EVERY route to legacy (percent 0)"));
  document.getElementById("expand-all").addEventListener("click", () => {
    allOpen = !allOpen;
    if (!allOpen) opened.clear();
    if (last) render(last);
  });
  document.getElementById("view-toggle").addEventListener("click", () => { view = view === "routes" ? "migration" : "routes"; showView(); });
  refresh();
  setInterval(refresh, 1000);
  setInterval(() => { if (view === "migration") migration(); }, 5000);
});
