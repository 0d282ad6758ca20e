"""Issue 32's smuggle against the reference legacy backend, end to end: a logout whose body is a whole
register request, its Content-Length named in Connection. The hidden register must never run."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from backends import start_backend
from conftest import routes_yaml


def smuggle(connection: bytes, email: str) -> bytes:
    doc = json.dumps({"email": email, "password": "correct horse"}).encode()
    hidden = (
        b"POST /api/auth/register HTTP/1.1\r\nHost: proxy\r\nX-Forwarded-For: 6.6.6.6\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(doc), doc)
    )
    head = b"POST /api/auth/logout HTTP/1.1\r\nHost: proxy\r\nConnection: %s\r\nContent-Length: %d\r\n\r\n"
    return head % (connection, len(hidden)) + hidden


def status_of(port: int, data: bytes) -> int:
    """The status of the one answer to `data` on a fresh connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        got = b""
        while b"\r\n" not in got:
            chunk = s.recv(65536)
            assert chunk, f"closed after {got!r}"
            got += chunk
        return int(got.split(b" ", 2)[1])


@pytest.mark.parametrize("connection", [b"content-length", b"Content-Length", b"keep-alive, CONTENT-LENGTH"])
def test_a_register_hidden_in_a_logout_body_never_runs(procs, splitter, tmp_path, connection):
    legacy = start_backend(procs, "legacy", tmp_path)
    s = splitter(routes_yaml(legacy, legacy))
    email = f"hidden-{connection.decode().replace(' ', '').replace(',', '-')}@example.com"
    with httpx.Client(base_url=s.url, timeout=10) as c:
        # the pool keeps a connection to the backend: a leaked body would be read as the next request on it
        assert c.get("/api/auth/me").status_code == 401
        for _ in range(3):
            assert status_of(s.port, smuggle(connection, email)) in (400, 401), "neither 400 nor the logout's 401"
            assert c.get("/api/auth/me").status_code == 401  # the next user's answer is their own
        assert c.post("/api/auth/login", json={"email": email, "password": "correct horse"}).status_code == 401
        # the same account registered in the open logs in: the check above can tell
        assert c.post("/api/auth/register", json={"email": email, "password": "correct horse"}).status_code == 201
        assert c.post("/api/auth/login", json={"email": email, "password": "correct horse"}).status_code == 200
