"""The console in a real browser: Debian's chromium driven by Playwright, nothing from the network."""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, eventually

from splitter.bucketing import bucket

TOKEN = "console-token"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("SPLITTER_ARTIFACTS", ROOT / ".artifacts"))


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


@pytest.fixture
def browser_page():
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield page
        browser.close()


def card(page, name: str):
    return page.locator(f'section.route[data-route="{name}"]')


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

    # a wrong token: the 401 message, nothing changes
    page.fill("#token", "wrong-token")
    card(page, "auth").get_by_role("button", name="roll back").click()
    eventually(lambda: "401" in page.inner_text("#status"), timeout=3)
    assert "wrong or missing admin token" in page.inner_text("#status")
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
