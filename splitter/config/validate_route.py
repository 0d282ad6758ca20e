"""A route's keys: name, prefix, percent (or one per environment), sides, cohorts, guard, shadow.

The rollout section is validate_rollout.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .doc import _Doc, _entries, _is_int, _mapping, _number, _show, _unknown
from .keys import _ROUTE_KEYS, SECTIONS
from .model import (
    BACKENDS,
    COHORT_MATCHERS,
    COHORT_OPS,
    DEFAULT_BACKENDS,
    MAX_COHORT_MEMBERS,
    NAME_RE,
    PERCENT_RULE,
    ROLES,
    Cohort,
    GuardSpec,
    Percent,
    Route,
    ShadowSpec,
    as_percent,
)
from .validate_rollout import _confidence, _rollout


def _routes(
    doc: _Doc,
    raw: Any,
    environment: str,
    known: frozenset[str] = frozenset(BACKENDS),
    token_header: str = "authorization",
) -> list[Route]:
    if not isinstance(raw, list):
        doc.error("routes", f"must be a list, got {_show(raw)}")
        return []
    routes: list[Route] = []
    names: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    env_sets: list[tuple[str, frozenset[str]]] = []
    for i, r in enumerate(raw):
        path = f"routes[{i}]"
        if not isinstance(r, dict):
            doc.error(path, f"must be a mapping with name, prefix, percent, got {_show(r)}")
            continue
        _unknown(doc, r, _ROUTE_KEYS, path)
        name = _unique_name(doc, r.get("name"), path, names, "name")
        prefix = r.get("prefix")
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            doc.error(f"{path}.prefix", f"must be a path starting with /, got {_show(prefix)}")
            prefix = None
        else:
            if len(prefix) > 1:
                prefix = prefix.rstrip("/") or "/"
            if prefix in prefixes:
                doc.error(f"{path}.prefix", f"duplicate prefix {prefix!r} (also {prefixes[prefix]})")
            prefixes[prefix] = path
        percent, by_env = _percent(doc, r.get("percent"), f"{path}.percent", environment, "percent" in r)
        if by_env is not None:
            env_sets.append((f"{path}.percent", frozenset(by_env)))
        salt = r.get("salt")
        if salt is not None and not isinstance(salt, str):
            doc.error(f"{path}.salt", f"must be a string, got {_show(salt)}")
        guard = _guard(doc, r["guard"], f"{path}.guard") if "guard" in r else None
        shadow = _shadow(doc, r["shadow"], f"{path}.shadow") if "shadow" in r else None
        rollout = _rollout(doc, r["rollout"], f"{path}.rollout") if "rollout" in r else None
        if rollout is not None and rollout.gates.max_mismatch_rate is not None and "shadow" not in r:
            doc.error(f"{path}.rollout.gates.max_mismatch_rate", "judges the route's shadow comparisons: add `shadow:`")
        sides = _sides(doc, r, path, known)
        cohorts = _cohorts(doc, r["cohorts"], f"{path}.cohorts", token_header) if "cohorts" in r else ()
        if name and prefix and percent is not None:
            routes.append(Route(name, prefix, percent, by_env, salt, guard, shadow, rollout, sides, cohorts))
    if env_sets:
        first_path, first = env_sets[0]
        for p, envs in env_sets[1:]:
            if envs != first:
                doc.error(
                    p,
                    f"percent maps must all name the same environments: {', '.join(sorted(envs))} here, "
                    f"{', '.join(sorted(first))} at {first_path}",
                )
    return routes


def _unique_name(doc: _Doc, name: Any, path: str, seen: dict[str, str], what: str, where: str = "") -> str | None:
    """A `name:` matching [a-z0-9_]+ and not used before among `seen` (name -> the path that used it)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        doc.error(f"{path}.name", f"must match [a-z0-9_]+, got {_show(name)}")
        return None
    if name in seen:
        doc.error(f"{path}.name", f"duplicate {what} {name!r}{where} (also {seen[name]})")
        return name
    seen[name] = path
    return name


