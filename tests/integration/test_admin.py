"""Admin API and runtime overrides without Redis (the embedded state file; memory with `state.path: :memory:`)."""

import hashlib

import httpx
import pytest
from conftest import routes_yaml

from splitter.bucketing import bucket

TOKEN = "admin-secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
USERS = [f"a{i}" for i in range(100)]


def share_new(s, path: str = "/api/auth/x", users=USERS, **headers) -> float:
    with httpx.Client(base_url=s.url) as c:
        return sum(c.get(path, headers={"X-User-ID": u, **headers}).json()["backend"] == "new" for u in users) / len(users)


@pytest.fixture
def stack(standin, splitter):
    return splitter(routes_yaml(standin("legacy"), standin("new")), env={"SPLITTER_ADMIN_TOKEN": TOKEN})


def test_mutations_need_the_admin_token(standin, splitter, stack):
    no_token = splitter(routes_yaml(standin("legacy"), standin("new")))
    r = httpx.put(no_token.admin + "/admin/routes/auth", json={"percent": 5}, headers=AUTH)
    assert r.status_code == 403 and "SPLITTER_ADMIN_TOKEN" in r.json()["error"]
    r = httpx.put(stack.admin + "/admin/routes/auth", json={"percent": 5}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert httpx.put(stack.admin + "/admin/routes/auth", json={"percent": 5}).status_code == 401
    r = httpx.put(stack.admin + "/admin/routes/auth", json={"percent": 5}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"name": "auth", "prefix": "/api/auth", "percent": 5, "file_percent": 50, "source": "override"}
    assert httpx.get(stack.admin + "/admin/routes").status_code == 200, "reads are open"
    assert TOKEN not in stack.proc.output()


def test_set_clear_rollback_and_kill(stack):
    assert share_new(stack) == sum(bucket(u) < 50 for u in USERS) / 100
    assert httpx.put(stack.admin + "/admin/routes/auth", json={"percent": 100}, headers=AUTH).status_code == 200
    assert share_new(stack) == 1.0
    assert stack.metric("splitter_route_percent", route="auth") == 100
    routes = {r["name"]: r for r in httpx.get(stack.admin + "/admin/routes").json()}
    assert routes["auth"]["source"] == "override" and routes["auth"]["file_percent"] == 50 and routes["upload"]["source"] == "file"

    assert httpx.delete(stack.admin + "/admin/routes/auth/override", headers=AUTH).json()["source"] == "file"
    assert stack.metric("splitter_route_percent", route="auth") == 50

    r = httpx.post(stack.admin + "/admin/rollback", json={"route": "resume_review"}, headers=AUTH)
    assert r.status_code == 200
    assert share_new(stack, "/api/resume/x") == 0
    httpx.post(stack.admin + "/admin/rollback", json={"all": True}, headers=AUTH)
    assert {r["percent"] for r in httpx.get(stack.admin + "/admin/routes").json()} == {0}

    httpx.put(stack.admin + "/admin/routes/auth", json={"percent": 100}, headers=AUTH)
    assert httpx.put(stack.admin + "/admin/kill", headers=AUTH).json() == {"on": True}
    assert httpx.get(stack.admin + "/admin/kill").json() == {"on": True}
    assert share_new(stack) == 0
    assert stack.metric("splitter_kill_switch") == 1
    assert {r["source"] for r in httpx.get(stack.admin + "/admin/routes").json()} == {"kill"}
    # the force header (authorized) still reaches new during a kill, for smoke tests
    assert httpx.delete(stack.admin + "/admin/kill", headers=AUTH).json() == {"on": False}
    assert share_new(stack) == 1.0


def test_admin_errors_are_clear(stack):
    r = httpx.put(stack.admin + "/admin/routes/nope", json={"percent": 5}, headers=AUTH)
    assert r.status_code == 404 and "unknown route 'nope'" in r.json()["error"]
    for bad in [{"percent": 101}, {"percent": "5"}, {"percent": True}, {}]:
        assert httpx.put(stack.admin + "/admin/routes/auth", json=bad, headers=AUTH).status_code == 400
    assert httpx.put(stack.admin + "/admin/routes/auth", content=b"{", headers=AUTH).status_code == 400
    assert httpx.post(stack.admin + "/admin/rollback", json={"x": 1}, headers=AUTH).status_code == 400
    # Starlette's own answers are the admin API's JSON too: an unknown path, a method the path does not take
    unknown = httpx.get(stack.admin + "/admin/status")
    assert unknown.status_code == 404 and unknown.json() == {"error": "Not Found"}, unknown.text
    wrong = httpx.delete(stack.admin + "/admin/routes", headers=AUTH)
    assert wrong.status_code == 405 and wrong.json() == {"error": "Method Not Allowed"} and "GET" in wrong.headers["allow"]


def test_a_lone_surrogate_in_a_body_is_refused_and_every_read_still_answers(stack):
    """JSON can spell a lone UTF-16 surrogate ("\\ud800"), which is not text: stored as a reason or an id it
    would make every later read that writes it out fail (500). It is refused with the change."""
    for path, body in [
        ("/admin/routes/auth", b'{"percent": 5, "reason": "x\\ud800"}'),
        ("/admin/routes/auth/cohorts/beta", b'{"add": ["\\udfff"]}'),
        ("/admin/kill", b'{"reason": "\\ud83d"}'),
    ]:
        r = httpx.put(stack.admin + path, content=body, headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code in (400, 404) and "surrogate" in r.json()["error"] or r.status_code == 404, r.text
    ok = httpx.put(stack.admin + "/admin/routes/auth", content=b'{"percent": 5, "reason": "caf\\u00e9 \\ud83d\\ude00"}',
                   headers={**AUTH, "Content-Type": "application/json"})
    assert ok.status_code == 200  # a surrogate pair is a character (an emoji): fine
    history = httpx.get(stack.admin + "/admin/history")
    assert history.status_code == 200 and history.json()[0]["reason"] == "caf\u00e9 \U0001f600"
    assert httpx.get(stack.admin + "/admin/kill").json() == {"on": False}


def test_bucket_lookup(stack):
    r = httpx.get(stack.admin + "/admin/bucket", params={"user_id": "alice"}).json()
    b = bucket("alice")
    sub = int(hashlib.md5(b"alice").hexdigest()[8:16], 16) % 100
    auth = next(x for x in r["routes"] if x["route"] == "auth")
    role = "new" if b < 50 else "legacy"
    want = {"route": "auth", "bucket": b, "sub_bucket": sub, "percent": 50, "backend": role, "reason": "percent"}
    assert auth == want | {"upstream": role}
    assert httpx.get(stack.admin + "/admin/bucket").status_code == 400


def test_changes_are_logged_with_the_tokens_name_old_and_new(stack):
    httpx.put(stack.admin + "/admin/routes/auth", json={"percent": 30}, headers={**AUTH, "X-Splitter-Actor": "dana"})
    change = stack.wait_log(lambda e: e["event"] == "override set")
    assert change["who"] == "admin" and change["on_behalf"] == "dana", "the token's name; the header only as on_behalf"
    assert change["route"] == "auth" and change["old"] == 50 and change["new"] == 30


def test_overrides_are_kept_across_a_restart_in_the_state_file(standin, splitter, stack):
    httpx.put(stack.admin + "/admin/routes/auth", json={"percent": 100}, headers=AUTH)
    stack.proc.stop()
    again = splitter("", env={"SPLITTER_ADMIN_TOKEN": TOKEN}, config=stack.config)
    route = next(r for r in httpx.get(again.admin + "/admin/routes").json() if r["name"] == "auth")
    assert route["percent"] == 100 and route["source"] == "override"


def test_memory_state_is_lost_on_restart_and_refuses_writes_with_several_workers(standin, splitter, tmp_path):
    text = routes_yaml(standin("legacy"), standin("new"), extra='state: {path: ":memory:"}')
    s = splitter(text, env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    assert httpx.get(s.admin + "/healthz").json() == {"status": "ok", "store": "memory", "config": str(s.config)}
    httpx.put(s.admin + "/admin/routes/auth", json={"percent": 100}, headers=AUTH)
    s.proc.stop()
    again = splitter("", env={"SPLITTER_ADMIN_TOKEN": TOKEN}, config=s.config)
    assert next(r for r in httpx.get(again.admin + "/admin/routes").json() if r["name"] == "auth")["percent"] == 50
    again.proc.stop()
    s = splitter("", env={"SPLITTER_ADMIN_TOKEN": TOKEN}, args=["--workers", "2"], config=s.config)
    r = httpx.put(s.admin + "/admin/routes/auth", json={"percent": 5}, headers=AUTH)
    assert r.status_code == 409 and ":memory:" in r.json()["error"]
    assert httpx.put(s.admin + "/admin/kill", headers=AUTH).status_code == 409
    assert not (tmp_path / "splitter-state.db").exists()


def test_workers_without_redis_share_the_state_file(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new")), env={"SPLITTER_ADMIN_TOKEN": TOKEN}, args=["--workers", "2"])
    for _ in range(4):  # whichever worker answers
        assert httpx.put(s.admin + "/admin/routes/auth", json={"percent": 5}, headers=AUTH).status_code == 200
        assert httpx.put(s.admin + "/admin/kill", headers=AUTH).status_code == 200


def test_the_admin_listener_answers_ip_literals_and_localhost_and_refuses_a_rebound_name(stack):
    port = stack.admin_port
    with httpx.Client(base_url=stack.admin) as c:
        refused = ("rebind.attacker.example", f"rebind.attacker.example:{port}", f"splitter-admin:{port}")
        refused += ("127.0.0.1.nip.io",)  # a name that resolves to an IP is still a name
        for host in refused:
            r = c.get("/admin/overview", headers={"Host": host})
            assert r.status_code == 403, host
            assert "DNS rebinding" in r.json()["error"] and "--admin-allowed-hosts" in r.json()["error"]
            assert r.headers["x-content-type-options"] == "nosniff"
        r = c.put("/admin/kill", headers={**AUTH, "Host": "rebind.attacker.example"})
        assert r.status_code == 403, "the token does not make a rebound page welcome"
        assert c.get("/admin/kill").json()["on"] is False
        answered = (f"localhost:{port}", "LOCALHOST", f"127.0.0.1:{port}", f"[::1]:{port}")
        answered += ("10.1.2.3:8081", "[fd00::1]")  # pod IPs: the kubelet's probes, Prometheus
        for host in answered:
            assert c.get("/admin/overview", headers={"Host": host}).status_code == 200, host
        # nosniff on every answer: JSON, metrics, health, the console, its errors, unknown paths
        answers = [c.get(path) for path in ("/admin/routes", "/metrics", "/healthz", "/readyz", "/ui", "/ui/app.js")]
        answers.append(c.put("/admin/routes/auth", json={"percent": 5}))  # 401
        answers.append(c.put("/admin/routes/nope", json={"percent": 5}, headers=AUTH))  # 404, the API's own
        answers.append(c.get("/nope"))
        assert [r.status_code for r in answers] == [200, 200, 200, 200, 200, 200, 401, 404, 404]
        for r in answers:
            assert r.headers.get_list("x-content-type-options") == ["nosniff"], r.url


def test_admin_allowed_hosts_lets_a_listed_name_in_and_star_allows_any(standin, splitter):
    legacy, new = standin("legacy"), standin("new")
    fqdn = "splitter-admin.ops.svc.cluster.local"
    named = splitter(routes_yaml(legacy, new), args=["--admin-allowed-hosts", f"splitter-admin, {fqdn}"])
    hosts = {"splitter-admin:8081": 200, "SPLITTER-ADMIN": 200, f"{fqdn}.:8081": 200, "other.example": 403}
    for host, status in hosts.items():
        assert httpx.get(named.admin + "/healthz", headers={"Host": host}).status_code == status, host
    anyone = splitter(routes_yaml(legacy, new), args=["--admin-allowed-hosts", "*"])
    assert httpx.get(anyone.admin + "/admin/routes", headers={"Host": "rebind.attacker.example"}).status_code == 200
    from test_cli import run

    bad = run("serve", "--admin-allowed-hosts", "splitter-admin:8081")
    assert bad.returncode == 2, bad.stderr
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("splitter serve: argument --admin-allowed-hosts: 'splitter-admin:8081' is not a host")


def test_an_endpoint_runs_alone_on_an_app_with_only_its_state():
    """Endpoints are module-level and read `request.app.state`: one driven on a bare Starlette app,
    in process, no listener, changes the runtime it is given and records who did it."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.routing import Route

    from splitter.admin import common, migration, routes, security
    from splitter.config import parse
    from splitter.runtime import Runtime, Settings

    async def drive() -> tuple[httpx.Response, httpx.Response, Runtime]:
        text = routes_yaml("http://127.0.0.1:9", "http://127.0.0.1:9", extra='state: {path: ":memory:"}')
        rt = Runtime(Settings(admin_token=TOKEN), parse(text))
        table = [Route("/r/{name}", security.writer(routes.set_route), methods=["PUT"]), Route("/h", migration.history)]
        app = Starlette(routes=table, exception_handlers=common.ERRORS)
        app.state.rt = rt
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            refused = await c.put("/r/nope", json={"percent": 7}, headers=AUTH)
            await c.put("/r/auth", json={"percent": 7, "reason": "alone"}, headers=AUTH)
            return refused, await c.get("/h"), rt

    refused, changes, rt = asyncio.run(drive())
    assert refused.status_code == 404 and "unknown route 'nope'" in refused.json()["error"]
    assert rt.snapshot.percent["auth"] == 7 and rt.snapshot.sources["auth"] == "override"
    assert [(e["action"], e["route"], e["new"], e["reason"]) for e in changes.json()] == [("set", "auth", 7, "alone")]
