"""Never hand one user's response to another: a raw-socket upstream that misbehaves, real sockets both sides."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import signal
import socket
import threading
import time
from urllib.parse import quote_from_bytes

import httpx
import pytest
from conftest import eventually
from rawupstream import RawUpstream

from splitter.bucketing import bucket
from splitter.config import Backend
from splitter.upstream import Exchange, Pool


def config(url: str, backend_extra: str = "", anonymous: str = "legacy") -> str:
    return f"""environment: production
backends:
  legacy: {{url: "{url}", read_timeout: 10{backend_extra}}}
  new: {{url: "{url}", read_timeout: 10{backend_extra}}}
user_id:
  - header: X-User-ID
  - cookie: user_id
anonymous: {anonymous}
routes:
  - name: auth
    prefix: /api/auth
    percent: 50
unmatched: legacy
"""


@pytest.fixture
def raw():
    up = RawUpstream()
    yield up
    up.stop()


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def read_response(sock: socket.socket) -> tuple[int, dict[bytes, bytes], bytes]:
    """One response off a raw client connection (Content-Length or no body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get(b"content-length", b"0"))
    while len(rest) < n:
        rest += sock.recv(65536)
    return status, headers, rest[:n]


# --- (1) desync: a stray response never reaches another user --------------------------------------


def test_stray_responses_never_reach_another_user(raw, splitter):
    s = splitter(config(raw.url))
    with httpx.Client(base_url=s.url) as c:
        # a stray in the same read as the answer, and strays that land while the connection idles
        assert c.get("/api/auth/victim/double-same").text == "/api/auth/victim/double-same"
        for i in range(5):
            assert c.get(f"/api/auth/alice-{i}/double-later?d=0.1").text == f"/api/auth/alice-{i}/double-later"
            time.sleep(0.3)  # the stray lands while the connection idles in the pool


    users = [f"user-{i}" for i in range(50)]
    wrong: list[tuple[str, str]] = []

    async def load() -> None:
        async with httpx.AsyncClient(base_url=s.url, limits=httpx.Limits(max_connections=50)) as c:

            async def user(uid: str) -> None:
                for n in range(20):
                    # every fifth request makes the upstream write a stray in the same read
                    path = f"/api/auth/{uid}/{n}" + ("/double-same" if n % 5 == 0 else "")
                    r = await c.get(path, headers={"X-User-ID": uid})
                    if r.text != path:
                        wrong.append((path, r.text))

            await asyncio.gather(*(user(u) for u in users))

    asyncio.run(load())
    assert wrong == [], f"{len(wrong)} of 1000 users got someone else's answer, e.g. {wrong[:3]}"
    assert len(raw.seen.heads) >= 1006


def test_bytes_that_arrive_just_before_reuse_are_caught(raw):
    """The stray is in the kernel's buffer but the event loop has not delivered it yet."""

    async def scenario() -> list[bytes]:
        pool = Pool(Backend("legacy", raw.url, 2.0, 5.0))
        bodies = []
        for path in (b"/first/double-later?d=0.05", b"/second"):
            ex = Exchange("GET")
            await pool.send_request(ex, "GET", path, [(b"host", b"x")], None, False)
            body = b""
            while chunk := await ex.read():
                body += chunk
            ex.release()
            bodies.append(body)
            time.sleep(0.3)  # blocks the loop: the stray arrives, nobody reads it
        pool.retire()
        await asyncio.sleep(0.01)
        return bodies

    assert asyncio.run(scenario()) == [b"/first/double-later", b"/second"]
    assert raw.seen.connections == 2, "the dirty connection was not reused"


# --- (2) trailers -------------------------------------------------------------------------------------


