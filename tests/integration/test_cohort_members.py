"""Runtime members of `users` cohorts: the store (memory, Redis), the admin API, the CLI.

Until routes.yaml can say `cohorts:` (i25b's parsing), the replicas here are real servers in
this process (uvicorn on 127.0.0.1, both listeners) on a Config built in the test; the test
at the end runs `splitter serve` on a routes.yaml with cohorts and routes through the proxy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import ROOT, eventually, routes_yaml, wait_http

from splitter.app import App
from splitter.config import MAX_COHORT_MEMBERS, Cohort, Config, parse
from splitter.history import describe
from splitter.listen import bind
from splitter.routes import RouteTable
from splitter.runtime import Runtime, Settings

TOKEN = "cohort-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEAD = "http://127.0.0.1:9"
COHORTS = (
    Cohort("staff", "new", "header", key="x-staff", op="equals", values=("1",)),
    Cohort("beta", "new", "users", users=frozenset({b"alice"})),
    Cohort("pinned", "legacy", "users"),
)


def with_cohorts(cfg: Config, cohorts: tuple[Cohort, ...] = COHORTS, route: str = "auth") -> Config:
    """routes.yaml's config with `cohorts` on one route, as i25b's parsing will build it."""
    routes = tuple(dataclasses.replace(r, cohorts=cohorts) if r.name == route else r for r in cfg.routes)
    by_name = {r.name: r for r in routes}
    return dataclasses.replace(cfg, routes=routes, by_name=by_name, _table=RouteTable([(r.prefix, r) for r in routes]))


class Replica:
    """A splitter in a thread of this process: the App of `splitter serve` on both listeners."""

    def __init__(self, tmp_path: Path, redis_url: str | None = None, workers: int = 1) -> None:
        extra = f'redis: {{url: "{redis_url}", prefix: "t"}}' if redis_url else ""
        proxy_sock, admin_sock = bind("127.0.0.1", 0), bind("127.0.0.1", 0)
        # a file of its own: the runtime reloads a changed file (without the cohorts added here)
        path = tmp_path / f"routes-{admin_sock.getsockname()[1]}.yaml"
        path.write_text(routes_yaml(DEAD, DEAD, extra=extra))
        cfg = with_cohorts(parse(path.read_text(), str(path)))
        settings = Settings(
            config_path=str(path),
            port=proxy_sock.getsockname()[1],
            admin_port=admin_sock.getsockname()[1],
            admin_token=TOKEN,
            workers=workers,
        )
        self.app = App(Runtime(settings, cfg))
        self.admin = f"http://127.0.0.1:{settings.admin_port}"
        config = uvicorn.Config(self.app, interface="asgi3", lifespan="on", log_config=None, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [proxy_sock, admin_sock]}, daemon=True)
        self.thread.start()
        wait_http(self.admin + "/readyz")

    @property
    def rt(self) -> Runtime:
        return self.app.runtime

    def members(self, cohort: str = "beta") -> frozenset[bytes]:
        return self.rt.snapshot.members.get(("auth", cohort), frozenset())

    def get(self, cohort: str = "beta") -> Any:
        return httpx.get(f"{self.admin}/admin/routes/auth/cohorts/{cohort}", timeout=10).json()

    def put(self, cohort: str = "beta", **body: Any) -> httpx.Response:
        return httpx.put(f"{self.admin}/admin/routes/auth/cohorts/{cohort}", json=body, headers=AUTH, timeout=30)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def replicas():
    started: list[Replica] = []

    def start(tmp_path: Path, redis_url: str | None = None, workers: int = 1) -> Replica:
        started.append(Replica(tmp_path, redis_url, workers))
        return started[-1]

    yield start
    for r in reversed(started):
        r.stop()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPLITTER_ADMIN_TOKEN": TOKEN}
    return subprocess.run([sys.executable, "-m", "splitter", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)


def time_until(check, timeout: float = 3.0) -> float:
    t0 = time.monotonic()
    eventually(check, timeout=timeout, interval=0.02)
    return time.monotonic() - t0


# --- memory (no Redis) ------------------------------------------------------------------------------


def test_add_list_remove_in_memory(replicas, tmp_path):
    a = replicas(tmp_path)
    r = a.put(add=["carol", "carol"], reason="dogfood")
    assert r.status_code == 200, r.text
    assert r.json() == {"route": "auth", "cohort": "beta", "added": 1, "removed": 0, "count": 2, "file_members": 1, "runtime_members": 1}
    assert a.get() == {"route": "auth", "name": "beta", "matcher": "users", "to": "new", "count": 2, "file_members": ["alice"], "runtime_members": ["carol"], "next_cursor": None}
    assert a.members() == {b"carol"}

    # routes.yaml's own members stay: removing one is refused whole, adding one changes nothing
    r = a.put(remove=["carol", "alice"])
    assert r.status_code == 400 and "routes.yaml" in r.json()["error"] and "'alice'" in r.json()["error"]
    assert a.members() == {b"carol"}
    assert a.put(add=["alice"]).json()["added"] == 0 and a.members() == {b"carol"}

    listed = httpx.get(a.admin + "/admin/routes/auth/cohorts").json()
    assert [(c["name"], c["matcher"], c["to"]) for c in listed["cohorts"]] == [("staff", "header", "new"), ("beta", "users", "new"), ("pinned", "users", "legacy")]
    assert listed["cohorts"][0] == {"name": "staff", "matcher": "header", "to": "new", "key": "x-staff", "op": "equals", "values": ["1"], "trusted": False}

    assert a.put(remove=["carol"], add=["dave"]).json() == {"route": "auth", "cohort": "beta", "added": 1, "removed": 1, "count": 2, "file_members": 1, "runtime_members": 1}
    assert a.members() == {b"dave"}

    events = httpx.get(a.admin + "/admin/history", params={"route": "auth"}).json()
    assert [e["action"] for e in events] == ["cohort", "cohort", "cohort"], "the refused change is not an event"
    first = events[-1]
    assert (first["who"], first["source"], first["reason"]) == ("admin", "api", "dogfood")
    assert first["old"] == {"cohort": "beta", "runtime_members": 0}
    assert first["new"] == {"cohort": "beta", "runtime_members": 1, "added": ["carol"], "added_count": 1, "removed": [], "removed_count": 0}
    assert describe(events[0]) == "admin changed cohort beta of auth: +dave, -carol (1 → 1 runtime members)"
    metrics = httpx.get(a.admin + "/metrics").text
    assert 'splitter_changes_total{action="cohort",route="auth",source="api"} 3.0' in metrics


def test_unchanged_cohorts_keep_their_members_object(replicas, tmp_path):
    a = replicas(tmp_path)
    assert a.put("pinned", add=[f"p{i}" for i in range(1000)]).status_code == 200
    pinned = a.members("pinned")
    assert a.put(add=["carol"]).status_code == 200
    assert a.members("pinned") is pinned, "a change of beta rebuilt pinned's set"
    beta = a.members("beta")
    assert httpx.put(a.admin + "/admin/routes/auth", json={"percent": 7}, headers=AUTH).status_code == 200
    assert a.rt.snapshot.percent["auth"] == 7
    assert a.members("beta") is beta and a.members("pinned") is pinned, "a percent change rebuilt the members"


def test_bad_changes_are_400_404_and_change_nothing(replicas, tmp_path):
    a = replicas(tmp_path)
    assert a.put(add=["carol"]).status_code == 200
    url = a.admin + "/admin/routes/{}/cohorts/{}"
    r = httpx.put(url.format("nope", "beta"), json={"add": ["x"]}, headers=AUTH)
    assert r.status_code == 404 and "unknown route 'nope'" in r.json()["error"]
    r = httpx.put(url.format("auth", "nope"), json={"add": ["x"]}, headers=AUTH)
    assert r.status_code == 404 and "no cohort 'nope'" in r.json()["error"] and "staff, beta, pinned" in r.json()["error"]
    assert httpx.get(url.format("upload", "beta")).status_code == 404
    for method in ("GET", "PUT"):
        r = httpx.request(method, url.format("auth", "staff"), json={"add": ["x"]}, headers=AUTH)
        assert r.status_code == 400 and "not users" in r.json()["error"], method
    bad_bodies: list[Any] = [
        {"add": [""]}, {"add": [5]}, {"add": "carol"}, {"add": [None]}, {"add": ["x" * 257]}, {"add": ["a\nb"]},
        {"add": ["\ud800"]}, {"remove": {"carol": 1}}, {"add": ["x"], "remove": ["x"]}, {}, {"reason": "r"},
        {"add": ["x"], "users": ["y"]}, [], {"add": ["x"], "reason": 5},
    ]
    for bad in bad_bodies:
        r = httpx.put(url.format("auth", "beta"), content=json.dumps(bad), headers=AUTH)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"], bad
    assert httpx.put(url.format("auth", "beta"), content=b"{", headers=AUTH).status_code == 400
    assert httpx.put(url.format("auth", "beta"), json={"add": ["x"]}).status_code == 401
    assert httpx.put(url.format("auth", "beta"), json={"add": ["x"]}, headers={"Authorization": "Bearer no"}).status_code == 401
    assert a.members() == {b"carol"}
    assert len(httpx.get(a.admin + "/admin/history").json()) == 1


def test_more_than_the_limit_is_400_and_nothing_is_applied(replicas, tmp_path):
    a = replicas(tmp_path)
    too_many = [f"u{i}" for i in range(MAX_COHORT_MEMBERS)]  # + alice from routes.yaml: 100,001
    r = a.put(add=too_many)
    assert r.status_code == 400 and "100001 members" in r.json()["error"] and "nothing was changed" in r.json()["error"]
    assert a.members() == frozenset() and httpx.get(a.admin + "/admin/history").json() == []
    r = a.put(add=too_many[1:])
    assert r.status_code == 200 and r.json()["count"] == MAX_COHORT_MEMBERS
    assert a.put(add=["one_more"]).status_code == 400
    assert a.put(add=["one_more"], remove=["u1"]).json()["count"] == MAX_COHORT_MEMBERS, "a swap at the limit is fine"
    assert len(a.members()) == MAX_COHORT_MEMBERS - 1 and b"one_more" in a.members()


def test_replicas_on_one_host_without_redis_share_members_through_the_state_file(replicas, tmp_path):
    a, b = replicas(tmp_path, workers=2), replicas(tmp_path, workers=2)  # two workers of one host: one file
    r = a.put(add=["carol"])
    assert r.status_code == 200, r.text
    assert a.members() == {b"carol"}, "the worker that took the change has it when it answers"
    assert time_until(lambda: b.members() == {b"carol"}) < 1.0
    assert b.put(remove=["carol"]).json()["runtime_members"] == 0
    assert time_until(lambda: a.members() == frozenset()) < 1.0


# --- Redis: a fleet -------------------------------------------------------------------------------


def test_cli_add_on_one_replica_reaches_the_other_within_1s(replicas, tmp_path, redis_server):
    a = replicas(tmp_path, redis_server.url)
    b = replicas(tmp_path, redis_server.url)
    r = cli("cohort", "add", "auth", "beta", "carol", "--reason", "dogfood", "--admin", a.admin)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "auth/beta: added 1; 2 members (1 in routes.yaml, 1 added at runtime)"
    elapsed = time_until(lambda: b"carol" in b.members())
    print(f"add reached replica B after {elapsed:.3f}s")
    assert elapsed <= 1.0, elapsed
    assert b.get()["runtime_members"] == ["carol"] and b.get()["file_members"] == ["alice"]
    assert redis_server.command("SMEMBERS", "t:cohort:auth:beta") == {"carol"}
    assert redis_server.command("HGET", "t:cohorts", "auth:beta") == "1"

    listed = cli("cohort", "list", "auth", "--admin", b.admin)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["COHORT", "TO", "MEMBERS", "MATCHER"]
    assert lines[1].split() == ["staff", "new", "-", "header", "x-staff", "equals", "1"]
    assert lines[2].split() == ["beta", "new", "2", "users"]
    assert lines[3].strip() == "routes.yaml: alice" and lines[4].strip() == "runtime: carol"
    as_json = json.loads(cli("cohort", "list", "auth", "beta", "--json", "--admin", b.admin).stdout)
    assert as_json == {"route": "auth", "cohorts": [{k: v for k, v in b.get().items() if k not in ("route", "next_cursor")}]}

    r = cli("cohort", "remove", "auth", "beta", "carol", "--admin", b.admin)
    assert r.returncode == 0 and "removed 1; 1 member (" in r.stdout, r.stderr
    elapsed = time_until(lambda: b"carol" not in a.members())
    print(f"remove reached replica A after {elapsed:.3f}s")
    assert elapsed <= 1.0, elapsed
    assert a.get()["file_members"] == ["alice"] and a.get()["count"] == 1, "routes.yaml's own members stay"

    events = httpx.get(a.admin + "/admin/history", params={"route": "auth"}).json()
    assert [(e["action"], e["who"], e["source"], e["new"]["runtime_members"]) for e in events] == [("cohort", "admin", "cli", 0), ("cohort", "admin", "cli", 1)]
    assert events[1]["reason"] == "dogfood"


def test_cli_operator_mistakes_are_one_line(replicas, tmp_path, redis_server):
    a = replicas(tmp_path, redis_server.url)
    for args, code, said in [
        (("remove", "auth", "beta", "alice"), 1, "routes.yaml"),
        (("add", "nope", "beta", "x"), 1, "unknown route 'nope'"),
        (("add", "auth", "staff", "x"), 1, "not users"),
        (("list", "auth", "nope"), 1, "no cohort 'nope'"),
        (("add", "auth", "beta"), 2, "needs ROUTE COHORT USER"),
        (("list", "auth", "beta", "x"), 2, "no user ids"),
    ]:
        r = cli("cohort", *args, "--admin", a.admin)
        assert r.returncode == code, (args, r.stdout, r.stderr)
        assert said in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, (args, r.stderr)
    r = subprocess.run([sys.executable, "-m", "splitter", "cohort", "add", "auth", "beta", "x", "--admin", a.admin], capture_output=True, text=True, cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "SPLITTER_ADMIN_TOKEN"})
    assert r.returncode == 1 and "SPLITTER_ADMIN_TOKEN" in r.stderr
    assert a.members() == frozenset()


def test_redis_limit_is_fleet_wide_and_unchanged_members_are_reused(replicas, tmp_path, redis_server):
    a = replicas(tmp_path, redis_server.url)
    b = replicas(tmp_path, redis_server.url)
    r = a.put(add=[f"u{i}" for i in range(MAX_COHORT_MEMBERS)])
    assert r.status_code == 400 and "100001 members" in r.json()["error"]
    assert redis_server.command("EXISTS", "t:cohort:auth:beta") == 0 and redis_server.command("HLEN", "t:cohorts") == 0
    assert b.put(add=[f"u{i}" for i in range(MAX_COHORT_MEMBERS - 1)]).status_code == 200
    eventually(lambda: len(a.members()) == MAX_COHORT_MEMBERS - 1, timeout=10)
    r = a.put(add=["one_more"])
    assert r.status_code == 400, "the limit counts what another replica added"
    assert redis_server.command("SCARD", "t:cohort:auth:beta") == MAX_COHORT_MEMBERS - 1

    beta = a.members()
    assert b.put("pinned", add=["p1"]).status_code == 200
    eventually(lambda: a.members("pinned") == {b"p1"}, timeout=3)
    assert httpx.put(b.admin + "/admin/routes/auth", json={"percent": 9}, headers=AUTH).status_code == 200
    eventually(lambda: a.rt.snapshot.percent["auth"] == 9, timeout=3)
    time.sleep(1.2)  # a resync or two in between
    assert a.members() is beta, "an unrelated change or a resync rebuilt a 99,999-member set"


def test_restart_reloads_members_and_redis_data_loss_writes_them_back(replicas, tmp_path, redis_server):
    a = replicas(tmp_path, redis_server.url)
    assert a.put(add=["carol"]).status_code == 200
    a.stop()
    a2 = replicas(tmp_path, redis_server.url)
    assert a2.members() == {b"carol"}, "members are loaded before the replica is ready"

    redis_server.stop()
    eventually(lambda: not a2.rt.overrides.up, timeout=10)
    r = a2.put(add=["dave"])
    assert r.status_code == 503 and "nothing was changed" in r.json()["error"]
    assert a2.members() == {b"carol"}, "the last members seen keep serving"
    redis_server.start()  # empty: no persistence
    eventually(lambda: redis_server.command("SMEMBERS", "t:cohort:auth:beta") == {"carol"}, timeout=10)
    assert a2.put(add=["dave"]).status_code == 200
    assert a2.members() == {b"carol", b"dave"}


# --- routes.yaml with cohorts, through the proxy (needs i25b's parsing and decide) -----------------

COHORT_ROUTES = """  - name: auth
    prefix: /api/auth
    percent: 0
    cohorts:
      - {name: staff, header: X-Staff, equals: "1", to: new}
      - {name: beta, users: [alice], to: new}
  - name: upload
    prefix: /api/upload
    percent: 0"""


def test_cohort_add_on_a_reaches_users_through_b(standin, splitter, redis_server):
    text = routes_yaml(standin("legacy"), standin("new"), routes=COHORT_ROUTES, extra=f'redis: {{url: "{redis_server.url}", prefix: "t"}}')
    env = {"SPLITTER_ADMIN_TOKEN": TOKEN}
    a = splitter(text, env=env)
    b_cfg = a.config.parent / "routes-b.yaml"
    b_cfg.write_text(text)
    b = splitter(text, env=env, config=b_cfg)

    def served(s, user: str) -> str:
        return str(httpx.get(s.url + "/api/auth/x", headers={"X-User-ID": user}).json()["backend"])

    def decided(s, user: str) -> tuple[str, str]:
        routes = httpx.get(s.admin + "/admin/bucket", params={"user_id": user}).json()["routes"]
        auth = next(r for r in routes if r["route"] == "auth")
        return auth["backend"], auth["reason"]

    assert served(b, "carol") == "legacy" and decided(b, "carol") == ("legacy", "percent")
    assert served(b, "alice") == "new"
    assert cli("cohort", "add", "auth", "beta", "carol", "--admin", a.admin).returncode == 0
    elapsed = time_until(lambda: served(b, "carol") == "new")
    print(f"carol on new through replica B after {elapsed:.3f}s")
    assert elapsed <= 1.0, elapsed
    assert decided(b, "carol") == ("new", "cohort:beta")
    assert cli("cohort", "remove", "auth", "beta", "carol", "--admin", b.admin).returncode == 0
    eventually(lambda: served(a, "carol") == "legacy", timeout=1)
    assert served(a, "alice") == "new" and served(b, "alice") == "new" and decided(a, "alice") == ("new", "cohort:beta")
    a.proc.stop()
    assert cli("cohort", "add", "auth", "beta", "erin", "--admin", b.admin).returncode == 0
    a2 = splitter(text, env=env, config=a.config)
    assert served(a2, "erin") == "new", "a restarted replica loads the members before it is ready"
