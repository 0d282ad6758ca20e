"""`splitter progress` and GET /admin/progress: a two-day migration seeded through the store (history and
rollout records, imported with `splitter state import`, the path a restore takes), read back by a real proxy
and rendered as markdown, JSON, text and HTML (in Chromium)."""

from __future__ import annotations

import json
import random
import time

import httpx
from conftest import eventually, routes_yaml
from test_cli import TOKEN, run
from test_console import ARTIFACTS
from test_operator_loop import Paced, auth_route, rollout_view, strict_loads

from splitter import progress
from splitter.window import Counts, bucket_index

DAY = 86400.0
ROUTES = """  - name: auth
    prefix: /api/auth
    percent: 10
    rollout: {steps: [10, 50, 100], interval_s: 86400, gates: {min_requests: 100, max_error_rate: 0.01}}
  - name: upload
    prefix: /api/upload
    percent: 0"""


def counts(n: int, errors: int, p95_ms: float, seed: int) -> Counts:
    """n requests, 95 % of them at most p95_ms (uniform below it), the rest up to twice that."""
    rnd, c = random.Random(seed), Counts()
    for i in range(n):
        ms = rnd.uniform(0.5, 1.0) * p95_ms if i < 0.95 * n - 1 else rnd.uniform(1.02, 2.0) * p95_ms
        idx = bucket_index(ms / 1000)
        c.h[idx] = c.h.get(idx, 0) + 1
    c.n, c.e = n, errors
    return c


def step(percent: int, since: float, until: float, new: Counts, legacy: Counts) -> dict:
    gates = [{"gate": "min_requests", "value": new.n, "threshold": 100, "ok": True},
             {"gate": "max_error_rate", "value": round(new.e / new.n, 5), "threshold": 0.01, "ok": True}]
    return {"percent": percent, "since": since, "until": until, "new": new.totals().view(),
            "legacy": legacy.totals().view(), "gates": gates, "verdict": "pass",
            "counts": {"new": new.fields(), "legacy": legacy.fields()}}


def seeded(t0: float) -> dict:
    """Day 0 09:00 start at 10 %; a kill switch for half an hour on day 1; 50 % on day 1, 100 % on day 2."""
    legacy_50 = counts(10_000, 3, 120.0, 3)
    steps = [
        step(10, t0, t0 + DAY, counts(300, 0, 110.0, 1), counts(2_700, 1, 120.0, 2)),
        step(50, t0 + DAY, t0 + 2 * DAY, counts(10_000, 2, 100.0, 4), legacy_50),
        step(100, t0 + 2 * DAY, t0 + 2.4 * DAY, counts(20_000, 4, 100.0, 5), legacy_50),  # legacy of the step before
    ]
    history = [  # newest first, as GET /admin/history and an export hold it
        {"at": t0 + 2.4 * DAY, "who": "rollout", "source": "rollout", "action": "rollout_done", "route": "auth",
         "old": 100, "new": 100, "reason": "all steps passed"},
        {"at": t0 + 2 * DAY, "who": "rollout", "source": "rollout", "action": "rollout_step", "route": "auth",
         "old": 50, "new": 100, "reason": "gates held for 86400 s at 50 %"},
        {"at": t0 + 1.5 * DAY + 1800, "who": "alice", "source": "cli", "action": "kill", "route": None,
         "old": True, "new": False, "reason": "provider back"},
        {"at": t0 + 1.5 * DAY, "who": "alice", "source": "cli", "action": "kill", "route": None,
         "old": False, "new": True, "reason": "payment provider outage"},
        {"at": t0 + DAY, "who": "rollout", "source": "rollout", "action": "rollout_step", "route": "auth",
         "old": 10, "new": 50, "reason": "gates held for 86400 s at 10 %"},
        {"at": t0, "who": "rollout", "source": "rollout", "action": "rollout_step", "route": "auth",
         "old": 0, "new": 10, "reason": "start"},
    ]
    record = {"status": "done", "step": 2, "since": t0 + 2.4 * DAY, "reason": "all steps passed",
              "previous": {k: v for k, v in steps[-1].items() if k != "counts"}, "past_steps": steps}
    return {"format": 1, "kill": False, "overrides": {"auth": {"percent": 100, "source": "rollout"}},
            "rollouts": {"auth": record}, "members": {}, "history": history}


def seed(s, tmp_path) -> float:
    t0 = time.time() - 2.5 * DAY
    export = tmp_path / "state.json"
    export.write_text(json.dumps(seeded(t0)))
    r = run("state", "import", str(export), "--admin", s.admin)
    assert r.returncode == 0, r
    return t0


