from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from ...infrastructure.security import PasswordHasher, TokenService
from ...infrastructure.web import HTTPProblem
from .repository import SessionRepository, User, UserRepository

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


@dataclass(frozen=True)
class Principal:
    user: User
    session_id: str


class AuthService:
    def __init__(self, users: UserRepository, sessions: SessionRepository, tokens: TokenService) -> None:
        self.users, self.sessions, self.tokens = users, sessions, tokens
        self.hasher = PasswordHasher()

    def register(self, payload: dict[str, Any]) -> dict[str, str]:
        email, password = payload.get("email"), payload.get("password")
        if not (isinstance(email, str) and _EMAIL.fullmatch(email)):
            raise HTTPProblem(422, "email must be a valid email address")
        if not (isinstance(password, str) and len(password) >= 8):
            raise HTTPProblem(422, "password must be a string of at least 8 characters")
        email = email.lower()
        if self.users.by_email(email) is not None:
            raise HTTPProblem(409, "email already registered")
        user = User(str(uuid.uuid4()), email, self.hasher.hash(password))
        try:
            self.users.add(user)
        except Exception as exc:
            if "unique" in str(exc).lower():
                raise HTTPProblem(409, "email already registered") from None
            raise
        return user.public()

    def login(self, payload: dict[str, Any]) -> dict[str, str]:
        email, password = payload.get("email"), payload.get("password")
        if not (isinstance(email, str) and isinstance(password, str)):
            raise HTTPProblem(422, "email and password are required strings")
        user = self.users.by_email(email.lower())
        if user is None or not self.hasher.verify(password, user.password_hash):
            raise HTTPProblem(401, "invalid email or password")
        session_id = uuid.uuid4().hex
        token, expires = self.tokens.issue(user.id, session_id)
        self.sessions.open(session_id, user.id, expires)
        return {"access_token": token, "token_type": "bearer"}

    def principal(self, authorization: str | None) -> Principal:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPProblem(401, "missing bearer token")
        claims = self.tokens.verify(token.strip())
        if claims is None:
            raise HTTPProblem(401, "invalid or expired token")
        if not self.sessions.is_open(str(claims.get("jti"))):
            raise HTTPProblem(401, "session ended")
        user = self.users.by_id(str(claims.get("sub")))
        if user is None:
            raise HTTPProblem(401, "invalid or expired token")
        return Principal(user, str(claims["jti"]))

    def logout(self, principal: Principal) -> None:
        self.sessions.close(principal.session_id)
