"""Credentials and tokens, format-compatible with the legacy service (shared sessions)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from typing import Any

PBKDF2_ROUNDS = 60_000
SESSION_SECONDS = 86_400


def _enc(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _dec(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class PasswordHasher:
    scheme = "pbkdf2_sha256"

    def hash(self, password: str) -> str:
        salt = os.urandom(16)
        derived = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ROUNDS)
        return "$".join((self.scheme, str(PBKDF2_ROUNDS), salt.hex(), derived.hex()))

    def verify(self, password: str, encoded: str) -> bool:
        fields = encoded.split("$")
        if len(fields) != 4 or fields[0] != self.scheme:
            return False
        derived = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(fields[2]), int(fields[1]))
        return hmac.compare_digest(derived.hex(), fields[3])


@dataclass(frozen=True)
class TokenService:
    secret: str

    def _sign(self, signing_input: str) -> str:
        return _enc(hmac.new(self.secret.encode(), signing_input.encode(), hashlib.sha256).digest())

    def issue(self, subject: str, session_id: str) -> tuple[str, float]:
        issued = time.time()
        expires = issued + SESSION_SECONDS
        head = _enc(_canonical({"alg": "HS256", "typ": "JWT"}))
        body = _enc(_canonical({"sub": subject, "jti": session_id, "iat": int(issued), "exp": int(expires)}))
        return f"{head}.{body}.{self._sign(head + '.' + body)}", expires

    def verify(self, token: str) -> dict[str, Any] | None:
        try:
            head, body, signature = token.split(".")
        except ValueError:
            return None
        if not hmac.compare_digest(self._sign(head + "." + body), signature):
            return None
        try:
            claims = json.loads(_dec(body))
        except ValueError:
            return None
        if not isinstance(claims, dict) or claims.get("exp", 0) < time.time():
            return None
        return claims