def test_progress_markdown_after_a_two_day_migration_tells_the_story_with_intervals(standin, splitter, tmp_path):
    s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=ROUTES), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    t0 = seed(s, tmp_path)
    day = [progress.date(t0 + k * DAY) for k in range(3)]
    r = run("progress", "--format", "markdown", "--admin", s.admin)
    assert r.returncode == 0, r
    md = r.stdout
    print(md)
    lines = md.splitlines()
    # the timeline: each move, who, why and the days at it
    assert f"| {progress.when(t0)} | 0 → 10 % | rollout | start | 1.00 |" in lines
    assert f"| {progress.when(t0 + DAY)} | 10 → 50 % | rollout | gates held for 86400 s at 10 % | 1.00 |" in lines
    at_100 = f"| {progress.when(t0 + 2 * DAY)} | 50 → 100 % | rollout | gates held for 86400 s at 50 % | 0.50 |"
    assert at_100 in lines
    # per step: both sides with intervals, and new against legacy in words only as far as the interval goes
    row_50 = next(line for line in lines if line.startswith("| 50 % | 1.00 | 10000 / 10000 |"))
    assert "0.020 % (0.002 %–0.072 %)" in row_50 and "0.030 % (0.006 %–0.088 %)" in row_50, row_50
    assert "p95 16 % lower on new, 95 % CI 8–24 %" in row_50, row_50
    row_10 = next(line for line in lines if line.startswith("| 10 % | 1.00 | 300 / 2700 |"))
    assert "lower on new" not in row_10 and "not shown different" in row_10, row_10  # 300 requests decide nothing
    # incidents and the summary line in the plan's words
    assert f"- {progress.when(t0 + 1.5 * DAY)}: kill switch on by alice — payment provider outage" in lines
    summary = f"auth: migrated, 100 % on new since {day[2]}; p95 −16 %, errors 0.02 % vs 0.03 %"
    assert f"**{summary}**" in lines and lines[-2:] == [f"- {summary}", "- upload: not started, 0 % on new"], lines

    doc = strict_loads(run("progress", "auth", "--format", "json", "--admin", s.admin).stdout)
    assert [r["route"] for r in doc["routes"]] == ["auth"] and doc["routes"][0]["state"] == "done"
    change = doc["routes"][0]["steps"][1]["p95_change"]
    assert change["interval"][0] < change["estimate"] < change["interval"][1] < 0, change
    assert httpx.get(s.admin + "/admin/progress?route=nope").status_code == 404

    text = run("progress", "--admin", s.admin).stdout
    assert "  incident " in text and text.rstrip().endswith("upload: not started, 0 % on new"), text


def test_progress_html_is_one_page_that_reads_in_chromium(standin, splitter, tmp_path, browser_page):
    s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=ROUTES), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    seed(s, tmp_path)
    r = run("progress", "--format", "html", "--admin", s.admin)
    assert r.returncode == 0 and r.stdout.startswith("<!doctype html>"), r
    asked: list[str] = []
    browser_page.on("request", lambda req: asked.append(req.url))
    page_file = tmp_path / "progress.html"
    page_file.write_text(r.stdout)
    browser_page.goto(page_file.as_uri())
    assert asked == [page_file.as_uri()]  # self-contained: nothing else fetched
    auth = browser_page.locator("#route-auth")
    assert auth.locator(".badge").inner_text() == "done"
    assert "p95 16 % lower on new" in auth.locator("td.better").first.inner_text()
    assert browser_page.locator("#route-upload .summary").inner_text() == "upload: not started, 0 % on new"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser_page.screenshot(path=str(ARTIFACTS / "progress.png"), full_page=True)


def test_a_real_rollout_keeps_each_step_with_its_evidence_for_progress(standin, splitter):
    """Short steps under paced traffic: each ended step stays in the rollout record with its counts, after
    `previous` has moved on; at 100 % legacy's side is that of the step before."""
    rollout = "{steps: [50, 100], interval_s: 2, gates: {min_requests: 10, max_error_rate: 0.5}}"
    s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=auth_route(rollout)))
    with Paced(s.url, rate=40):
        eventually(lambda: rollout_view(s)["status"] == "done", timeout=60)
    auth = strict_loads(httpx.get(s.admin + "/admin/progress?route=auth").text)["routes"][0]  # type: ignore[index]
    assert auth["state"] == "done" and [t["percent"] for t in auth["timeline"]] == [50, 100], auth["timeline"]
    at_50, at_100 = auth["steps"]
    assert (at_50["percent"], at_100["percent"]) == (50, 100) and at_50["until"] <= at_100["since"]
    assert at_50["new"]["requests"] >= 10 and at_50["legacy"]["requests"] >= 1 and at_50["verdict"] == "pass"
    assert at_100["new"]["requests"] >= 10 and at_100["legacy"] == at_50["legacy"]
    assert {g["gate"] for g in at_50["gates"]} == {"min_requests", "max_error_rate"}
    assert auth["summary"].startswith(f"auth: migrated, 100 % on new since {progress.date(at_100['since'])}; p95 ")


