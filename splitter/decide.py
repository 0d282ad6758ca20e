"""Who serves a request: the one decision the proxy, the WebSocket path, `/admin/bucket` and
`splitter bucket` all make, as a pure function of the routing snapshot and the request's facts.

The rules, in order (the first that applies decides; `reason` names it):
  force       an authorized X-Splitter-Backend header names the role (the caller checks the token)
  kill        the kill switch is on: legacy
  cohort:NAME the route's first cohort (in routes.yaml's order) that matches sends the request to its `to`
  unmatched   no route matches: `unmatched:` from routes.yaml (the bucket is still reported)
  anonymous   no user id and `anonymous: legacy|new`
  override    the route's percent is an override (admin, guard, rollout): new when bucket < percent
  percent     the route's percent is routes.yaml's: new when bucket < percent
              (a fractional percent a.f: or bucket == a and sub-bucket < f; bucketing.is_new)

Cohorts come before the anonymous rule: a header, cookie or jwt_claim cohort matches a request
whether or not it carries a user id (`X-Staff: 1` is staff, signed in or not; under `anonymous:
cookie` no id is minted for it), while a `users` cohort needs the id. A request that matches no
cohort goes on to the rules below it as if there were none. Each cohort costs one cheap check (a
dict lookup and a set or prefix test, names and values precomputed at load as bytes); cookies are
parsed only for a cookie cohort, and a JWT is decoded (unverified, like jwt_sub) once, only when a
jwt_claim cohort is reached. A cohort's decision has no bucket: none was needed.
Any client can set a header, a cookie or an unsigned JWT, so by default anyone can put themselves
in such a cohort; a `trusted: true` cohort matches only when `Facts.trusted` says the peer is in
`trusted_proxies` (a proxy in front that strips and sets those headers). The caller looks the peer
up only for a route that has a trusted cohort; `/admin/bucket` and `splitter bucket` know no peer
(and no headers), so they never claim a header, cookie or jwt_claim cohort matched.

The decision is a role (`legacy`/`new`: what windows, guard, rollout, shadow and metrics compare)
and the backend that role names on this route, resolved once at config load (Route.backends).
Like starlette's `Route.matches() -> Match`: no I/O, so a test drives it without sockets.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from . import bucketing

if TYPE_CHECKING:
    from .config import Cohort, Route
    from .runtime import Snapshot

_NO_HEADERS: Mapping[bytes, bytes] = MappingProxyType({})
_NOBODY: frozenset[bytes] = frozenset()


class Facts(NamedTuple):
    """What the request says: the role an authorized force header names, the user id (None:
    anonymous), its headers by lower-case name (what header, cookie and jwt_claim cohorts read), and
    whether its peer is in trusted_proxies (what `trusted: true` cohorts need; False when not looked up)."""

    forced: str | None
    user_id: bytes | None
    headers: Mapping[bytes, bytes] = _NO_HEADERS
    trusted: bool = False


class Decision(NamedTuple):
    role: str  # legacy | new
    backend: str  # the configured backend that serves the role here
    bucket: int | None  # the user's bucket, when it was computed
    reason: str  # force | kill | cohort:NAME | unmatched | anonymous | override | percent


def decide(snap: Snapshot, route: Route | None, facts: Facts) -> Decision | None:
    """The decision; None for an anonymous request under `anonymous: cookie`: the caller mints an id
    (randomness is not this function's) and decides again with it."""
    cfg = snap.config
    backends = route.backends if route is not None else cfg.role_backends
    if facts.forced is not None:
        return Decision(facts.forced, backends[facts.forced], None, "force")
    if snap.kill:
        return Decision("legacy", backends["legacy"], None, "kill")
    uid = facts.user_id
    if route is not None and route.cohorts:
        cohort = matching_cohort(snap, route, uid, facts.headers, facts.trusted)
        if cohort is not None:
            return Decision(cohort.to, backends[cohort.to], None, cohort.reason)
    if uid is None and cfg.anonymous == "cookie":
        return None
    if route is None:
        bucket = None if uid is None else bucketing.bucket(uid)
        return Decision(cfg.unmatched, backends[cfg.unmatched], bucket, "unmatched")
    if uid is None:
        return Decision(cfg.anonymous, backends[cfg.anonymous], None, "anonymous")
    bucket, digest = bucketing.placed(uid, route.salt)  # one md5: the bucket, and a fractional percent's sub-bucket
    role = "new" if bucketing.is_new(bucket, digest, snap.cuts[route.name]) else "legacy"
    return Decision(role, backends[role], bucket, "percent" if snap.sources[route.name] == "file" else "override")


def matching_cohort(
    snap: Snapshot, route: Route, uid: bytes | None, headers: Mapping[bytes, bytes], trusted: bool = False
) -> Cohort | None:
    """The route's first cohort that matches the request, or None."""
    claims: Any = False  # not decoded yet
    for c in route.cohorts:
        if c.trusted and not trusted:
            continue
        matcher = c.matcher
        if matcher == "header":
            value = headers.get(c.raw_key)
            if value is not None:
                value = value.strip(b" \t")  # a field value has no surrounding whitespace (RFC 9110 5.5)
        elif matcher == "users":
            if uid is not None and (uid in c.users or uid in snap.members.get((route.name, c.name), _NOBODY)):
                return c
            continue
        elif matcher == "cookie":
            raw = headers.get(b"cookie")
            value = bucketing.cookie_value(raw, c.raw_key) if raw else None
        else:  # jwt_claim
            if claims is False:
                token = headers.get(c.raw_token_header)
                claims = bucketing.jwt_claims(token) if token else None
            if claims is not None and _claim_matches(c, claims.get(c.key)):
                return c
            continue
        if value is not None and _value_matches(c, value):
            return c
    return None


def _value_matches(c: Cohort, value: bytes) -> bool:
    op = c.op
    if op == "prefix":
        return value.startswith(c.raw_values)
    if op == "suffix":
        return value.endswith(c.raw_values)
    return value in c.value_set  # equals, in


def _claim_matches(c: Cohort, claim: Any) -> bool:
    """A string or number claim compares like a header value; a list claim (groups, roles) matches
    when one of its items does."""
    items = claim if isinstance(claim, list) else (claim,)
    for item in items:
        if isinstance(item, bool):
            text = "true" if item else "false"
        elif isinstance(item, str | int | float):
            text = str(item)
        else:
            continue
        if _value_matches(c, text.encode("utf-8", "surrogatepass")):
            return True
    return False
