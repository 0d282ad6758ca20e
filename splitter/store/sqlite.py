"""The embedded store: one SQLite file (stdlib sqlite3, WAL) holding what Redis holds, kept across
restarts and shared by the workers of one host.

Durable before the answer: `synchronous=FULL` makes every COMMIT reach the disk (the WAL is
fsynced), and a write returns only after its COMMIT, so a SIGKILL right after a 200 loses
nothing. sqlite3 calls block, so each process runs them on one thread of its own (a
single-thread executor): the event loop never waits on an fsync, and the hot path never touches
the file (it reads `state` and `members`, replaced whole as with Redis).

Workers share the file: each opens its own connection after the fork (`start`), and every
POLL_S asks `PRAGMA data_version`, which moves when another connection has committed; then it
re-reads the overrides and the cohort versions (a set is re-read only when its version moved),
so a change through any worker is in force in every worker within POLL_S plus one read. Leases
and claims are rows with an expiry, so one worker drives a rollout or records a reload, as
replicas do with Redis. The windows are the rows Redis keeps under `{prefix}:win:...`, summed by
every worker and swept once they expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

from ..config import parse_percent
from . import CLAIM_S, KEEP_HISTORY, KEEP_MISMATCHES, CohortKey, MemberChange, State, Store, TooMany, Unavailable
from . import member_change as _member_change

log = structlog.get_logger("splitter.store")
POLL_S = 0.25
SWEEP_S = 60.0  # expired window rows, leases and claims are deleted this often
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS overrides (route TEXT PRIMARY KEY, percent TEXT NOT NULL, source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollouts (route TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS legacy_last (route TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS history (id INTEGER PRIMARY KEY AUTOINCREMENT, route TEXT, event TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS history_route ON history (route, id);
CREATE TABLE IF NOT EXISTS mismatches (id INTEGER PRIMARY KEY AUTOINCREMENT, route TEXT NOT NULL, entry TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS mismatches_route ON mismatches (route, id);
CREATE TABLE IF NOT EXISTS members (route TEXT, cohort TEXT, user_id TEXT, PRIMARY KEY (route, cohort, user_id))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cohorts (route TEXT, cohort TEXT, version INTEGER NOT NULL, PRIMARY KEY (route, cohort));
CREATE TABLE IF NOT EXISTS windows (key TEXT, field TEXT, count INTEGER NOT NULL, expire_at INTEGER NOT NULL,
    PRIMARY KEY (key, field)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS windows_expiry ON windows (expire_at);
"""


