"""Webhook notifications of changes, off the request path.

routes.yaml `notify: [{url: URL | url_env: NAME, events: [action, ...], format: json|slack}]`.
`submit()` only puts the event on a queue (one per target URL, so a dead receiver delays
nobody else's); a task per URL POSTs it, 3 tries with backoff, and counts what it could not
deliver in `splitter_notify_failures_total`. A change never waits for a receiver. The JSON
format is the history event plus `text` and `environment`; `slack` is Slack's incoming-webhook
body `{"text": ...}`. A URL from `url_env` is a secret: it is never logged (Flagger and Argo
CD notifications keep webhook URLs in a Secret the same way).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import structlog

from .config import NotifyTarget
from .history import describe
from .metrics import Metrics
from .text import slack, terminal

log = structlog.get_logger("splitter.notify")
TRIES = 3
BACKOFF_S = 0.5  # then 1 s
TIMEOUT_S = 3.0
QUEUE = 1000


class Notifier:
    def __init__(
        self,
        metrics: Metrics,
        targets: Callable[[], Sequence[NotifyTarget]],
        secrets: Mapping[str, str],
        environment: Callable[[], str],
    ) -> None:
        self.metrics = metrics
        self.targets = targets
        self.secrets = secrets
        self.environment = environment
        self._queues: dict[str, asyncio.Queue[bytes]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._client: httpx.AsyncClient | None = None

    def submit(self, event: dict[str, Any]) -> None:
        """Queue `event` for every target that wants it; never waits."""
        for target in self.targets():
            if target.events and event["action"] not in target.events:
                continue
            url = target.url or self.secrets.get(target.url_env or "")
            if not url:
                continue  # url_env missing: refused at start and on reload, so not reached
            queue = self._queue(url, target.label)
            try:
                queue.put_nowait(self.body(target.format, event))
            except asyncio.QueueFull:
                self.metrics.notify_failures.inc()
                log.error(
                    "notification dropped: the receiver is far behind", target=target.label, action=event["action"]
                )

    def body(self, fmt: str, event: dict[str, Any]) -> bytes:
        env = self.environment()
        said = terminal(describe(event))  # one line: a newline in a reason cannot forge a second
        if fmt == "slack":
            return json.dumps({"text": slack(f"splitter ({terminal(env)}): {said}")}).encode()
        return json.dumps({**event, "environment": env, "text": said}).encode()

    def _queue(self, url: str, label: str) -> asyncio.Queue[bytes]:
        queue = self._queues.get(url)
        if queue is None:
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False)
            queue = self._queues[url] = asyncio.Queue(QUEUE)
            self._tasks[url] = asyncio.get_running_loop().create_task(
                self._deliver(url, label, queue), name="splitter-notify"
            )
        return queue

    async def _deliver(self, url: str, label: str, queue: asyncio.Queue[bytes]) -> None:
        client = self._client
        assert client is not None
        while True:
            body = await queue.get()
            error = ""
            for attempt in range(TRIES):
                if attempt:
                    await asyncio.sleep(BACKOFF_S * 2 ** (attempt - 1))
                try:
                    resp = await client.post(url, content=body, headers={"Content-Type": "application/json"})
                    if resp.status_code < 300:
                        break
                    error = f"answered {resp.status_code}"
                except httpx.HTTPError as exc:
                    error = type(exc).__name__
            else:
                self.metrics.notify_failures.inc()
                log.warning("notification not delivered", target=label, tries=TRIES, error=error)
            queue.task_done()

    async def stop(self, drain_s: float = 2.0) -> None:
        """Give queued notifications a moment to go out, then stop."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues.values())), drain_s)
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._client is not None:
            await self._client.aclose()
