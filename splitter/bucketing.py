"""User key -> bucket (decide.py turns it into a role). Pure functions: no I/O, no globals.

The formula is the migration plan's ABTestManager, so the proxy and any
application-side flag agree on who is "new": md5 of the UTF-8 user id, first
eight hex digits, modulo 100. A user is on new when bucket < percent. A fractional
percent a.f (0.01 steps) splits bucket a by a sub-bucket, the next eight hex digits
of the same md5 modulo 100: new when bucket < a, or bucket == a and sub-bucket < f.
So whole percents pick exactly the seed's users, and raising a percent only adds users.
"""

from __future__ import annotations

import base64
import binascii
import json

try:
    from _md5 import md5  # CPython's own md5: half the cost of hashlib's OpenSSL one for a short id (per request)
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import md5
from typing import Any

from .config import UID_COOKIE, IdSource

MAX_ID_LEN = 256  # longer ids are not ids; they are treated as absent


def digest(user_id: bytes | str, salt: str | None = None) -> bytes:
    """The md5 a user's bucket and sub-bucket come from, of the id's exact bytes (a str is taken as UTF-8).

    The proxy hashes the header's bytes as they arrived and /admin/bucket the
    percent-decoded query bytes, so both agree for any id, UTF-8 or not.
    """
    key = user_id.encode("utf-8", "surrogatepass") if isinstance(user_id, str) else user_id
    if salt:
        key = salt.encode() + b":" + key
    d: bytes = md5(key).digest()
    return d


def bucket_of(digest_: bytes) -> int:
    return int.from_bytes(digest_[:4], "big") % 100  # the first eight hex digits, as a number


def sub_bucket(digest_: bytes) -> int:
    return int.from_bytes(digest_[4:8], "big") % 100  # the next eight hex digits


def placed(user_id: bytes, salt: str | None) -> tuple[int, bytes]:
    """(bucket, digest) in one call, for the request path: the digest is kept for the sub-bucket."""
    key = salt.encode() + b":" + user_id if salt else user_id
    d = md5(key).digest()
    return int.from_bytes(d[:4], "big") % 100, d


def bucket(user_id: bytes | str, salt: str | None = None) -> int:
    """The sticky bucket of a user id."""
    return bucket_of(digest(user_id, salt))


def cut(percent: float) -> tuple[int, int]:
    """A percent as (whole, hundredths): 1.5 -> (1, 50). Done once per snapshot, not per request."""
    return divmod(round(percent * 100), 100)


def is_new(bucket_: int, digest_: bytes, cut_: tuple[int, int]) -> bool:
    """The one rule, for a percent a.f cut to (a, f): new when bucket < a, or bucket == a and
    sub-bucket < f (the sub-bucket is read only then)."""
    whole, hundredths = cut_
    return bucket_ < whole or (bucket_ == whole and hundredths > 0 and sub_bucket(digest_) < hundredths)


def cookie_value(cookie_header: bytes, name: bytes) -> bytes | None:
    for part in cookie_header.split(b";"):
        k, sep, v = part.partition(b"=")
        if sep and k.strip() == name:
            v = v.strip()
            if len(v) >= 2 and v[:1] == v[-1:] == b'"':
                v = v[1:-1]
            return v or None
    return None


def jwt_claims(authorization: bytes) -> dict[str, Any] | None:
    """The claims of a Bearer JWT, decoded WITHOUT verification: for bucketing and cohorts only."""
    scheme, _, token = authorization.partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    parts = token.strip().split(b".")
    if len(parts) != 3 or len(parts[1]) > 8192:
        return None
    payload = parts[1] + b"=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        return None
    return claims if isinstance(claims, dict) else None


def jwt_sub(authorization: bytes) -> bytes | None:
    """The `sub` claim of a Bearer JWT, decoded WITHOUT verification: for bucketing only."""
    claims = jwt_claims(authorization)
    sub = claims.get("sub") if claims is not None else None
    if isinstance(sub, str | int) and not isinstance(sub, bool):
        return str(sub).encode("utf-8", "surrogatepass") or None
    return None


def user_id(sources: tuple[IdSource, ...], headers: dict[bytes, bytes], with_uid_cookie: bool) -> bytes | None:
    """First non-empty id from the configured sources; `headers` maps lower-case name -> raw value.

    With anonymous: cookie, the proxy's own `splitter_uid` cookie is the last source.
    """
    for src in sources:
        value: bytes | None
        if src.kind == "header":
            value = headers.get(src.name.encode("latin-1"))
        elif src.kind == "cookie":
            raw = headers.get(b"cookie")
            value = cookie_value(raw, src.name.encode("latin-1")) if raw else None
        else:
            raw = headers.get(src.name.encode("latin-1"))
            value = jwt_sub(raw) if raw else None
        if value:
            value = value.strip()
            if value and len(value) <= MAX_ID_LEN:
                return value
    if with_uid_cookie:
        raw = headers.get(b"cookie")
        if raw:
            value = cookie_value(raw, UID_COOKIE.encode())
            if value and len(value) <= MAX_ID_LEN:
                return value
    return None