def test_request_trailers_never_become_headers_nor_change_the_bucket(raw, splitter):
    s = splitter(config(raw.url))
    alice_backend = "new_auth" if bucket("alice") < 50 else "old_auth"
    someone = next(u for u in (f"s{i}" for i in range(100)) if (bucket(u) < 50) != (bucket("alice") < 50))
    request = (
        b"POST /api/auth/login HTTP/1.1\r\nHost: good.example\r\nX-User-ID: alice\r\nTransfer-Encoding: chunked\r\nTrailer: X-User-ID\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Authenticated-User: admin\r\nHost: evil.example\r\nX-User-ID: " + someone.encode() + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(request)  # head, body and trailers in one read
        status, headers, body = read_response(c)
    assert status == 200 and headers[b"x-splitter-handler"] == alice_backend.encode()
    head = raw.seen.heads[-1].lower()
    assert b"x-authenticated-user" not in head and b"evil.example" not in head and someone.encode() not in head
    assert b"host: good.example" in head


# --- (3) malformed answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("last", ["ctl-01", "ctl-0b", "ctl-7f", "status-600", "status-099", "nocontent-cl", "switch"])
def test_each_malformed_answer_is_a_counted_502_and_the_client_connection_lives_on(raw, splitter, last):
    s = splitter(config(raw.url))
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
    conn.request("GET", f"/api/auth/x/{last}", headers={"X-User-ID": "alice"})
    r = conn.getresponse()
    body = json.loads(r.read())
    handler = "new_auth" if bucket("alice") < 50 else "old_auth"
    assert r.status == 502 and body["handler"] == handler and "error" in body
    sock = conn.sock
    conn.request("GET", "/api/auth/next", headers={"X-User-ID": "alice"})
    r2 = conn.getresponse()
    assert r2.status == 200 and r2.read() == b"/api/auth/next" and conn.sock is sock, "the next request on the same connection is served"
    conn.close()
    assert s.metric("splitter_errors_total", route="auth", backend=handler[:3].replace("old", "legacy"), handler=handler, kind="protocol") == 1
    s.wait_log(lambda e: e.get("event") == "request" and e.get("status") == 502 and e.get("error") == "protocol" and e.get("path", "").endswith(last))


def test_304_with_content_length_passes_through(raw, splitter):
    s = splitter(config(raw.url))
    r = httpx.get(s.url + "/api/auth/x/notmodified-cl")
    assert r.status_code == 304 and r.headers["etag"] == '"x"' and r.content == b""
    assert httpx.get(s.url + "/api/auth/after").text == "/api/auth/after"


def test_head_to_a_backend_that_sends_a_body_gets_the_head(raw, splitter):
    s = splitter(config(raw.url))
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
    conn.request("HEAD", "/api/auth/x/head-body")
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("content-length") == "5" and r.read() == b""
    conn.request("GET", "/api/auth/y")
    assert conn.getresponse().read() == b"/api/auth/y"
    assert s.metric("splitter_errors_total", route="auth", backend="legacy", handler="old_auth", kind="protocol") is None
    conn2 = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
    conn2.request("GET", "/api/auth/z")
    assert conn2.getresponse().read() == b"/api/auth/z", "the connection that carried the stray body was dropped, not reused"
    conn.close()
    conn2.close()


# --- (4) byte-exact header values; one bucket everywhere ---------------------------------------------


def test_header_bytes_pass_exactly_and_the_bucket_agrees_with_admin(raw, splitter):
    s = splitter(config(raw.url))
    jose = "José".encode()
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(b"GET /api/auth/me HTTP/1.1\r\nHost: a\r\nX-User-ID: " + jose + b"\r\nX-Note: caf\xe9 \xff\r\n\r\n")
        status, headers, _ = read_response(c)
    assert status == 200
    # values byte for byte (names arrive lower-cased: ASGI servers lower-case them, and they are case-insensitive)
    assert b"\r\nx-user-id: " + jose + b"\r\n" in raw.seen.heads[-1] and b"\r\nx-note: caf\xe9 \xff\r\n" in raw.seen.heads[-1]
    admin = httpx.get(s.admin + "/admin/bucket?user_id=" + quote_from_bytes(jose)).json()
    assert headers[b"x-splitter-handler"] == (b"new_auth" if admin["routes"][0]["backend"] == "new" else b"old_auth")

    rng = random.Random(7)
    alphabet = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))
    disagreements = []
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c, httpx.Client() as a:
        for _ in range(1000):
            uid = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 24)))
            c.sendall(b"GET /api/auth/me HTTP/1.1\r\nHost: a\r\nX-User-ID: " + uid + b"\r\n\r\n")
            _, h, _ = read_response(c)
            want = a.get(s.admin + "/admin/bucket?user_id=" + quote_from_bytes(uid, safe="")).json()["routes"][0]
            if h[b"x-splitter-handler"] != (b"new_auth" if want["backend"] == "new" else b"old_auth") or want["bucket"] != bucket(uid):
                disagreements.append(uid)
    assert disagreements == []


