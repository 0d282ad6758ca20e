"""Fleet-wide runtime control through a real redis-server on a free port."""

import os
import subprocess
import sys
import threading
import time

import httpx
import pytest
from conftest import ROOT, eventually, routes_yaml

from splitter.bucketing import bucket

TOKEN = "fleet-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
USERS = [f"f{i}" for i in range(100)]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPLITTER_ADMIN_TOKEN": TOKEN}
    return subprocess.run([sys.executable, "-m", "splitter", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)


def routing(s, path="/api/auth/x", users=USERS) -> list[str]:
    with httpx.Client(base_url=s.url) as c:
        return [c.get(path, headers={"X-User-ID": u}).json()["backend"] for u in users]


def expected(percent: int, users=USERS) -> list[str]:
    return ["new" if bucket(u) < percent else "legacy" for u in users]


@pytest.fixture
def fleet(standin, splitter, redis_server):
    legacy, new = standin("legacy"), standin("new")
    text = routes_yaml(legacy, new, extra=f'redis: {{url: "{redis_server.url}", prefix: "t"}}')
    env = {"SPLITTER_ADMIN_TOKEN": TOKEN}
    a = splitter(text, env=env)
    b_cfg = a.config.parent / "routes-b.yaml"
    b_cfg.write_text(text)
    b = splitter(text, env=env, config=b_cfg)
    return a, b, redis_server


def time_until(check, timeout: float = 3.0) -> float:
    t0 = time.monotonic()
    eventually(check, timeout=timeout, interval=0.02)
    return time.monotonic() - t0


def test_a_change_on_one_replica_reaches_the_other_within_1s(fleet):
    a, b, redis = fleet
    assert a.metric("splitter_redis_up") == 1 and b.metric("splitter_redis_up") == 1
    r = cli("set", "auth", "60", "--admin", a.admin)
    assert r.returncode == 0, r.stderr
    assert "auth: 60%" in r.stdout
    elapsed = time_until(lambda: routing(b, users=USERS[:30]) == expected(60, USERS[:30]))
    assert elapsed <= 1.0, elapsed
    assert routing(b) == expected(60) and routing(a) == expected(60)
    assert redis.command("HGET", "t:percent", "auth") == "60"

    assert cli("kill", "on", "--admin", a.admin).returncode == 0
    elapsed = time_until(lambda: set(routing(b, users=USERS[:30])) == {"legacy"})
    assert elapsed <= 1.0, elapsed
    assert set(routing(a)) == {"legacy"} and set(routing(b, "/api/resume/x")) == {"legacy"}
    assert b.metric("splitter_kill_switch") == 1
    assert cli("kill", "off", "--admin", b.admin).returncode == 0
    eventually(lambda: routing(a, users=USERS[:30]) == expected(60, USERS[:30]), timeout=1)

    r = cli("rollback", "--all", "--admin", b.admin)
    assert r.returncode == 0, r.stderr
    eventually(lambda: all(x["percent"] == 0 for x in httpx.get(a.admin + "/admin/routes").json()), timeout=1)
    assert set(routing(a, "/api/resume/x")) == {"legacy"}

    status = cli("status", "--admin", a.admin)
    assert status.returncode == 0 and "resume_review" in status.stdout and "override" in status.stdout


def test_redis_outage_and_empty_restart(fleet):
    a, b, redis = fleet
    assert cli("set", "auth", "60", "--admin", a.admin).returncode == 0
    assert cli("rollback", "resume_review", "--admin", a.admin).returncode == 0
    assert cli("kill", "on", "--admin", a.admin).returncode == 0
    assert cli("kill", "off", "--admin", a.admin).returncode == 0
    eventually(lambda: routing(b, users=USERS[:20]) == expected(60, USERS[:20]), timeout=1)

    failures: list[str] = []
    sent = [0]
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=5) as c:
            while not stop.is_set():
                for s in (a, b):
                    u = USERS[sent[0] % len(USERS)]
                    try:
                        r = c.get(s.url + "/api/auth/x", headers={"X-User-ID": u})
                        if r.status_code != 200 or r.json()["backend"] != expected(60, [u])[0]:
                            failures.append(f"{r.status_code} {r.text[:80]}")
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                    sent[0] += 1

    t = threading.Thread(target=load)
    t.start()
    try:
        time.sleep(0.5)
        redis.stop()
        eventually(lambda: a.metric("splitter_redis_up") == 0 and b.metric("splitter_redis_up") == 0, timeout=5)
        r = httpx.put(a.admin + "/admin/routes/auth", json={"percent": 10}, headers=AUTH)
        assert r.status_code == 503 and "Redis" in r.json()["error"]
        r = cli("kill", "on", "--admin", b.admin)
        assert r.returncode == 1 and "503" in r.stderr
        time.sleep(1.0)
        redis.start()  # empty: no persistence
        eventually(lambda: a.metric("splitter_redis_up") == 1 and b.metric("splitter_redis_up") == 1, timeout=10)
        eventually(lambda: redis.command("HGET", "t:percent", "auth") == "60", timeout=3)
        time.sleep(0.5)
    finally:
        stop.set()
        t.join()
    assert sent[0] > 100
    assert failures == [], failures[:5]
    assert redis.command("HGET", "t:percent", "resume_review") == "0"
    assert redis.command("GET", "t:kill") == "0"
    eventually(lambda: "wrote back the last known overrides" in a.proc.output() + b.proc.output(), timeout=2)
    # the subscription survived the outage: a change is fleet-wide again
    assert cli("set", "auth", "20", "--admin", b.admin).returncode == 0
    assert time_until(lambda: routing(a, users=USERS[:30]) == expected(20, USERS[:30])) <= 1.0


