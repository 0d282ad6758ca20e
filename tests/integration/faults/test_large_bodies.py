"""Large bodies take the short way, and every failure of either peer is handled as on the
ordinary path: a download's body moves socket to socket inside the kernel (splice), byte-exact,
keep-alive intact; an upload's is read from the client socket by the proxy itself, byte-exact,
bounded by the body timeout, and its connection closes after the answer."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import eventually, routes_yaml
from rawupstream import RawUpstream, big_body
from test_early_answers import proxy_holds

MiB = 1024 * 1024


@pytest.fixture
def raw():
    up = RawUpstream()
    yield up
    up.stop()


def written(pid: int) -> int:
    """Bytes the process passed to write()-family calls; splice(2) does not count here."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/PID/io")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def get(c: socket.socket, path: str) -> None:
    c.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())


def read_answer(c: socket.socket, pace: float = 0.0) -> tuple[bytes, bytes]:
    """One Content-Length response off a raw connection: (head, body); fails if it closes first."""
    data = bytearray()
    while b"\r\n\r\n" not in data:
        chunk = c.recv(65536)
        assert chunk, f"closed after {bytes(data)!r}"
        data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    body = bytearray(rest)
    while len(body) < length:
        chunk = c.recv(256 * 1024)
        assert chunk, f"closed after {len(body)} of {length} body bytes"
        body += chunk
        if pace:
            time.sleep(pace)
    return head, bytes(body)


def read_to_close(c: socket.socket) -> bytes:
    data = bytearray()
    while chunk := c.recv(256 * 1024):
        data += chunk
    return bytes(data)


def test_a_large_download_moves_in_the_kernel_byte_exact_and_both_connections_live_on(raw, splitter):
    s = splitter(routes_yaml(raw.url, raw.url))
    n = 5 * MiB + 7
    before = written(s.proc.pid)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        get(c, f"/api/auth/big?n={n}")
        head, body = read_answer(c)
        assert head.startswith(b"HTTP/1.1 200") and body == big_body(n)
        get(c, "/api/auth/next")  # the same client connection: uvicorn's length bookkeeping is right
        head, body = read_answer(c)
        assert head.startswith(b"HTTP/1.1 200") and body == b"/api/auth/next"
    assert written(s.proc.pid) - before < MiB, "the 5 MiB did not pass through the proxy's write() calls"
    assert raw.seen.connections == 1, "the upstream connection went back to the pool clean and was reused"
    log = s.wait_log(lambda e: e.get("path") == "/api/auth/big")
    assert log["status"] == 200 and log["bytes_out"] == n


@pytest.mark.parametrize(("query", "kind"), [("cut=2097152", "protocol"), ("cut=1048576&stall=6", "timeout")])
def test_an_upstream_that_stops_mid_body_cuts_the_client_connection_and_is_counted(raw, splitter, query, kind):
    s = splitter(routes_yaml(raw.url, raw.url))  # read_timeout: 2
    n = 5 * MiB
    cut = int(query.split("&")[0].split("=")[1])
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        get(c, f"/api/auth/big?n={n}&{query}")
        started = time.monotonic()
        data = read_to_close(c)
        took = time.monotonic() - started
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and data.count(b"HTTP/1.1") == 1
    assert body == big_body(n)[:cut], "every byte the upstream sent arrives, then the connection closes short of Content-Length"
    if kind == "timeout":
        assert 1.5 < took < 5, took  # the backend's read_timeout (2 s), not the upstream's 6 s stall
    eventually(lambda: s.metric("splitter_errors_total", route="auth", backend="legacy", handler="old_auth", kind=kind) == 1)
    assert httpx.get(s.url + "/api/auth/after").text == "/api/auth/after"


def test_clients_that_vanish_mid_download_free_both_connections_and_leak_nothing(raw, splitter):
    s = splitter(routes_yaml(raw.url, raw.url), args=["--no-access-log"])
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:  # warm-up
        get(c, f"/api/auth/big?n={MiB}")
        assert read_answer(c)[1] == big_body(MiB)
    fd0 = fds(s.proc.pid)
    for _ in range(30):
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            get(c, f"/api/auth/big?n={20 * MiB}")
            c.recv(65536)  # the head and a little of the body, then gone
    eventually(lambda: s.metric("splitter_client_aborts_total", route="auth", handler="old_auth") == 30, timeout=10)
    eventually(lambda: raw.seen.open_now <= 1, timeout=5)  # the abandoned downloads' upstream connections are closed
    time.sleep(0.5)
    assert fds(s.proc.pid) <= fd0 + 4, "no pipe or duplicated socket is left behind"
    assert httpx.get(s.url + "/api/auth/after").text == "/api/auth/after"


