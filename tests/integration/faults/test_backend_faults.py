"""Backend faults: each failing request gets its 502/504 JSON, counted by kind; the rest is untouched."""

import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import PY, ROOT, Proc, eventually, free_port, routes_yaml, wait_http

from splitter.bucketing import bucket

HERE = Path(__file__).resolve().parent


def start_bad(procs, tmp_path, port=None) -> str:
    port = port or free_port()
    p = Proc([PY, str(HERE / "badupstream.py"), "--port", str(port)], log=tmp_path / f"bad-{port}.log")
    procs.append(p)
    wait_http(f"http://127.0.0.1:{port}/ok", proc=p.p)
    return f"http://127.0.0.1:{port}"


def start_standin(procs, tmp_path, name: str, port: int) -> Proc:
    p = Proc([PY, str(ROOT / "tests" / "standin.py"), "--port", str(port), "--name", name], log=tmp_path / f"{name}-{port}-{time.monotonic()}.log")
    procs.append(p)
    wait_http(f"http://127.0.0.1:{port}/ready", proc=p.p)
    return p


NEW_ONLY = """  - name: auth
    prefix: /api/auth
    percent: 50
  - name: newside
    prefix: /api/new
    percent: 100"""


def test_each_upstream_failure_maps_to_its_status_and_kind(procs, tmp_path, splitter, standin):
    bad = start_bad(procs, tmp_path)
    s = splitter(routes_yaml(standin("legacy"), bad, routes=NEW_ONLY).replace("read_timeout: 2", "read_timeout: 1"))
    cases = [("/api/new/garbage", 502, "protocol"), ("/api/new/reset", 502, "connect"), ("/api/new/slow?s=3", 504, "timeout")]
    for path, status, kind in cases:
        for _ in range(3):
            r = httpx.get(s.url + path, headers={"X-Request-ID": "rid-x", "X-User-ID": "u1"}, timeout=10)
            assert r.status_code == status, (path, r.text)
            assert r.json()["handler"] == "new_newside" and r.json()["request_id"] == "rid-x"
        assert s.metric("splitter_errors_total", route="newside", backend="new", handler="new_newside", kind=kind) == 3, kind
    assert httpx.get(s.url + "/api/new/fine", headers={"X-User-ID": "u1"}).json() == {"ok": True}, "the pool recovered after every kind of failure"


def read_all(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk


@pytest.mark.parametrize("path", ["/api/new/truncate", "/api/new/chunks"])
def test_failure_after_the_head_aborts_the_connection(procs, tmp_path, splitter, standin, path):
    bad = start_bad(procs, tmp_path)
    s = splitter(routes_yaml(standin("legacy"), bad, routes=NEW_ONLY))
    data = read_all(s.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nX-User-ID: u1\r\n\r\n".encode())
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert data.count(b"HTTP/1.1") == 1, "never a second status line"
    if path.endswith("truncate"):
        assert len(body) < 100000, "the connection was closed short of Content-Length: the client sees a truncated body"
    else:
        assert not body.endswith(b"0\r\n\r\n"), "no terminating chunk: the client sees an incomplete body"
    eventually(lambda: s.metric("splitter_errors_total", route="newside", backend="new", handler="new_newside", kind="protocol") == 1)


def test_new_killed_and_flapping_under_load_legacy_untouched(procs, tmp_path, splitter, standin):
    legacy = standin("legacy")
    new_port = free_port()
    new_proc = start_standin(procs, tmp_path, "new", new_port)
    s = splitter(routes_yaml(legacy, f"http://127.0.0.1:{new_port}"), args=["--no-access-log"])
    results: list[tuple[str, int, str]] = []
    stop = threading.Event()

    def load(k: int) -> None:
        i = k
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                uid = f"k{i % 400}"
                r = c.get(s.url + "/api/auth/x", headers={"X-User-ID": uid})
                side = "new" if bucket(uid) < 50 else "legacy"
                body = r.json()
                results.append((side, r.status_code, body.get("error", body.get("backend"))))
                i += 4

    threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        for _ in range(3):  # killed, back, killed, back...: flapping
            os.killpg(new_proc.pid, signal.SIGKILL)
            new_proc.p.wait()
            time.sleep(0.5)
            new_proc = start_standin(procs, tmp_path, "new", new_port)
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    legacy_results = [r for r in results if r[0] == "legacy"]
    new_results = [r for r in results if r[0] == "new"]
    assert legacy_results and all(code == 200 and what == "legacy" for _, code, what in legacy_results)
    failed = [r for r in new_results if r[1] != 200]
    assert failed, "the kills happened under load"
    # refused or reset before a response: connect; killed while a response was on the wire: protocol
    assert {(code, what) for _, code, what in failed} <= {(502, "upstream connection failed"), (502, "upstream sent a malformed response")}, set(failed)
    counted = sum(s.metric("splitter_errors_total", route="auth", backend="new", handler="new_auth", kind=k) or 0 for k in ("connect", "protocol"))
    assert counted == len(failed)
    with httpx.Client(base_url=s.url) as c:
        assert all(c.get("/api/auth/x", headers={"X-User-ID": f"k{i}"}).status_code == 200 for i in range(50)), "recovered"


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_ten_thousand_failures_leak_nothing_and_good_requests_flow_after(procs, tmp_path, splitter, standin):
    import asyncio

    import aiohttp

    new_port = free_port()
    s = splitter(routes_yaml(standin("legacy"), f"http://127.0.0.1:{new_port}"), args=["--no-access-log"])
    httpx.get(s.url + "/api/resume/x", headers={"X-User-ID": "warm"})
    fds_before = open_fds(s.proc.pid)

    async def hammer() -> list[int]:
        sem = asyncio.Semaphore(32)
        async with aiohttp.ClientSession() as c:

            async def one(i: int) -> int:
                async with sem, c.get(s.url + "/api/resume/x", headers={"X-User-ID": f"z{i}"}) as r:
                    await r.read()
                    return r.status

            return await asyncio.gather(*(one(i) for i in range(10_000)))

    codes = asyncio.run(hammer())
    assert codes == [502] * 10_000
    assert s.metric("splitter_errors_total", route="resume_review", backend="new", handler="new_resume_review", kind="connect") == 10_001  # + the warm-up request
    assert open_fds(s.proc.pid) <= fds_before + 5, "no leaked sockets after 10,000 failed connects"
    start_standin(procs, tmp_path, "new", new_port)
    with httpx.Client(base_url=s.url) as c:
        assert [c.get("/api/resume/x", headers={"X-User-ID": f"g{i}"}).json()["backend"] for i in range(20)] == ["new"] * 20
