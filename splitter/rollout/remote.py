"""The HTTP a rollout's driver makes, always beside its tick, never in it: the prometheus gates' queries and
the before_step hooks."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx

from .. import judge
from ..config import Hook, PromGate


async def read_prometheus(url: str | None, route: str, gates: tuple[PromGate, ...]) -> tuple[judge.Check, ...]:
    """Each prometheus gate read once: its query for new (and for legacy when it compares them)."""
    if url is None:
        return tuple(prom_check(g, None, None, "no Prometheus: serve --prometheus URL") for g in gates)
    out = []
    async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=2.0) as client:
        for g in gates:
            try:
                new = await _prom_value(client, g.query.replace("{route}", route).replace("{role}", "new"))
                relative = g.min_ratio is not None or g.max_ratio is not None
                legacy = await _prom_value(client, g.query.replace("{route}", route).replace("{role}", "legacy"))
                out.append(prom_check(g, new, legacy if relative else None, ""))
            except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
                out.append(prom_check(g, None, None, f"Prometheus did not answer ({type(exc).__name__})"))
    return tuple(out)


async def _prom_value(client: httpx.AsyncClient, query: str) -> float | None:
    """The first sample of an instant query; None when there is none (or it is NaN)."""
    r = await client.get("/api/v1/query", params={"query": query})
    r.raise_for_status()
    result = r.json()["data"]["result"]
    if not result:
        return None
    value = float(result[0]["value"][1])
    return value if math.isfinite(value) else None


def prom_check(g: PromGate, new: float | None, legacy: float | None, why: str) -> judge.Check:
    """A prometheus gate's verdict: waiting without a value (Prometheus unreachable means wait, not pass)."""
    bounds = [b for b in (g.min_ratio, g.max_ratio, g.min, g.max) if b is not None]
    name = f"prometheus.{g.name}"
    relative = g.min_ratio is not None or g.max_ratio is not None
    if new is None or (relative and not legacy):
        said = why or ("no data for new" if new is None else "no data for legacy (or 0): no ratio")
        return judge.Check(name, bounds[0], None, None, None, judge.WAIT, None, said)
    ratio = new / legacy if relative and legacy else None
    bad = (
        (g.min_ratio is not None and ratio is not None and ratio < g.min_ratio)
        or (g.max_ratio is not None and ratio is not None and ratio > g.max_ratio)
        or (g.min is not None and new < g.min)
        or (g.max is not None and new > g.max)
    )
    named = {"min_ratio": g.min_ratio, "max_ratio": g.max_ratio, "min": g.min, "max": g.max}
    limits = ", ".join(f"{k} {v:g}" for k, v in named.items() if v is not None)
    sides = f", legacy {legacy:.4g}, ratio {ratio:.4g}" if ratio is not None and legacy is not None else ""
    said = f"new {new:.4g}{sides} ({limits})"
    estimate = ratio if ratio is not None else new
    return judge.Check(name, bounds[0], estimate, None, None, judge.FAIL if bad else judge.PASS, None, said)


async def ask_hooks(hooks: tuple[Hook, ...], body: dict[str, Any]) -> tuple[int, str] | None:
    """POST `body` to each hook in order: None when all answered 2xx in time, else (index, what went wrong)."""
    async with httpx.AsyncClient(follow_redirects=False) as client:
        for i, hook in enumerate(hooks):
            try:
                r = await asyncio.wait_for(client.post(hook.url, json=body), hook.timeout_s)
            except TimeoutError:
                return i, f"{hook.url} did not answer within {hook.timeout_s:g} s"
            except (httpx.HTTPError, OSError) as exc:
                return i, f"{hook.url} could not be reached ({type(exc).__name__})"
            if not 200 <= r.status_code < 300:
                return i, f"{hook.url} answered {r.status_code}"
    return None
