"""The admin listener cannot stall the data plane (issue 32, item 5): large listings come in pages
(`limit`, `cursor`, `next_cursor`), and three readers looping on a 99,000-member cohort leave the proxy's
latency within twice its idle value. Real processes on 127.0.0.1: `splitter serve`, stand-in backends,
and the readers, each a process of its own so their work does not share the measuring client's GIL."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from statistics import median
from typing import IO

import httpx
from conftest import ROOT, routes_yaml

TOKEN = "paging-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTES = """  - name: auth
    prefix: /api/auth
    percent: 0
    cohorts:
      - {name: staff, header: X-Staff, equals: "1", to: new}
      - {name: beta, users: [alice, bob], to: new}"""
MEMBERS = "/admin/routes/auth/cohorts/beta"


def add_members(admin: str, ids: list[str], batch: int = 10_000) -> None:
    for i in range(0, len(ids), batch):
        r = httpx.put(admin + MEMBERS, json={"add": ids[i : i + batch]}, headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text


def read_all(admin: str, limit: int | None = None) -> tuple[list[str], list[str], int]:
    """Every member, page by page: (routes.yaml's, runtime ones, pages read)."""
    files: list[str] = []
    runtime: list[str] = []
    cursor, pages = None, 0
    with httpx.Client(base_url=admin, timeout=10) as client:
        while True:
            query = {k: v for k, v in (("limit", limit), ("cursor", cursor)) if v is not None}
            page = client.get(MEMBERS, params=query).json()
            files += page["file_members"]
            runtime += page["runtime_members"]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                return files, runtime, pages


def test_cohort_members_come_in_pages_and_the_cli_reads_them_all(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=ROUTES), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    ids = [f"m{i:05d}" for i in range(2_500)]
    add_members(s.admin, ids, batch=1_000)

    first = httpx.get(s.admin + MEMBERS).json()
    assert first["count"] == 2_502 and first["name"] == "beta" and first["matcher"] == "users"
    assert first["file_members"] == ["alice", "bob"] and first["runtime_members"] == ids[:998], "1,000 by default"
    assert isinstance(first["next_cursor"], str)
    files, runtime, pages = read_all(s.admin)
    assert (files, runtime, pages) == (["alice", "bob"], ids, 3)
    files, runtime, pages = read_all(s.admin, limit=1)
    assert (files, runtime, pages) == (["alice", "bob"], ids, 2_502), "a cursor between the two lists"
    assert read_all(s.admin, limit=10_000)[2] == 1

    # a change between pages: the cursor names the last member read, so nobody is skipped or repeated
    page = httpx.get(s.admin + MEMBERS, params={"limit": 1_002}).json()
    assert page["runtime_members"][-1] == "m00999"
    r = httpx.put(s.admin + MEMBERS, json={"add": ["a_new_one"], "remove": ["m00500", "m01000"]}, headers=AUTH)
    assert r.status_code == 200
    rest = httpx.get(s.admin + MEMBERS, params={"cursor": page["next_cursor"], "limit": 10_000}).json()
    assert rest["runtime_members"] == ids[1001:] and rest["next_cursor"] is None and rest["file_members"] == []

    listing = httpx.get(s.admin + "/admin/routes/auth/cohorts", params={"limit": 10}).json()["cohorts"]
    assert "next_cursor" not in listing[0], "a header cohort has no members"
    assert listing[1]["runtime_members"] == ["a_new_one", *ids[:7]] and isinstance(listing[1]["next_cursor"], str)

    for bad in ({"limit": "0"}, {"limit": "10001"}, {"limit": "x"}, {"cursor": "nope"}, {"cursor": "WzIsICJ4Il0="}):
        r = httpx.get(s.admin + MEMBERS, params=bad)
        assert r.status_code == 400 and ("limit" in r.json()["error"] or "cursor" in r.json()["error"]), (bad, r.text)

    env = {**os.environ, "SPLITTER_ADMIN_TOKEN": TOKEN}
    out = subprocess.run(
        [sys.executable, "-m", "splitter", "cohort", "list", "auth", "beta", "--json", "--admin", s.admin],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    (beta,) = json.loads(out.stdout)["cohorts"]
    want = sorted(set(ids) - {"m00500", "m01000"} | {"a_new_one"})
    assert beta["runtime_members"] == want and beta["file_members"] == ["alice", "bob"] and "next_cursor" not in beta
    table = subprocess.run(
        [sys.executable, "-m", "splitter", "cohort", "list", "auth", "--admin", s.admin],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )
    assert table.returncode == 0 and "beta" in table.stdout and f"and {len(want) - 20} more" in table.stdout, table


READER = """
import http.client, json, sys
from urllib.parse import urlencode
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conn = http.client.HTTPConnection(host, port, timeout=30)
print("ready", flush=True)
while True:  # the whole listing, page by page (an answer without next_cursor is the whole listing), again
    cursor = None
    while True:
        conn.request("GET", path + ("?" + urlencode({"cursor": cursor}) if cursor else ""))
        body = conn.getresponse().read()
        at = body.rfind(b'"next_cursor":')  # the last key: a reader as cheap as curl, not a JSON parse of 200 kB
        cursor = json.loads(body[at + 14 : -1]) if at >= 0 else None
        if cursor is None:
            break
    print("lap", flush=True)
"""


def latencies(port: int, n: int) -> list[float]:
    """n requests through the proxy, one after another on one keep-alive connection; seconds each."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        conn.request("GET", f"/api/auth/me?i={i}", headers={"X-User-ID": f"user{i}"})
        resp = conn.getresponse()
        resp.read()
        out.append(time.perf_counter() - t0)
        assert resp.status == 200
    conn.close()
    return out


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(len(ordered) * 0.99) - 1]


def test_three_readers_of_a_99000_member_cohort_leave_proxy_latency_within_twice_idle(standin, splitter, procs):
    s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=ROUTES), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    # ids of 200 characters, as the issue's: 99,000 of them are a 20 MB listing in one answer
    add_members(s.admin, [f"member-{i:06d}-" + "x" * 186 for i in range(99_000)])
    assert httpx.get(s.admin + MEMBERS).json()["count"] == 99_002

    latencies(s.port, 100)  # warm up both sides' connections
    idle = latencies(s.port, 1_000)
    readers = [
        subprocess.Popen([sys.executable, "-c", READER, "127.0.0.1", str(s.admin_port), MEMBERS],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    laps = [0, 0, 0]

    def count_laps(i: int, out: IO[str]) -> None:
        for line in iter(out.readline, ""):
            laps[i] += line == "lap\n"

    counters = []
    try:
        for i, r in enumerate(readers):
            assert r.stdout is not None and r.stdout.readline() == "ready\n"
            counters.append(threading.Thread(target=count_laps, args=(i, r.stdout), daemon=True))
            counters[-1].start()
        loaded: list[float] = []
        deadline = time.monotonic() + 300
        while min(laps) < 2 or len(loaded) < 1_000:  # every reader reads the whole listing, twice
            assert all(r.poll() is None for r in readers), "a reader failed"
            assert time.monotonic() < deadline, f"the readers read the whole listing only {laps} times in 300 s"
            loaded += latencies(s.port, 100)
    finally:
        for r in readers:
            r.kill()
            r.wait()
        for t in counters:
            t.join(10)
        for r in readers:
            if r.stdout is not None:
                r.stdout.close()
    idle_p99, loaded_p99 = p99(idle), p99(loaded)
    bound = max(2 * idle_p99, idle_p99 + 0.020)  # a generous floor: CI runs this with both cores busy
    print(f"proxy p99 idle {idle_p99 * 1000:.2f} ms, with 3 readers {loaded_p99 * 1000:.2f} ms "
          f"(bound {bound * 1000:.2f} ms); p50 {median(idle) * 1000:.2f} -> {median(loaded) * 1000:.2f} ms; "
          f"{len(loaded)} requests while the readers read the whole listing {laps} times")
    assert loaded_p99 <= bound, (idle_p99, loaded_p99)
