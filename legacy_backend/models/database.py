"""Connection and schema. Both services share these tables (and the database file)."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, email TEXT UNIQUE NOT NULL, password_hash TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (jti TEXT PRIMARY KEY, user_id TEXT NOT NULL, expires_at REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS analysis_requests (id TEXT PRIMARY KEY, user_id TEXT NOT NULL,
    original_filename TEXT NOT NULL, file_path TEXT NOT NULL, status TEXT NOT NULL, text TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS reviews (id TEXT PRIMARY KEY, analysis_request_id TEXT NOT NULL, user_id TEXT NOT NULL,
    overall_score INTEGER NOT NULL, strengths TEXT NOT NULL, weaknesses TEXT NOT NULL, created_at REAL NOT NULL);
"""


class Database:
    """A DATABASE_URL-addressed store: sqlite:///path here; a postgresql:// URL needs psycopg."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()
        if url.startswith("sqlite:///"):
            self.path = url[len("sqlite:///") :]
            self.placeholder = "?"
        elif url.startswith(("postgresql://", "postgres://")):
            self.path = url
            self.placeholder = "%s"
        else:
            raise ValueError(f"DATABASE_URL must be sqlite:///PATH or postgresql://..., got {url!r}")
        with self.connect() as conn:
            if self.placeholder == "?":
                conn.executescript(SCHEMA)
            else:
                for stmt in filter(str.strip, SCHEMA.split(";")):
                    conn.execute(stmt)

    def connect(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.placeholder == "?":
                conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA busy_timeout=10000")
                conn.row_factory = sqlite3.Row
            else:  # pragma: no cover - needs a PostgreSQL server
                import psycopg  # type: ignore[import-not-found]
                from psycopg.rows import dict_row  # type: ignore[import-not-found]

                conn = psycopg.connect(self.path, autocommit=True, row_factory=dict_row)
            self._local.conn = conn
        return _Conn(conn, self.placeholder)


class _Conn:
    """Runs SQL written with '?' placeholders on either driver."""

    def __init__(self, conn: Any, placeholder: str) -> None:
        self.conn, self.placeholder = conn, placeholder

    def __enter__(self) -> _Conn:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        if self.placeholder != "?":
            sql = sql.replace("?", self.placeholder)
        return self.conn.execute(sql, params)

    def executescript(self, sql: str) -> None:
        self.conn.executescript(sql)

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        row = self.execute(sql, params).fetchone()
        return dict(row) if row is not None else None
