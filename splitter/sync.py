"""`splitter sync`: where routes.yaml and what runs differ, and the edit that makes the file say what runs.

A finished rollout, an override, a guard trip or `splitter cohort add` change what runs without
changing the file in git; the next person to read routes.yaml (or a restart without the store) is
then misled. The live side is what the admin API shows (GET /admin/routes, /admin/kill, the cohorts'
members); the file's side is the round-trip document (yamledit.py), so writing changes only the
values that differ. Pure: the caller fetches, reads and writes.

Only the running environment's value of a per-environment percent is compared and written. The
kill switch has no key in routes.yaml: it is reported, never written, and while it is on the live
percents are hidden under it (every route shows 0), so they are not compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import yamledit
from .yamledit import Key


@dataclass(frozen=True)
class Difference:
    route: str | None
    what: str  # percent | cohort | kill | route
    file: Any
    live: Any
    says: str
    path: tuple[Key, ...] | None = None  # where `--write` puts `live` in the route; None: not written


def differences(
    doc: Any, env: str, routes: list[dict[str, Any]], kill: bool, members: dict[tuple[str, str], list[str]]
) -> list[Difference]:
    """routes: GET /admin/routes; members: (route, cohort) -> runtime members of each `users` cohort."""
    if kill:
        says = "kill switch ON at runtime (every request goes to legacy); routes.yaml has no kill switch: " \
               "not written, and the percents are not compared while it is on"
        return [Difference(None, "kill", False, True, says)]
    out = []
    for live in routes:
        name = live["name"]
        try:
            spec = yamledit.route(doc, name)
        except KeyError:
            out.append(Difference(name, "route", None, live["percent"], f"{name}: runs, but routes.yaml has no such "
                                  "route (the file changed and was not loaded yet, or was rejected)"))
            continue
        out += _percent(spec, name, env, live)
    for (name, cohort), runtime in members.items():
        try:
            file_members = [str(u) for u in yamledit.get(doc, name, ("cohorts", cohort, "users"))]
        except KeyError:
            continue
        extra = [u for u in runtime if u not in set(file_members)]
        if extra:
            sample = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
            says = f"{name}: cohort {cohort} has {len(extra)} members added at runtime, not in routes.yaml ({sample})"
            out.append(Difference(name, "cohort", file_members, extra, says, ("cohorts", cohort, "users")))
    return out


def _percent(spec: Any, name: str, env: str, live: dict[str, Any]) -> list[Difference]:
    raw = spec.get("percent")
    path: tuple[Key, ...] = ("percent", env) if isinstance(raw, dict) else ("percent",)
    file_value = raw.get(env) if isinstance(raw, dict) else raw
    if _same(file_value, live["percent"]):
        return []
    where = f"routes.yaml says {_show(file_value)}" + (f" for {env}" if isinstance(raw, dict) else "")
    says = f"{name}: {where}, running {_show(live['percent'])} (source {live['source']})"
    return [Difference(name, "percent", file_value, live["percent"], says, path)]


def _same(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def _show(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def write(doc: Any, diffs: list[Difference]) -> int:
    """Put each difference's live value into the document; how many were written."""
    n = 0
    for d in diffs:
        if d.path is None or d.route is None:
            continue
        if d.what == "cohort":
            yamledit.get(doc, d.route, d.path).extend(d.live)  # the file's list, its style and comments kept
        else:
            value = d.live
            yamledit.set_value(doc, d.route, d.path, int(value) if float(value).is_integer() else value)
        n += 1
    return n
