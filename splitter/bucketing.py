"""User key -> bucket -> backend. Pure functions: no I/O, no globals.

The formula is the migration plan's ABTestManager, so the proxy and any
application-side flag agree on who is "new": md5 of the UTF-8 user id, first
eight hex digits, modulo 100. A user is on new when bucket < percent.
"""

from __future__ import annotations

import base64
import binascii
import json
from hashlib import md5

from .config import UID_COOKIE, IdSource

MAX_ID_LEN = 256  # longer ids are not ids; they are treated as absent


def bucket(user_id: str, salt: str | None = None) -> int:
    key = f"{salt}:{user_id}" if salt else user_id
    return int(md5(key.encode("utf-8", "surrogatepass")).hexdigest()[:8], 16) % 100


def is_new(bucket_: int, percent: int) -> bool:
    return bucket_ < percent


def cookie_value(cookie_header: str, name: str) -> str | None:
    for part in cookie_header.split(";"):
        k, sep, v = part.partition("=")
        if sep and k.strip() == name:
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] == '"':
                v = v[1:-1]
            return v or None
    return None


def jwt_sub(authorization: str) -> str | None:
    """The `sub` claim of a Bearer JWT, decoded WITHOUT verification: for bucketing only."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    parts = token.strip().split(".")
    if len(parts) != 3 or len(parts[1]) > 8192:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    if isinstance(sub, str | int) and not isinstance(sub, bool):
        return str(sub) or None
    return None


def user_id(sources: tuple[IdSource, ...], headers: dict[str, str], with_uid_cookie: bool) -> str | None:
    """First non-empty id from the configured sources; `headers` maps lower-case name -> value.

    With anonymous: cookie, the proxy's own `splitter_uid` cookie is the last source.
    """
    for src in sources:
        value: str | None
        if src.kind == "header":
            value = headers.get(src.name)
        elif src.kind == "cookie":
            raw = headers.get("cookie")
            value = cookie_value(raw, src.name) if raw else None
        else:
            raw = headers.get(src.name)
            value = jwt_sub(raw) if raw else None
        if value:
            value = value.strip()
            if value and len(value) <= MAX_ID_LEN:
                return value
    if with_uid_cookie:
        raw = headers.get("cookie")
        if raw:
            value = cookie_value(raw, UID_COOKIE)
            if value and len(value) <= MAX_ID_LEN:
                return value
    return None