def test_bytes_after_a_spliced_body_never_reach_the_next_user(raw, splitter):
    s = splitter(routes_yaml(raw.url, raw.url))
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        get(c, f"/api/auth/big?n={MiB}&extra=LEAKEDLEAKED")
        assert read_answer(c)[1] == big_body(MiB)
        get(c, "/api/auth/next")  # exactly Content-Length bytes went to this client: its next answer starts clean
        head, body = read_answer(c)
        assert head.startswith(b"HTTP/1.1 200") and body == b"/api/auth/next"
    with httpx.Client(base_url=s.url) as c:
        for i in range(20):
            assert c.get(f"/api/auth/user-{i}").text == f"/api/auth/user-{i}"
    assert raw.seen.connections >= 2, "the connection that carried the stray bytes was not reused"


def test_a_slow_reader_gets_every_byte_while_the_proxy_holds_none(raw, splitter):
    s = splitter(routes_yaml(raw.url, raw.url), args=["--no-access-log"])
    n = 30 * MiB
    rss0 = rss_mib(s.proc.pid)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        get(c, f"/api/auth/big?n={n}")
        head, body = read_answer(c, pace=0.005)
    assert head.startswith(b"HTTP/1.1 200") and body == big_body(n)
    assert rss_mib(s.proc.pid) - rss0 < 10, "the body waited in the kernel's buffers, not in the proxy"


def upload_head(path: str, n: int) -> bytes:
    return f"PUT {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {n}\r\n\r\n".encode()


def test_a_large_upload_arrives_byte_exact_then_its_connection_closes_and_small_ones_keep_theirs(raw, splitter):
    s = splitter(routes_yaml(raw.url, raw.url))
    body = random.Random(8).randbytes(8 * MiB + 3)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(upload_head("/api/auth/small/digest", 1000) + body[:1000])  # under the threshold: uvicorn reads it
        head, answer = read_answer(c)
        assert answer == b"1000 " + hashlib.sha256(body[:1000]).hexdigest().encode() and b"connection: close" not in head.lower()
        c.sendall(upload_head("/api/auth/big/digest", len(body)))
        sender = threading.Thread(target=c.sendall, args=(body,))
        sender.start()
        head, answer = read_answer(c)
        sender.join(10)
        assert answer == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
        assert b"connection: close" in head.lower(), "uvicorn's parser lost count of this body: no next request on it"
        assert c.recv(1) == b""
    log = s.wait_log(lambda e: e.get("path") == "/api/auth/big/digest")
    assert log["status"] == 200 and log["bytes_in"] == len(body)


@pytest.mark.parametrize("stall", [0.6, 1.6])
def test_a_large_upload_read_past_uvicorn_keeps_the_body_timeout(raw, splitter, stall):
    """Pieces 0.6 s apart with --body-timeout 1 arrive whole; a 1.6 s stall is a 408 and the
    upstream connection that got half a body is closed."""
    s = splitter(routes_yaml(raw.url, raw.url), args=["--body-timeout", "1"])
    body = random.Random(5).randbytes(5 * MiB)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(upload_head("/api/auth/x/digest", len(body)) + body[: 2 * MiB])
        time.sleep(stall)
        started = time.monotonic()
        try:
            c.sendall(body[2 * MiB : 3 * MiB])
            time.sleep(stall)
            c.sendall(body[3 * MiB :])
        except OSError:
            pass  # the proxy answered 408 and closed while the rest was on its way
        head, answer = read_answer(c)
    if stall < 1:
        assert head.startswith(b"HTTP/1.1 200") and answer == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
    else:
        assert head.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 2
        eventually(lambda: raw.seen.open_now == 0, timeout=2)
        assert s.metric("splitter_rejected_total", reason="body_timeout") == 1


