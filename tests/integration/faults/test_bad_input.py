"""Bad input from a raw-socket client: refused clearly, never forwarded in a dangerous shape.

Also the tripwire for the uvicorn protocol hooks splitter/server.py relies on:
if uvicorn changes them, the absolute-form, 431 and header-timeout cases fail here.
"""

import socket
import time

import httpx
import pytest
from conftest import routes_yaml


def exchange(port: int, data: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                head, sep, body = out.partition(b"\r\n\r\n")
                if sep:
                    lengths = [int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
                    if lengths and len(body) >= lengths[0]:
                        break
        except (TimeoutError, ConnectionResetError):
            pass
        return out


@pytest.fixture
def stack(standin, splitter):
    return splitter(routes_yaml(standin("legacy"), standin("new"), extra="max_body_bytes: 1000000\ntrusted_proxies: [10.0.0.0/8]"))


def test_absolute_form_target_is_400_json(stack):
    out = exchange(stack.port, b"GET http://evil.example/x HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400") and b"absolute-form" in out
    assert stack.metric("splitter_rejected_total", reason="bad_request") == 1


def test_connect_is_400(stack):
    assert exchange(stack.port, b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n").startswith(b"HTTP/1.1 400")


def test_double_slash_stays_a_path_to_the_configured_backend(stack):
    out = exchange(stack.port, b"GET //evil.example/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and b'"raw_path": "//evil.example/x"' in out and b'"backend": "legacy"' in out


def test_content_length_with_transfer_encoding_is_400(stack):
    out = exchange(stack.port, b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")


def test_oversized_headers_are_431(stack):
    big = b"X-Big: " + b"a" * 40_000 + b"\r\n"
    out = exchange(stack.port, b"GET /api/x HTTP/1.1\r\nHost: a\r\n" + big + b"\r\n")
    assert out.startswith(b"HTTP/1.1 431")
    assert stack.metric("splitter_rejected_total", reason="headers_too_large") == 1
    assert httpx.get(stack.url + "/api/x").status_code == 200, "the server is fine afterwards"


def test_body_over_the_limit_is_413_without_reading_it(stack):
    t0 = time.monotonic()
    out = exchange(stack.port, b"POST /api/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000000\r\n\r\n" + b"x" * 1000)
    assert out.startswith(b"HTTP/1.1 413") and b"limit" in out
    assert time.monotonic() - t0 < 2, "answered at once, not after 10 GB"


@pytest.mark.parametrize("header", [b"X-A: b\rX-Injected: 1", b"X-A: b\nX-Injected: 1\r\nX-B: c", b"X-A\x00: b"])
def test_header_injection_is_refused(stack, header):
    out = exchange(stack.port, b"GET /api/x HTTP/1.1\r\nHost: a\r\n" + header + b"\r\n\r\n")
    if out.startswith(b"HTTP/1.1 200"):
        # a bare LF is a line end in lenient HTTP/1.1 parsing: then it is just two headers, never one smuggled value
        assert b'"x-a", "b\\n' not in out and b'"x-a", "b\\r' not in out
    else:
        assert out.startswith(b"HTTP/1.1 400")


def test_connection_named_headers_cannot_strip_the_proxys_own(stack):
    r = httpx.get(stack.url + "/api/x", headers={"Connection": "X-Forwarded-For, X-Forwarded-Proto, Via, X-Request-ID, X-Splitter-Handler"})
    got = dict(r.json()["headers"])
    for name in ("x-forwarded-for", "x-forwarded-proto", "via", "x-request-id", "x-splitter-handler"):
        assert name in got, name


def test_spoofed_forwarded_headers_from_an_untrusted_peer_are_replaced(stack):
    r = httpx.get(stack.url + "/api/x", headers={"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "bank.example", "Host": "real.example"})
    got = dict(r.json()["headers"])
    assert got["x-forwarded-for"] == "127.0.0.1" and got["x-forwarded-proto"] == "http" and got["x-forwarded-host"] == "real.example"


def test_trusted_peer_forwarded_headers_are_appended_and_kept(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new"), extra="trusted_proxies: [127.0.0.0/8]"))
    r = httpx.get(s.url + "/api/x", headers={"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example"})
    got = dict(r.json()["headers"])
    assert got["x-forwarded-for"] == "1.2.3.4, 127.0.0.1" and got["x-forwarded-proto"] == "https" and got["x-forwarded-host"] == "shop.example"


def test_force_header_without_token_has_no_effect_in_production(stack):
    for i in range(20):
        r = httpx.get(stack.url + "/api/upload/x", headers={"X-User-ID": f"f{i}", "X-Splitter-Backend": "new"})
        assert r.json()["backend"] == "legacy"
        assert "x-splitter-backend" not in dict(r.json()["headers"])


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz", "/admin/routes", "/admin/kill"])
def test_admin_paths_on_the_proxy_port_go_to_the_backend(stack, path):
    r = httpx.put(stack.url + path) if path == "/admin/kill" else httpx.get(stack.url + path)
    assert r.json()["backend"] == "legacy" and r.json()["path"] == path


@pytest.mark.parametrize(
    ("target", "route", "forwarded"),
    [
        (b"/api/auth/../upload/x", "upload", "/api/upload/x"),
        (b"/api/auth/%2e%2E/upload/x", "upload", "/api/upload/x"),
        (b"/api/auth/./me/.", "auth", "/api/auth/me/"),
        (b"/api/upload/x/.%2e/../auth/me?q=1", "auth", "/api/auth/me"),
        (b"/api%2Fauth/me", "unmatched", "/api%2Fauth/me"),  # an encoded slash is not a separator
        (b"//evil/x", "unmatched", "//evil/x"),
    ],
)
def test_dot_segments_are_removed_before_matching_and_forwarding(stack, target, route, forwarded):
    """Route matching agrees with what a backend that resolves dot segments would serve (Envoy's normalize_path)."""
    import json

    out = exchange(stack.port, b"GET " + target + b" HTTP/1.1\r\nHost: a\r\nX-User-ID: u1\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], out[:300]
    handler = next(line.split(b": ")[1].decode() for line in head.split(b"\r\n") if line.lower().startswith(b"x-splitter-handler"))
    assert handler.split("_", 1)[1] == route
    assert json.loads(body)["raw_path"] == forwarded


@pytest.mark.parametrize("target", [b"/..", b"/api/../..", b"/%2e%2e/etc/passwd", b"/a/./../../b"])
def test_a_path_that_climbs_above_the_root_is_400(stack, target):
    out = exchange(stack.port, b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400") and b"climbs above the root" in out


def test_the_access_log_line_says_who_what_and_how_much(standin, splitter):
    """What nginx and Envoy log: the client (from a trusted X-Forwarded-For), bytes both ways, backend, upstream time."""
    s = splitter(routes_yaml(standin("legacy"), standin("new"), extra="trusted_proxies: [127.0.0.0/8]"))
    r = httpx.post(s.url + "/api/upload/x", content=b"u" * 1234, headers={"X-Forwarded-For": "203.0.113.9, 10.1.1.1", "X-User-ID": "log-1"})
    assert r.status_code == 200
    line = s.wait_log(lambda e: e.get("event") == "request" and e.get("path") == "/api/upload/x")
    assert line["client"] == "10.1.1.1" and line["bytes_in"] == 1234 and line["bytes_out"] == len(r.content)
    assert line["backend"] == "legacy" and line["handler"] == "old_upload" and 0 < line["upstream_ms"] <= line["duration_ms"]
    assert {"request_id", "method", "route", "status", "user_bucket"} <= set(line)
    assert all(text.startswith("{") for text in s.proc.output().splitlines() if text.strip()), "every line is JSON"