def _sides(doc: _Doc, r: dict[str, Any], path: str, known: frozenset[str]) -> Mapping[str, str]:
    """`routes[].new` / `routes[].legacy`: the backends that serve this route's roles (default: new, legacy)."""
    if "new" not in r and "legacy" not in r:
        return DEFAULT_BACKENDS
    sides = dict(DEFAULT_BACKENDS)
    for role in (role for role in ROLES if role in r):
        name = r[role]
        if not isinstance(name, str) or name not in known:
            defined = ", ".join(sorted(known))
            doc.error(f"{path}.{role}", f"must name a backend defined under backends: ({defined}), got {_show(name)}")
        else:
            sides[role] = name
    return MappingProxyType(sides)


def _cohorts(doc: _Doc, raw: Any, path: str, token_header: str) -> tuple[Cohort, ...]:
    """`routes[].cohorts`: who goes to which side before the percent, tried in order."""
    out: list[Cohort] = []
    seen: dict[str, str] = {}
    example = "{name: staff, header: X-Staff, equals: '1', to: new}"
    for cpath, c in _entries(doc, raw, path, example, set(SECTIONS["cohort"])):
        name = _unique_name(doc, c.get("name"), cpath, seen, "cohort name", " in this route")
        to = c.get("to")
        if to not in ROLES:
            what = "required" if "to" not in c else f"got {_show(to)}"
            doc.error(f"{cpath}.to", f"must be new or legacy (the route's side this cohort goes to), {what}")
        cohort = _cohort_match(doc, c, cpath)
        trusted = _cohort_trusted(doc, c, cpath, cohort[0] if cohort is not None else None)
        if name and to in ROLES and cohort is not None:
            matcher, key, op, values, users = cohort
            out.append(Cohort(name, to, matcher, key, op, values, users, token_header, trusted))
    return tuple(out)


def _cohort_trusted(doc: _Doc, c: dict[str, Any], path: str, matcher: str | None) -> bool:
    """`trusted: true`: what the request says is believed only from a trusted_proxies peer. A users
    cohort matches the user id, which is not the cohort's to trust (it is the user_id sources')."""
    if "trusted" not in c:
        return False
    v = c["trusted"]
    if not isinstance(v, bool):
        doc.error(f"{path}.trusted", f"must be true or false, got {_show(v)}")
        return False
    if v and matcher == "users":
        doc.error(f"{path}.trusted", "is for header, cookie and jwt_claim cohorts; a users cohort matches the user id")
        return False
    return v


def _cohort_match(
    doc: _Doc, c: dict[str, Any], path: str
) -> tuple[str, str, str, tuple[str, ...], frozenset[bytes]] | None:
    """(matcher, key, op, values, users) of one cohort: exactly one matcher; header/cookie/jwt_claim
    with exactly one of equals, in, prefix, suffix; users with a list of ids."""
    matchers = [m for m in COHORT_MATCHERS if m in c]
    ops = [o for o in COHORT_OPS if o in c]
    if not matchers:
        doc.error(path, f"needs a matcher: one of {', '.join(COHORT_MATCHERS)}")
        return None
    if len(matchers) > 1:
        doc.error(f"{path}.{matchers[1]}", f"one matcher per cohort, got {' and '.join(matchers)}")
        return None
    matcher = matchers[0]
    if matcher == "users":
        if ops:
            doc.error(
                f"{path}.{ops[0]}",
                "a users cohort matches the user id; equals/in/prefix/suffix are for header, cookie and jwt_claim",
            )
            return None
        users = _cohort_users(doc, c["users"], f"{path}.users")
        return None if users is None else ("users", "", "", (), users)
    key = c[matcher]
    if not isinstance(key, str) or not key:
        doc.error(f"{path}.{matcher}", f"must be a {matcher.replace('jwt_', '')} name, got {_show(key)}")
        return None
    if len(ops) != 1:
        doc.error(
            f"{path}.{ops[1]}" if ops else path,
            f"{matcher} needs exactly one of {', '.join(COHORT_OPS)}" + (f", got {' and '.join(ops)}" if ops else ""),
        )
        return None
    op = ops[0]
    v = c[op]
    ok = (lambda x: isinstance(x, str) and x) if op != "equals" else (lambda x: isinstance(x, str) or _is_int(x))
    if op == "in" and (not isinstance(v, list) or not v or not all(isinstance(x, str) or _is_int(x) for x in v)):
        doc.error(f"{path}.in", f"must be a non-empty list of strings, got {_show(v)}")
        return None
    if op != "in" and not ok(v):
        doc.error(f"{path}.{op}", f"must be a{' non-empty' if op != 'equals' else ''} string, got {_show(v)}")
        return None
    values = tuple(str(x) for x in v) if op == "in" else (str(v),)
    return matcher, key, op, values, frozenset()