def test_clients_that_vanish_mid_upload_free_both_connections_and_leak_nothing(raw, splitter):
    s = splitter(routes_yaml(raw.url, raw.url), args=["--no-access-log"])
    chunk = b"u" * (2 * MiB)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:  # warm-up
        c.sendall(upload_head("/api/auth/w/digest", len(chunk)) + chunk)
        read_answer(c)
    fd0 = fds(s.proc.pid)
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(upload_head("/api/auth/gone/digest", 10 * MiB) + chunk)
    eventually(lambda: s.metric("splitter_client_aborts_total", route="auth", handler="old_auth") == 20, timeout=10)
    eventually(lambda: raw.seen.open_now <= 1, timeout=5)  # the half-sent upstream requests are closed
    time.sleep(0.5)
    assert fds(s.proc.pid) <= fd0 + 4, "no duplicated client socket is left behind"
    assert httpx.get(s.url + "/api/auth/after").text == "/api/auth/after"




def read_head(f) -> tuple[bytes, int]:
    """A response head off a buffered reader: (head, Content-Length)."""
    lines = []
    while (line := f.readline()) not in (b"\r\n", b""):
        lines.append(line)
    head = b"".join(lines)
    assert head, "the connection closed before a response head"
    return head, next(int(x.split(b":")[1]) for x in lines if x.lower().startswith(b"content-length:"))


@pytest.mark.parametrize("when", ["during", "before"])
def test_a_request_pipelined_with_a_spliced_download_is_answered_after_it_and_both_are_logged(raw, splitter, when):
    """`during`: the next GET arrives after 1 MiB of a 20 MiB answer, while the rest moves in the kernel
    (this client's small receive buffer holds the splice back until it reads); `before`: both GETs come
    in one write, so uvicorn has parsed the second one before the first answer starts: that answer takes
    the ordinary path. Either way the second answer follows the whole first one, byte-exact."""
    s = splitter(routes_yaml(raw.url, raw.url))
    n = 20 * MiB
    before = written(s.proc.pid)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c, c.makefile("rb") as f:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        first = f"GET /api/auth/big?n={n} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
        second = b"GET /api/auth/next HTTP/1.1\r\nHost: a\r\n\r\n"
        c.sendall(first + second if when == "before" else first)
        head, length = read_head(f)
        assert head.startswith(b"HTTP/1.1 200") and length == n
        body = f.read(MiB)
        if when == "during":
            c.sendall(second)
        body += f.read(n - MiB)
        assert body == big_body(n)
        head, length = read_head(f)
        assert head.startswith(b"HTTP/1.1 200") and f.read(length) == b"/api/auth/next"
    if when == "during":
        assert written(s.proc.pid) - before < 2 * MiB, "the download was spliced"
    big = s.wait_log(lambda e: e.get("path") == "/api/auth/big")
    assert big["status"] == 200 and big["bytes_out"] == n
    assert s.wait_log(lambda e: e.get("path") == "/api/auth/next")["status"] == 200
    assert s.metric("splitter_requests_total", route="auth", backend="legacy", handler="old_auth", code="200") == 2
    assert "Exception in ASGI application" not in s.proc.output()


