"""Who may read and change: named admin tokens with roles.

`SPLITTER_ADMIN_TOKENS_FILE` names a YAML file (Kubernetes RBAC and Argo CD's accounts
are the models: a name, a role, and a secret the server only holds a hash of):

    tokens:
      - {name: alice, role: operator, sha256: 5e88...}   # sha256 of the token, hex
      - {name: victor, role: viewer, sha256: 9f86...}

`viewer` may read, `operator` may read and change. The old single `SPLITTER_ADMIN_TOKEN`
stays as one operator named `admin`. The identity of a change is the name of the token
that made it, never what a client says. A file that does not parse, names a role that
does not exist or repeats a name is refused as a whole (one line naming the file and the
problem); on a reload the old tokens stay: a half-written file must not lock operators out.
A file that is deleted or emptied (zero length, only comments, `tokens: []`) while running
revokes the file's tokens instead (fail closed): removing a leaked token's file is how an
operator takes it away, and must not leave it working. Replace the file atomically (write a
temporary file, `mv` it over the old one), so a reload never sees it half-written or empty.
At start a missing file is refused (a wrong path is a mistake, not a revocation).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROLES = ("viewer", "operator")
NAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
HEX_RE = re.compile(r"[0-9a-f]{64}")


class TokensError(Exception):
    """A tokens file that cannot be used; the message is one line naming the file."""


class TokensGone(TokensError):
    """The tokens file does not exist: refused at start, a revocation on a reload."""


@dataclass(frozen=True)
class Identity:
    name: str
    role: str

    @property
    def may_change(self) -> bool:
        return self.role == "operator"


def digest(token: str) -> str:
    """What a tokens file holds: `printf %s "$TOKEN" | sha256sum`."""
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """The tokens in force: the file's (hashes) plus the single admin token, if set."""

    def __init__(self, admin_token: str | None = None, path: str | None = None) -> None:
        self.admin_token = admin_token.encode() if admin_token else None
        self.path = path
        self.by_hash: dict[str, Identity] = {}
        if path:
            self.by_hash = load(path, taken={"admin"} if admin_token else set())

    @property
    def configured(self) -> bool:
        """Whether tokens are how changes are made here: a token that proves nothing is then a 401 (also
        the tokens of an emptied or deleted file), not the 403 that says how to configure one."""
        return self.admin_token is not None or bool(self.path)

    def reload(self) -> str:
        """Read the file again: `loaded`, or `deleted` / `emptied` (the file's tokens are revoked).
        A file that cannot be used raises TokensError and the tokens in force stay."""
        if not self.path:
            return "loaded"
        try:
            self.by_hash = load(self.path, taken={"admin"} if self.admin_token else set())
        except TokensGone:
            self.by_hash = {}
            return "deleted"
        return "loaded" if self.by_hash else "emptied"

    def identify(self, given: str) -> Identity | None:
        """The identity a bearer token proves, or None. Every stored hash is compared (in
        constant time each), so the time taken does not say which entry came close."""
        found = None
        if self.admin_token is not None and hmac.compare_digest(given.encode(), self.admin_token):
            found = Identity("admin", "operator")
        h = digest(given)
        for stored, identity in self.by_hash.items():
            if hmac.compare_digest(h, stored):
                found = identity
        return found


def load(path: str, taken: set[str] | frozenset[str] = frozenset()) -> dict[str, Identity]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise TokensGone(f"{path}: cannot read the tokens file: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokensError(f"{path}: cannot read the tokens file: {exc}") from None
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise TokensError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if data is None or data == {"tokens": None}:
        return {}  # an empty file (or only comments), or `tokens:` with nothing after it: no tokens
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        raise TokensError(f"{path}: must be a mapping with a list 'tokens: [{{name, role, sha256}}, ...]'")
    out: dict[str, Identity] = {}
    names = set(taken)
    for i, entry in enumerate(data["tokens"]):
        where = f"{path}: tokens[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "role", "sha256"}:
            raise TokensError(f"{where}: must have exactly name, role and sha256, got {entry!r}")
        name, role, sha = entry["name"], entry["role"], entry["sha256"]
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise TokensError(f"{where}.name: must match [A-Za-z0-9_.@-]{{1,64}}, got {name!r}")
        if name in names:
            why = "SPLITTER_ADMIN_TOKEN is the operator named admin" if name in taken else "names must be unique"
            raise TokensError(f"{where}.name: {name!r} is named twice ({why})")
        if role not in ROLES:
            raise TokensError(f"{where}.role: must be viewer or operator, got {role!r}")
        if not isinstance(sha, str) or not HEX_RE.fullmatch(sha.lower()):
            raise TokensError(f"{where}.sha256: must be 64 hex digits (sha256 of the token), got {sha!r}")
        if sha.lower() in out:
            raise TokensError(f"{where}.sha256: the same token as {out[sha.lower()].name!r}")
        names.add(name)
        out[sha.lower()] = Identity(name, role)
    return out
