"""A route's `rollout:` section: steps (with approvals), interval, gates (Prometheus ones too),
before_step hooks, bake and the finish line; `confidence` is shared with the guard."""

from __future__ import annotations

import re
from typing import Any

from .doc import _Doc, _entries, _is_int, _is_num, _mapping, _number, _show, _unknown
from .keys import SECTIONS
from .model import (
    DEFAULT_P95_TOLERANCE_MS,
    DEFAULT_RETIRE_AFTER_S,
    NAME_RE,
    Gates,
    Hook,
    Percent,
    PromGate,
    RolloutSpec,
    as_percent,
)


def _no_new_errors(doc: _Doc, d: dict[str, Any], path: str) -> tuple[bool, tuple[int, ...]]:
    on = d.get("no_new_errors", False)
    if not isinstance(on, bool):
        doc.error(f"{path}.no_new_errors", f"must be true or false, got {_show(on)}")
        on = False
    statuses = d.get("no_new_errors_statuses", [])
    if not isinstance(statuses, list) or not all(_is_int(s) and 100 <= s <= 599 for s in statuses):
        doc.error(f"{path}.no_new_errors_statuses", f"must be a list of HTTP statuses 100..599, got {_show(statuses)}")
        statuses = []
    return on, tuple(statuses)


def _tolerance(doc: _Doc, d: dict[str, Any], path: str) -> float:
    v = d.get("p95_tolerance_ms", DEFAULT_P95_TOLERANCE_MS)
    if not _is_num(v) or v < 0:
        doc.error(f"{path}.p95_tolerance_ms", f"must be a number of milliseconds >= 0, got {_show(v)}")
        return DEFAULT_P95_TOLERANCE_MS
    return float(v)


def _confidence(doc: _Doc, d: dict[str, Any], path: str) -> float | None:
    v = d.get("confidence")
    if v is None:
        return None
    if not _is_num(v) or not 0.5 <= v <= 0.999:
        doc.error(f"{path}.confidence", f"must be a number 0.5..0.999 (e.g. 0.99), got {_show(v)}")
        return None
    return float(v)


def _rollout(doc: _Doc, raw: Any, path: str) -> RolloutSpec | None:
    r = _mapping(doc, raw, path)
    if r is None:
        return None
    _unknown(doc, r, set(SECTIONS["rollout"]), path)
    steps, approval = _steps(doc, r.get("steps"), f"{path}.steps")
    interval = _number(doc, r, "interval_s", path, 86400.0)
    gates_raw = r.get("gates", {})
    g = _mapping(doc, gates_raw, f"{path}.gates") or {}
    gp = f"{path}.gates"
    _unknown(doc, g, set(SECTIONS["gates"]), gp)
    gates = Gates(
        _number(doc, g, "max_error_rate", gp, None, positive=False, upper=1),
        _number(doc, g, "max_p95_ms", gp, None),
        _number(doc, g, "max_p95_ratio", gp, None),
        int(_number(doc, g, "min_requests", gp, 0, integer=True)),
        _number(doc, g, "max_error_increase", gp, None, positive=False, upper=1),
        _confidence(doc, g, gp),
        _tolerance(doc, g, gp),
        *_no_new_errors(doc, g, gp),
        _number(doc, g, "max_mismatch_rate", gp, None, positive=False, upper=1),
        _prom_gates(doc, g.get("prometheus", []), f"{gp}.prometheus"),
    )
    max_wait = _number(doc, r, "max_wait_s", path, None)
    hooks = _hooks(doc, r.get("before_step", []), f"{path}.before_step")
    bake = float(_number(doc, r, "bake_s", path, 0.0, positive=False))
    if bake < 0:
        doc.error(f"{path}.bake_s", f"must be a number >= 0 (seconds; 0: no bake), got {bake:g}")
        bake = 0.0
    retire_after = float(_number(doc, r, "retire_after_s", path, DEFAULT_RETIRE_AFTER_S))
    return RolloutSpec(tuple(steps), float(interval), gates, approval, max_wait, hooks, bake, retire_after)


def _prom_gates(doc: _Doc, raw: Any, path: str) -> tuple[PromGate, ...]:
    out = []
    example = "{name: logins, query: '...', min_ratio: 0.98}"
    for at, g in _entries(doc, raw, path, example, set(SECTIONS["prometheus_gate"])):
        name, query = g.get("name"), g.get("query")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            doc.error(f"{at}.name", f"must match [a-z0-9_]+, got {_show(name)}")
            continue
        if not isinstance(query, str) or not query.strip():
            doc.error(f"{at}.query", f"must be a PromQL query ({{route}}, {{role}} filled in), got {_show(query)}")
            continue
        bounds = [_number(doc, g, k, at, None, positive=False) for k in ("min_ratio", "max_ratio", "min", "max")]
        if all(b is None for b in bounds):
            doc.error(at, "needs one of min_ratio, max_ratio (new / legacy), min, max (new's value)")
            continue
        out.append(PromGate(name, query, *bounds))
    return tuple(out)


def _hooks(doc: _Doc, raw: Any, path: str) -> tuple[Hook, ...]:
    out = []
    example = "{url: http://smoke/run, timeout_s: 60, retries: 2}"
    for at, h in _entries(doc, raw, path, example, set(SECTIONS["hook"])):
        url = h.get("url")
        if not isinstance(url, str) or not re.match(r"https?://[^/?#]", url):
            doc.error(f"{at}.url", f"must be an http(s):// URL, got {_show(url)}")
            continue
        timeout = _number(doc, h, "timeout_s", at, 60.0)
        retries = int(_number(doc, h, "retries", at, 2, integer=True))
        out.append(Hook(url, float(timeout), retries))
    return tuple(out)


def _steps(doc: _Doc, raw: Any, path: str) -> tuple[list[Percent], frozenset[int]]:
    """Rising percents above 0 up to 100 (0.5, 1, 5, ...: 0.01 steps); a step written
    {percent: N, approval: true} waits for a promote."""
    steps, approval = [], set()
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        if isinstance(item, dict):
            _unknown(doc, item, set(SECTIONS["step"]), f"{path}[{i}]")
            if not isinstance(item.get("approval", False), bool):
                doc.error(f"{path}[{i}].approval", f"must be true or false, got {_show(item['approval'])}")
            if item.get("approval") is True:
                approval.add(i)
            item = item.get("percent")
        steps.append(item)
    pcts = [p for p in map(as_percent, steps) if p is not None and p > 0]
    rising = len(pcts) == len(steps) and pcts == sorted(set(pcts))
    if not isinstance(raw, list) or not steps or not rising:
        shape = "each above 0 with at most two decimals, or {percent: N, approval: true}"
        doc.error(path, f"must be a rising list of percents up to 100 ({shape}), got {_show(raw)}")
        return [100], frozenset()
    return pcts, frozenset(approval)
