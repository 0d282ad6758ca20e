"""Webhook notifications of changes, off the request path.

routes.yaml `notify: [{url: URL | url_env: NAME, events: [action, ...], format: json|slack}]`.
`submit()` only puts the event in an outbox (one per target URL, each with its own task and
HTTP client, so a hanging receiver delays nobody else's); the task POSTs it, 3 tries with
backoff. A change never waits for a receiver. The JSON format is the history event plus `text`
and `environment`; `slack` is Slack's incoming-webhook body `{"text": ...}`. A URL from
`url_env` is a secret: it is never logged (Flagger and Argo CD notifications keep webhook URLs
in a Secret the same way).

Bounded, because a slow receiver must not make news stale (issue #32 item 8): httpx's timeout
is per read, so a receiver trickling a byte every 2 s held its queue 200 s on one event. Here
one try has one deadline (DEADLINE_S) from connect to the answer's last byte, so an event costs
at most TRIES deadlines plus the backoff. An outbox holds QUEUE events; guard trips, rollbacks
and the kill switch (URGENT) go out before routine ones, and a full outbox drops a routine event
first. Every event not delivered is counted in `splitter_notify_dropped_total{reason}`:
`queue_full`, `deadline` (the last try ran out of time), `failed` (the last try was refused or
answered >= 300), `shutdown` (still queued when the process stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
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
DEADLINE_S = 5.0  # one try, whole: connect, send, the answer to its last byte
QUEUE = 1000
URGENT = frozenset({"guard_trip", "rollback", "kill", "rollout_rollback", "rollout_abort"})


class Outbox:
    """One receiver's events waiting: urgent ones first, each kind oldest first, at most `size` in all."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.urgent: deque[bytes] = deque()
        self.routine: deque[bytes] = deque()
        self.busy = False  # the task holds an event it took and is delivering it
        self.idle = asyncio.Event()  # nothing queued and nothing being delivered
        self.idle.set()
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self.urgent) + len(self.routine) + self.busy

    def put(self, body: bytes, urgent: bool) -> bool:
        """Queue `body`; True when an event was dropped for lack of room: `body` itself, or, to make
        room for an urgent one, the oldest routine event."""
        dropped = len(self.urgent) + len(self.routine) >= self.size
        if dropped:
            if not (urgent and self.routine):
                return True
            self.routine.popleft()
        (self.urgent if urgent else self.routine).append(body)
        self.idle.clear()
        self._wake.set()
        return dropped

    async def get(self) -> bytes:
        """The next event to deliver (the one taken before is done with)."""
        self.busy = False
        while not (self.urgent or self.routine):
            self.idle.set()
            self._wake.clear()
            await self._wake.wait()
        self.busy = True
        return (self.urgent or self.routine).popleft()


class Notifier:
    def __init__(
        self,
        metrics: Metrics,
        targets: Callable[[], Sequence[NotifyTarget]],
        secrets: Mapping[str, str],
        environment: Callable[[], str],
        deadline_s: float = DEADLINE_S,
        queue: int = QUEUE,
    ) -> None:
        self.metrics = metrics
        self.targets = targets
        self.secrets = secrets
        self.environment = environment
        self.deadline_s = deadline_s
        self.queue = queue
        self._outboxes: dict[str, Outbox] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._labels: dict[str, str] = {}  # url -> how logs name it (a URL from url_env is a secret)

    def submit(self, event: dict[str, Any]) -> None:
        """Queue `event` for every target that wants it; never waits."""
        for target in self.targets():
            if target.events and event["action"] not in target.events:
                continue
            url = target.url or self.secrets.get(target.url_env or "")
            if not url:
                continue  # url_env missing: refused at start and on reload, so not reached
            if self._outbox(url, target.label).put(self.body(target.format, event), event["action"] in URGENT):
                self._dropped("queue_full", target.label, 1, "the receiver is far behind")

    def body(self, fmt: str, event: dict[str, Any]) -> bytes:
        env = self.environment()
        said = terminal(describe(event))  # one line: a newline in a reason cannot forge a second
        if fmt == "slack":
            return json.dumps({"text": slack(f"splitter ({terminal(env)}): {said}")}).encode()
        return json.dumps({**event, "environment": env, "text": said}).encode()

    def _dropped(self, reason: str, label: str, count: int, why: str) -> None:
        self.metrics.notify_dropped.labels(reason).inc(count)
        self.metrics.notify_failures.inc(count)
        log.warning("notification not delivered", target=label, reason=reason, count=count, error=why)

    def _outbox(self, url: str, label: str) -> Outbox:
        outbox = self._outboxes.get(url)
        if outbox is None:
            outbox = self._outboxes[url] = Outbox(self.queue)
            self._labels[url] = label
            self._tasks[url] = asyncio.get_running_loop().create_task(
                self._deliver(url, label, outbox), name="splitter-notify"
            )
        return outbox

    async def _deliver(self, url: str, label: str, outbox: Outbox) -> None:
        # its own client: a receiver that hangs holds no connection another one needs
        async with httpx.AsyncClient(timeout=None, follow_redirects=False) as client:
            while True:
                error = await self._send(client, url, await outbox.get())
                if error:
                    self._dropped("deadline" if error == "deadline" else "failed", label, 1, f"{TRIES} tries: {error}")

    async def _send(self, client: httpx.AsyncClient, url: str, body: bytes) -> str:
        """POST `body`, up to TRIES times; '' once delivered, else what went wrong with the last try."""
        error = ""
        for attempt in range(TRIES):
            if attempt:
                await asyncio.sleep(BACKOFF_S * 2 ** (attempt - 1))
            try:
                async with asyncio.timeout(self.deadline_s):
                    resp = await client.post(url, content=body, headers={"Content-Type": "application/json"})
                if resp.status_code < 300:
                    return ""
                error = f"answered {resp.status_code}"
            except TimeoutError:
                error = "deadline"
            except httpx.HTTPError as exc:
                error = type(exc).__name__
        return error

    async def stop(self, drain_s: float = 2.0) -> None:
        """Give queued notifications a moment to go out, then stop; what is left is counted."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(o.idle.wait() for o in self._outboxes.values())), drain_s)
        for task in self._tasks.values():
            task.cancel()
        for url, task in self._tasks.items():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            if left := len(self._outboxes[url]):
                self._dropped("shutdown", self._labels[url], left, "the process stopped")
