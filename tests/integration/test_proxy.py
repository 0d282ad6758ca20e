"""Through a running splitter with two stand-in upstreams on 127.0.0.1."""

import gzip
import hashlib
import socket

import httpx
import pytest
from conftest import free_port, routes_yaml

from splitter.bucketing import bucket


@pytest.fixture
def stack(standin, splitter):
    legacy, new = standin("legacy"), standin("new")
    return splitter(routes_yaml(legacy, new), env={"SPLITTER_FORCE_TOKEN": "force-secret"})


def users_in(percent: int, new: bool, n: int = 5) -> list[str]:
    out = []
    i = 0
    while len(out) < n:
        uid = f"u{i}"
        if (bucket(uid) < percent) == new:
            out.append(uid)
        i += 1
    return out


def test_each_route_reaches_the_backend_its_bucket_says(stack):
    with httpx.Client(base_url=stack.url) as c:
        for uid in [f"user-{i}" for i in range(60)]:
            r = c.get("/api/auth/me", headers={"X-User-ID": uid})
            want = "new" if bucket(uid) < 50 else "legacy"
            assert r.json()["backend"] == want
            assert r.headers["x-splitter-handler"] == ("new_auth" if want == "new" else "old_auth")
            assert c.get("/api/upload/1", headers={"X-User-ID": uid}).json()["backend"] == "legacy"
            assert c.get("/api/resume/review/1", headers={"X-User-ID": uid}).json()["backend"] == "new"


def test_prefix_matches_on_segment_boundaries_and_unmatched_goes_to_legacy(stack):
    uid = users_in(50, new=True, n=1)[0]
    r = httpx.get(stack.url + "/api/authx", headers={"X-User-ID": uid})
    assert r.json()["backend"] == "legacy" and r.headers["x-splitter-handler"] == "old_unmatched"
    r = httpx.get(stack.url + "/api/auth", headers={"X-User-ID": uid})
    assert r.headers["x-splitter-handler"] == "new_auth"


def test_sticky_user_is_stable(stack):
    uid = users_in(50, new=True, n=1)[0]
    handlers = {httpx.get(stack.url + "/api/auth/x", headers={"X-User-ID": uid}).headers["x-splitter-handler"] for _ in range(20)}
    assert handlers == {"new_auth"}


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
        return b"".join(chunks)


def test_upstream_sees_clean_headers(stack):
    r = httpx.get(
        stack.url + "/api/upload/h?x=1&y=%2F",
        headers={
            "X-User-ID": "alice",
            "Connection": "keep-alive, X-Forwarded-For, X-Splitter-Handler, X-Custom-Hop",
            "X-Custom-Hop": "drop me",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Connection": "keep-alive",
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Host": "evil.example",
            "X-Splitter-Backend": "new",
            "X-Splitter-Token": "wrong",
            "X-Request-ID": "client-id-123",
            "X-Keep": "kept",
            "Host": "shop.example",
        },
    )
    seen = r.json()
    names = [k for k, _ in seen["headers"]]
    got = {k: v for k, v in seen["headers"]}
    for hop in ("keep-alive", "te", "proxy-connection", "x-custom-hop", "x-splitter-backend", "x-splitter-token"):
        assert hop not in names, hop
    assert got["x-forwarded-for"] == "127.0.0.1", "a client cannot delete or spoof XFF from an untrusted peer"
    assert got["x-forwarded-host"] == "shop.example"
    assert got["x-forwarded-proto"] == "http"
    assert got["host"] == "shop.example"
    assert got["via"] == "1.1 splitter"
    assert got["x-request-id"] == "client-id-123" == r.headers["x-request-id"]
    assert got["x-splitter-handler"] == "old_upload", "Connection: X-Splitter-Handler cannot strip the proxy's own header"
    assert got["x-keep"] == "kept"
    assert seen["backend"] == "legacy", "force header with a wrong token is ignored in production"
    assert seen["raw_path"] == "/api/upload/h" and seen["query"] == "x=1&y=%2F"
    assert "server" not in r.headers or r.headers["server"] == "uvicorn", "upstream Server passes through; the proxy adds none"


