"""create_app(settings) wires the pieces; the lifespan starts and stops them.

One ASGI app serves both listeners: requests that arrived on the admin socket
(scope["server"], the local address the kernel accepted on — not something a
client can choose) go to the admin app, everything else to the proxy. So the
proxy port never exposes /metrics or /admin/*.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

from . import config as config_mod
from .admin import create_admin
from .config import Config
from .guard import Guard
from .proxy import Proxy
from .rollout import Rollouts
from .runtime import Runtime, Settings
from .shadow import Shadow
from .websocket import WebSockets


class App:
    """The ASGI entry point for both listeners."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.guard = Guard(runtime)
        self.rollouts = Rollouts(runtime)
        self.shadow = Shadow(runtime)
        self.proxy = Proxy(runtime, self.shadow)
        self.websockets = WebSockets(runtime, self.proxy.planner, self.proxy.outcomes)
        self.admin = create_admin(runtime, self.rollouts, self.shadow, self.websockets)
        self.admin_port = runtime.settings.admin_port
        self._tasks: list[asyncio.Task[None]] = []

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        """The awaitable of the app the scope is for: returned, not awaited here, so a proxied request
        runs one coroutine frame less (an ASGI 3 app to uvicorn: server.py says interface="asgi3")."""
        kind = scope["type"]
        if kind == "lifespan":
            return self._lifespan(receive, send)
        server = scope.get("server")
        if server is not None and server[1] == self.admin_port:
            return self.admin(scope, receive, send)
        if kind == "websocket":
            return self.websockets(scope, receive, send)
        return self.proxy(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.runtime.start()
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                self._tasks = [
                    asyncio.create_task(self.guard.run(), name="splitter-guard"),
                    asyncio.create_task(self.rollouts.run(), name="splitter-rollouts"),
                ]
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in self._tasks:
                    task.cancel()
                for task in self._tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                await self.shadow.stop()
                await self.runtime.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: Settings, cfg: Config | None = None) -> App:
    if cfg is None:
        cfg = config_mod.load(settings.config_path, settings.environment, settings.backend_urls)
    return App(Runtime(settings, cfg))
