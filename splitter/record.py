"""One request's record, and the body of the answers the proxy writes itself: shared by the HTTP and
WebSocket paths (proxy.py, websocket.py), which import it downward."""

from __future__ import annotations

import time
from typing import Any

import orjson

from .config import Route


def error_body(message: str, handler: str | None, request_id: str | None) -> bytes:
    """The JSON body of every answer the proxy writes itself (400, 408, 413, 431, 502, 503, 504)."""
    return orjson.dumps({"error": message, "handler": handler, "request_id": request_id})


def ms(seconds: float) -> float:
    """Seconds as milliseconds to three places, as the access log writes them (round() costs three times this)."""
    return int(seconds * 1_000_000 + 0.5) / 1000


class RequestRecord:
    """One request's record: what each step decided, the outbound request (Go's ProxyRequest.Out:
    target, headers), and what the log line reports."""

    __slots__ = (
        "role", "backend", "reason", "bytes_in", "bytes_out", "client", "error", "handler", "method", "path",
        "request_id", "route", "route_name", "start", "status", "upstream_ms", "user_bucket", "detail",
        "inbound", "target", "headers", "set_cookie", "refused", "head_sent", "client_request_id",
    )  # fmt: skip

    def __init__(
        self, scope: dict[str, Any], request_id: str, inbound: dict[bytes, bytes], client_request_id: str | None
    ) -> None:
        self.start = time.perf_counter()
        self.request_id = request_id  # the proxy's log key; the one the upstream gets and must echo
        self.client_request_id = client_request_id  # the client's own X-Request-ID, returned to it
        self.inbound = inbound  # the request's headers by lower-case name
        self.method: str = scope.get("method", "GET")  # an upgrade's scope has none
        self.path: str = scope["path"]
        client = scope.get("client")
        self.client: str = client[0] if client else ""
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.upstream_ms: float | None = None
        self.error: str | None = None
        self.detail: str | None = None
        self.refused = False  # answered by the proxy itself (a 400, 408 or 413)
        self.head_sent = False  # the response head is out: a failure now aborts the connection
        # the plan's fields (route .. headers) are set by plan.plan_into, or by `unplanned` for a request
        # answered before it was planned: not written twice per request on the hot path

    def unplanned(self) -> None:
        """The plan's fields for a request the proxy answers before planning it (a refusal, OPTIONS *)."""
        self.route: Route | None = None
        self.route_name = "-"
        self.role: str | None = None  # legacy | new: what metrics and windows compare
        self.backend: str | None = None  # the configured backend that serves the role
        self.reason: str | None = None  # what decided (decide.Decision.reason)
        self.handler: str | None = None
        self.user_bucket: int | None = None
        self.set_cookie: bytes | None = None  # the proxy's own Set-Cookie for the answer
        self.target = b""  # the outbound path and query
        self.headers: list[tuple[bytes, bytes]] = []  # the outbound headers
