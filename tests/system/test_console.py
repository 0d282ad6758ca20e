"""The console in a real browser: Debian's chromium driven by Playwright, nothing from the network."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, eventually

from splitter.bucketing import bucket

TOKEN = "console-token"
ARTIFACTS = Path(os.environ.get("SPLITTER_ARTIFACTS", ROOT / ".artifacts"))

pytestmark = pytest.mark.xdist_group("console")  # one worker runs the module: one chromium for its tests


def yaml_text(legacy: str, new: str) -> str:
    return f"""environment: production
backends:
  legacy: {{url: "{legacy}", read_timeout: 5}}
  new: {{url: "{new}", read_timeout: 5}}
user_id:
  - header: X-User-ID
anonymous: legacy
routes:
  - name: auth
    prefix: /api/auth
    percent: 50
    shadow: {{percent: 100, methods: [GET]}}
  - name: upload
    prefix: /api/upload
    percent: 0
  - name: resume_review
    prefix: /api/resume
    percent: 100
"""


def card(page, name: str):
    return page.locator(f'section.route[data-route="{name}"]')


def expand_all(page) -> None:
    """The cards open compact (every route on one screen); the tests read and act on their details."""
    page.locator("#expand-all").wait_for(timeout=5000)
    if page.inner_text("#expand-all") == "expand all":
        page.click("#expand-all")


def test_the_console_shows_the_migration_and_acts_on_it(standin, splitter, browser_page):
    from test_cli import run

    s = splitter(yaml_text(standin("legacy"), standin("new")), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    page = browser_page
    seen: list[str] = []
    page.on("request", lambda req: seen.append(req.url))
    page.route(re.compile(r"^(?!" + re.escape(s.admin) + ").*"), lambda route: route.abort())  # nothing beyond the admin listener
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))

    headers = httpx.get(s.admin + "/ui").headers
    assert "script-src 'self'" in headers["content-security-policy"] and "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and "set-cookie" not in headers

    page.goto(s.admin + "/ui")
    expand_all(page)
    for name, pct, source in (("auth", 50, "file"), ("upload", 0, "file"), ("resume_review", 100, "file")):
        c = card(page, name)
        c.wait_for(timeout=5000)
        assert f"{pct} %" in c.locator(".percent").inner_text() and c.locator("[data-field=source]").inner_text() == source

    stop = threading.Event()

    def traffic() -> None:
        i = 0
        with httpx.Client(base_url=s.url) as client:
            while not stop.is_set():
                client.get("/api/auth/flaky", headers={"X-User-ID": f"c{i % 300}"})
                if i % 10 == 0:
                    client.get("/api/auth/xss", headers={"X-User-ID": f"c{i % 300}"})
                i += 1

    t = threading.Thread(target=traffic)
    t.start()
    try:

        def new_error_rate() -> float | None:
            row = card(page, "auth").locator("table tr").nth(2).locator("td").nth(3).inner_text()
            return float(row.split()[0]) / 100 if row.strip() not in ("-", "") else None

        rate = eventually(lambda: (r := new_error_rate()) is not None and 0.2 <= r <= 0.4 and r, timeout=3)  # within 3 s of the traffic starting
        assert 0.2 <= rate <= 0.4
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)  # the page under load
    finally:
        stop.set()
        t.join()

    # a shadow diff that carries markup is shown as text, never run (the latest mismatches: send it last)
    for i in range(3):
        httpx.get(s.url + "/api/auth/xss", headers={"X-User-ID": f"x{i}"})
    eventually(lambda: card(page, "auth").locator(".mismatch", has_text="<script>window.__xss = 1</script>").count() > 0, timeout=5)
    assert page.evaluate("window.__xss") is None and page.evaluate("document.scripts.length") == 1
    assert page.evaluate("document.querySelectorAll('img').length") == 0

    # no token, then a wrong one: read only, no change button on the page, nothing changes
    assert card(page, "auth").get_by_role("button", name="roll back").count() == 0 and page.inner_text("#whoami") == "no token: read only"
    page.fill("#token", "wrong-token")
    eventually(lambda: page.inner_text("#whoami") == "token: not valid", timeout=3)
    assert card(page, "auth").get_by_role("button").count() == 0 and not page.is_visible("#kill-toggle")
    assert next(r for r in httpx.get(s.admin + "/admin/routes").json() if r["name"] == "auth")["percent"] == 50

    # the right token: roll back auth from the page
    page.fill("#token", TOKEN)
    card(page, "auth").get_by_role("button", name="roll back").click()
    eventually(lambda: card(page, "auth").locator("[data-field=source]").inner_text() == "override", timeout=3)
    assert "0 %" in card(page, "auth").locator(".percent").inner_text()
    assert re.search(r"auth: 50 % → 0 %, 50 % of users \(buckets 0–49\) move back to legacy", dialogs[-1]), dialogs
    status = run("status", "--admin", s.admin).stdout
    assert re.search(r"^auth\s+/api/auth\s+0\s+50\s+override$", status, re.M), status
    assert f"console: {s.admin}/ui" in status
    assert page.evaluate("document.cookie") == "" and page.evaluate("sessionStorage.getItem('splitter-admin-token')") == TOKEN

    assert all(u.startswith(s.admin) for u in seen), [u for u in seen if not u.startswith(s.admin)]
    assert bucket("c1") >= 0  # the traffic used sticky ids


def test_the_console_shows_whose_token_and_each_routes_timeline(standin, splitter, browser_page, tmp_path):
    from test_history import ALICE, tokens_file

    env = {"SPLITTER_ADMIN_TOKENS_FILE": str(tokens_file(tmp_path))}
    s = splitter(yaml_text(standin("legacy"), standin("new")), env=env)
    alice = {"Authorization": f"Bearer {ALICE}"}
    canary = {"percent": 40, "reason": "canary for 10 % of EU"}
    assert httpx.put(s.admin + "/admin/routes/auth", json=canary, headers=alice).status_code == 200
    dana = {**alice, "X-Splitter-Actor": "dana"}
    assert httpx.put(s.admin + "/admin/routes/upload", json={"percent": 5}, headers=dana).status_code == 200
    page = browser_page
    page.on("dialog", lambda d: d.accept())
    page.goto(s.admin + "/ui")
    expand_all(page)
    page.fill("#token", ALICE)
    page.dispatch_event("#token", "change")
    eventually(lambda: page.inner_text("#whoami") == "token: alice (operator)", timeout=5)
    page.fill("#reason", "p95 up")
    card(page, "auth").get_by_role("button", name="roll back").click()
    eventually(lambda: card(page, "auth").locator(".timeline .event").count() == 2, timeout=5)
    newest, older = (card(page, "auth").locator(".timeline .event").nth(i) for i in (0, 1))
    def text(event, field: str) -> str:
        return str(event.locator(f".{field}").inner_text())

    def row(event) -> tuple[str, str, str]:
        return text(event, "who"), text(event, "what"), text(event, "why")

    assert row(newest) == ("alice console", "rollback 40 % → 0 %", "p95 up")
    assert row(older) == ("alice api", "set 50 % → 40 %", "canary for 10 % of EU")
    assert card(page, "upload").locator(".timeline .event .who").inner_text() == "alice for dana api"
    assert card(page, "resume_review").locator(".timeline").inner_text().endswith("no changes recorded")
    assert page.input_value("#reason") == "", "a reason goes with one change"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-history.png"), full_page=True)
@pytest.mark.parametrize("redraw", ["before_the_press", "between_press_and_release"])
def test_a_click_on_a_card_is_not_lost_to_the_redraw(standin, splitter, browser_page, redraw):
    """The page redraws every card each second (and when a token is typed): a redraw between a button's press
    and its release replaced the button under the pointer, and the click never happened (a third of a
    human's clicks at ~300 ms each). Both orders on purpose: the redraw is made to happen before the press,
    and between the press and the release; the roll back goes through either way."""
    s = splitter(yaml_text(standin("legacy"), standin("new")), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    page = browser_page
    page.on("dialog", lambda d: d.accept())
    page.goto(s.admin + "/ui")
    expand_all(page)
    page.fill("#token", TOKEN)
    eventually(lambda: "(operator)" in page.inner_text("#whoami") or "(admin)" in page.inner_text("#whoami"), timeout=5)
    button = card(page, "auth").get_by_role("button", name="roll back")
    # the button is found anew until its box is read: a redraw may replace it between the two (a loaded machine)
    box = eventually(lambda: button.count() == 1 and button.bounding_box(), timeout=5)
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    redraws = page.evaluate("document.querySelectorAll('section.route').length")
    if redraw == "before_the_press":
        page.evaluate("render(last)")
        page.mouse.down()
    else:
        page.mouse.down()
        page.evaluate("render(last)")
    page.mouse.up()
    assert redraws == 3
    percent = lambda: next(r for r in httpx.get(s.admin + "/admin/routes").json() if r["name"] == "auth")["percent"]  # noqa: E731
    eventually(lambda: percent() == 0, timeout=5)


ROLLOUTS_YAML = """environment: production
backends:
  legacy: {{url: "{legacy}", read_timeout: 5}}
  new: {{url: "{new}", read_timeout: 5}}
user_id:
  - header: X-User-ID
anonymous: legacy
routes:
  - name: checkout
    prefix: /api/checkout
    percent: 0
    rollout:
      steps: [20, {{percent: 50, approval: true}}, 100]
      interval_s: 2
      gates: {{max_error_rate: 0.5, min_requests: 3}}
  - name: auth
    prefix: /api/auth
    percent: 0
    rollout:
      steps: [25, 50, 100]
      interval_s: 2
      gates: {{max_error_rate: 0.05, max_p95_ms: 500, min_requests: 20, confidence: 0.95}}
  - name: search
    prefix: /api/search
    percent: 0
    rollout:
      steps: [10, 50, 100]
      interval_s: 600
      gates: {{max_error_rate: 0.05, max_p95_ratio: 1.5, min_requests: 100000}}
  - name: upload
    prefix: /api/upload
    percent: 50
    guard: {{max_error_rate: 0.1, min_requests: 10, window_s: 30}}
"""


class RolloutTraffic:
    """Two threads of GETs to every route of ROLLOUTS_YAML, sticky ids; until the block ends."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(2)]

    def _run(self) -> None:
        i = 0
        with httpx.Client(base_url=self.url) as client:
            while not self.stop.is_set():
                u = {"X-User-ID": f"oncall{i % 400}"}
                for path in ("/api/checkout/cart", "/api/auth/flaky", "/api/search/q", "/api/upload/status?code=500"):
                    client.get(path, headers=u)
                i += 1
                self.stop.wait(0.02)

    def __enter__(self) -> RolloutTraffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def rollout_of(s, name: str) -> dict:
    return next(r for r in httpx.get(s.admin + "/admin/rollouts").json() if r["route"] == name)


def test_the_console_tells_an_on_call_engineer_what_rollouts_did_and_what_waits(standin, splitter, browser_page):
    s = splitter(
        ROLLOUTS_YAML.format(legacy=standin("legacy"), new=standin("new")), env={"SPLITTER_ADMIN_TOKEN": TOKEN}
    )
    page = browser_page
    page.on("dialog", lambda d: d.accept())
    page.goto(s.admin + "/ui")
    expand_all(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with RolloutTraffic(s.url):
        eventually(
            lambda: rollout_of(s, "checkout")["status"] == "awaiting_approval"
            and rollout_of(s, "auth")["status"] == "rolled_back",
            timeout=20,
        )
        routes = lambda: {r["name"]: r for r in httpx.get(s.admin + "/admin/routes").json()}  # noqa: E731
        eventually(lambda: routes()["upload"]["source"] == "guard", timeout=10)
        said = ("1 route rolled back by guard", "1 rollout rolled back by its gates", "1 rollout awaiting approval")
        eventually(lambda: all(part in page.inner_text("#summary") for part in said), timeout=5)  # the page's next read
        what_automation_did(page)
        page.screenshot(path=str(ARTIFACTS / "console-rollouts.png"), full_page=True)
        promote_then_kill(page, s)


def what_automation_did(page) -> None:
    """Each card of ROLLOUTS_YAML as the on-call engineer reads it: the approval hold, the rollback
    with its evidence, the guard's trip, a gate waiting for traffic; screenshots of the first two."""
    checkout = card(page, "checkout")
    eventually(lambda: "AWAITING APPROVAL: at 20 %, next 50 % needs a promote" in checkout.inner_text(), timeout=5)
    checkout.screenshot(path=str(ARTIFACTS / "console-awaiting-approval.png"))

    auth = card(page, "auth")
    text = eventually(
        lambda: (x := auth.inner_text()) and "ROLLED BACK at" in x and "evidence: at 25 %, from" in x and x, timeout=5
    )
    assert re.search(r"ROLLED BACK at \d\d:\d\d:\d\d: gate failed at 25%: max_error_rate", text), text
    failed = auth.locator("tr.gate.fail", has_text="max_error_rate").first.inner_text()
    as_table = r"max_error_rate\s+\d+\.\d\d %\s+\[\d+\.\d\d % \.\. \d+\.\d\d %\]\s+≤ 5\.00 %\s+FAILS"
    assert re.search(as_table, failed), failed
    assert re.search(r"max_p95_ms\s+\d+\.\d+ ms", auth.inner_text()), "latency in ms, a few digits"
    auth.screenshot(path=str(ARTIFACTS / "console-rollback-evidence.png"))

    upload = card(page, "upload").inner_text()
    assert re.search(r"TRIPPED at \d\d:\d\d:\d\d \(error rate\)", upload), upload
    assert re.search(r"evidence over 30 s: new \d+ requests, 100\.00 % errors", upload), upload

    search = card(page, "search")
    waiting = search.locator("tr.gate", has_text="min_requests")
    assert "wait" in (waiting.get_attribute("class") or "") and "waiting" in waiting.inner_text(), "waiting, not ✗"
    spark = search.locator(".spark").inner_text()
    assert "req/s" in spark and "now" in spark and "−5 min" in spark, spark


def promote_then_kill(page, s) -> None:
    """Promote from the page (the step's window restarts, its evidence stays, labelled), then the
    kill switch during a rollout: the box says the rollout holds, the summary says why."""
    checkout = card(page, "checkout")
    page.fill("#token", TOKEN)
    checkout.get_by_role("button", name="promote", exact=True).click()
    # 15 s: the click, the confirm dialog, the POST and the page's next read, on a loaded machine (5 s ran out once)
    eventually(lambda: rollout_of(s, "checkout")["percent"] == 50, timeout=15)
    previous = r"previous step: at 20 %, from \d\d:\d\d:\d\d until \d\d:\d\d:\d\d: new \d+ requests"
    eventually(lambda: re.search(previous, checkout.inner_text()), timeout=15)

    assert httpx.put(s.admin + "/admin/kill", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    holds = "KILL SWITCH ON: everything goes to legacy; the rollout holds (at 10 %)"
    eventually(lambda: holds in card(page, "search").inner_text(), timeout=5)
    assert page.inner_text("#summary").startswith("KILL SWITCH ON")
    page.screenshot(path=str(ARTIFACTS / "console-kill-switch.png"), full_page=True)
    held = rollout_of(s, "search")
    assert held["kill"] and held["status"] == "running" and held["step"] == 10


COHORTS_YAML = """environment: production
backends:
  legacy: {{url: "{legacy}", read_timeout: 5}}
  new: {{url: "{new}", read_timeout: 5}}
user_id:
  - header: X-User-ID
anonymous: legacy
routes:
  - name: auth
    prefix: /api/auth
    percent: 10
    guard: {{max_error_rate: 0.2, min_requests: 50, window_s: 120}}
    cohorts:
      - {{name: staff, header: X-Staff, equals: "1", to: new}}
      - {{name: beta, users: [alice, bob], to: new}}
      - {{name: corp, jwt_claim: email, suffix: "@example.com", to: new}}
      - {{name: enterprise, cookie: plan, in: [enterprise, gold, platinum, diamond], to: legacy}}
  - name: upload
    prefix: /api/upload
    percent: 50
"""


def test_the_console_shows_cohort_requests_apart_from_old_vs_new(standin, splitter, browser_page):
    s = splitter(COHORTS_YAML.format(legacy=standin("legacy"), new=standin("new")), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    add = {"add": ["carol", "dave", "erin"], "reason": "beta testers"}
    r = httpx.put(s.admin + "/admin/routes/auth/cohorts/beta", json=add, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    with httpx.Client(base_url=s.url) as c:
        for _ in range(40):
            assert c.get("/api/auth/me", headers={"X-Staff": "1"}).status_code == 200
        for u in ("alice", "bob", "carol", "dave", "erin", "alice"):
            assert c.get("/api/auth/me", headers={"X-User-ID": u}).status_code == 200
        for i in range(7):
            assert c.get("/api/auth/me", headers={"X-User-ID": f"e{i}", "Cookie": "plan=gold"}).status_code == 200
        for i in range(30):  # the random sample the table compares: 10 % of them on new
            c.get("/api/auth/me", headers={"X-User-ID": f"r{i}"})
            c.get("/api/upload/file", headers={"X-User-ID": f"r{i}"})
    on_new = sum(bucket(f"r{i}") < 10 for i in range(30))
    page = browser_page
    page.goto(s.admin + "/ui")
    expand_all(page)
    box = card(page, "auth").locator(".box.cohorts")
    box.wait_for(timeout=5000)

    def row(name: str) -> list[str]:
        return [str(t) for t in box.locator(f'tr[data-cohort="{name}"] td').all_inner_texts()]

    assert "not in the comparison" in box.locator("h3").inner_text()
    assert box.locator(".label").inner_text().startswith("last 120 s (process): 53 requests sent by who they are")
    assert row("staff") == ["staff", "header X-Staff = 1", "→ new", "40"]
    assert row("beta") == ["beta", "users: 2 in routes.yaml + 3 at runtime", "→ new", "6"]
    assert row("corp") == ["corp", "JWT claim email ends with @example.com", "→ new", "0"]
    assert row("enterprise") == ["enterprise", "cookie plan in [enterprise, gold, platinum, … (4 values)]", "→ legacy", "7"]
    table = card(page, "auth").locator("table").first  # old vs new: the 30 random users only
    assert table.locator("tr").nth(1).locator("td").nth(1).inner_text() == str(30 - on_new)
    assert table.locator("tr").nth(2).locator("td").nth(1).inner_text() == str(on_new)
    assert card(page, "upload").locator(".box.cohorts").count() == 0, "a route without cohorts shows no box"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-cohorts.png"), full_page=True)


FOUR_YAML = """environment: production
backends:
  legacy: {{url: "{legacy}", read_timeout: 5}}
  new: {{url: "{new}", read_timeout: 5}}
user_id:
  - header: X-User-ID
anonymous: legacy
routes:
  - name: checkout
    prefix: /api/checkout
    percent: 0
    rollout:
      steps: [20, {{percent: 50, approval: true}}, 100]
      interval_s: 2
      gates: {{max_error_rate: 0.5, min_requests: 3}}
  - name: auth
    prefix: /api/auth
    percent: 0
    rollout:
      steps: [25, 50, 100]
      interval_s: 2
      gates: {{max_error_rate: 0.05, min_requests: 20, confidence: 0.95}}
  - name: search
    prefix: /api/search
    percent: 0
    rollout:
      steps: [20, 100]
      interval_s: 2
      gates: {{max_error_rate: 0.5, min_requests: 3}}
  - name: upload
    prefix: /api/upload
    percent: 50
"""


def test_the_console_fits_four_routes_on_one_screen_and_offers_only_what_works(standin, splitter, browser_page, tmp_path):
    """1280x720: four routes (one rolled back, one awaiting approval, one done, one set by hand) all visible
    at once; an operator is offered exactly the rollout actions TRANSITIONS takes for each status (none
    answers 409), the route buttons that apply, and a viewer no change button at all."""
    from test_history import ALICE, VICTOR, tokens_file

    from splitter.rollout import TRANSITIONS, Status

    s = splitter(FOUR_YAML.format(legacy=standin("legacy"), new=standin("new")), env={"SPLITTER_ADMIN_TOKENS_FILE": str(tokens_file(tmp_path))})
    with RolloutTraffic(s.url):
        eventually(lambda: [rollout_of(s, n)["status"] for n in ("checkout", "auth", "search")] == ["awaiting_approval", "rolled_back", "done"], timeout=30)
    r = httpx.put(s.admin + "/admin/routes/upload", json={"percent": 30}, headers={"Authorization": f"Bearer {ALICE}"})
    assert r.status_code == 200, r.text
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto(s.admin + "/ui")
    page.fill("#token", ALICE)
    eventually(lambda: page.inner_text("#whoami") == "token: alice (operator)", timeout=5)
    eventually(lambda: "routes.yaml still says 50 %" in card(page, "upload").inner_text(), timeout=5)
    for name in ("checkout", "auth", "search", "upload"):
        box = card(page, name).bounding_box()
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 720 and box["x"] + box["width"] <= 1280, (name, box)
    states = {n: card(page, n).locator("[data-field=state]").inner_text() for n in ("checkout", "auth", "search")}
    assert states == {"checkout": "awaiting approval", "auth": "rolled back", "search": "done"}, states
    assert page.get_attribute("#summary", "class") == "bad", "a rollback on the page: the banner is red"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-compact-1280.png"))

    page.click("#expand-all")
    offered = {}
    for name in ("checkout", "auth", "search"):
        status = Status(rollout_of(s, name)["status"])
        buttons = card(page, name).locator(".box.rollout button")
        offered[name] = {buttons.nth(i).get_attribute("data-action") for i in range(buttons.count())}
        assert offered[name] == {a for a in ("pause", "resume", "abort", "promote", "finish", "restart") if (status, a) in TRANSITIONS}
    assert offered["search"] == {"restart"} and offered["auth"] == {"resume", "restart"}, offered
    assert "pause" in offered["checkout"] and "resume" not in offered["checkout"], offered
    assert card(page, "upload").get_by_role("button", name="clear override").count() == 1
    assert card(page, "auth").get_by_role("button", name="roll back").count() == 0, "at 0 % there is nothing to roll back"
    page.screenshot(path=str(ARTIFACTS / "console-expanded-1280.png"), full_page=True)

    page.fill("#token", VICTOR)
    eventually(lambda: page.inner_text("#whoami") == "token: victor (viewer)", timeout=5)
    visible = [b for b in page.locator("button").all() if b.is_visible()]
    assert [b.inner_text() for b in visible] == ["collapse all", "migration"], "a viewer is offered no change"

    # the Migration view: GET /admin/progress, as `splitter progress` prints it
    page.click("#view-toggle")
    search = page.locator('#migration section[data-route="search"]')
    eventually(lambda: search.count() == 1 and "search: migrated, 100 % on new since" in search.inner_text(), timeout=10)
    assert page.locator("#routes").is_hidden()
    assert search.locator("[data-field=state]").inner_text() == "done"
    assert search.locator("tr[data-step]").count() >= 2, search.inner_text()
    auth = page.locator('#migration section[data-route="auth"]').inner_text()
    assert "auth: rolled back" in auth and "rollout rolled back" in auth, auth
    page.screenshot(path=str(ARTIFACTS / "console-migration-1280.png"), full_page=True)


RETIRING_YAML = """environment: production
backends:
  legacy: {{url: "{legacy}", read_timeout: 5}}
  new: {{url: "{new}", read_timeout: 5}}
user_id:
  - header: X-User-ID
anonymous: legacy
routes:
  - name: auth
    prefix: /api/auth
    percent: 0
    cohorts:
      - {{name: old_clients, header: X-Old-Client, equals: "1", to: legacy}}
    rollout: {{steps: [100], interval_s: 1, retire_after_s: 2}}
"""


def test_the_route_card_says_when_legacy_last_served_it_and_when_it_is_ready_to_retire(standin, splitter, browser_page):
    s = splitter(RETIRING_YAML.format(legacy=standin("legacy"), new=standin("new")))
    page = browser_page
    page.goto(s.admin + "/ui")
    line = card(page, "auth").locator("[data-field=retire]")
    eventually(lambda: line.inner_text().startswith("READY TO RETIRE: legacy has served this route no request"), timeout=20)
    assert line.inner_text().endswith(": splitter retire auth")
    httpx.get(s.url + "/api/auth/me", headers={"X-User-ID": "u1", "X-Old-Client": "1"})  # legacy, by its cohort
    eventually(lambda: re.fullmatch(r"legacy last served this route \d s ago; ready to retire in \d s", line.inner_text()),
               timeout=10)
    eventually(lambda: line.inner_text().startswith("READY TO RETIRE: legacy last served this route"), timeout=10)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-ready-to-retire.png"), full_page=True)