def test_kill_switch_survives_a_redis_restart(fleet):
    a, b, redis = fleet
    assert cli("kill", "on", "--admin", a.admin).returncode == 0
    eventually(lambda: b.metric("splitter_kill_switch") == 1, timeout=1)
    redis.stop()
    eventually(lambda: a.metric("splitter_redis_up") == 0, timeout=5)
    redis.start()
    eventually(lambda: redis.command("GET", "t:kill") == "1", timeout=10)
    assert set(routing(a)) == {"legacy"} and set(routing(b)) == {"legacy"}


def test_workers_with_redis_all_apply_a_change_and_gauges_are_single_values(standin, splitter, redis_server):
    text = routes_yaml(standin("legacy"), standin("new"), extra=f'redis: {{url: "{redis_server.url}"}}')
    s = splitter(text, env={"SPLITTER_ADMIN_TOKEN": TOKEN}, args=["--workers", "2"])
    eventually(lambda: s.metric("splitter_redis_up") == 1, timeout=5)
    assert cli("set", "auth", "80", "--admin", s.admin).returncode == 0
    time.sleep(1.0)
    # fresh connections spread over both workers; every one must route by 80%
    for _ in range(5):
        for u in USERS[:40]:
            r = httpx.get(s.url + "/api/auth/x", headers={"X-User-ID": u, "Connection": "close"})
            assert r.json()["backend"] == expected(80, [u])[0]
    # every worker answers /metrics from the shared files: counters summed, gauges single
    text = s.metrics()
    assert s.metric("splitter_route_percent", route="auth") == 80
    assert s.metric("splitter_kill_switch") == 0
    total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("splitter_requests_total{") and 'route="auth"' in line)
    assert total == 200
    started = [e for e in s.logs() if e["event"] == "started"]
    assert len({e["pid"] for e in started}) == 2, "two workers, each with its own Redis subscription"


# --- Sentinel: a master, a replica and three sentinels, all real redis-server processes ---
PASSWORD = "sentinel-test-password"


def _sentinel_conf(path, port: int, master_port: int) -> None:
    path.write_text(f"""sentinel monitor mymaster 127.0.0.1 {master_port} 2
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 4000
sentinel auth-pass mymaster {PASSWORD}
""")


@pytest.fixture
def sentinel_set(redis_server_bin, tmp_path):
    """Master + replica (both with requirepass) and three sentinels agreeing on them; yields (master, replica, sentinels)."""
    from conftest import Redis, free_port

    auth = ("--requirepass", PASSWORD, "--masterauth", PASSWORD)
    master = Redis(redis_server_bin, free_port(), tmp_path, auth, PASSWORD)
    replica = Redis(redis_server_bin, free_port(), tmp_path, (*auth, "--replicaof", "127.0.0.1", str(master.port)), PASSWORD)
    sentinels = []
    for i in range(3):
        port = free_port()
        conf = tmp_path / f"sentinel-{i}.conf"
        _sentinel_conf(conf, port, master.port)
        sentinels.append(Redis(redis_server_bin, port, tmp_path, ("--sentinel",), conf=conf))
    try:
        for r in (master, replica, *sentinels):
            r.start()
        eventually(lambda: replica.command("INFO", "replication")["master_link_status"] == "up", timeout=10)
        for s in sentinels:  # each sentinel knows the replica and the two other sentinels
            eventually(lambda s=s: len(s.command("SENTINEL", "SENTINELS", "mymaster")) == 2 and s.command("SENTINEL", "REPLICAS", "mymaster"), timeout=20)
        yield master, replica, sentinels
    finally:
        for r in (*sentinels, replica, master):
            r.stop()


def disconnects(s) -> int:
    return sum(e["event"] == "redis disconnected" for e in s.logs())


