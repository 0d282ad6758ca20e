"""Which header fields cross the proxy: hop-by-hop ones never do (either way), the proxy's own are
written anew, and an answer's fields must be relayable byte for byte.

Go's reverseproxy.go, on purpose: Connection-named headers are removed first, then the fixed hop-by-hop
list, then the proxy adds its own (so a client cannot strip them). Leaf module: no I/O, no state.
"""

from __future__ import annotations

from functools import lru_cache

# Hop-by-hop headers (RFC 9110 7.6.1) are meaningful for one connection only.
HOP_HEADERS = frozenset(
    [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    ]
)
# Replaced with the proxy's own values, never copied from the client: the framing (Content-Length, or chunked
# when the length is unknown) is written from the proxy's own parse, so no header the client sends or names in
# Connection can change how the upstream splits the byte stream into requests (request smuggling).
_REPLACED = frozenset(
    [
        b"x-request-id", b"x-client-request-id", b"x-splitter-handler", b"x-splitter-backend", b"x-splitter-token",
        b"via", b"expect", b"content-length",
    ]
)  # fmt: skip
# what a Connection header may not remove: Host stays as the client sent it (the framing is rewritten anyway)
KEPT = frozenset([b"host"])
_FORWARDED = frozenset([b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"])
DROP_UPSTREAM = HOP_HEADERS | _REPLACED | _FORWARDED
DROP_UPSTREAM_TRUSTED = HOP_HEADERS | _REPLACED  # a trusted proxy's X-Forwarded-* pass on
_DROP_DOWNSTREAM = HOP_HEADERS | frozenset([b"x-splitter-handler", b"x-request-id", b"content-length"])

# the characters uvicorn refuses to send (its HEADER_RE, HEADER_VALUE_RE; it raises, the client gets a reset):
# tables that keep every other byte as it is and change these (translate then returns an equal string only
# when none was there)
_BAD_IN_NAME = frozenset(b'\x7f()<>@,;:[]={} \t\\"') | frozenset(range(0x20))
_BAD_IN_VALUE = frozenset(b"\x7f") | frozenset(range(0x20)) - {0x09}
_NAME_CHECK = bytes(c ^ 1 if c in _BAD_IN_NAME else c for c in range(256))
_VALUE_CHECK = bytes(c ^ 1 if c in _BAD_IN_VALUE else c for c in range(256))


def relayable(headers: list[tuple[bytes, bytes]]) -> bool:
    """No header name or value has a character uvicorn refuses to send. One pass over all names and
    one over all values ("-" is a name character, tab a value one), each a C loop (translate): a
    fraction of the cost of a regex search per field (a dozen per response)."""
    if not headers:
        return True
    names, values = zip(*headers, strict=True)  # two tuples, made in C
    name_bytes, value_bytes = b"-".join(names), b"\t".join(values)
    return name_bytes.translate(_NAME_CHECK) == name_bytes and value_bytes.translate(_VALUE_CHECK) == value_bytes





def connection_tokens(value: bytes) -> set[bytes]:
    """The lower-cased names a Connection header lists."""
    return {t.strip().lower() for t in value.split(b",")}


@lru_cache(maxsize=256)
def dropped_downstream(connection: bytes | None) -> frozenset[bytes]:
    """The response header names not relayed: hop-by-hop ones, the framing (written anew from the
    exchange's own parse), and those the Connection header names."""
    if connection is None:
        return _DROP_DOWNSTREAM
    return _DROP_DOWNSTREAM | connection_tokens(connection)
