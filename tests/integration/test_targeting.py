"""Targeting before the percent (SPEC "Targeting"): a route's own backends and its cohorts, from
routes.yaml through decide() to what a real proxy forwards, counts and logs."""

import asyncio
import base64
import json
import subprocess
import sys
import time

import httpx
import jsonschema
import pytest
import websockets
import yaml
from backends import start_backend
from conftest import eventually, free_port, routes_yaml

from splitter import config
from splitter.bucketing import bucket

STAFF = {"X-Staff": "1"}


def users(n: int, new: bool, percent: int = 50) -> list[str]:
    """n user ids whose bucket is (new) or is not (legacy) below percent."""
    out = [f"u{i}" for i in range(2000) if (bucket(f"u{i}") < percent) == new]
    return out[:n]


# --- routes.yaml -------------------------------------------------------------------------------

BASE = """backends:
  legacy: {url: "http://127.0.0.1:8001"}
  new: {url: "http://127.0.0.1:8002"}
  upload_service: {url: "http://127.0.0.1:8003", read_timeout: 7, max_connections: 3}
user_id: [{header: X-User-ID}, {jwt_sub: X-Token}]
routes:
  - name: auth
    prefix: /api/auth
    percent: 0
  - name: upload
    prefix: /api/upload
    percent: 0
    new: upload_service
    cohorts:
      - {name: staff, header: X-Staff, equals: "1", to: new}
      - {name: beta, users: [alice, 42], to: new}
      - {name: corp, jwt_claim: email, suffix: "@example.com", to: new}
      - {name: enterprise, cookie: plan, in: [enterprise, gold], to: legacy}
"""


def test_backends_are_an_open_map_and_cohorts_load_in_order():
    cfg = config.parse(BASE)
    assert cfg.backends["upload_service"].read_timeout == 7 and cfg.backends["upload_service"].max_connections == 3
    upload, auth = cfg.by_name["upload"], cfg.by_name["auth"]
    assert dict(upload.backends) == {"legacy": "legacy", "new": "upload_service"}
    assert dict(auth.backends) == {"legacy": "legacy", "new": "new"}
    assert [(c.name, c.matcher, c.key, c.op, c.values, c.to) for c in upload.cohorts] == [
        ("staff", "header", "X-Staff", "equals", ("1",), "new"),
        ("beta", "users", "", "", (), "new"),
        ("corp", "jwt_claim", "email", "suffix", ("@example.com",), "new"),
        ("enterprise", "cookie", "plan", "in", ("enterprise", "gold"), "legacy"),
    ]
    staff, beta, corp, _ = upload.cohorts
    assert beta.users == frozenset({b"alice", b"42"}), "ids as bytes; a YAML number is its digits"
    assert staff.raw_key == b"x-staff" and staff.reason == "cohort:staff", "precomputed at load"
    assert corp.raw_token_header == b"x-token", "a jwt_claim reads the token user_id's jwt_sub names"
    assert auth.cohorts == ()


def test_the_schema_takes_any_backend_name_and_the_cohort_keys():
    schema = jsonschema.Draft202012Validator(config.json_schema())
    doc = yaml.safe_load(BASE)
    schema.validate(doc)
    for mistake in (
        lambda d: d["backends"].update({"Up-Load": {"url": "http://127.0.0.1:1"}}),
        lambda d: d["backends"].pop("new"),
        lambda d: d["routes"][1]["cohorts"].append({"name": "x", "users": ["a"]}),  # no `to`
        lambda d: d["routes"][1]["cohorts"][0].update(colour="red"),
    ):
        bad = yaml.safe_load(BASE)
        mistake(bad)
        with pytest.raises(jsonschema.ValidationError):
            schema.validate(bad)


