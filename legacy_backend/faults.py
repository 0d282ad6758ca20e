"""Fault injection for demos and tests: FAULT_ERROR_RATE (share answered 500), FAULT_LATENCY_MS
(settings.py reads them)."""

from __future__ import annotations

import asyncio
import random
from typing import Any


class FaultInjection:
    def __init__(self, app: Any, error_rate: float, latency_ms: float) -> None:
        self.app, self.error_rate, self.latency = app, error_rate, latency_ms / 1000

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            if self.latency:
                await asyncio.sleep(self.latency)
            if self.error_rate and random.random() < self.error_rate:
                body = b'{"detail":"injected fault"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
