"""Password hashing and HS256 tokens (stdlib only); both services use these formats."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from typing import Any

ITERATIONS = 60_000
TOKEN_TTL_S = 24 * 3600


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, ITERATIONS)
    return f"pbkdf2_sha256${ITERATIONS}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, iters, salt, digest = stored.split("$")
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iters))
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(secret: str, user_id: str, jti: str, now: float | None = None) -> tuple[str, float]:
    now = time.time() if now is None else now
    exp = now + TOKEN_TTL_S
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(
        json.dumps({"sub": user_id, "jti": jti, "iat": int(now), "exp": int(exp)}, separators=(",", ":")).encode()
    )
    signing = f"{header}.{payload}".encode()
    sig = _b64(hmac.new(secret.encode(), signing, hashlib.sha256).digest())
    return f"{header}.{payload}.{sig}", exp


def read_token(secret: str, token: str) -> dict[str, Any] | None:
    """Claims of a valid, unexpired token, else None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    signing = f"{parts[0]}.{parts[1]}".encode()
    want = _b64(hmac.new(secret.encode(), signing, hashlib.sha256).digest())
    if not hmac.compare_digest(want, parts[2]):
        return None
    try:
        claims = json.loads(_unb64(parts[1]))
    except ValueError:
        return None
    if not isinstance(claims, dict) or claims.get("exp", 0) < time.time():
        return None
    return claims
