"""Proxy lifecycle: SIGTERM drains in-flight requests, refuses new ones; rolling restart loses nothing."""

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
from conftest import eventually, routes_yaml


def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new")).replace("read_timeout: 2", "read_timeout: 10"), args=["--graceful-timeout", "10"])
    results: dict[str, object] = {}

    def slow() -> None:
        results["slow"] = httpx.get(s.url + "/api/upload/slow?s=5", timeout=20)

    def upload() -> None:
        def body():
            for _ in range(20):
                time.sleep(0.15)
                yield b"u" * 100_000

        results["upload"] = httpx.post(s.url + "/api/upload/x", content=body(), timeout=20)

    threads = [threading.Thread(target=slow), threading.Thread(target=upload)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    s.proc.signal(signal.SIGTERM)
    time.sleep(0.5)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", s.port)) != 0, "new connections are refused while draining"
    for t in threads:
        t.join()
    slow_r, up_r = results["slow"], results["upload"]
    assert slow_r.status_code == 200 and slow_r.json()["backend"] == "legacy"  # type: ignore[attr-defined]
    assert up_r.status_code == 200 and up_r.json()["body_bytes"] == 2_000_000  # type: ignore[attr-defined]
    assert s.proc.p.wait(10) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean drain
    assert 2.5 <= time.monotonic() - t0 < 10, "the process waited for both requests"


def test_graceful_timeout_bounds_the_drain(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new")).replace("read_timeout: 2", "read_timeout: 10"), args=["--graceful-timeout", "1"])
    holder: dict[str, object] = {}

    def slow() -> None:
        try:
            holder["r"] = httpx.get(s.url + "/api/upload/slow?s=8", timeout=20)
        except httpx.HTTPError as exc:
            holder["r"] = exc

    t2 = threading.Thread(target=slow)
    t2.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    s.proc.signal(signal.SIGTERM)
    s.proc.p.wait(10)
    assert time.monotonic() - t0 < 4, "stopped after the 1 s graceful timeout, not after the 8 s request"
    t2.join()
    cut = holder["r"]
    assert isinstance(cut, httpx.HTTPError) or cut.status_code >= 500, "the request still in flight after the timeout was cut"  # type: ignore[attr-defined]


def test_rolling_restart_with_two_workers_loses_no_request(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new")), args=["--workers", "2", "--no-access-log"])
    codes: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                # a new connection per request, as from a load balancer that does not reuse them
                r = httpx.get(s.url + "/api/auth/x", headers={"X-User-ID": "r1", "Connection": "close"}, timeout=10)
                codes.append(r.status_code)
            except httpx.HTTPError as exc:
                errors.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        s.proc.signal(signal.SIGUSR2)
        eventually(lambda: len([e for e in s.logs() if e["event"] == "started"]) == 4, timeout=15)
        time.sleep(1.5)  # the second old worker finishes draining
        eventually(lambda: len(codes) > 100, timeout=15)  # enough requests, however slow a loaded machine is
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == [], errors[:3]
    assert len(codes) > 100 and set(codes) == {200}
    pids = {e["pid"] for e in s.logs() if e["event"] == "started"}
    assert len(pids) == 4, "both workers were replaced"


def test_workers_do_not_outlive_a_killed_supervisor(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new")), args=["--workers", "2", "--no-access-log"])
    children = [int(p) for p in subprocess.run(["pgrep", "-P", str(s.proc.pid)], capture_output=True, text=True).stdout.split()]
    workers = [p for p in children if b"multiprocessing" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(workers) >= 2, children
    assert httpx.get(s.url + "/api/auth/x").status_code == 200
    s.proc.p.kill()  # SIGKILL: no chance to stop its workers itself
    s.proc.p.wait(5)
    t0 = time.monotonic()

    def ports_free() -> bool:
        for port in (s.port, s.admin_port):
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    return False
        return True

    eventually(ports_free, timeout=2)
    assert time.monotonic() - t0 < 2
    eventually(lambda: not any(_alive(p) for p in workers), timeout=3)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
