"""Clients that go away or dawdle: nothing leaks, idle connections are closed by the server's timeouts."""

import os
import socket
import time

import httpx
from conftest import eventually, routes_yaml, rss_mib
from rawupstream import RawUpstream


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))




def test_disconnects_mid_upload_and_mid_download_leak_nothing(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new")), args=["--no-access-log"])
    for _ in range(50):  # warm-up: pools and caches reach their steady size
        httpx.get(s.url + "/api/upload/bytes?n=1000")
    fd0, rss0 = fds(s.proc.pid), rss_mib(s.proc.pid)
    for _ in range(500):
        with socket.create_connection(("127.0.0.1", s.port)) as c:
            c.sendall(b"POST /api/upload/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n" + b"u" * 50_000)
        with socket.create_connection(("127.0.0.1", s.port)) as c:
            c.sendall(b"GET /api/upload/bytes?n=50000000 HTTP/1.1\r\nHost: a\r\n\r\n")
            c.recv(65536)
    eventually(lambda: (s.metric("splitter_client_aborts_total", route="upload", handler="old_upload") or 0) >= 900, timeout=10)
    time.sleep(1.0)
    assert fds(s.proc.pid) <= fd0 + 10, "sockets are not leaked (upstream requests of aborted clients are closed)"
    assert rss_mib(s.proc.pid) - rss0 < 30, "memory stays flat over 1,000 aborted requests"
    assert httpx.get(s.url + "/api/upload/bytes?n=1000").status_code == 200


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_slowloris_and_idle_connections_are_timed_out(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new")), args=["--header-timeout", "1", "--keepalive-timeout", "1"])
    # a connection that never says anything
    idle = socket.create_connection(("127.0.0.1", s.port))
    # a request head that trickles in, one byte at a time
    slow = socket.create_connection(("127.0.0.1", s.port))
    t0 = time.monotonic()
    closed = False
    for b in b"GET /api/x HTTP/1.1\r\nHost: a\r\nX-Long: " + b"z" * 100:
        try:
            slow.sendall(bytes([b]))
        except OSError:
            closed = True
            break
        time.sleep(0.05)
        if time.monotonic() - t0 > 3:
            break
    assert closed or closed_within(slow, 1.5), "a trickling request head is cut after the header timeout"
    assert time.monotonic() - t0 < 4
    assert closed_within(idle, 1.0), "a silent connection is closed"
    # keep-alive: idle after a response
    ka = socket.create_connection(("127.0.0.1", s.port))
    ka.sendall(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
    time.sleep(0.2)
    assert ka.recv(65536).startswith(b"HTTP/1.1 200")
    assert closed_within(ka, 3.0), "an idle keep-alive connection is closed after the keep-alive timeout"
    for sock in (idle, slow, ka):
        sock.close()
    assert httpx.get(s.url + "/api/x").status_code == 200


def test_the_header_timeout_counts_from_each_heads_first_byte_on_a_kept_alive_connection(standin, splitter):
    """One head timer per connection, re-armed for the time left: it fires one header timeout after the
    connection opened. An idle keep-alive connection with no head on the way is left alone then; a head
    that began 0.7 s in still gets its full second (the timer waits again), and is cut after it."""
    s = splitter(routes_yaml(standin("legacy"), standin("new")), args=["--header-timeout", "1", "--keepalive-timeout", "10"])
    # no head on the way when the timer fires: nothing happens, the next request is served
    idle = socket.create_connection(("127.0.0.1", s.port))
    idle.sendall(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
    idle.settimeout(5)
    assert idle.recv(65536).startswith(b"HTTP/1.1 200")
    time.sleep(1.5)
    idle.sendall(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert idle.recv(65536).startswith(b"HTTP/1.1 200"), "a kept-alive connection idle past the header timeout is served"
    # a head that begins 0.7 s after the connection's timer started: cut 1 s after its first byte, not at 1 s
    late = socket.create_connection(("127.0.0.1", s.port))
    t0 = time.monotonic()
    late.sendall(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
    late.settimeout(5)
    assert late.recv(65536).startswith(b"HTTP/1.1 200")
    time.sleep(max(0.0, 0.7 - (time.monotonic() - t0)))
    started = time.monotonic()
    late.sendall(b"GET /api/x HTTP/1.1\r\nHost: a\r\n")  # never finished
    assert not closed_within(late, 0.6), "the head has its whole second: the timer that fired at 1 s waited again"
    assert closed_within(late, 2.0), "and is cut once the second is over"
    assert 0.9 <= time.monotonic() - started < 2.8
    for sock in (idle, late):
        sock.close()


def read_all(sock: socket.socket, seconds: float) -> bytes:
    """Everything the proxy sends until it closes the connection; fails if it is still open after `seconds`."""
    sock.settimeout(seconds)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_an_upgrade_other_than_websocket_is_answered_plainly_and_the_connection_closes_after(splitter):
    """`Upgrade: h2c` (curl --http2 on http://) is answered as a plain HTTP/1.1 request; the parser stops at
    its head, so the bytes after it (a body, a pipelined request) are never parsed: the answer carries
    Connection: close and the connection closes, instead of the pipelined request waiting, unanswered,
    for the keep-alive timeout (or its body being parsed as the next request head)."""
    up = RawUpstream()
    try:
        s = splitter(routes_yaml(up.url, up.url), args=["--keepalive-timeout", "30"])
        upgrade = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
        pipelined = b"GET /api/next HTTP/1.1\r\nHost: a\r\n\r\n"
        with socket.create_connection(("127.0.0.1", s.port)) as c:
            c.sendall(b"GET /api/h2c HTTP/1.1\r\nHost: a\r\n" + upgrade + b"\r\n" + pipelined)
            data = read_all(c, 10)
        assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"/api/h2c"), data
        assert b"\r\nconnection: close\r\n" in data
        with socket.create_connection(("127.0.0.1", s.port)) as c:  # more bytes while the answer is on its way
            c.sendall(b"GET /api/late/slow?s=1.5 HTTP/1.1\r\nHost: a\r\n" + upgrade + b"\r\n")
            eventually(lambda: any(b"/api/late/slow" in head for head in up.seen.heads))
            c.sendall(b"hello")  # not a request head: no 400 is written into the answer
            data = read_all(c, 10)
        assert data.startswith(b"HTTP/1.1 200 OK") and data.count(b"HTTP/1.1") == 1, data
        assert data.endswith(b"/api/late/slow") and b"\r\nconnection: close\r\n" in data
        with socket.create_connection(("127.0.0.1", s.port)) as c:
            c.sendall(b"POST /api/h2c HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n" + upgrade + b"\r\nhello" + pipelined)
            data = read_all(c, 10)
        assert data.startswith(b"HTTP/1.1 400 ") and data.count(b"HTTP/1.1") == 1, data
        assert b"\r\nconnection: close\r\n" in data
    finally:
        up.stop()
