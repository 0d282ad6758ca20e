"""Fractional percents (0.01 % steps): the SPEC's sub-bucket rule, end to end.

A percent a.f sends a user to new when bucket < a, or bucket == a and sub-bucket < f, where the
sub-bucket is the next eight hex digits of the same md5 modulo 100. Checked here against that
formula written out from the SPEC: in decide(), through real proxies with stand-in backends, the
admin API, the CLI, Redis between two replicas, a rollout, the guard, notifications and the console.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import httpx
import jsonschema
import pytest
import yaml
from conftest import ROOT, eventually, routes_yaml
from test_console import card, expand_all
from test_history import receiver  # noqa: F401 - a fixture, used by name

from splitter import bucketing, config
from splitter.config import as_percent, parse, parse_percent
from splitter.decide import Facts, decide
from splitter.runtime import make_snapshot
from splitter.store import State

TOKEN = "fraction-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IDS = [f"u{i}" for i in range(1500)]
RULE = "must be a number 0..100 with at most two decimals"


def place(uid: str, salt: str | None = None) -> tuple[int, int]:
    """(bucket, sub-bucket) as the SPEC writes them: hexdigest()[:8] and [8:16], modulo 100."""
    h = hashlib.md5((f"{salt}:{uid}" if salt else uid).encode()).hexdigest()
    return int(h[:8], 16) % 100, int(h[8:16], 16) % 100


def spec_new(uid: str, percent: float) -> bool:
    a, f = divmod(round(percent * 100), 100)
    b, sub = place(uid)
    return b < a or (b == a and sub < f)


def seed_new(uid: str, percent: int) -> bool:
    """The migration plan's ABTestManager: bucket < percent."""
    return int(hashlib.md5(uid.encode()).hexdigest()[:8], 16) % 100 < percent


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SPLITTER_")}, "SPLITTER_ADMIN_TOKEN": TOKEN}
    return subprocess.run([sys.executable, "-m", "splitter", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)


def via_proxy(s, users=IDS, path: str = "/api/auth/x") -> set[str]:
    """The users the proxy sent to new (the stand-in that answered, and the handler header agree)."""
    out = set()
    with httpx.Client(base_url=s.url, timeout=10) as c:
        for u in users:
            r = c.get(path, headers={"X-User-ID": u})
            assert r.status_code == 200 and (r.json()["backend"] == "new") == (r.headers["x-splitter-handler"] == "new_auth")
            if r.json()["backend"] == "new":
                out.add(u)
    return out


def route(s, name: str = "auth") -> dict:
    return next(r for r in httpx.get(s.admin + "/admin/routes").json() if r["name"] == name)


# --- the rule, without sockets -----------------------------------------------------------------


def test_a_percent_is_a_number_0_to_100_with_at_most_two_decimals_and_a_whole_one_stays_an_int():
    assert [as_percent(v) for v in (0, 100, 1.5, 0.01, 0.29, 99.99, 10.0, 33.33)] == [0, 100, 1.5, 0.01, 0.29, 99.99, 10, 33.33]
    assert type(as_percent(10.0)) is int and type(parse_percent("10")) is int and type(parse_percent("10.00")) is int
    for bad in (0.001, -1, 101, 100.01, -0.01, float("nan"), float("inf"), "abc", "1.5", None, True, [1], 1.0000001):
        assert as_percent(bad) is None, bad
    assert [parse_percent(t) for t in ("1.5", " 0.25 ", "0", "100")] == [1.5, 0.25, 0, 100]
    for bad in ("0.001", "-1", "101", "abc", "nan", "NaN", "inf", "", "1,5", "0x10"):
        assert parse_percent(bad) is None, bad


def test_fractional_percents_follow_the_spec_rule_and_integer_ones_the_seed_for_10000_ids():
    ids = [f"user-{i}" for i in range(10_000)]
    for pct in (0, 0.01, 0.25, 0.5, 1, 1.5, 7.77, 10, 10.01, 50, 99.99, 100):
        got = []
        for u in ids:
            d = bucketing.digest(u)
            got.append(bucketing.is_new(bucketing.bucket_of(d), d, bucketing.cut(pct)))
        assert got == [spec_new(u, pct) for u in ids], pct
        if pct == int(pct):
            assert got == [seed_new(u, int(pct)) for u in ids], f"{pct} picks exactly the seed's users"
    assert bucketing.cut(1.5) == (1, 50) and bucketing.cut(0.29) == (0, 29) and bucketing.cut(100) == (100, 0)


def test_raising_a_percent_only_adds_users_a_user_is_new_exactly_above_bucket_dot_sub_bucket():
    """new(u, p) == (bucket.sub-bucket < p) for every p in 0.01 steps: so a higher percent keeps everyone.
    In hundredths: 100 * bucket + sub-bucket < 100 * p."""
    grid = list(range(0, 301)) + list(range(400, 10_001, 100))  # 0.00 .. 3.00 in 0.01 steps, then 4 .. 100
    for u in IDS:
        b, sub = place(u)
        d = bucketing.digest(u)
        new_at = [bucketing.is_new(b, d, bucketing.cut(h / 100)) for h in grid]
        assert new_at == [100 * b + sub < h for h in grid], u


def test_decide_applies_the_percent_cut_once_per_snapshot():
    cfg = parse("""
backends: {legacy: {url: "http://127.0.0.1:1"}, new: {url: "http://127.0.0.1:2"}}
user_id: [{header: X-User-ID}]
routes:
  - {name: auth, prefix: /api/auth, percent: 1.5}
""")
    snap = make_snapshot(cfg, State())
    assert snap.percent == {"auth": 1.5} and snap.cuts == {"auth": (1, 50)}
    auth = cfg.by_name["auth"]
    decisions = {u: decide(snap, auth, Facts(None, u.encode())) for u in IDS}
    assert {u for u, d in decisions.items() if d and d.role == "new"} == {u for u in IDS if spec_new(u, 1.5)}
    assert all(d is not None and d.reason == "percent" and d.bucket == place(u)[0] for u, d in decisions.items())
    overridden = make_snapshot(cfg, State({"auth": 0.25}, {"auth": "override"}))
    assert overridden.cuts == {"auth": (0, 25)}
    d = decide(overridden, auth, Facts(None, b"u0"))
    assert d is not None and d.reason == "override" and (d.role == "new") == spec_new("u0", 0.25)


def test_the_ids_used_here_split_bucket_1_both_ways_at_1_5():
    """Else the end-to-end checks below could pass on the integer rule alone."""
    bucket1 = [u for u in IDS if place(u)[0] == 1]
    assert any(place(u)[1] < 50 for u in bucket1) and any(place(u)[1] >= 50 for u in bucket1)
    assert any(place(u)[0] == 0 and place(u)[1] >= 25 for u in IDS), "0.25 leaves some of bucket 0 on legacy"


# --- routes.yaml --------------------------------------------------------------------------------

FILE = """environment: production
backends:
  legacy: {url: "http://127.0.0.1:8001"}
  new: {url: "http://127.0.0.1:8002"}
routes:
  - name: auth
    prefix: /api/auth
    percent: PCT
  - name: upload
    prefix: /api/upload
    percent: {production: UPLOAD, staging: 2.5}
    shadow: {percent: 0.5}
    rollout: {steps: STEPS}
"""


def check(tmp_path, pct="1.5", upload="0.25", steps="[0.5, 1, 100]") -> subprocess.CompletedProcess[str]:
    f = tmp_path / "routes.yaml"
    f.write_text(FILE.replace("UPLOAD", upload).replace("STEPS", steps).replace("PCT", pct))
    return cli("check", str(f))


def test_routes_yaml_takes_two_decimals_and_check_refuses_a_third_in_one_line(tmp_path):
    ok = check(tmp_path)
    assert ok.returncode == 0 and "auth /api/auth 1.5%, upload /api/upload 0.25%" in ok.stdout, ok
    assert "auth /api/auth 10%" in check(tmp_path, pct="10.0").stdout, "a whole percent prints as an integer"
    cfg = config.load(str(tmp_path / "routes.yaml"))
    assert cfg.by_name["upload"].rollout.steps == (0.5, 1, 100) and cfg.by_name["upload"].shadow.percent == 0.5
    f = tmp_path / "routes.yaml"
    for kwargs, where, got in (
        ({"pct": "0.001"}, ":8: routes[0].percent", "0.001"),
        ({"upload": "0.001"}, ":11: routes[1].percent.production", "0.001"),
        ({"pct": "-1"}, ":8: routes[0].percent", "-1"),
        ({"pct": "101"}, ":8: routes[0].percent", "101"),
        ({"pct": ".nan"}, ":8: routes[0].percent", "nan"),
        ({"pct": "abc"}, ":8: routes[0].percent", "'abc'"),
    ):
        r = check(tmp_path, **kwargs)
        assert r.returncode == 1 and r.stderr.splitlines() == [f"{f}{where}: {RULE}, got {got}"], r
    r = check(tmp_path, steps="[0.5, 0.001, 100]")
    assert r.returncode == 1 and r.stderr.startswith(f"{f}:13: routes[1].rollout.steps: must be a rising list"), r
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr


def test_the_schema_says_two_decimals(tmp_path):
    check(tmp_path)
    doc = yaml.safe_load((tmp_path / "routes.yaml").read_text())
    validator = jsonschema.Draft202012Validator(config.json_schema())
    validator.validate(doc)
    for bad in (0.001, 101, -1):
        doc["routes"][0]["percent"] = bad
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(doc)
    assert json.loads((ROOT / "routes.schema.json").read_text())["$defs"]["route"]["properties"]["percent"]["oneOf"][0] == {
        "type": "number", "minimum": 0, "maximum": 100, "multipleOf": 0.01
    }


# --- one proxy, overrides in memory -------------------------------------------------------------

ROUTES = """  - name: auth
    prefix: /api/auth
    percent: 1.5
  - name: upload
    prefix: /api/upload
    percent: {production: 0.25, staging: 3}"""


@pytest.fixture
def stack(standin, splitter, receiver):  # noqa: F811 - the fixture imported above
    extra = f'notify:\n  - {{url: "{receiver.url}", format: slack}}'
    return splitter(routes_yaml(standin("legacy"), standin("new"), routes=ROUTES, extra=extra), env={"SPLITTER_ADMIN_TOKEN": TOKEN})


def test_percent_1_5_from_routes_yaml_sends_exactly_the_spec_users_through_proxy_admin_and_cli(stack):
    want = {u for u in IDS if place(u)[0] < 1 or (place(u)[0] == 1 and place(u)[1] < 50)}
    assert via_proxy(stack) == want and 15 <= len(want) <= 35, len(want)
    with httpx.Client(base_url=stack.admin) as c:
        views = {u: next(r for r in c.get("/admin/bucket", params={"user_id": u}).json()["routes"] if r["route"] == "auth") for u in IDS}
    assert {u for u, v in views.items() if v["backend"] == "new"} == want
    assert all((v["bucket"], v["sub_bucket"]) == place(u) and v["percent"] == 1.5 for u, v in views.items())
    in_bucket_1 = sorted((u for u in IDS if place(u)[0] == 1), key=lambda u: place(u)[1])
    for u in (in_bucket_1[0], in_bucket_1[-1]):  # the lowest and the highest sub-bucket of bucket 1
        for source in (["--config", str(stack.config)], ["--admin", stack.admin]):
            r = cli("bucket", u, "--json", *source)
            auth = next(x for x in json.loads(r.stdout)["routes"] if x["route"] == "auth")
            assert (auth["bucket"], auth["sub_bucket"], auth["percent"]) == (1, place(u)[1], 1.5)
            assert auth["backend"] == ("new" if u in want else "legacy"), (u, source)
        table = cli("bucket", u, "--admin", stack.admin).stdout
        assert any(line.split()[:4] == ["auth", "1", "1.5", auth["backend"]] for line in table.splitlines()), table
    assert route(stack) == {"name": "auth", "prefix": "/api/auth", "percent": 1.5, "file_percent": 1.5, "source": "file"}
    assert route(stack, "upload")["percent"] == 0.25
    assert stack.metric("splitter_route_percent", route="auth") == 1.5
    assert "auth                 /api/auth                    1.5   1.5  file" in cli("status", "--admin", stack.admin).stdout


def test_runtime_percents_round_trip_and_only_ever_add_users_as_they_rise(stack, receiver):  # noqa: F811
    seen: dict[float, set[str]] = {}
    for pct in (0.25, 0.5, 1, 1.5, 10):
        if pct == 0.5:  # the CLI, through the running proxy
            r = cli("set", "auth", "0.5", "--admin", stack.admin)
            assert r.returncode == 0 and r.stdout.strip() == "auth: 0.5% to new (file 1.5%, source override)", r
        else:
            r = httpx.put(stack.admin + "/admin/routes/auth", json={"percent": pct}, headers=AUTH)
            assert r.status_code == 200 and r.json()["percent"] == pct, r.text
        seen[pct] = via_proxy(stack)
        assert seen[pct] == {u for u in IDS if spec_new(u, pct)}, pct
    assert seen[0.25] < seen[0.5] < seen[1] < seen[1.5] < seen[10], "raising a percent only adds users"
    assert seen[10] == {u for u in IDS if seed_new(u, 10)} and seen[1] == {u for u in IDS if seed_new(u, 1)}
    assert route(stack) == {"name": "auth", "prefix": "/api/auth", "percent": 10, "file_percent": 1.5, "source": "override"}
    assert '"percent":10,' in httpx.get(stack.admin + "/admin/routes").text.replace(" ", ""), "10, not 10.0"
    r = httpx.put(stack.admin + "/admin/routes/auth", json={"percent": 10.0}, headers=AUTH)
    assert type(r.json()["percent"]) is int and cli("set", "auth", "10", "--admin", stack.admin).stdout.startswith("auth: 10% to new")
    events = [e for e in httpx.get(stack.admin + "/admin/history", params={"route": "auth"}).json() if e["action"] == "set"]
    assert [(e["old"], e["new"]) for e in reversed(events)][:5] == [(1.5, 0.25), (0.25, 0.5), (0.5, 1), (1, 1.5), (1.5, 10)]
    texts = eventually(lambda: [b["text"] for _, b in receiver.got if "0.25 % → 0.5 %" in b["text"]], timeout=5)
    assert "set auth: 0.25 % → 0.5 %" in texts[0]
    # refused whole: nothing changes
    for body in (b'{"percent": 0.001}', b'{"percent": -1}', b'{"percent": 101}', b'{"percent": "abc"}',
                 b'{"percent": NaN}', b'{"percent": true}', b'{"percent": null}', b'{}'):
        r = httpx.put(stack.admin + "/admin/routes/auth", content=body, headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"].startswith(f"percent {RULE}, got "), (body, r.text)
    for text in ("0.001", "-1", "101", "abc", "nan"):
        r = cli("set", "auth", text, "--admin", stack.admin)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"splitter set: percent {RULE}, got {text!r}"], r
    assert route(stack)["percent"] == 10 and stack.metric("splitter_route_percent", route="auth") == 10
    r = httpx.put(stack.admin + "/admin/routes/auth", json={"percent": 0.07}, headers=AUTH)
    assert r.json()["percent"] == 0.07 and stack.metric("splitter_route_percent", route="auth") == 0.07


# --- a fleet: Redis between two replicas --------------------------------------------------------


def test_splitter_set_0_5_on_one_replica_reaches_the_other_and_survives_redis_losing_its_data(standin, splitter, redis_server):
    text = routes_yaml(standin("legacy"), standin("new"), extra=f'redis: {{url: "{redis_server.url}", prefix: "t"}}')
    a = splitter(text, env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    (a.config.parent / "routes-b.yaml").write_text(text)
    b = splitter(text, env={"SPLITTER_ADMIN_TOKEN": TOKEN}, config=a.config.parent / "routes-b.yaml")
    r = cli("set", "auth", "0.5", "--admin", a.admin)
    assert r.returncode == 0 and r.stdout.startswith("auth: 0.5% to new"), r
    assert redis_server.command("HGET", "t:percent", "auth") == "0.5"
    eventually(lambda: route(b)["percent"] == 0.5 and route(b)["source"] == "override", timeout=3)
    want = {u for u in IDS if spec_new(u, 0.5)}
    assert via_proxy(b) == want and via_proxy(a) == want
    assert b.metric("splitter_route_percent", route="auth") == 0.5
    redis_server.command("FLUSHALL")  # Redis lost its data: the replicas write back what they knew
    eventually(lambda: redis_server.command("HGET", "t:percent", "auth") == "0.5", timeout=10)
    assert route(a)["percent"] == route(b)["percent"] == 0.5
    assert cli("set", "auth", "10", "--admin", b.admin).returncode == 0
    assert redis_server.command("HGET", "t:percent", "auth") == "10", "a whole percent is stored as an integer"
    eventually(lambda: route(a)["percent"] == 10 and type(route(a)["percent"]) is int, timeout=3)


# --- automation: a rollout's steps and the guard ------------------------------------------------


def test_a_rollout_walks_fractional_steps_and_the_guard_rolls_back_from_1_5(standin, splitter):
    routes = """  - name: auth
    prefix: /api/auth
    percent: 1.5
    guard: {max_error_rate: 0.05, min_requests: 20, window_s: 60}
  - name: upload
    prefix: /api/upload
    percent: 0
    rollout: {steps: [0.5, 1, 100], interval_s: 0.5}"""
    s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=routes), env={"SPLITTER_ADMIN_TOKEN": TOKEN})

    def history(name: str) -> list[dict]:
        return list(reversed(httpx.get(s.admin + "/admin/history", params={"route": name}).json()))

    done = eventually(lambda: [e for e in history("upload") if e["action"] == "rollout_done"], timeout=20)
    steps = [(e["old"], e["new"]) for e in history("upload") if e["action"] == "rollout_step"]
    assert steps == [(0, 0.5), (0.5, 1), (1, 100)] and done[0]["new"] == 100, steps
    view = next(r for r in httpx.get(s.admin + "/admin/rollouts").json() if r["route"] == "upload")
    assert view["steps"] == [0.5, 1, 100] and view["status"] == "done" and route(s, "upload")["percent"] == 100

    on_new = [u for u in IDS if spec_new(u, 1.5)]  # new answers 3 in 10 with 500 on .../flaky
    with httpx.Client(base_url=s.url) as c:
        for i in range(300):
            c.get("/api/auth/flaky", headers={"X-User-ID": on_new[i % len(on_new)]})
            if i % 20 == 19 and route(s)["source"] == "guard":
                break
    eventually(lambda: route(s)["source"] == "guard" and route(s)["percent"] == 0, timeout=15)
    trip = next(e for e in history("auth") if e["action"] == "guard_trip")
    assert (trip["old"], trip["new"]) == (1.5, 0)


# --- the console --------------------------------------------------------------------------------


def test_the_console_sets_and_shows_a_fractional_percent(standin, splitter, browser_page):
    s = splitter(routes_yaml(standin("legacy"), standin("new")), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    page = browser_page
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.goto(s.admin + "/ui")
    auth = card(page, "auth")
    auth.wait_for(timeout=5000)
    page.fill("#token", TOKEN)
    eventually(lambda: "(operator)" in page.inner_text("#whoami"), timeout=5)
    expand_all(page)
    auth.locator("input[type=number]").fill("0.001")
    auth.get_by_role("button", name="set percent").click()
    eventually(lambda: "at most two decimals" in page.inner_text("#status"), timeout=3)
    assert dialogs == [] and route(s)["percent"] == 50
    auth.locator("input[type=number]").fill("1.5")
    auth.get_by_role("button", name="set percent").click()
    eventually(lambda: route(s)["percent"] == 1.5, timeout=3)
    assert dialogs[-1].startswith("auth: 50 % → 1.5 %, 48.5 % of users (buckets 1–49) move back to legacy"), dialogs
    eventually(lambda: card(page, "auth").locator(".percent").inner_text() == "1.5 %", timeout=3)