# --- (5) clients that leave, slow uploads, the pool bound -------------------------------------------------


def test_abandoned_requests_cancel_their_upstream_calls_at_once(raw, splitter):
    s = splitter(config(raw.url))
    clients = []
    for i in range(100):
        c = socket.create_connection(("127.0.0.1", s.port))
        c.sendall(f"GET /api/auth/u{i}/slow?s=8 HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        clients.append(c)
    eventually(lambda: raw.seen.open_now >= 100, timeout=5)
    time.sleep(0.5)
    closed_at = time.monotonic()
    for c in clients:
        c.close()
    eventually(lambda: len(raw.seen.closed_while_waiting) >= 100, timeout=1.5)
    assert max(raw.seen.closed_while_waiting) - closed_at < 1.0, "the upstream saw all 100 connections close within 1 s"
    eventually(lambda: s.metric("splitter_client_aborts_total", route="auth", handler="old_auth") == 100)
    assert s.wait_log(lambda e: e.get("status") == 499 and e.get("error") == "client_abort")


def test_a_trickling_upload_is_cut_by_the_body_timeout(raw, splitter):
    s = splitter(config(raw.url), args=["--body-timeout", "1"])
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(b"POST /api/auth/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        started = time.monotonic()
        status, _, body = read_response(c)
    assert status == 408 and 0.9 < time.monotonic() - started < 3
    assert "request body" in json.loads(body)["error"]
    eventually(lambda: raw.seen.open_now == 0, timeout=2)  # the upstream connection that got half a body is closed
    assert s.metric("splitter_rejected_total", reason="body_timeout") == 1


def test_a_slow_but_steady_upload_is_not_cut_by_the_body_timeout(raw, splitter):
    """The timeout is per wait for the client's next bytes, not for the whole body: five pieces
    0.6 s apart (3 s in all) with --body-timeout 1 arrive whole; then a 1.5 s stall is cut."""
    s = splitter(config(raw.url), args=["--body-timeout", "1"])
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"POST /api/auth/steady HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n\r\n")
        for _ in range(5):
            time.sleep(0.6)
            c.sendall(b"y" * 10)
        status, _, body = read_response(c)
        assert status == 200 and body == b"/api/auth/steady", (status, body)
        c.sendall(b"POST /api/auth/stalls HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n\r\n" + b"y" * 10)
        time.sleep(0.6)
        c.sendall(b"y" * 10)
        started = time.monotonic()
        status, _, body = read_response(c)
    assert status == 408 and 0.9 < time.monotonic() - started < 3, status
    assert s.metric("splitter_rejected_total", reason="body_timeout") == 1


def test_the_pool_bound_gives_503s_and_a_metric_not_unbounded_connections(raw, splitter):
    s = splitter(config(raw.url, ", max_connections: 5, connect_timeout: 0.3"))

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=s.url, limits=httpx.Limits(max_connections=40), timeout=10) as c:
            rs = await asyncio.gather(*(c.get(f"/api/auth/u{i}/slow?s=1.5") for i in range(20)))
            return [r.status_code for r in rs]

    codes = asyncio.run(burst())
    assert codes.count(200) == 5 and codes.count(503) == 15, codes
    assert raw.seen.max_open <= 5
    overflow = sum(s.metric("splitter_errors_total", route="auth", backend=b, handler=h, kind="overflow") or 0 for b, h in (("legacy", "old_auth"), ("new", "new_auth")))
    assert overflow == 15


# --- (6)-(8) early answers, HEAD, OPTIONS *, repeated and missing headers --------------------------------


def test_an_early_413_reaches_the_client_and_is_not_blamed_on_the_backend(raw, splitter):
    s = splitter(config(raw.url))
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
            c.sendall(b"POST /api/auth/x/early-413 HTTP/1.1\r\nHost: a\r\nContent-Length: 5000000\r\n\r\n")

            def upload() -> None:
                try:
                    for _ in range(50):
                        c.sendall(b"u" * 100_000)
                except OSError:
                    pass

            t = threading.Thread(target=upload)
            t.start()
            status, _, body = read_response(c)
            t.join(5)
        assert status == 413 and body == b"too big"
    text = s.metrics()
    assert 'kind="connect"' not in text and 'kind="protocol"' not in text