def _cohort_users(doc: _Doc, v: Any, path: str) -> frozenset[bytes] | None:
    if not isinstance(v, list) or not all((isinstance(x, str) and x) or _is_int(x) for x in v):
        doc.error(path, f"must be a list of user ids, got {_show(v)}")
        return None
    if len(v) > MAX_COHORT_MEMBERS:
        doc.error(path, f"at most {MAX_COHORT_MEMBERS} users per cohort, got {len(v)}")
        return None
    return frozenset(str(x).encode("utf-8", "surrogatepass") for x in v)


def _percent(
    doc: _Doc, v: Any, path: str, environment: str, present: bool
) -> tuple[Percent | None, dict[str, Percent] | None]:
    """A number 0..100 with at most two decimals, or a map of environment to one."""
    if not present:
        doc.error(path, f"required: {PERCENT_RULE}, or a map of environment to one")
        return None, None
    if not isinstance(v, dict):
        pct = as_percent(v)
        if pct is None:
            doc.error(path, f"must be {PERCENT_RULE}, got {_show(v)}")
        return pct, None
    ok, by_env = True, {}
    for env, raw in v.items():
        pct = as_percent(raw)
        if pct is None:
            doc.error(f"{path}.{env}", f"must be {PERCENT_RULE}, got {_show(raw)}")
            ok = False
        by_env[env] = pct if pct is not None else raw
    if environment not in v:
        doc.error(path, f"no value for environment {environment!r} (has: {', '.join(map(str, v)) or 'none'})")
        ok = False
    return (by_env[environment], by_env) if ok else (None, by_env)


def _guard(doc: _Doc, raw: Any, path: str) -> GuardSpec | None:
    g = _mapping(doc, raw, path)
    if g is None:
        return None
    _unknown(doc, g, set(SECTIONS["guard"]), path)
    if "max_error_rate" not in g:
        doc.error(f"{path}.max_error_rate", "required: a number 0..1")
    rate = _number(doc, g, "max_error_rate", path, 0.05, positive=False, upper=1)
    return GuardSpec(
        float(rate),
        int(_number(doc, g, "min_requests", path, 50, integer=True)),
        float(_number(doc, g, "window_s", path, 60.0)),
        _number(doc, g, "max_p95_ratio", path, None),
        _number(doc, g, "max_error_increase", path, None, positive=False, upper=1),
        _confidence(doc, g, path),
    )


def _shadow(doc: _Doc, raw: Any, path: str) -> ShadowSpec | None:
    s = _mapping(doc, raw, path)
    if s is None:
        return None
    _unknown(doc, s, set(SECTIONS["shadow"]), path)
    pct = as_percent(s.get("percent", 100))
    if pct is None:
        doc.error(f"{path}.percent", f"must be {PERCENT_RULE}, got {_show(s['percent'])}")
        pct = 100
    methods = s.get("methods", ["GET", "HEAD"])
    ignore = s.get("ignore", [])
    headers = s.get("headers", ["content-type"])
    for key, val in (("methods", methods), ("ignore", ignore), ("headers", headers)):
        if not isinstance(val, list) or not all(isinstance(x, str) for x in val):
            doc.error(f"{path}.{key}", f"must be a list of strings, got {_show(val)}")
            return None
    for i, p in enumerate(ignore):
        if not p.startswith("$"):
            doc.error(f"{path}.ignore[{i}]", f"must be a JSON path like $.generated_at, got {p!r}")
    return ShadowSpec(pct, tuple(m.upper() for m in methods), tuple(ignore), tuple(h.lower() for h in headers))
