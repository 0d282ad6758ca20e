from __future__ import annotations

import time
from dataclasses import dataclass

from ...infrastructure.persistence import Persistence


@dataclass(frozen=True)
class User:
    id: str
    email: str
    password_hash: str

    def public(self) -> dict[str, str]:
        return {"id": self.id, "email": self.email}


class UserRepository:
    def __init__(self, db: Persistence) -> None:
        self.db = db

    def by_email(self, email: str) -> User | None:
        row = self.db.fetch("SELECT id, email, password_hash FROM users WHERE email = ?", email)
        return User(**row) if row else None

    def by_id(self, user_id: str) -> User | None:
        row = self.db.fetch("SELECT id, email, password_hash FROM users WHERE id = ?", user_id)
        return User(**row) if row else None

    def add(self, user: User) -> None:
        self.db.run(
            "INSERT INTO users (id, email, password_hash, created_at) VALUES (?, ?, ?, ?)",
            user.id,
            user.email,
            user.password_hash,
            time.time(),
        )


class SessionRepository:
    def __init__(self, db: Persistence) -> None:
        self.db = db

    def open(self, jti: str, user_id: str, expires_at: float) -> None:
        self.db.run("INSERT INTO sessions (jti, user_id, expires_at) VALUES (?, ?, ?)", jti, user_id, expires_at)

    def is_open(self, jti: str) -> bool:
        row = self.db.fetch("SELECT revoked FROM sessions WHERE jti = ?", jti)
        return row is not None and not row["revoked"]

    def close(self, jti: str) -> None:
        self.db.run("UPDATE sessions SET revoked = 1 WHERE jti = ?", jti)