def test_options_star_is_answered_locally(raw, splitter):
    s = splitter(config(raw.url))
    before = len(raw.seen.heads)
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, _ = read_response(c)
    assert status == 200 and b"GET" in headers[b"allow"]
    assert len(raw.seen.heads) == before and "splitter_errors_total{" not in s.metrics()


def test_repeated_cookie_headers_are_one_list_and_host_is_required_once(raw, splitter):
    s = splitter(config(raw.url, anonymous="cookie"))
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(b"GET /api/auth/me HTTP/1.1\r\nHost: a\r\nCookie: theme=dark\r\nCookie: user_id=bob\r\n\r\n")
        status, headers, _ = read_response(c)
    assert status == 200 and b"set-cookie" not in headers, "no new id minted over the sticky one"
    assert headers[b"x-splitter-handler"] == (b"new_auth" if bucket("bob") < 50 else b"old_auth")
    for request in (b"GET /api/auth/me HTTP/1.1\r\n\r\n", b"GET /api/auth/me HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
            c.sendall(request)
            status, _, body = read_response(c)
        assert status == 400 and "Host" in json.loads(body)["error"]
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:  # a second Connection header's tokens are removed too
        c.sendall(b"GET /api/auth/me HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: X-Secret\r\nX-Secret: 1\r\n\r\n")
        assert read_response(c)[0] == 200
    assert b"x-secret" not in raw.seen.heads[-1].lower()


# --- (9) reloads do not leak upstream connections ---------------------------------------------------------


def test_reloads_that_change_a_backend_do_not_leak_connections(raw, splitter):
    s = splitter(config(raw.url))
    with httpx.Client(base_url=s.url) as c:
        c.get("/api/auth/warm")
        fd0 = fds(s.proc.pid)
        for i in range(300):
            s.config.write_text(config(raw.url).replace("read_timeout: 10", f"read_timeout: {10 + i % 7 + 1}"))
            s.proc.signal(signal.SIGHUP)
            eventually(lambda i=i: (s.metric("splitter_config_reloads_total", result="success") or 0) >= i + 1, timeout=3, interval=0.005)
            assert c.get(f"/api/auth/r{i}").status_code == 200
    time.sleep(0.5)
    assert fds(s.proc.pid) <= fd0 + 5


# --- (10) retries: only a replayable request is sent twice ------------------------------------------------


def test_a_reused_connection_that_dies_runs_a_non_idempotent_request_once_and_replays_only_a_safe_one(raw, splitter):
    """The upstream reads each request on a reused connection, then closes it without a byte of answer:
    it may have run it. POST (Content-Length: 0), POST (no length) and DELETE are not sent again: 502.
    GET, and a POST carrying Idempotency-Key, go once more on a fresh connection (Go's isReplayable)."""
    s = splitter(config(raw.url))
    cases = [
        (b"POST /api/auth/a/die-reused HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 502),
        (b"POST /api/auth/b/die-reused HTTP/1.1\r\nHost: a\r\n\r\n", 502),
        (b"DELETE /api/auth/c/die-reused HTTP/1.1\r\nHost: a\r\n\r\n", 502),
        (b"GET /api/auth/d/die-reused HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        (b"POST /api/auth/e/die-reused HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nIdempotency-Key: k1\r\n\r\n", 200),
    ]
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        for request, want in cases:
            c.sendall(b"GET /api/auth/warm HTTP/1.1\r\nHost: a\r\n\r\n")
            assert read_response(c)[0] == 200  # its upstream connection now idles in the pool, to be reused
            c.sendall(request)
            status, headers, body = read_response(c)
            path = request.split(b" ")[1]
            runs = sum(1 for h in raw.seen.heads if h.split(b" ")[1] == path)
            assert status == want, (request, status, body)
            if want == 502:
                assert runs == 1, f"{request.split(b' ')[0]!r} ran {runs} times upstream"
                assert json.loads(body)["error"] == "upstream connection failed"
            else:
                assert runs == 2 and body == path, "replayed once on a fresh connection"
    assert s.metric("splitter_errors_total", route="auth", backend="legacy", handler="old_auth", kind="connect") == 3


# --- (11) check_request_id: an answer is relayed only to the request it names -------------------------------


def test_with_check_request_id_an_answer_naming_another_request_or_none_is_a_502_that_closes_it(raw, splitter):
    s = splitter(config(raw.url, ", check_request_id: true"))
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        for last, want in (("id-echo", 200), ("id-other", 502), ("plain", 502), ("id-echo", 200)):
            c.sendall(f"GET /api/auth/x/{last} HTTP/1.1\r\nHost: a\r\nX-Request-ID: req-{last}\r\n\r\n".encode())
            status, headers, body = read_response(c)
            assert status == want, (last, status, body)
            assert headers[b"x-request-id"] == f"req-{last}".encode(), "the client sees its own request's ID either way"
            if want == 502:
                assert json.loads(body)["error"] == "upstream sent a malformed response"
                eventually(lambda: raw.seen.open_now == 0, timeout=2)  # the connection that carried it is closed
    assert raw.seen.connections == 3
    assert s.metric("splitter_errors_total", route="auth", backend="legacy", handler="old_auth", kind="protocol") == 2
    s.wait_log(lambda e: e.get("status") == 502 and "X-Request-ID b'other'" in e.get("detail", ""))


def test_without_check_request_id_the_answer_is_relayed_whatever_id_it_carries(raw, splitter):
    s = splitter(config(raw.url))
    assert httpx.get(s.url + "/api/auth/x/id-other").text == "/api/auth/x/id-other"
    assert httpx.get(s.url + "/api/auth/x/plain").text == "/api/auth/x/plain"


def test_a_backend_that_writes_every_answer_twice_never_hands_one_user_another_users_answer(raw, splitter):
    """Every answer written a second time 2 ms later: with check_request_id the copy that lands on
    a reused connection is seen as the next request's answer, refused (502, kind="protocol") and
    its connection closed. 16 users x 40 requests at once: nobody gets another user's answer."""
    s = splitter(config(raw.url, ", check_request_id: true"), args=["--no-access-log"])
    wrong: list[tuple[str, str]] = []
    refused = 0

    async def load() -> None:
        nonlocal refused
        async with httpx.AsyncClient(base_url=s.url, limits=httpx.Limits(max_connections=16), timeout=10) as c:

            async def user(uid: str) -> None:
                nonlocal refused
                for n in range(40):
                    path = f"/api/auth/{uid}/{n}/twice"  # the answer's body names the user and the request
                    r = await c.get(path, headers={"X-User-ID": uid})
                    if r.status_code == 502:
                        refused += 1
                    elif r.text != path:
                        wrong.append((path, r.text))

            await asyncio.gather(*(user(f"user-{i}") for i in range(16)))

    asyncio.run(load())
    assert wrong == [], f"{len(wrong)} of 640 answers went to the wrong user, e.g. {wrong[:3]}"
    handlers = (("legacy", "old_auth"), ("new", "new_auth"))
    protocol = sum(
        s.metric("splitter_errors_total", route="auth", backend=b, handler=h, kind="protocol") or 0
        for b, h in handlers
    )
    print(f"640 requests: {refused} refused as 502, {protocol:g} counted as kind=protocol, 0 to the wrong user")
    assert refused == protocol > 0, "the shifted copies were caught and counted"


# --- (12) idle expiry: a kept-alive connection is given up before the backend's keep-alive timeout ---------


@pytest.mark.parametrize(("idle_timeout", "idle", "want", "fresh"), [
    (1, 0.3, 200, 0),   # idle shorter than idle_timeout_s: the warm connection is reused
    (1, 1.7, 200, 1),   # idle longer: given up, a new one carries the POST; the backend's timeout never fires on it
    (5, 1.7, 502, 0),   # control: idle_timeout_s above the backend's keep-alive timeout loses the race, a 502
])
def test_an_idle_connection_older_than_idle_timeout_is_not_reused(raw, splitter, idle_timeout, idle, want, fresh):
    """The stand-in closes a connection that sat idle 1.5 s as the next request arrives (a backend's keep-alive
    timeout firing just as the proxy writes on it): a POST is never sent twice, so only not reusing it helps."""
    s = splitter(config(raw.url, f", idle_timeout_s: {idle_timeout}"))
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(b"GET /api/auth/warm HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_response(c)[0] == 200
        before = raw.seen.connections
        time.sleep(idle)
        c.sendall(b"POST /api/auth/p/die-idle?s=1.5 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
        status, _, body = read_response(c)
    assert status == want, body
    assert raw.seen.connections - before == fresh
