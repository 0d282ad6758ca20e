"""Users and sessions (legacy: one service class per technical concern)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from ..models.database import Database
from ..models.entities import user_out
from . import security
from .errors import ApiError

EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class AuthService:
    def __init__(self, db: Database, secret: str) -> None:
        self.db, self.secret = db, secret

    def register(self, email: Any, password: Any) -> dict[str, Any]:
        if not isinstance(email, str) or not EMAIL_RE.fullmatch(email):
            raise ApiError(422, "email must be a valid email address")
        if not isinstance(password, str) or len(password) < 8:
            raise ApiError(422, "password must be a string of at least 8 characters")
        email = email.lower()
        with self.db.connect() as c:
            if c.one("SELECT id FROM users WHERE email = ?", (email,)):
                raise ApiError(409, "email already registered")
            uid = str(uuid.uuid4())
            try:
                c.execute(
                    "INSERT INTO users (id, email, password_hash, created_at) VALUES (?, ?, ?, ?)",
                    (uid, email, security.hash_password(password), time.time()),
                )
            except Exception as exc:  # a concurrent register of the same email
                if "unique" in str(exc).lower():
                    raise ApiError(409, "email already registered") from None
                raise
        return {"id": uid, "email": email}

    def login(self, email: Any, password: Any) -> dict[str, Any]:
        if not isinstance(email, str) or not isinstance(password, str):
            raise ApiError(422, "email and password are required strings")
        with self.db.connect() as c:
            row = c.one("SELECT * FROM users WHERE email = ?", (email.lower(),))
            if row is None or not security.verify_password(password, row["password_hash"]):
                raise ApiError(401, "invalid email or password")
            jti = uuid.uuid4().hex
            token, exp = security.make_token(self.secret, row["id"], jti)
            c.execute("INSERT INTO sessions (jti, user_id, expires_at) VALUES (?, ?, ?)", (jti, row["id"], exp))
        return {"access_token": token, "token_type": "bearer"}

    def authenticate(self, authorization: str | None) -> dict[str, Any]:
        """The user behind a bearer token whose session is still open."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing bearer token")
        claims = security.read_token(self.secret, token.strip())
        if claims is None:
            raise ApiError(401, "invalid or expired token")
        with self.db.connect() as c:
            session = c.one("SELECT * FROM sessions WHERE jti = ?", (claims.get("jti"),))
            if session is None or session["revoked"]:
                raise ApiError(401, "session ended")
            row = c.one("SELECT * FROM users WHERE id = ?", (claims.get("sub"),))
        if row is None:
            raise ApiError(401, "invalid or expired token")
        user = user_out(row)
        user["_jti"] = claims["jti"]
        return user

    def logout(self, jti: str) -> None:
        with self.db.connect() as c:
            c.execute("UPDATE sessions SET revoked = 1 WHERE jti = ?", (jti,))