ROUTE = "    new: upload_service\n    cohorts:\n"
COHORT_ERRORS = [
    ("      - {name: a, to: new}", "routes[1].cohorts[0]: needs a matcher: one of header, cookie, jwt_claim, users"),
    (
        "      - {name: a, header: X-A, cookie: b, equals: '1', to: new}",
        "routes[1].cohorts[0].cookie: one matcher per cohort, got header and cookie",
    ),
    ("      - {name: a, header: X-A, equals: '1'}", "routes[1].cohorts[0].to: must be new or legacy"),
    ("      - {name: a, header: X-A, equals: '1', to: upload_service}", "routes[1].cohorts[0].to: must be new or legacy"),
    ("      - {name: a, header: X-A, to: new}", "routes[1].cohorts[0]: header needs exactly one of equals, in, prefix"),
    (
        "      - {name: a, cookie: c, equals: x, prefix: y, to: new}",
        "routes[1].cohorts[0].prefix: cookie needs exactly one of equals, in, prefix, suffix, got equals and prefix",
    ),
    ("      - {name: a, jwt_claim: email, in: x, to: new}", "routes[1].cohorts[0].in: must be a non-empty list"),
    ("      - {name: a, users: [x], equals: x, to: new}", "routes[1].cohorts[0].equals: a users cohort matches"),
    ("      - {name: Staff!, users: [x], to: new}", "routes[1].cohorts[0].name: must match [a-z0-9_]+"),
    ("      - {name: a, users: [x], to: new, colour: red}", "routes[1].cohorts[0].colour: unknown key"),
    (
        "      - {name: a, users: [x], to: new, trusted: true}",
        "routes[1].cohorts[0].trusted: is for header, cookie and jwt_claim cohorts; a users cohort matches the user id",
    ),
    ("      - {name: a, header: X-A, equals: '1', to: new, trusted: 1}", "routes[1].cohorts[0].trusted: must be true or"),
    (
        "      - {name: a, header: X-A, equals: '1', to: new, trusted: true}",
        "routes[1].cohorts[0].trusted: needs trusted_proxies",
    ),
    (
        "      - {name: a, users: [x], to: new}\n      - {name: a, users: [y], to: legacy}",
        "routes[1].cohorts[1].name: duplicate cohort name 'a' in this route (also routes[1].cohorts[0])",
    ),
]


@pytest.mark.parametrize("cohorts,message", COHORT_ERRORS, ids=lambda v: v if v.startswith("routes") else None)
def test_each_cohort_mistake_is_one_line_naming_file_line_and_key(tmp_path, cohorts, message):
    text = BASE.split("    new: upload_service\n")[0] + ROUTE + cohorts + "\n"
    f = tmp_path / "routes.yaml"
    f.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load(f)
    hits = [e for e in err.value.errors if message in e]
    assert len(hits) == 1, err.value.errors
    last = cohorts.splitlines()[-1] if "cohorts[1]" in message else cohorts.splitlines()[0]
    assert hits[0].startswith(f"{f}:{text.splitlines().index(last) + 1}: "), (hits, err.value.errors)


