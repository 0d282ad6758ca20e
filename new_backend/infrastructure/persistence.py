"""Persistence: one DATABASE_URL, the same tables the legacy service uses."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

TABLES = (
    "CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, email TEXT UNIQUE NOT NULL, password_hash TEXT NOT NULL, "
    "created_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sessions (jti TEXT PRIMARY KEY, user_id TEXT NOT NULL, expires_at REAL NOT NULL, "
    "revoked INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS analysis_requests (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, "
    "original_filename TEXT NOT NULL, file_path TEXT NOT NULL, status TEXT NOT NULL, text TEXT NOT NULL, "
    "created_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS reviews (id TEXT PRIMARY KEY, analysis_request_id TEXT NOT NULL, "
    "user_id TEXT NOT NULL, overall_score INTEGER NOT NULL, strengths TEXT NOT NULL, weaknesses TEXT NOT NULL, "
    "created_at REAL NOT NULL)",
)


class Persistence:
    """sqlite:///PATH (WAL) or postgresql://... (psycopg); SQL is written with '?' and adapted."""

    def __init__(self, url: str) -> None:
        self._tls = threading.local()
        self.is_sqlite = url.startswith("sqlite:///")
        if not self.is_sqlite and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"DATABASE_URL must be sqlite:///PATH or postgresql://..., got {url!r}")
        self.target = url[len("sqlite:///") :] if self.is_sqlite else url
        for ddl in TABLES:
            self.run(ddl)

    def _conn(self) -> Any:
        conn = getattr(self._tls, "conn", None)
        if conn is None:
            if self.is_sqlite:
                conn = sqlite3.connect(self.target, timeout=10, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA busy_timeout=10000")
                conn.row_factory = sqlite3.Row
            else:  # pragma: no cover - needs a PostgreSQL server
                import psycopg  # type: ignore[import-not-found]
                from psycopg.rows import dict_row  # type: ignore[import-not-found]

                conn = psycopg.connect(self.target, autocommit=True, row_factory=dict_row)
            self._tls.conn = conn
        return conn

    def run(self, sql: str, *params: Any) -> Any:
        return self._conn().execute(sql if self.is_sqlite else sql.replace("?", "%s"), params)

    def fetch(self, sql: str, *params: Any) -> dict[str, Any] | None:
        row = self.run(sql, *params).fetchone()
        return None if row is None else dict(row)

    @contextmanager
    def unit_of_work(self) -> Iterator[Persistence]:
        yield self
