"""One request's record, and the refusal the proxy answers itself: shared by the HTTP and
WebSocket paths (proxy.py, websocket.py), which import it downward."""

from __future__ import annotations

import time
from typing import Any

from .config import Route


class Refused(Exception):
    """A request the proxy answers itself."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class Call:
    """One request's record: what each step decided, and what the log line reports."""

    __slots__ = (
        "backend", "bytes_in", "bytes_out", "client", "error", "handler", "method", "path", "request_id",
        "route", "route_name", "start", "status", "upstream_ms", "user_bucket", "detail",
    )  # fmt: skip

    def __init__(self, scope: dict[str, Any], request_id: str) -> None:
        self.start = time.perf_counter()
        self.request_id = request_id
        self.method: str = scope.get("method", "GET")  # an upgrade's scope has none
        self.path: str = scope["path"]
        client = scope.get("client")
        self.client: str = client[0] if client else ""
        self.route: Route | None = None
        self.route_name = "-"
        self.backend: str | None = None
        self.handler: str | None = None
        self.user_bucket: int | None = None
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.upstream_ms: float | None = None
        self.error: str | None = None
        self.detail: str | None = None