def test_sentinel_failover_under_traffic(standin, splitter, sentinel_set):
    master, replica, sentinels = sentinel_set
    legacy, new = standin("legacy"), standin("new")
    where = ", ".join(f'"127.0.0.1:{s.port}"' for s in sentinels)
    text = routes_yaml(legacy, new, extra=f'redis: {{sentinels: [{where}], service: mymaster, prefix: t, password_env: SPLITTER_TEST_REDIS_PW}}')
    env = {"SPLITTER_ADMIN_TOKEN": TOKEN, "SPLITTER_TEST_REDIS_PW": PASSWORD}
    a = splitter(text, env=env)
    b_cfg = a.config.parent / "routes-b.yaml"
    b_cfg.write_text(text)
    b = splitter(text, env=env, config=b_cfg)
    assert cli("set", "auth", "30", "--admin", a.admin).returncode == 0
    eventually(lambda: replica.command("HGET", "t:percent", "auth") == "30", timeout=5)
    eventually(lambda: routing(b, users=USERS[:30]) == expected(30, USERS[:30]), timeout=3)

    failures: list[str] = []
    sent = [0]
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=5) as c:
            while not stop.is_set():
                for s in (a, b):
                    u = USERS[sent[0] % len(USERS)]
                    try:
                        r = c.get(s.url + "/api/auth/x", headers={"X-User-ID": u})
                        if r.status_code != 200 or r.json()["backend"] != expected(30, [u])[0]:
                            failures.append(f"{r.status_code} {r.text[:80]}")
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                    sent[0] += 1

    # the node to kill is the one the sentinels name now: on a slow machine they may already have failed
    # over once (down-after is 1 s), and killing a replica would test nothing
    named = int(sentinels[0].command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")[1])
    if named == replica.port:
        master, replica = replica, master
    assert named == master.port and master.command("ROLE")[0] == "master", (named, master.port, replica.port)
    assert master.command("PUBSUB", "NUMSUB", "t:events")[1] == 2, "both proxies listen on the node about to die"
    t = threading.Thread(target=load)
    t.start()
    try:
        time.sleep(0.5)
        before = disconnects(a)
        master.stop()  # SIGKILL
        t0 = time.monotonic()
        # the proxy noticed: its log says so (the gauge's 0 lasts only until the failover, which a poll can miss)
        eventually(lambda: disconnects(a) > before, timeout=10)

        def write() -> bool:
            r = httpx.put(a.admin + "/admin/routes/upload", json={"percent": 40}, headers=AUTH, timeout=5)
            return r.status_code == 200

        eventually(write, timeout=30, interval=0.2)
        took = time.monotonic() - t0
        print(f"admin writes succeed again {took:.1f} s after the master was killed")
        assert took <= 25, took
        # the other replica follows: it sees the change made after the failover
        t1 = time.monotonic()
        eventually(lambda: routing(b, "/api/upload/x", USERS[:30]) == expected(40, USERS[:30]), timeout=5)
        print(f"the other replica followed in {time.monotonic() - t1:.2f} s")
        time.sleep(0.5)
    finally:
        stop.set()
        t.join()
    new_master = replica
    assert new_master.command("ROLE")[0] == "master"
    assert new_master.command("HGET", "t:percent", "auth") == "30", "the override set before the failover survived"
    assert new_master.command("HGET", "t:percent", "upload") == "40"
    # both subscriptions moved to the new master
    eventually(lambda: new_master.command("PUBSUB", "NUMSUB", "t:events")[1] == 2, timeout=5)
    assert a.metric("splitter_redis_up") == 1 and b.metric("splitter_redis_up") == 1
    print(f"{sent[0]} user requests during the failover, {len(failures)} failed")
    assert sent[0] > 100
    assert failures == [], failures[:5]
    assert "PASSWORD" not in a.proc.output() and PASSWORD not in a.proc.output(), "no password in the logs"


def test_credentials_come_from_the_variables_routes_yaml_names(standin, splitter, redis_server):
    redis_server.command("ACL", "SETUSER", "fleet", "on", ">fleet-pw", "~*", "&*", "+@all")
    extra = f'redis: {{url: "{redis_server.url}", prefix: "t", username_env: T_REDIS_USER, password_env: T_REDIS_PW}}'
    text = routes_yaml(standin("legacy"), standin("new"), extra=extra)
    s = splitter(text, env={"SPLITTER_ADMIN_TOKEN": TOKEN, "T_REDIS_USER": "fleet", "T_REDIS_PW": "fleet-pw"})
    eventually(lambda: s.metric("splitter_redis_up") == 1, timeout=5)
    assert cli("set", "auth", "70", "--admin", s.admin).returncode == 0
    assert redis_server.command("HGET", "t:percent", "auth") == "70"
    assert " user=fleet " in redis_server.command("CLIENT", "LIST"), "the connections log in as the ACL user"
    assert "fleet-pw" not in s.proc.output()


def test_tls_true_and_rediss_urls_make_tls_connections():
    from redis.asyncio.connection import SSLConnection
    from redis.asyncio.sentinel import SentinelManagedSSLConnection

    from splitter.store.redis import Connect, connect

    assert connect("rediss://r:6380/0", Connect()).connection_pool.connection_class is SSLConnection
    assert connect("redis://r:6380/0", Connect(tls=True)).connection_pool.connection_class is SSLConnection
    assert connect("redis://r:6380/0", Connect()).connection_pool.connection_class is not SSLConnection
    sentinel = connect("", Connect(sentinels=(("s1", 26379),), service="m", tls=True))
    assert sentinel.connection_pool.connection_class is SentinelManagedSSLConnection
