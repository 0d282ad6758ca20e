"""Who serves a request: the one decision the proxy, the WebSocket path, `/admin/bucket` and
`splitter bucket` all make, as a pure function of the routing snapshot and the request's facts.

The rules, in order (the first that applies decides; `reason` names it):
  force       an authorized X-Splitter-Backend header names the role (the caller checks the token)
  kill        the kill switch is on: legacy
  (cohorts    will go here, before the percent)
  unmatched   no route matches: `unmatched:` from routes.yaml (the bucket is still reported)
  anonymous   no user id and `anonymous: legacy|new`
  override    the route's percent is an override (admin, guard, rollout): new when bucket < percent
  percent     the route's percent is routes.yaml's: new when bucket < percent
              (a fractional percent a.f: or bucket == a and sub-bucket < f; bucketing.is_new)

The decision is a role (`legacy`/`new`: what windows, guard, rollout, shadow and metrics compare)
and the backend that role names on this route, resolved once at config load (Route.backends).
Like starlette's `Route.matches() -> Match`: no I/O, so a test drives it without sockets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from . import bucketing

if TYPE_CHECKING:
    from .config import Route
    from .runtime import Snapshot


class Facts(NamedTuple):
    """What the request says: the role an authorized force header names, and the user id (None: anonymous)."""

    forced: str | None
    user_id: bytes | None


class Decision(NamedTuple):
    role: str  # legacy | new
    backend: str  # the configured backend that serves the role here
    bucket: int | None  # the user's bucket, when it was computed
    reason: str  # force | kill | unmatched | anonymous | override | percent


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
    if uid is None and cfg.anonymous == "cookie":
        return None
    if route is None:
        bucket = None if uid is None else bucketing.bucket(uid)
        return Decision(cfg.unmatched, backends[cfg.unmatched], bucket, "unmatched")
    if uid is None:
        return Decision(cfg.anonymous, backends[cfg.anonymous], None, "anonymous")
    digest = bucketing.digest(uid, route.salt)  # one md5: the bucket, and the sub-bucket of a fractional percent
    bucket = bucketing.bucket_of(digest)
    role = "new" if bucketing.is_new(bucket, digest, snap.cuts[route.name]) else "legacy"
    return Decision(role, backends[role], bucket, "percent" if snap.sources[route.name] == "file" else "override")