def connect(path: str, busy_s: float = 5.0) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, every commit fsynced."""
    db = sqlite3.connect(path, timeout=busy_s, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    return db


def check(path: str) -> str | None:
    """What stops `splitter serve` before the workers fork, as the one line to print; None when the
    file (created if missing) is a sound database this process can write."""
    try:
        db = sqlite3.connect(path, timeout=1.0, isolation_level=None)
        try:
            found = db.execute("PRAGMA quick_check").fetchone()[0]
            if found != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {found}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")  # the write lock: another host's process holding it is "locked"
            db.execute("ROLLBACK")
            db.executescript(SCHEMA)
        finally:
            db.close()
    except sqlite3.Error as exc:
        return _why(path, str(exc))
    return None


def _why(path: str, error: str) -> str:
    if "locked" in error or "busy" in error:
        return (f"state file {path} is locked ({error}): another process holds it; stop that process, "
                "or set state.path in routes.yaml to a file of this host's own")
    if "readonly" in error or "unable to open" in error or "permission" in error.lower():
        return (f"state file {path} cannot be opened for writing ({error}): make it and its directory "
                "writable by this user, or set state.path in routes.yaml to a writable place")
    return (f"state file {path} is not a sound SQLite database ({error}): move it away to start from "
            "routes.yaml (then `splitter state import` a saved export), or restore it from a backup")


class SqliteStore(Store):
    def __init__(self, path: str, workers: int = 1, poll_s: float = POLL_S) -> None:
        super().__init__()
        # the windows go through the file only when several workers add to them; one process
        # judges its own counts in memory, exactly as before (scope "process")
        self.shared = workers > 1
        self.path = path
        self.name = f"sqlite {path}"
        self._poll_s = poll_s
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="splitter-sqlite")
        self._db: sqlite3.Connection | None = None
        self._seen_version: int | None = None  # PRAGMA data_version at the last read (the thread's)
        self._versions: dict[CohortKey, int] = {}  # the cohort versions self.members holds
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._swept = 0.0

    # --- plumbing: every call runs on the one thread; an sqlite3 error becomes Unavailable ---
    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except sqlite3.Error as exc:
            raise Unavailable(f"state file {self.path}: {exc}; nothing was changed") from None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = connect(self.path)  # opened in this worker, after the fork
        return self._db

    def _tx(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(db, *args)` in one write transaction, committed (and fsynced) before it returns."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            out = fn(db, *args)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return out

    async def start(self) -> None:
        await self._sync()
        self._task = asyncio.create_task(self._poll(), name="splitter-sqlite")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._db is not None:
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(self._pool, self._db.close)
        self._pool.shutdown(wait=True)

    async def _poll(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self._sync()
                failing = False
            except Unavailable as exc:
                if not failing:
                    log.warning("state file unreadable; serving the last state read", error=str(exc))
                failing = True

    # --- reading what other workers wrote ---
    async def _sync(self) -> None:
        async with self._lock:
            found = await self._call(self._read_if_moved, dict(self._versions))
            if found is None:
                return
            state, versions, changed = found
            if state != self.state:
                self._apply(state)
            gone = [k for k in self._versions if k not in versions]
            self._versions = versions
            if changed or gone:
                members = {k: v for k, v in self.members.items() if k not in gone}
                self._apply_members({**members, **changed})

    def _read_if_moved(
        self, known: dict[CohortKey, int]
    ) -> tuple[State, dict[CohortKey, int], dict[CohortKey, frozenset[bytes]]] | None:
        db = self._conn()
        version = db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._seen_version:
            return None
        db.execute("BEGIN")
        try:
            state = _read_state(db)
            versions = {(r, c): v for r, c, v in db.execute("SELECT route, cohort, version FROM cohorts")}
            changed = {k: _read_set(db, k) for k, v in versions.items() if known.get(k) != v}
        finally:
            db.execute("COMMIT")
        self._seen_version = version  # only once read: a failed read is tried again at the next poll
        return state, versions, changed

    # --- overrides and the kill switch ---
    async def _change(self, make: Callable[[State], State], event: dict[str, Any]) -> None:
        async with self._lock:
            new = await self._call(self._tx, _write_state, make)
            self._apply(new)

    async def change_members(self, key: CohortKey, add: list[str], remove: list[str], limit: int) -> MemberChange:
        """One transaction: the size check, the change and the version, so workers racing to add
        cannot pass the limit together, and a refused change leaves the set as it was."""
        async with self._lock:
            found: tuple[MemberChange, int, frozenset[bytes]]
            found = await self._call(self._tx, _change_members, key, add, remove, limit)
            change, version, ids = found
            self._versions[key] = version
            self._apply_members({**self.members, key: ids})
        return change

    # --- rollout records, leases, claims ---
    async def get_rollout(self, route: str) -> dict[str, Any] | None:
        row = await self._call(self._one, "SELECT record FROM rollouts WHERE route = ?", (route,))
        return json.loads(row[0]) if row else None

    async def put_rollout(self, route: str, record: dict[str, Any]) -> None:
        sql = "INSERT INTO rollouts VALUES (?, ?) ON CONFLICT(route) DO UPDATE SET record = excluded.record"
        await self._call(self._tx, _exec, sql, (route, json.dumps(record)))

    async def lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take or renew a lease; another worker takes over when the holder stops renewing."""
        now = time.time()
        sql = ("INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, "
               "expires = excluded.expires WHERE leases.owner = excluded.owner OR leases.expires < ?")
        try:
            taken: int = await self._call(self._tx, _exec, sql, (name, owner, now + ttl_s, now))
            return taken == 1
        except Unavailable:
            return False

    async def claim(self, key: str) -> bool:
        now = time.time()
        sql = ("INSERT INTO claims VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET expires = excluded.expires "
               "WHERE claims.expires < ?")
        taken: int = await self._call(self._tx, _exec, sql, (key, now + CLAIM_S, now))
        return taken == 1

    # --- shadow mismatches and history, newest first ---
    async def push_mismatch(self, route: str, entry: dict[str, Any]) -> None:
        await self._call(self._tx, _push, "mismatches", route, json.dumps(entry), KEEP_MISMATCHES)

    async def mismatches(self, route: str) -> list[dict[str, Any]]:
        sql = "SELECT entry FROM mismatches WHERE route = ? ORDER BY id DESC LIMIT ?"
        rows = await self._call(self._all, sql, (route, KEEP_MISMATCHES))
        return [json.loads(r[0]) for r in rows]

    async def push_history(self, event: dict[str, Any]) -> None:
        await self._call(self._tx, _push, "history", event.get("route"), json.dumps(event), KEEP_HISTORY)

    async def history(self, limit: int, route: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE route = ? ", (route,)) if route is not None else ("", ())
        sql = f"SELECT id, event FROM history {where}ORDER BY id DESC LIMIT ?"
        rows = await self._call(self._all, sql, (*args, limit))
        return [{"id": str(i), **json.loads(e)} for i, e in rows]

    # --- the windows: the same rows as Redis's {prefix}:win:... hashes ---
    async def add_outcomes(self, batch: list[tuple[str, dict[str, int], int]]) -> None:
        now = time.time()
        sweep = now - self._swept >= SWEEP_S
        if sweep:
            self._swept = now
        await self._call(self._tx, _add_outcomes, batch, int(now) if sweep else None)

    async def read_outcomes(self, keys: list[str]) -> list[dict[str, str]]:
        return await self._call(self._read_outcomes, keys, int(time.time()))

    def _read_outcomes(self, keys: list[str], now: int) -> list[dict[str, str]]:
        db = self._conn()
        sql = "SELECT field, count FROM windows WHERE key = ? AND expire_at >= ?"
        return [{f: str(c) for f, c in db.execute(sql, (k, now))} for k in keys]

    async def note_legacy(self, seen: Mapping[str, int]) -> None:
        sql = "INSERT INTO legacy_last VALUES (?, ?) ON CONFLICT(route) DO UPDATE SET at = max(at, excluded.at)"
        await self._call(self._tx, _exec_many, sql, [(route, float(sec)) for route, sec in seen.items()])

    async def legacy_last(self) -> dict[str, float]:
        return dict(await self._call(self._all, "SELECT route, at FROM legacy_last", ()))

    def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        return self._conn().execute(sql, args).fetchone()

    def _all(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        return self._conn().execute(sql, args).fetchall()


# --- the statements each transaction runs (on the store's thread) ---
def _exec(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> int:
    return db.execute(sql, args).rowcount


def _exec_many(db: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> int:
    return db.executemany(sql, rows).rowcount


def _read_state(db: sqlite3.Connection) -> State:
    percents, sources = {}, {}
    for route, text, source in db.execute("SELECT route, percent, source FROM overrides"):
        pct = parse_percent(text)
        if pct is not None:
            percents[route], sources[route] = pct, source
    kill = db.execute("SELECT value FROM settings WHERE key = 'kill'").fetchone()
    return State(percents, sources, bool(kill and kill[0] == "1"))


def _write_state(db: sqlite3.Connection, make: Callable[[State], State]) -> State:
    """Read-modify-write inside the transaction: the file, not this worker's copy, is the truth."""
    new = make(_read_state(db))
    db.execute("DELETE FROM overrides")
    rows = [(k, str(v), new.sources.get(k, "override")) for k, v in new.percents.items()]
    db.executemany("INSERT INTO overrides VALUES (?, ?, ?)", rows)
    db.execute("INSERT INTO settings VALUES ('kill', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
               ("1" if new.kill else "0",))
    return new


def _read_set(db: sqlite3.Connection, key: CohortKey) -> frozenset[bytes]:
    rows = db.execute("SELECT user_id FROM members WHERE route = ? AND cohort = ?", key)
    return frozenset(u.encode() for (u,) in rows)


def _change_members(
    db: sqlite3.Connection, key: CohortKey, add: list[str], remove: list[str], limit: int
) -> tuple[MemberChange, int, frozenset[bytes]]:
    old = _read_set(db, key)
    added = [u for u in add if u.encode() not in old]
    removed = [u for u in remove if u.encode() in old]
    after = len(old) + len(added) - len(removed)
    if after > limit:
        raise TooMany(len(old), after, limit)
    db.executemany("DELETE FROM members WHERE route = ? AND cohort = ? AND user_id = ?", [(*key, u) for u in removed])
    db.executemany("INSERT INTO members VALUES (?, ?, ?)", [(*key, u) for u in added])
    db.execute("INSERT INTO cohorts VALUES (?, ?, 1) ON CONFLICT(route, cohort) DO UPDATE SET version = version + 1",
               key)
    version = db.execute("SELECT version FROM cohorts WHERE route = ? AND cohort = ?", key).fetchone()[0]
    ids = (old - {u.encode() for u in removed}) | {u.encode() for u in added}
    return _member_change(len(old), after, added, removed), version, ids


def _push(db: sqlite3.Connection, table: str, route: str | None, text: str, keep: int) -> None:
    """Append one row; keep the newest `keep` (per route for mismatches, in all for the history)."""
    rowid = db.execute(f"INSERT INTO {table} (route, {_COLUMN[table]}) VALUES (?, ?)", (route, text)).lastrowid
    if table == "history":
        db.execute("DELETE FROM history WHERE id <= ?", ((rowid or 0) - keep,))
    else:
        db.execute(f"DELETE FROM {table} WHERE route = ? AND id NOT IN "
                   f"(SELECT id FROM {table} WHERE route = ? ORDER BY id DESC LIMIT ?)", (route, route, keep))


_COLUMN = {"history": "event", "mismatches": "entry"}


def _add_outcomes(db: sqlite3.Connection, batch: list[tuple[str, dict[str, int], int]], sweep: int | None) -> None:
    sql = ("INSERT INTO windows VALUES (?, ?, ?, ?) ON CONFLICT(key, field) DO UPDATE "
           "SET count = count + excluded.count, expire_at = excluded.expire_at")
    db.executemany(sql, [(k, f, c, exp) for k, fields, exp in batch for f, c in fields.items() if c])
    if sweep is not None:
        db.execute("DELETE FROM windows WHERE expire_at < ?", (sweep,))
        db.execute("DELETE FROM leases WHERE expires < ?", (sweep,))
        db.execute("DELETE FROM claims WHERE expires < ?", (sweep,))