def test_a_users_cohort_holds_at_most_max_cohort_members(tmp_path):
    many = ", ".join(f"u{i}" for i in range(config.MAX_COHORT_MEMBERS + 1))
    f = tmp_path / "routes.yaml"
    f.write_text(BASE.split("    cohorts:\n")[0] + f"    cohorts:\n      - {{name: big, users: [{many}], to: new}}\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(f)
    assert err.value.errors == [f"{f}:15: routes[1].cohorts[0].users: at most 100000 users per cohort, got 100001"]


def run_check(path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "splitter", "check", str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "change,message",
    [
        (("new: upload_service", "new: uploads"), ":13: routes[1].new: must name a backend defined under backends: "
         "(legacy, new, upload_service), got 'uploads'"),
        (("    new: upload_service", "    legacy: old_monolith"), ":13: routes[1].legacy: must name a backend"),
        (("  upload_service: {", '  Up-Load: {url: "http://127.0.0.1:1"}\n  upload_service: {'), ":4: backends.Up-Load: "
         "a backend name must match [a-z0-9_]+"),
        (('  legacy: {url: "http://127.0.0.1:8001"}\n', ""), ":1: backends.legacy: required, with a url"),
    ],
)
def test_check_rejects_a_route_naming_an_unknown_backend_with_exit_1(tmp_path, change, message):
    f = tmp_path / "routes.yaml"
    f.write_text(BASE.replace(*change))
    r = run_check(f)
    assert r.returncode == 1 and r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
    assert any(line.startswith(str(f) + message) for line in r.stderr.splitlines()), r.stderr
    f.write_text(BASE)
    assert run_check(f).returncode == 0


def test_splitter_bucket_names_the_users_cohort_that_decides(tmp_path):
    f = tmp_path / "routes.yaml"
    f.write_text(BASE)
    r = subprocess.run(
        [sys.executable, "-m", "splitter", "bucket", "alice", "--config", str(f), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = {x["route"]: (x["backend"], x["reason"]) for x in json.loads(r.stdout)["routes"]}
    assert rows == {"auth": ("legacy", "percent"), "upload": ("new", "cohort:beta")}


# --- real proxies ------------------------------------------------------------------------------


def targeting_yaml(legacy: str, new: str, percent: int, extra_backends: str = "", more_routes: str = "") -> str:
    routes = f"""  - name: auth
    prefix: /api/auth
    percent: {percent}
    cohorts:
      - {{name: staff, header: X-Staff, equals: "1", to: new}}
      - {{name: beta, users: [alice, bob], to: new}}
      - {{name: pinned, users: [carol], to: legacy}}
      - {{name: enterprise, cookie: plan, in: [enterprise], to: legacy}}
{more_routes}"""
    text = routes_yaml(legacy, new, routes=routes)
    return text.replace('read_timeout: 2}\nuser_id', f'read_timeout: 2}}\n{extra_backends}user_id')


def served_by(c: httpx.Client, path: str, **headers: str) -> tuple[str, str]:
    r = c.get(path, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["backend"], r.headers["x-splitter-handler"]


def test_at_percent_0_staff_and_beta_go_to_new_and_everyone_else_to_legacy(standin, splitter):
    legacy, new = standin("legacy"), standin("new")
    s = splitter(targeting_yaml(legacy, new, 0))
    with httpx.Client(base_url=s.url, timeout=10) as c:
        assert served_by(c, "/api/auth/me", **STAFF) == ("new", "new_auth"), "staff, with no user id"
        assert served_by(c, "/api/auth/me", **STAFF, **{"X-User-ID": "zed"}) == ("new", "new_auth")
        assert served_by(c, "/api/auth/me", **{"X-Staff": "0", "X-User-ID": "zed"}) == ("legacy", "old_auth")
        assert served_by(c, "/api/auth/me", **{"X-User-ID": "alice"}) == ("new", "new_auth"), "a routes.yaml member"
        assert served_by(c, "/api/auth/me", **{"X-User-ID": "zed"}) == ("legacy", "old_auth")
        assert served_by(c, "/api/auth/me") == ("legacy", "old_auth"), "anonymous: legacy"
    view = httpx.get(s.admin + "/admin/bucket", params={"user_id": "alice"}).json()
    assert [(r["route"], r["backend"], r["reason"], r["upstream"]) for r in view["routes"]] == [
        ("auth", "new", "cohort:beta", "new")
    ]
    zed = httpx.get(s.admin + "/admin/bucket", params={"user_id": "zed"}).json()["routes"][0]
    assert (zed["backend"], zed["reason"], zed["bucket"]) == ("legacy", "percent", bucket("zed"))
    line = s.wait_log(lambda e: e.get("event") == "request" and e.get("reason") == "cohort:staff")
    assert (line["role"], line["backend"], line["handler"], line["route"]) == ("new", "new", "new_auth", "auth")
    line = s.wait_log(lambda e: e.get("event") == "request" and e.get("reason") == "cohort:beta")
    assert line["backend"] == "new"
    assert s.metric("splitter_cohort_requests_total", route="auth", cohort="staff", backend="new") == 2
    assert s.metric("splitter_cohort_requests_total", route="auth", cohort="beta", backend="new") == 1
    assert s.metric("splitter_requests_total", route="auth", backend="new", handler="new_auth", code="200") == 3


def test_at_percent_100_a_legacy_cohort_pins_its_users_to_legacy(standin, splitter):
    legacy, new = standin("legacy"), standin("new")
    s = splitter(targeting_yaml(legacy, new, 100))
    with httpx.Client(base_url=s.url, timeout=10) as c:
        assert served_by(c, "/api/auth/me", **{"X-User-ID": "zed"}) == ("new", "new_auth")
        assert served_by(c, "/api/auth/me", **{"X-User-ID": "carol"}) == ("legacy", "old_auth")
        assert served_by(c, "/api/auth/me", **{"X-User-ID": "zed", "Cookie": "a=1; plan=enterprise"}) == (
            "legacy",
            "old_auth",
        )
        # the first matching cohort decides: staff (new) is listed before pinned (legacy)
        assert served_by(c, "/api/auth/me", **STAFF, **{"X-User-ID": "carol"}) == ("new", "new_auth")
    view = httpx.get(s.admin + "/admin/bucket", params={"user_id": "carol"}).json()["routes"][0]
    assert (view["backend"], view["reason"], view["percent"]) == ("legacy", "cohort:pinned", 100)
    assert s.wait_log(lambda e: e.get("reason") == "cohort:enterprise")["backend"] == "legacy"


def test_a_route_with_its_own_new_backend_answers_from_it_while_others_keep_new(standin, splitter):
    legacy, new, uploads = standin("legacy"), standin("new"), standin("upload_service")
    more = """  - name: upload
    prefix: /api/upload
    percent: 100
    new: upload_service"""
    s = splitter(targeting_yaml(legacy, new, 100, f'  upload_service: {{url: "{uploads}"}}\n', more))
    with httpx.Client(base_url=s.url, timeout=10) as c:
        assert served_by(c, "/api/upload/x", **{"X-User-ID": "zed"}) == ("upload_service", "new_upload")
        assert served_by(c, "/api/auth/me", **{"X-User-ID": "zed"}) == ("new", "new_auth")
    line = s.wait_log(lambda e: e.get("event") == "request" and e.get("route") == "upload")
    assert (line["role"], line["backend"]) == ("new", "upload_service"), "metrics and the log's role keep the side"
    assert s.metric("splitter_requests_total", route="upload", backend="new", handler="new_upload", code="200") == 1


def test_a_reload_naming_an_unknown_backend_keeps_the_running_config(standin, splitter):
    legacy, new = standin("legacy"), standin("new")
    s = splitter(targeting_yaml(legacy, new, 0))
    text = s.config.read_text()
    s.config.write_text(text.replace("    percent: 0\n", "    percent: 100\n    new: nowhere\n"))
    eventually(lambda: s.metric("splitter_config_reloads_total", result="failure") == 1, timeout=10)
    err = s.wait_log(lambda e: "rejected" in e.get("event", ""))
    assert any("routes[0].new: must name a backend" in x for x in err["errors"])
    with httpx.Client(base_url=s.url, timeout=10) as c:
        assert served_by(c, "/api/auth/me", **{"X-User-ID": "zed"}) == ("legacy", "old_auth"), "still percent 0"


def test_failing_staff_requests_stay_out_of_the_guards_window(standin, splitter):
    """new refuses every connection; 40 staff requests fail on it. Counted as a window sample they
    would trip the guard (min_requests 40, max error rate 0.5); they are not, so the window's new
    count stays 0 and the route keeps its percent, until 40 failing random users trip it."""
    legacy = standin("legacy")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: every request to new is a 502
    more = "    guard: {max_error_rate: 0.5, min_requests: 40, window_s: 60}\n"
    s = splitter(targeting_yaml(legacy, dead, 50).replace("    cohorts:\n", more + "    cohorts:\n", 1))

    def state() -> dict:
        return next(r for r in httpx.get(s.admin + "/admin/routes").json() if r["name"] == "auth")

    with httpx.Client(base_url=s.url, timeout=10) as c:
        codes = [c.get("/api/auth/me", headers=STAFF).status_code for _ in range(40)]
        assert codes == [502] * 40
        assert s.metric("splitter_cohort_requests_total", route="auth", cohort="staff", backend="new") == 40
        assert s.metric("splitter_errors_total", route="auth", backend="new", handler="new_auth", kind="connect") == 40
        time.sleep(1.5)  # the guard looks every 0.5 s: it has looked at least twice
        st = state()
        assert st["window"]["new"]["requests"] == 0 and st["window"]["legacy"]["requests"] == 0
        assert (st["percent"], st["source"]) == (50, "file"), "40 failing cohort requests did not trip the guard"
        # the same failures from 40 randomly chosen users on new trip it: the guard was watching
        for uid in users(40, new=True):
            assert c.get("/api/auth/me", headers={"X-User-ID": uid}).status_code == 502
    eventually(lambda: state()["source"] == "guard", timeout=10)
    trip = s.wait_log(lambda e: "guard tripped" in e.get("event", ""))
    assert (trip["requests"], trip["errors"]) == (40, 40), "only the random users were judged"


def test_a_websocket_upgrade_is_targeted_like_any_request(procs, tmp_path, splitter):
    legacy, new = start_backend(procs, "legacy", tmp_path), start_backend(procs, "new", tmp_path)
    routes = """  - name: notifications
    prefix: /api/notifications
    percent: 0
    cohorts: [{name: staff, header: X-Staff, equals: "1", to: new}, {name: beta, users: [alice], to: new}]"""
    s = splitter(routes_yaml(legacy, new, routes=routes))

    async def hello(headers: dict[str, str]) -> str:
        async with websockets.connect(f"ws://127.0.0.1:{s.port}/api/notifications/ws", additional_headers=headers) as ws:
            return str(json.loads(await ws.recv())["backend"])

    assert asyncio.run(hello({**STAFF, "X-User-ID": "zed"})) == "new"
    assert asyncio.run(hello({"X-User-ID": "alice"})) == "new"
    assert asyncio.run(hello({"X-User-ID": "zed"})) == "legacy"
    line = s.wait_log(lambda e: e.get("event") == "websocket" and e.get("reason") == "cohort:staff")
    assert (line["role"], line["backend"], line["status"]) == ("new", "new", 101)
    assert s.metric("splitter_cohort_requests_total", route="notifications", cohort="staff", backend="new") == 1
    assert s.metric("splitter_cohort_requests_total", route="notifications", cohort="beta", backend="new") == 1


# --- the console's view: cohorts apart from the comparison -------------------------------------

CONSOLE_TOKEN = "cohort-console-token"


def overview_route(s, name: str = "auth") -> dict:
    from test_operator_loop import strict_loads

    view = strict_loads(httpx.get(s.admin + "/admin/overview").text)  # strict JSON: no NaN, no Infinity
    return next(r for r in view["routes"] if r["name"] == name)  # type: ignore[index]


def test_the_console_reads_each_cohorts_requests_apart_from_the_window(standin, splitter):
    """40 staff requests, 3 from beta (two routes.yaml members, one added at runtime), 2 enterprise
    ones pinned to legacy, and 5 + 5 random users: /admin/overview lists each cohort's requests and
    the window the console compares counts only the 10 random ones."""
    s = splitter(targeting_yaml(standin("legacy"), standin("new"), 50), env={"SPLITTER_ADMIN_TOKEN": CONSOLE_TOKEN})
    auth_header = {"Authorization": f"Bearer {CONSOLE_TOKEN}"}
    r = httpx.put(s.admin + "/admin/routes/auth/cohorts/beta", json={"add": ["dave"]}, headers=auth_header)
    assert r.status_code == 200, r.text
    with httpx.Client(base_url=s.url, timeout=10) as c:
        assert {served_by(c, "/api/auth/me", **STAFF)[0] for _ in range(40)} == {"new"}
        assert {served_by(c, "/api/auth/me", **{"X-User-ID": u})[0] for u in ("alice", "bob", "dave")} == {"new"}
        for _ in range(2):
            assert served_by(c, "/api/auth/me", **{"X-User-ID": "zed", "Cookie": "plan=enterprise"})[0] == "legacy"
        for side, ids in (("new", users(5, new=True)), ("legacy", users(5, new=False))):
            assert {served_by(c, "/api/auth/me", **{"X-User-ID": u})[0] for u in ids} == {side}
    auth = overview_route(s)
    assert (auth["window"]["new"]["requests"], auth["window"]["legacy"]["requests"]) == (5, 5), "cohorts stay out"
    co = auth["cohorts"]
    assert (co["scope"], co["span_s"], co["requests"]) == ("process", 60.0, 45)
    assert [(x["name"], x["matcher"], x["to"], x["requests"]) for x in co["by_cohort"]] == [
        ("staff", "header", "new", 40),
        ("beta", "users", "new", 3),
        ("pinned", "users", "legacy", 0),
        ("enterprise", "cookie", "legacy", 2),
    ]
    staff, beta, pinned, enterprise = co["by_cohort"]
    assert (staff["key"], staff["op"], staff["values"]) == ("X-Staff", "equals", ["1"])
    assert (enterprise["key"], enterprise["op"], enterprise["values"]) == ("plan", "in", ["enterprise"])
    assert (beta["file_members"], beta["runtime_members"], pinned["file_members"]) == (2, 1, 1)
    assert "file_members" not in staff and "values" not in beta
    assert s.metric("splitter_cohort_requests_total", route="auth", cohort="staff", backend="new") == 40
    # a new percent restarts the window (a new population); a cohort's users are the same people
    r = httpx.put(s.admin + "/admin/routes/auth", json={"percent": 60}, headers=auth_header)
    assert r.status_code == 200, r.text
    auth = overview_route(s)
    assert auth["window"]["new"]["requests"] == 0 and auth["cohorts"]["requests"] == 45


def test_the_console_counts_cohort_requests_over_the_fleet_with_redis(standin, splitter, redis_server):
    """Like its window, the console's cohort counts are the fleet's with Redis: 30 staff requests
    through replica A and 10 through B (two workers) read as 40 on each, whichever worker answers."""
    text = targeting_yaml(standin("legacy"), standin("new"), 50).replace(
        "unmatched: legacy\n", f'unmatched: legacy\nredis: {{url: "{redis_server.url}", prefix: "cc"}}\n'
    )
    a = splitter(text)
    cfg_b = a.config.parent / "b.yaml"
    cfg_b.write_text(text)
    b = splitter(text, config=cfg_b, args=["--workers", "2"])
    for s, n in ((a, 30), (b, 10)):
        with httpx.Client(base_url=s.url, timeout=10) as c:
            assert {served_by(c, "/api/auth/me", **STAFF)[0] for _ in range(n)} == {"new"}

    def staff_seen(s) -> int | None:
        co = overview_route(s)["cohorts"]
        assert co["scope"] == "fleet"
        return co["by_cohort"][0]["requests"] if co["by_cohort"][0]["requests"] == 40 else None

    for s in (a, b, b, b):  # b: whichever worker answers
        assert eventually(lambda s=s: staff_seen(s), timeout=10) == 40
        window = overview_route(s)["window"]
        assert (window["scope"], window["new"]["requests"], window["legacy"]["requests"]) == ("fleet", 0, 0)


# --- trusted cohorts (issue 32, item 9) ----------------------------------------------------------------

TRUSTED = """  - name: auth
    prefix: /api/auth
    percent: 0
    cohorts:
      - {name: staff, header: X-Staff, equals: "1", to: new, trusted: true}
      - {name: corp, jwt_claim: email, suffix: "@example.com", to: new, trusted: true}
      - {name: gold, cookie: plan, equals: gold, to: new, trusted: true}
      - {name: beta, header: X-Beta, equals: "1", to: new}"""


def unsigned_jwt(**claims: str) -> str:
    def part(d: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}."


def test_a_trusted_cohort_matches_only_requests_from_trusted_proxies(standin, splitter):
    """An anonymous client that sets X-Staff: 1 (or a cookie, or an unsigned JWT's claim) reaches new only
    through a trusted proxy: 127.0.0.1 is trusted, 127.0.0.2 (also this host's loopback) is not."""
    text = routes_yaml(standin("legacy"), standin("new"), routes=TRUSTED, extra="trusted_proxies: [127.0.0.1/32]")
    s = splitter(text)
    asks = [
        {"X-Staff": "1"},
        {"Authorization": "Bearer " + unsigned_jwt(sub="zed", email="mallory@example.com")},
        {"Cookie": "plan=gold"},
    ]
    untrusted = httpx.Client(base_url=s.url, timeout=10, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    trusted = httpx.Client(base_url=s.url, timeout=10, transport=httpx.HTTPTransport(local_address="127.0.0.1"))
    with untrusted, trusted:
        for headers in asks:
            assert served_by(untrusted, "/api/auth/me", **headers) == ("legacy", "old_auth"), headers
            assert served_by(trusted, "/api/auth/me", **headers) == ("new", "new_auth"), headers
        assert served_by(untrusted, "/api/auth/me", **{"X-Beta": "1"}) == ("new", "new_auth"), "not trusted: anyone"
        r = untrusted.get("/api/auth/me", headers={"X-Staff": "1"})
        assert r.json()["headers"].count(["x-forwarded-for", "127.0.0.2"]) == 1, "the peer was 127.0.0.2"
    def reasons() -> list[tuple[str, str]]:
        return [(e["client"], e["reason"]) for e in s.logs() if e.get("path") == "/api/auth/me" and "reason" in e]

    eventually(lambda: len(reasons()) == 8, timeout=5)  # logs are written in batches
    assert reasons()[:2] == [("127.0.0.2", "anonymous"), ("127.0.0.1", "cohort:staff")], reasons
    view = httpx.get(s.admin + "/admin/bucket", params={"user_id": "zed"}).json()
    assert [(r["route"], r["reason"]) for r in view["routes"]] == [("auth", "percent")], "no peer: no trusted cohort"
    listed = httpx.get(s.admin + "/admin/routes/auth/cohorts").json()["cohorts"]
    assert [c["trusted"] for c in listed] == [True, True, True, False]