def test_stalled_readers_are_cut_after_the_send_timeout_and_their_upstream_connections_serve_others(raw, splitter):
    """max_connections: 3, and three clients that ask for 20 MiB and never read: two spliced Content-Length
    downloads and one chunked (the ordinary path, where uvicorn's write buffer stays full). With
    --send-timeout 3 each is cut 3 s after it stops taking bytes, so another user waiting for a
    connection is served within 9 s instead of getting 503s until the stalled ones leave."""
    backends = "read_timeout: 2, connect_timeout: 10, max_connections: 3}"
    s = splitter(routes_yaml(raw.url, raw.url).replace("read_timeout: 2}", backends), args=["--send-timeout", "3"])
    n = 20 * MiB
    stalled = []
    for path in (f"/api/auth/s1/big?n={n}", f"/api/auth/s2/big?n={n}", f"/api/auth/s3/bigchunked?n={n}"):
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.connect(("127.0.0.1", s.port))
        get(c, path)
        stalled.append(c)
    try:
        eventually(lambda: raw.seen.open_now == 3, timeout=5)  # every upstream connection is held
        started = time.monotonic()
        r = httpx.get(s.url + "/api/auth/other", timeout=15)
        took = time.monotonic() - started
        assert r.status_code == 200 and r.text == "/api/auth/other" and took < 9, (r.status_code, took)
        eventually(lambda: s.metric("splitter_rejected_total", reason="send_timeout") == 3, timeout=9)
        print(f"another user served after {took:.2f} s; send_timeout cuts: 3")
        for c in stalled:  # each was cut: its connection ends short of the 20 MiB it asked for
            c.settimeout(5)
            got = 0
            try:
                while chunk := c.recv(1024 * 1024):
                    got += len(chunk)
            except ConnectionResetError:
                pass
            assert got < n
    finally:
        for c in stalled:
            c.close()
    assert s.metric("splitter_client_aborts_total", route="auth", handler="old_auth") is None
    for path in ("/api/auth/s1/big", "/api/auth/s2/big", "/api/auth/s3/bigchunked"):
        assert s.wait_log(lambda e, p=path: e.get("path") == p)["error"] == "send_timeout"
    assert len([e for e in s.logs() if e.get("event") == "client took no response bytes: connection cut"]) == 3
    assert "Exception in ASGI" not in s.proc.output() and "without completing response" not in s.proc.output()


@pytest.mark.parametrize("last", ["big", "bigchunked"])
def test_a_client_that_never_reads_is_cut_between_the_send_timeout_and_1_2_times_it(raw, splitter, last):
    """A spliced Content-Length download and a chunked one (uvicorn's write buffer): the clock runs from the
    last byte the client took (its receive buffer filling, a few hundred ms at most), not from a check that
    saw bytes taken earlier in the period and started a whole new one (which cut at up to twice the timeout)."""
    timeout = 2.0
    s = splitter(routes_yaml(raw.url, raw.url), args=["--send-timeout", str(timeout)])
    with socket.socket() as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # before connecting: the window is agreed then
        c.connect(("127.0.0.1", s.port))
        started = time.monotonic()
        get(c, f"/api/auth/{last}?n={20 * MiB}")
        eventually(lambda: raw.seen.open_now == 1)
        eventually(lambda: not proxy_holds(s.proc.pid, s.port, c), timeout=3 * timeout, interval=0.02)
        cut = time.monotonic() - started
    print(f"{last}: cut {cut:.2f} s after the request, --send-timeout {timeout:g}")
    assert timeout <= cut < 1.2 * timeout + 0.6, f"cut after {cut:.2f} s"
    eventually(lambda: raw.seen.open_now == 0, timeout=2)  # its upstream connection is closed, not kept
    assert s.metric("splitter_rejected_total", reason="send_timeout") == 1
    assert s.wait_log(lambda e: e.get("path") == f"/api/auth/{last}")["error"] == "send_timeout"


@pytest.mark.parametrize("last", ["big", "bigchunked"])
def test_a_slow_reader_that_keeps_taking_bytes_is_not_cut_by_the_send_timeout(raw, splitter, last):
    s = splitter(routes_yaml(raw.url, raw.url), args=["--send-timeout", "2"])
    n = 6 * MiB
    with socket.socket() as c:
        # the small receive buffer is set before connecting: shrunk after, the kernel's window can stay
        # closed until a zero-window probe (backing off past a second) reopens it, a stall of its own
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.settimeout(10)
        c.connect(("127.0.0.1", s.port))
        get(c, f"/api/auth/{last}?n={n}")
        data = bytearray()

        def whole() -> bool:
            end = data.find(b"\r\n\r\n")
            return end > 0 and (data.endswith(b"\r\n0\r\n\r\n") if last == "bigchunked" else len(data) - end - 4 == n)

        while not whole():  # 1 MiB, then a 1.2 s pause: never 2 s without taking bytes
            burst = len(data) + MiB
            while len(data) < burst and not whole():
                chunk = c.recv(256 * 1024)
                assert chunk, f"cut after {len(data)} bytes"
                data += chunk
            time.sleep(1.2)
    assert data.startswith(b"HTTP/1.1 200") and s.metric("splitter_rejected_total", reason="send_timeout") is None
    assert s.wait_log(lambda e: e.get("path") == f"/api/auth/{last}").get("error") is None
# An early answer to an upload (both orders of the race, all three body paths): test_early_answers.py
