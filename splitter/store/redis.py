"""The Redis (and Sentinel) store, shared by a fleet; the only module that imports redis.

The hot path never talks to Redis: it reads `store.state`, an immutable snapshot
replaced whole on every change. The keys are the truth:

    {prefix}:percent   hash  route -> percent: "10", or "1.5" (0.01 steps; whole ones are written as integers)
    {prefix}:source    hash  route -> override | guard | rollout
    {prefix}:kill      "1" on, "0" off
    {prefix}:state     sentinel written with every change; its absence after a
                       reconnect means Redis lost its data (restart without
                       persistence), and the last known state is written back
    {prefix}:events    pub/sub channel; any message means "resync from the keys"
    {prefix}:win:{route}:{backend}:{width}:{slot}
                       hash n, e, <histogram bucket> -> count: every process adds its
                       outcomes once a second (window.py); expires after the longest window + 60 s
    {prefix}:shadow:{route}
                       list of the last 100 shadow mismatches (JSON), newest first
    {prefix}:legacy_last
                       sorted set route -> the last second legacy served it; every process adds the
                       seconds it saw once a second with ZADD GT, so the latest wins (ready to retire)
    {prefix}:history   stream of change events (field "e": JSON), MAXLEN ~10,000 (history.py)
    {prefix}:claim:{digest}
                       SET NX, 5 minutes: the one replica that records a change every
                       replica sees (a routes.yaml reload)
    {prefix}:cohort:{route}:{cohort}
                       set of the user ids added at runtime to a `users` cohort
    {prefix}:cohorts   hash "{route}:{cohort}" -> version, raised with every change of that set
                       (in the same script, with the event): a resync re-reads only the sets
                       whose version moved, so a 100,000-member set is not read every second
                       (a set edited by hand is read once its version field changes)

Every replica resyncs on connect, on every event and once a second, so a lost
message costs at most a second. With Sentinel (`redis.sentinels` + `service`)
every new connection asks the sentinels for the current master, so after a
failover the next reconnect (the subscription included) lands on the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from ..config import parse_percent
from . import (
    CLAIM_S,
    KEEP_HISTORY,
    KEEP_MISMATCHES,
    MEMBER_SAMPLE,
    CohortKey,
    MemberChange,
    State,
    Store,
    TooMany,
    Unavailable,
)

log = structlog.get_logger("splitter.store")


class RedisStore(Store):
    shared = True

    def __init__(
        self,
        url: str,
        prefix: str,
        on_up: Callable[[bool], None] | None = None,
        resync_interval: float = 1.0,
        ha: Connect | None = None,
    ) -> None:
        super().__init__()
        import redis.asyncio as redis

        self._redis_errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError, asyncio.TimeoutError)
        self.client = connect(url, ha or Connect())
        self.url = url
        self.name = f"sentinel {ha.service}" if ha and ha.sentinels else f"redis {_safe_url(url)}"
        self.k_percent = f"{prefix}:percent"
        self.k_source = f"{prefix}:source"
        self.k_kill = f"{prefix}:kill"
        self.k_state = f"{prefix}:state"
        self.channel = f"{prefix}:events"
        self.prefix = prefix
        self.k_cohorts = f"{prefix}:cohorts"
        self._versions: dict[str, str] = {}  # "{route}:{cohort}" -> the version self.members holds
        self.up = False
        self.ever_connected = False
        self._known = False  # True once we have a state from Redis or from a write
        self._on_up = on_up
        self._resync_interval = resync_interval
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._set_up(False)
        self._task = asyncio.create_task(self._run(), name="splitter-redis")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        try:
            await self.client.aclose()
        except self._redis_errors:
            pass

    def _set_up(self, up: bool) -> None:
        if up != self.up or not self.ever_connected:
            if up:
                log.info("redis connected", url=_safe_url(self.url))
            elif self.ever_connected:
                log.warning("redis disconnected", url=_safe_url(self.url))
        self.up = up
        if up:
            self.ever_connected = True
        if self._on_up:
            self._on_up(up)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                await self._resync()
                self._set_up(True)
                backoff = 0.1
                loop = asyncio.get_running_loop()
                next_resync = loop.time() + self._resync_interval
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self._resync_interval)
                    if msg is not None or loop.time() >= next_resync:
                        await self._resync()
                        next_resync = loop.time() + self._resync_interval
            except asyncio.CancelledError:
                await _quietly(pubsub.aclose())
                raise
            except self._redis_errors as exc:
                if self.up:
                    log.warning("redis error", error=str(exc) or type(exc).__name__)
                self._set_up(False)
                await _quietly(pubsub.aclose())
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _resync(self) -> None:
        async with self._lock:
            pipe = self.client.pipeline(transaction=False)
            pipe.exists(self.k_state)
            pipe.hgetall(self.k_percent)
            pipe.hgetall(self.k_source)
            pipe.get(self.k_kill)
            exists, percents, sources, kill = await pipe.execute()
            if not exists:
                await self._restore_members()
                s = self.state
                if self._known and (s.percents or s.kill):
                    await self._write(s)
                    log.warning(
                        "redis lost its data; wrote back the last known overrides and kill switch",
                        overrides=dict(s.percents),
                        kill=s.kill,
                    )
                else:
                    await self.client.set(self.k_state, "1")
                self._known = True
                return
            await self._sync_members()
            state = _parse(percents, sources, kill)
            self._known = True
            if state != self.state:
                self._apply(state)

    async def _write(self, s: State, event: dict[str, Any] | None = None) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.k_percent, self.k_source)
        if s.percents:
            pipe.hset(self.k_percent, mapping={k: str(v) for k, v in s.percents.items()})
            pipe.hset(self.k_source, mapping={k: s.sources.get(k, "override") for k in s.percents})
        pipe.set(self.k_kill, "1" if s.kill else "0")
        pipe.set(self.k_state, "1")
        pipe.publish(self.channel, json.dumps(event or {"type": "resync"}))
        await pipe.execute()

    async def _change(self, make: Callable[[State], State], event: dict[str, Any]) -> None:
        if not self.up:
            raise Unavailable(
                "Redis is unreachable: the change would not reach the other replicas; nothing was changed, "
                "try again when Redis is back"
            )
        try:
            async with self._lock:
                # read-modify-write on the keys, which are the fleet's truth
                pipe = self.client.pipeline(transaction=False)
                pipe.hgetall(self.k_percent)
                pipe.hgetall(self.k_source)
                pipe.get(self.k_kill)
                percents, sources, kill = await pipe.execute()
                new = make(_parse(percents, sources, kill))
                await self._write(new, event)
                self._known = True
        except self._redis_errors as exc:
            raise Unavailable(f"Redis write failed ({exc or type(exc).__name__}); nothing was changed") from None
        self._apply(new)

    # --- runtime members of `users` cohorts ---
    def _k_cohort(self, field_: str) -> str:
        return f"{self.prefix}:cohort:{field_}"

    async def _sync_members(self) -> None:
        """Re-read the sets whose version moved (all of them at start and after a reconnect to a
        Redis this process has not seen); every other cohort keeps its frozenset."""
        versions: dict[str, str] = await self.client.hgetall(self.k_cohorts)
        changed = [f for f, v in versions.items() if self._versions.get(f) != v]
        gone = [f for f in self._versions if f not in versions]
        if not changed and not gone:
            return
        pipe = self.client.pipeline(transaction=False)
        for f in changed:
            pipe.smembers(self._k_cohort(f))
        sets = await pipe.execute()
        members = dict(self.members)
        for f, ids in zip(changed, sets, strict=True):
            route, _, cohort = f.partition(":")
            members[(route, cohort)] = frozenset(u.encode() for u in ids)
        for f in gone:
            route, _, cohort = f.partition(":")
            members.pop((route, cohort), None)
        self._versions = versions
        self._apply_members(members)

    async def _restore_members(self) -> None:
        """Redis lost its data: write back the members this process last saw, with their versions."""
        if not (self._known and self._versions):
            return
        pipe = self.client.pipeline(transaction=True)
        for (route, cohort), ids in self.members.items():
            values = [u.decode() for u in ids]
            for i in range(0, len(values), 10_000):
                pipe.sadd(self._k_cohort(f"{route}:{cohort}"), *values[i : i + 10_000])
        pipe.hset(self.k_cohorts, mapping=self._versions)
        await pipe.execute()
        log.warning(
            "redis lost its data; wrote back the last known cohort members",
            cohorts={f"{r}:{c}": len(ids) for (r, c), ids in self.members.items()},
        )

    async def change_members(
        self, key: CohortKey, add: list[str], remove: list[str], limit: int
    ) -> MemberChange:
        """One script: the size check, the change, the version and the event, so replicas racing
        to add cannot pass the limit together, and a refused change leaves the set as it was."""
        if not self.up:
            raise Unavailable(
                "Redis is unreachable: the change would not reach the other replicas; nothing was changed, "
                "try again when Redis is back"
            )
        field_ = f"{key[0]}:{key[1]}"
        event = json.dumps({"type": "cohort", "route": key[0], "cohort": key[1]})
        keys = [self._k_cohort(field_), self.k_cohorts, self.k_state]
        args = [field_, limit, self.channel, event, len(add), MEMBER_SAMPLE, *add, *remove]
        async with self._lock:
            try:
                out = await self.client.eval(_CHANGE_MEMBERS, len(keys), *keys, *args)
            except self._redis_errors as exc:
                raise Unavailable(f"Redis write failed ({exc or type(exc).__name__}); nothing was changed") from None
            status, before, after = int(out[0]), int(out[1]), int(out[2])
            if status == -2:
                raise Unavailable("Redis has just lost its data and is being restored; nothing was changed, try again")
            if status == -1:
                raise TooMany(before, after, limit)
            with contextlib.suppress(*self._redis_errors):  # else the next resync reads it
                await self._sync_members()  # this process sees its own change before it answers
        return MemberChange(before, after, int(out[3]), int(out[4]), tuple(out[5]), tuple(out[6]))

    async def get_rollout(self, route: str) -> dict[str, Any] | None:
        try:
            raw = await self.client.hget(f"{self.prefix}:rollout", route)
        except self._redis_errors as exc:
            raise Unavailable(f"Redis unreachable ({exc or type(exc).__name__})") from None
        return json.loads(raw) if raw else None

    async def put_rollout(self, route: str, record: dict[str, Any]) -> None:
        try:
            await self.client.hset(f"{self.prefix}:rollout", route, json.dumps(record))
        except self._redis_errors as exc:
            raise Unavailable(f"Redis unreachable ({exc or type(exc).__name__})") from None

    async def lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take or renew a lease; another replica takes over when the holder stops renewing."""
        key = f"{self.prefix}:lease:{name}"
        ttl_ms = int(ttl_s * 1000)
        try:
            if await self.client.set(key, owner, nx=True, px=ttl_ms):
                return True
            return bool(await self.client.eval(_RENEW, 1, key, owner, ttl_ms))
        except self._redis_errors:
            return False


    # --- fleet-wide outcome windows (window.Windows is the reader and writer) ---
    async def add_outcomes(self, batch: list[tuple[str, dict[str, int], int]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, fields, expire_at in batch:
            for field_, count in fields.items():
                if count:
                    pipe.hincrby(key, field_, count)
            pipe.expireat(key, expire_at)
        try:
            await pipe.execute()
        except self._redis_errors as exc:
            raise Unavailable(f"Redis unreachable ({exc or type(exc).__name__})") from None

    async def read_outcomes(self, keys: list[str]) -> list[dict[str, str]]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        try:
            return list(await pipe.execute())
        except self._redis_errors as exc:
            raise Unavailable(f"Redis unreachable ({exc or type(exc).__name__})") from None

    async def note_legacy(self, seen: Mapping[str, int]) -> None:
        """A sorted set, route -> second: ZADD GT keeps the latest whichever replica writes last."""
        try:
            await self.client.zadd(f"{self.prefix}:legacy_last", dict(seen), gt=True)
        except self._redis_errors as exc:
            raise Unavailable(f"Redis unreachable ({exc or type(exc).__name__})") from None

    async def legacy_last(self) -> dict[str, float]:
        try:
            pairs = await self.client.zrange(f"{self.prefix}:legacy_last", 0, -1, withscores=True)
        except self._redis_errors as exc:
            raise Unavailable(f"Redis unreachable ({exc or type(exc).__name__})") from None
        return {str(r): float(s) for r, s in pairs}

    async def push_mismatch(self, route: str, entry: dict[str, Any]) -> None:
        key = f"{self.prefix}:shadow:{route}"
        pipe = self.client.pipeline(transaction=True)
        pipe.lpush(key, json.dumps(entry))
        pipe.ltrim(key, 0, KEEP_MISMATCHES - 1)
        try:
            await pipe.execute()
        except self._redis_errors as exc:
            raise Unavailable(f"Redis unreachable ({exc or type(exc).__name__})") from None

    async def mismatches(self, route: str) -> list[dict[str, Any]]:
        try:
            rows = await self.client.lrange(f"{self.prefix}:shadow:{route}", 0, KEEP_MISMATCHES - 1)
        except self._redis_errors as exc:
            raise Unavailable(f"Redis unreachable ({exc or type(exc).__name__})") from None
        return [json.loads(r) for r in rows]

    async def push_history(self, event: dict[str, Any]) -> None:
        try:
            fields: dict[Any, Any] = {"e": json.dumps(event)}
            await self.client.xadd(f"{self.prefix}:history", fields, maxlen=KEEP_HISTORY, approximate=True)
        except self._redis_errors as exc:
            raise Unavailable(f"Redis unreachable ({exc or type(exc).__name__})") from None

    async def history(self, limit: int, route: str | None = None) -> list[dict[str, Any]]:
        """Newest first; with a route, pages back through the stream until `limit` match."""
        key, last = f"{self.prefix}:history", "+"
        out: list[dict[str, Any]] = []
        try:
            while len(out) < limit:
                page: list[Any] = await self.client.xrevrange(key, max=last, min="-", count=500) or []
                for entry_id, fields in page:
                    if entry_id == last:
                        continue
                    event = json.loads(fields["e"])
                    if route is None or event.get("route") == route:
                        out.append({"id": entry_id, **event})
                if len(page) < 500:
                    break
                last = str(page[-1][0])
        except self._redis_errors as exc:
            raise Unavailable(f"Redis unreachable ({exc or type(exc).__name__})") from None
        return out[:limit]

    async def claim(self, key: str) -> bool:
        try:
            return bool(await self.client.set(f"{self.prefix}:claim:{key}", "1", nx=True, ex=CLAIM_S))
        except self._redis_errors as exc:
            raise Unavailable(f"Redis unreachable ({exc or type(exc).__name__})") from None


@dataclass(frozen=True)
class Connect:
    """How to reach Redis beyond the URL: Sentinel, credentials (already read from the environment), TLS."""

    sentinels: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def connect(url: str, how: Connect) -> Any:
    """A redis.asyncio client: from the URL, or the master Sentinel names for `how.service`."""
    import redis.asyncio as redis

    common: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2, "decode_responses": True}
    creds: dict[str, Any] = {k: v for k, v in (("username", how.username), ("password", how.password)) if v}
    if how.sentinels:
        from redis.asyncio.sentinel import Sentinel

        tls: dict[str, Any] = {"ssl": True} if how.tls else {}
        # the credentials are the master's (and its replicas'); the sentinels are asked without them
        sentinel = Sentinel(list(how.sentinels), sentinel_kwargs={**common, **tls}, **common)
        return sentinel.master_for(how.service or "", db=how.db, **creds, **tls)
    if how.tls and url.startswith("redis://"):
        url = "rediss://" + url[len("redis://"):]
    return redis.from_url(url, **common, **creds)


def describe(url: str | None, how: Connect) -> str | None:
    """What the logs and /admin/overview call this Redis (never a password)."""
    if how.sentinels:
        return "sentinel://" + ",".join(f"{h}:{p}" for h, p in how.sentinels) + f"/{how.service}"
    return url


def _parse(percents: dict[str, str], sources: dict[str, str], kill: str | None) -> State:
    parsed = {k: parse_percent(v) for k, v in percents.items()}
    valid = {k: v for k, v in parsed.items() if v is not None}
    return State(valid, {k: sources.get(k, "override") for k in valid}, kill == "1")


# KEYS: the set, the versions hash, the state sentinel. ARGV: field, limit, channel, event, number of
# ids to add, sample size, the ids to add, the ids to remove (distinct, none in both).
# Returns {status (1 done, -1 over the limit, -2 Redis lost its data), before, after, added, removed,
# the first `sample` added, the first `sample` removed}.
_CHANGE_MEMBERS = """
if redis.call('exists', KEYS[3]) == 0 then return {-2, 0, 0, 0, 0, {}, {}} end
local n, sample, first = tonumber(ARGV[5]), tonumber(ARGV[6]), 7
local before = redis.call('scard', KEYS[1])
local added, removed, added_ids, removed_ids = {}, {}, {}, {}
for i = first, first + n - 1 do
  if redis.call('sismember', KEYS[1], ARGV[i]) == 0 then
    added[#added + 1] = ARGV[i]
    if #added_ids < sample then added_ids[#added_ids + 1] = ARGV[i] end
  end
end
for i = first + n, #ARGV do
  if redis.call('sismember', KEYS[1], ARGV[i]) == 1 then
    removed[#removed + 1] = ARGV[i]
    if #removed_ids < sample then removed_ids[#removed_ids + 1] = ARGV[i] end
  end
end
local after = before + #added - #removed
if after > tonumber(ARGV[2]) then return {-1, before, after, 0, 0, {}, {}} end
for i = 1, #removed, 1000 do redis.call('srem', KEYS[1], unpack(removed, i, math.min(i + 999, #removed))) end
for i = 1, #added, 1000 do redis.call('sadd', KEYS[1], unpack(added, i, math.min(i + 999, #added))) end
redis.call('hincrby', KEYS[2], ARGV[1], 1)
redis.call('publish', ARGV[3], ARGV[4])
return {1, before, after, #added, #removed, added_ids, removed_ids}
"""

_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)


async def _quietly(aw: Any) -> None:
    try:
        await aw
    except Exception:  # noqa: BLE001 - closing a broken connection may fail any way
        pass


def _safe_url(url: str) -> str:
    """Redis URL without its password, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