def test_progress_reads_a_route_moved_by_hand_from_a_real_prometheus(standin, splitter, procs, tmp_path):
    """No rollout, so no records: with --prometheus, each percent the route held is read over its span."""
    import shutil

    import yaml
    from conftest import Proc, free_port

    from splitter.bucketing import bucket

    s = splitter(routes_yaml(standin("legacy"), standin("new")), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    work = tmp_path / "prom"
    work.mkdir()
    (work / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "splitter", "static_configs": [{"targets": [f"127.0.0.1:{s.admin_port}"]}]}],
    }))
    port = free_port()
    procs.append(Proc([shutil.which("prometheus") or "prometheus", f"--config.file={work / 'prometheus.yml'}",
                       f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                      log=work / "prometheus.log"))
    base = f"http://127.0.0.1:{port}"

    def scraped(n: int) -> bool:  # Prometheus is ready and its last scrape saw n requests to auth
        r = httpx.get(base + "/api/v1/query", params={"query": 'sum(splitter_requests_total{route="auth"})'})
        return r.status_code == 200 and [float(x["value"][1]) for x in r.json()["data"]["result"]] == [n]

    def send(users: list[str]) -> None:
        with httpx.Client(base_url=s.url, timeout=10) as c:
            for u in users:
                assert c.get("/api/auth/me", headers={"X-User-ID": u}).status_code == 200

    ids = [f"f{i}" for i in range(100)]
    first = [next(u for u in ids if bucket(u) < 30), next(u for u in ids if bucket(u) >= 50)]
    send(first)  # one to each side: the series exist before what is measured (increase() counts from a first scrape)
    eventually(lambda: scraped(2), timeout=30)
    send([f"w{i}" for i in range(40)])
    eventually(lambda: scraped(42), timeout=15)
    assert run("set", "auth", "30", "--reason", "by hand", "--admin", s.admin).returncode == 0
    moved = time.time()

    def scraped_since_move() -> bool:  # a sample inside the 30 % span before its traffic: increase() starts there
        r = httpx.get(base + "/api/v1/query", params={"query": 'max(timestamp(splitter_requests_total{route="auth"}))'})
        return float(r.json()["data"]["result"][0]["value"][1]) > moved
    eventually(scraped_since_move, timeout=15)
    users = [f"u{i}" for i in range(100)]
    for k in range(5):  # in batches, each scraped: the span holds samples through its traffic, as days of it would
        send(users[k * 20 : (k + 1) * 20])
        eventually(lambda k=k: scraped(62 + 20 * k), timeout=15)

    r = run("progress", "auth", "--format", "json", "--prometheus", base, "--since", "1h", "--admin", s.admin)
    assert r.returncode == 0, r
    auth = strict_loads(r.stdout)["routes"][0]  # type: ignore[index]
    at_50, at_30 = auth["steps"]
    assert (at_50["percent"], at_30["percent"], at_30["until"]) == (50, 30, None) and at_30["evidence"] == "prometheus"
    expected = sum(bucket(u) < 30 for u in users)
    new, legacy = at_30["new"]["requests"], at_30["legacy"]["requests"]
    # increase() extrapolates to the span's ends: over a span of seconds (days in real use) the counts scale
    # up by some tens of percent, both sides by the same factor (the same scrapes): the share is what was sent
    assert 100 <= new + legacy <= 180 and abs(new / (new + legacy) - expected / 100) < 0.06, (new, legacy, expected)
    assert 40 <= at_50["new"]["requests"] + at_50["legacy"]["requests"] <= 90, at_50
    assert at_30["new"]["error_rate_ci"][0] == 0 and at_30["new"]["p95_ci_ms"] is not None
    assert auth["summary"].startswith("auth: running, 30 % on new since "), auth["summary"]
    md = run("progress", "auth", "--format", "markdown", "--prometheus", base, "--since", "1h", "--admin", s.admin)
    assert "Steps read from Prometheus" in md.stdout and "| 30 % (current) |" in md.stdout, md.stdout
    bad = run("progress", "--prometheus", base, "--since", "thirty", "--admin", s.admin)
    assert bad.returncode == 2 and "--since 'thirty': a whole number and a unit" in bad.stderr, bad
