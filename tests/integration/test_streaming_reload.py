"""Streaming bodies with flat memory, and hot reload of routes.yaml under a running proxy."""

import os
import signal
import time

import httpx
from conftest import eventually, routes_yaml, rss_mib

from splitter.bucketing import bucket

MiB = 1024 * 1024


def test_200_mib_upload_and_download_stream_with_flat_memory(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new")), args=["--no-access-log"])
    httpx.get(s.url + "/api/upload/warm")
    before = rss_mib(s.proc.pid)
    total = 200 * MiB
    chunk = b"z" * MiB

    def body():
        for _ in range(total // MiB):
            yield chunk

    peak = before
    r = httpx.post(s.url + "/api/upload/big", content=body(), headers={"Content-Length": str(total)}, timeout=120)
    assert r.status_code == 200 and r.json()["body_bytes"] == total
    peak = max(peak, rss_mib(s.proc.pid))
    received = 0
    with httpx.stream("GET", s.url + f"/api/upload/bytes?n={total}", timeout=120) as resp:
        for part in resp.iter_raw():
            received += len(part)
            if received % (20 * MiB) < len(part):
                peak = max(peak, rss_mib(s.proc.pid))
    assert received == total
    peak = max(peak, rss_mib(s.proc.pid))
    assert peak - before < 50, f"RSS grew {peak - before:.1f} MiB while 400 MiB streamed through"


def test_chunked_upload_streams_too(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new")))

    def body():
        for _ in range(10):
            yield b"a" * 100_000

    r = httpx.post(s.url + "/api/upload/chunked", content=body(), timeout=30)
    assert r.json()["body_bytes"] == 1_000_000
    assert "transfer-encoding" not in dict(r.json()["headers"]) or dict(r.json()["headers"])["transfer-encoding"] == "chunked"


def test_body_over_max_body_bytes_is_413(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new"), extra="max_body_bytes: 1000"))
    r = httpx.post(s.url + "/api/upload/x", content=b"a" * 2000)
    assert r.status_code == 413 and "limit" in r.json()["error"]

    def body():
        for _ in range(5):
            yield b"a" * 500

    r = httpx.post(s.url + "/api/upload/x", content=body())
    assert r.status_code == 413
    assert s.metric("splitter_rejected_total", reason="too_large") == 2


def new_share(s, route_path: str, users: list[str]) -> float:
    with httpx.Client(base_url=s.url) as c:
        return sum(c.get(route_path, headers={"X-User-ID": u}).json()["backend"] == "new" for u in users) / len(users)


USERS = [f"r{i}" for i in range(200)]


def test_editing_routes_yaml_changes_routing_within_3s_and_bad_edits_are_rejected(standin, splitter):
    legacy, new = standin("legacy"), standin("new")
    s = splitter(routes_yaml(legacy, new))
    assert new_share(s, "/api/upload/x", USERS) == 0
    s.config.write_text(routes_yaml(legacy, new).replace("percent: 0", "percent: 100"))
    t0 = time.monotonic()
    eventually(lambda: new_share(s, "/api/upload/x", USERS[:20]) == 1.0, timeout=3)
    assert time.monotonic() - t0 <= 3
    assert s.metric("splitter_config_reloads_total", result="success") == 1
    assert s.metric("splitter_route_percent", route="upload") == 100

    # invalid, empty, truncated and deleted files are each rejected whole
    good = s.config.read_text()
    failures = 0
    for bad in [good.replace("percent: 100", "percent: 150"), "", good[: len(good) // 2], None]:
        if bad is None:
            os.unlink(s.config)
        else:
            s.config.write_text(bad)
        failures += 1
        eventually(lambda f=failures: s.metric("splitter_config_reloads_total", result="failure") == f, timeout=3)
        assert new_share(s, "/api/upload/x", USERS[:20]) == 1.0
    s.config.write_text(good.replace("percent: 100", "percent: 25"))
    eventually(lambda: s.metric("splitter_route_percent", route="upload") == 25, timeout=3)
    expected = sum(bucket(u) < 25 for u in USERS) / len(USERS)
    assert new_share(s, "/api/upload/x", USERS) == expected
    s.wait_log(lambda e: e["event"].startswith("config reload rejected"))


def test_sighup_reloads_immediately(standin, splitter):
    legacy, new = standin("legacy"), standin("new")
    s = splitter(routes_yaml(legacy, new), env={"SPLITTER_ENV": "production"})
    s.config.write_text(routes_yaml(legacy, new).replace("percent: 0", "percent: 100"))
    s.proc.signal(signal.SIGHUP)
    eventually(lambda: s.metric("splitter_route_percent", route="upload") == 100, timeout=2)