def test_insane_request_id_is_replaced(stack):
    r = httpx.get(stack.url + "/api/auth/x", headers={"X-Request-ID": "x" * 200})
    assert r.headers["x-request-id"] != "x" * 200 and 1 <= len(r.headers["x-request-id"]) <= 128
    got = dict(r.json()["headers"])
    assert got["x-request-id"] == r.headers["x-request-id"]


def test_force_header_needs_the_force_token_outside_development(stack):
    uid = users_in(50, new=False, n=1)[0]
    h = {"X-User-ID": uid, "X-Splitter-Backend": "new"}
    assert httpx.get(stack.url + "/api/auth/x", headers=h).json()["backend"] == "legacy"
    r = httpx.get(stack.url + "/api/auth/x", headers={**h, "X-Splitter-Token": "force-secret"})
    assert r.json()["backend"] == "new" and r.headers["x-splitter-handler"] == "new_auth"
    assert "x-splitter-token" not in dict(r.json()["headers"])


def test_force_header_is_ignored_without_a_force_token(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new")))
    r = httpx.get(s.url + "/api/upload/x", headers={"X-Splitter-Backend": "new", "X-Splitter-Token": ""})
    assert r.json()["backend"] == "legacy"


def test_force_header_is_honoured_in_development(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new"), environment="development"))
    assert httpx.get(s.url + "/api/upload/x", headers={"X-Splitter-Backend": "new"}).json()["backend"] == "new"


def test_repeated_set_cookie_redirect_and_gzip_pass_unchanged(stack):
    r = httpx.get(stack.url + "/api/upload/cookies")
    assert r.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    r = httpx.get(stack.url + "/api/upload/redirect", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/elsewhere"
    raw = raw_request(stack.port, b"GET /api/upload/gzip HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-encoding: gzip" in head.lower()
    from standin import GZIP_BODY

    assert body == GZIP_BODY and gzip.decompress(body) == b"hello gzip " * 100


def test_absolute_form_and_connect_get_400_and_double_slash_stays_a_path(stack):
    raw = raw_request(stack.port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400")
    raw = raw_request(stack.port, b"GET //evil.example/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200") and b'"raw_path": "//evil.example/x"' in raw and b'"backend": "legacy"' in raw


def test_content_length_with_transfer_encoding_is_400(stack):
    raw = raw_request(stack.port, b"POST /api/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400")


def test_upstream_refused_is_502_json_and_counted(standin, splitter):
    dead = f"http://127.0.0.1:{free_port()}"
    s = splitter(routes_yaml(standin("legacy"), dead))
    r = httpx.get(s.url + "/api/resume/x", headers={"X-User-ID": "bob", "X-Request-ID": "rid-1"})
    assert r.status_code == 502
    assert r.json() == {"error": "upstream connection failed", "handler": "new_resume_review", "request_id": "rid-1"}
    assert s.metric("splitter_errors_total", route="resume_review", backend="new", handler="new_resume_review", kind="connect") == 1
    assert s.metric("splitter_requests_total", route="resume_review", backend="new", handler="new_resume_review", code="502") == 1


def test_upstream_silent_past_read_timeout_is_504_json_and_counted(stack):
    r = httpx.get(stack.url + "/api/resume/slow?s=4", headers={"X-User-ID": "bob"}, timeout=10)
    assert r.status_code == 504
    assert r.json()["error"] == "upstream timed out" and r.json()["handler"] == "new_resume_review"
    assert stack.metric("splitter_errors_total", route="resume_review", backend="new", handler="new_resume_review", kind="timeout") == 1


def test_upstream_5xx_passes_through_and_counts_as_error(stack):
    r = httpx.get(stack.url + "/api/resume/status?code=503", headers={"X-User-ID": "bob"})
    assert r.status_code == 503 and r.json()["backend"] == "new"
    assert stack.metric("splitter_errors_total", route="resume_review", backend="new", handler="new_resume_review", kind="status_5xx") == 1


def test_metrics_count_exactly_what_was_sent(stack):
    new_users = users_in(50, new=True, n=7)
    old_users = users_in(50, new=False, n=4)
    with httpx.Client(base_url=stack.url) as c:
        for uid in new_users:
            assert c.get("/api/auth/me", headers={"X-User-ID": uid}).status_code == 200
        for uid in old_users:
            assert c.get("/api/auth/me", headers={"X-User-ID": uid}).status_code == 200
    assert stack.metric("splitter_requests_total", route="auth", backend="new", handler="new_auth", code="200") == 7
    assert stack.metric("splitter_requests_total", route="auth", backend="legacy", handler="old_auth", code="200") == 4
    assert stack.metric("splitter_request_duration_seconds_count", route="auth", backend="new", handler="new_auth") == 7
    assert stack.metric("splitter_request_duration_seconds_bucket", route="auth", backend="legacy", handler="old_auth", le="30.0") == 4
    assert stack.metric("splitter_route_percent", route="auth") == 50
    assert stack.metric("splitter_kill_switch") == 0
    assert "splitter_redis_up" not in stack.metrics()


def test_proxy_port_never_serves_admin_paths(stack):
    for path in ("/metrics", "/admin/routes", "/healthz"):
        r = httpx.get(stack.url + path)
        assert r.json()["backend"] == "legacy", path
    assert httpx.get(stack.admin + "/healthz").json() == {"status": "ok", "store": f"sqlite {stack.config.parent / 'splitter-state.db'}", "config": str(stack.config)}


def test_anonymous_cookie_is_minted_and_makes_the_browser_sticky(standin, splitter):
    text = routes_yaml(standin("legacy"), standin("new")).replace("anonymous: legacy", "anonymous: cookie")
    s = splitter(text)
    r = httpx.get(s.url + "/api/auth/x")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("splitter_uid=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie and "Max-Age=31536000" in cookie
    assert "Secure" not in cookie
    uid = cookie.split(";")[0].split("=", 1)[1]
    want = "new_auth" if bucket(uid) < 50 else "old_auth"
    assert r.headers["x-splitter-handler"] == want
    for _ in range(5):
        again = httpx.get(s.url + "/api/auth/x", cookies={"splitter_uid": uid})
        assert again.headers["x-splitter-handler"] == want and "set-cookie" not in again.headers


def test_jwt_sub_and_cookie_sources(stack):
    import base64
    import json

    uid = users_in(50, new=True, n=1)[0]
    payload = base64.urlsafe_b64encode(json.dumps({"sub": uid}).encode()).rstrip(b"=").decode()
    r = httpx.get(stack.url + "/api/auth/x", headers={"Authorization": f"Bearer e30.{payload}.sig"})
    assert r.headers["x-splitter-handler"] == "new_auth"
    r = httpx.get(stack.url + "/api/auth/x", cookies={"user_id": uid})
    assert r.headers["x-splitter-handler"] == "new_auth"


def test_one_canonical_log_line_per_request(stack):
    import time

    httpx.get(stack.url + "/api/auth/x", headers={"X-User-ID": "alice", "X-Request-ID": "log-me-1"})
    stack.wait_log(lambda e: e.get("request_id") == "log-me-1")
    time.sleep(0.3)
    mine = [entry for entry in stack.logs() if entry.get("request_id") == "log-me-1"]
    assert len(mine) == 1
    entry = mine[0]
    assert entry["event"] == "request" and entry["method"] == "GET" and entry["path"] == "/api/auth/x" and entry["route"] == "auth"
    assert entry["status"] == 200 and entry["user_bucket"] == int(hashlib.md5(b"alice").hexdigest()[:8], 16) % 100
    assert entry["handler"] in ("old_auth", "new_auth") and entry["duration_ms"] > 0
