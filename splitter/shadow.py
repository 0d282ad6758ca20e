"""Shadow traffic: a copy of the request goes to the other backend, and the answers are compared.

The user's response is never delayed: the copy is sent after the user's
response is complete, from a background task, with bounded concurrency and
bounded bodies; when saturated the copy is dropped and counted. Compared:
status, the chosen headers, and JSON bodies minus the `ignore` paths. A field
that also differs between two calls to the primary backend is noise (Diffy's
trick) and is not reported.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from multidict import CIMultiDict

from .config import Route
from .store import Unavailable
from .upstream import Exchange, once

if TYPE_CHECKING:
    from .runtime import Runtime

log = structlog.get_logger("splitter.shadow")
MAX_INFLIGHT = 32
MAX_BODY = 256 * 1024
_MISSING = object()


def ignore_matcher(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """`$.a.b`, `$.items[*].id`, `$.*.x` -> one regex over concrete paths like `$.items[3].id`."""
    if not patterns:
        return None
    parts = []
    for p in patterns:
        rx = re.escape(p).replace(r"\[\*\]", r"\[\d+\]").replace(r"\*", r"[^.\[]+")
        parts.append(rx + r"(?:[.\[].*)?")  # a path also covers everything below it
    return re.compile("|".join(parts))


def json_diff(
    a: Any, b: Any, path: str = "$", ignore: re.Pattern[str] | None = None, out: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    out = [] if out is None else out
    if ignore is not None and ignore.fullmatch(path):
        return out
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            json_diff(a.get(k, _MISSING), b.get(k, _MISSING), f"{path}.{k}", ignore, out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            json_diff(x, y, f"{path}[{i}]", ignore, out)
    elif a != b or type(a) is not type(b):
        out.append({"path": path, "primary": None if a is _MISSING else a, "shadow": None if b is _MISSING else b})
    return out


def compare(
    route: Route, a: tuple[int, CIMultiDict[str], bytes], b: tuple[int, CIMultiDict[str], bytes]
) -> list[dict[str, Any]]:
    assert route.shadow is not None
    diffs: list[dict[str, Any]] = []
    if a[0] != b[0]:
        diffs.append({"path": "status", "primary": a[0], "shadow": b[0]})
    for h in route.shadow.headers:
        if a[1].get(h) != b[1].get(h):
            diffs.append({"path": f"header:{h}", "primary": a[1].get(h), "shadow": b[1].get(h)})
    try:
        ja, jb = json.loads(a[2]), json.loads(b[2])
    except ValueError:
        if a[2] != b[2]:
            diffs.append({"path": "body", "primary": f"{len(a[2])} bytes", "shadow": f"{len(b[2])} bytes"})
        return diffs
    return json_diff(ja, jb, "$", ignore_matcher(route.shadow.ignore), diffs)


@dataclass(frozen=True, slots=True)
class Mirrored:
    """A request the primary answered (`response`: None when too large to compare), to send again to the other side."""

    route: Route
    primary: str
    method: str
    path_qs: str
    headers: CIMultiDict[str]
    body: bytes | None
    response: tuple[int, CIMultiDict[str], bytes] | None


class Shadow:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.inflight = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def launch(self, m: Mirrored) -> None:
        if m.response is None or self.inflight >= MAX_INFLIGHT:
            self.rt.metrics.shadow.labels(m.route.name, "dropped").inc()
            return
        self.inflight += 1
        task = asyncio.ensure_future(self._run(m, m.response))
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.inflight -= 1
        self.tasks.discard(task)

    async def _fetch(self, backend_name: str, m: Mirrored) -> tuple[int, CIMultiDict[str], bytes]:
        backend = self.rt.snapshot.config.backends[backend_name]
        h = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in m.headers.items()]
        h.append((b"x-splitter-shadow", b"1"))
        ex = Exchange(m.method)
        try:
            await self.rt.pool(backend).send_request(
                ex, m.method, m.path_qs.encode("latin-1"), h, once(m.body) if m.body else None, chunked=False
            )
            data = b""
            while len(data) <= MAX_BODY:
                chunk = await ex.read()
                if not chunk:
                    break
                data += chunk
            return (
                ex.status,
                CIMultiDict((n.decode("latin-1"), v.decode("latin-1")) for n, v in ex.headers),
                data[:MAX_BODY],
            )
        finally:
            ex.release()

    async def _run(self, m: Mirrored, response: tuple[int, CIMultiDict[str], bytes]) -> None:
        route, primary, method, path_qs, headers = m.route, m.primary, m.method, m.path_qs, m.headers
        other = "new" if primary == "legacy" else "legacy"
        counter = self.rt.metrics.shadow
        try:
            shadow = await self._fetch(route.backends[other], m)
            diffs = compare(route, response, shadow)
            if diffs and method in ("GET", "HEAD", "OPTIONS"):
                # noise cancellation: what differs between two calls to the primary is not a regression
                again = await self._fetch(route.backends[primary], m)
                noise = {d["path"] for d in compare(route, response, again)}
                diffs = [d for d in diffs if d["path"] not in noise]
        except Exception as exc:  # noqa: BLE001 - a shadow failure never reaches the user
            counter.labels(route.name, "error").inc()
            log.info("shadow request failed", route=route.name, path=path_qs, error=type(exc).__name__)
            return
        if not diffs:
            counter.labels(route.name, "match").inc()
            self.rt.windows.count_shadow(route.name, "match", time.time())
            return
        counter.labels(route.name, "mismatch").inc()
        self.rt.windows.count_shadow(route.name, "mismatch", time.time())
        entry = {
            "time": round(time.time(), 3),
            "method": method,
            "path": path_qs,
            "primary": primary,
            "shadow": other,
            "request_id": headers.get("X-Request-ID"),
            "diff": diffs[:20],
        }
        log.info("shadow mismatch", route=route.name, path=path_qs, fields=[d["path"] for d in diffs[:20]])
        try:
            await self.rt.overrides.push_mismatch(route.name, entry)  # with Redis, every replica lists it
        except Unavailable as exc:
            log.warning("shadow mismatch not stored", route=route.name, error=str(exc))

    async def recent(self, route: str) -> list[dict[str, Any]]:
        return await self.rt.overrides.mismatches(route)

    async def stop(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
