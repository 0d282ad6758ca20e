"""The mutations the differential suite sends, generated from small tables: add a row to add a case.

A request mutation is one request written by hand (`Base`: header lines, body, method, request line,
line end), sent alone and again followed by a plain pipelined GET on the same connection. `{p}` in any
of its bytes is the mutation's own path prefix (`/m/<n>/`: every target it sends starts with it, so
the proxy's log and the upstream's records are told apart per mutation), `{n}` its number, `{len}`
the body's length once `{p}` is in it, `{slen}` the smuggled request's length in hex (its chunk size).

An answer mutation is the raw bytes an upstream writes to one request (`Answer`).
"""

from __future__ import annotations

from dataclasses import dataclass

HOST = b"Host: proxy"
CL5 = b"Content-Length: 5"
TE = b"Transfer-Encoding: chunked"
HELLO = b"hello"
CHUNKS = b"5\r\nhello\r\n0\r\n\r\n"
# a body that is itself a whole request, with its own X-Forwarded-For (the smuggle of issue 32)
SMUGGLED = b"POST {p}smuggled HTTP/1.1\r\nHost: proxy\r\nX-Forwarded-For: 6.6.6.6\r\nContent-Length: 2\r\n\r\nhi"
SMUGGLED_CHUNKS = b"{slen}\r\n" + SMUGGLED + b"\r\n0\r\n\r\n"  # {slen}: its length in hex, once {p} is in it
PIPELINED = b"GET {p}next HTTP/1.1\r\nHost: proxy\r\n\r\n"
LEN = b"Content-Length: {len}"
H2C_SETTINGS = b"HTTP2-Settings: AAMAAABkAAQAAP__"


@dataclass(frozen=True)
class Base:
    name: str
    lines: tuple[bytes, ...]  # header lines, without their line ends
    body: bytes = b""
    method: bytes = b"POST"
    target: bytes = b"{p}a"
    version: bytes = b" HTTP/1.1"  # with its space: b"" is an HTTP/0.9 request line
    eol: bytes = b"\r\n"

    def render(self, n: int) -> bytes:
        prefix = b"/m/%d/" % n
        body = self.body.replace(b"{slen}", b"%x" % len(SMUGGLED.replace(b"{p}", prefix))).replace(b"{p}", prefix)
        lines = [self.method + b" " + self.target + self.version, *self.lines]
        head = b"".join(line + self.eol for line in lines) + self.eol
        return (head.replace(b"{len}", b"%d" % len(body)) + body).replace(b"{p}", prefix).replace(b"{n}", b"%d" % n)


@dataclass(frozen=True)
class Mutation:
    name: str
    number: int
    data: bytes  # the client's bytes
    methods: tuple[bytes, ...]  # of the requests the client means to send, in order

    @property
    def prefix(self) -> str:
        return f"/m/{self.number}/"


# --- Connection naming each header: the header itself present, spelled four ways and in a list ----------
NAMED = {
    b"content-length": b"",
    b"transfer-encoding": b"",
    b"host": b"",
    b"x-forwarded-for": b"X-Forwarded-For: 6.6.6.6",
    b"x-forwarded-proto": b"X-Forwarded-Proto: https",
    b"x-forwarded-host": b"X-Forwarded-Host: evil",
    b"x-request-id": b"X-Request-ID: rid-{n}",
    b"x-splitter-handler": b"X-Splitter-Handler: new_m",
    b"x-splitter-backend": b"X-Splitter-Backend: new",
    b"expect": b"Expect: 100-continue",
    b"via": b"Via: 1.1 evil",
    b"te": b"TE: trailers",
    b"upgrade": b"Upgrade: h2c",
    b"keep-alive": b"Keep-Alive: timeout=5",
    b"trailer": b"Trailer: X-T",
    b"x-user-id": b"X-User-ID: u1",
    b"cookie": b"Cookie: user_id=u1",
}
SPELLINGS = {
    "lower": lambda n: [b"Connection: " + n],
    "upper": lambda n: [b"Connection: " + n.upper()],
    "title": lambda n: [b"Connection: " + n.title()],
    "list": lambda n: [b"Connection: keep-alive, " + n.title() + b" ,x"],
    "second-line": lambda n: [b"Connection: keep-alive", b"connection: " + n.upper()],
}
FRAMINGS = {  # the body carries a whole request: unframed, the upstream would run it
    "cl": ((b"Content-Length: {len}",), SMUGGLED),
    "chunked": ((TE,), SMUGGLED_CHUNKS),
}


def _named() -> list[Base]:
    out = []
    for name, line in NAMED.items():
        for spelling, connection in SPELLINGS.items():
            for framing, (frame, body) in FRAMINGS.items():
                lines = (HOST, *connection(name), *([line] if line else []), *frame)
                out.append(Base(f"connection-{name.decode()}-{spelling}-{framing}", lines, body))
    return out


# --- Transfer-Encoding and Content-Length: obfuscations and conflicts ----------------------------------
TE_VALUES = [
    b"chunked", b"Chunked", b"CHUNKED", b" chunked", b"chunked ", b"\tchunked", b"chunked\t", b"xchunked",
    b"chunkedx", b"chunked, identity", b"identity, chunked", b"gzip, chunked", b"chunked, chunked", b"chunked,",
    b", chunked", b"identity", b"gzip", b"", b"chunk", b'"chunked"', b"chunked;q=1", b"chunked\x0b",
]  # fmt: skip
TE_NAMES = [
    b"transfer-encoding", b"TRANSFER-ENCODING", b"Transfer-Encoding ", b"Transfer_Encoding", b"Transfer-Encoding\t",
]  # fmt: skip
TE_TWICE = [(b"chunked", b"chunked"), (b"chunked", b"identity"), (b"identity", b"chunked"), (b"gzip", b"chunked")]
CL_VALUES = [
    b"5", b"05", b"00005", b"+5", b"-5", b" 5", b"5 ", b"\t5", b"5,5", b"5, 5", b"5,6", b"0x5", b"5.0", b"", b"1e1",
    b"99999999999999999999", b"18446744073709551621", b"4294967301", b"5\x00", b"five", b"\xd9\xa5",
]  # fmt: skip
CL_TWICE = [(b"5", b"5"), (b"5", b"6"), (b"6", b"5"), (b"5", b"0"), (b"0", b"5")]
CL_NAMES = [b"content-length", b"CONTENT-LENGTH", b"Content-Length ", b"Content_Length", b"Content-Length\t"]


def _framing() -> list[Base]:
    out = []
    for v in TE_VALUES:
        te = b"Transfer-Encoding: " + v
        out.append(Base(f"te-{v!r}", (HOST, te), CHUNKS))
        out.append(Base(f"te-{v!r}-then-cl", (HOST, te, CL5), CHUNKS))
        out.append(Base(f"cl-then-te-{v!r}", (HOST, CL5, te), CHUNKS))
    out += [Base(f"te-name-{n!r}", (HOST, n + b": chunked"), CHUNKS) for n in TE_NAMES]
    for a, b in TE_TWICE:
        twice = (HOST, b"Transfer-Encoding: " + a, b"Transfer-Encoding: " + b)
        out.append(Base(f"te-twice-{a!r}-{b!r}", twice, CHUNKS))
    out += [Base(f"cl-{v!r}", (HOST, b"Content-Length: " + v), HELLO) for v in CL_VALUES]
    for a, b in CL_TWICE:
        out.append(Base(f"cl-twice-{a!r}-{b!r}", (HOST, b"Content-Length: " + a, b"Content-Length: " + b), HELLO))
    out += [Base(f"cl-name-{n!r}", (HOST, n + b": 5"), HELLO) for n in CL_NAMES]
    out += [
        Base("cl-shorter-than-body", (HOST, b"Content-Length: 3"), HELLO),
        Base("cl-zero-with-body", (HOST, b"Content-Length: 0"), HELLO),
        Base("cl-on-get", (HOST, CL5), HELLO, method=b"GET"),
        Base("cl-te-smuggle", (HOST, b"Content-Length: 4", TE), SMUGGLED_CHUNKS),
        Base("te-cl-smuggle", (HOST, TE, b"Content-Length: 4"), SMUGGLED_CHUNKS),
        Base("cl-zero-te-smuggle", (HOST, b"Content-Length: 0", TE), SMUGGLED_CHUNKS),
        Base("te-xchunked-cl-smuggle", (HOST, b"Transfer-Encoding: xchunked", b"Content-Length: {len}"), SMUGGLED),
        Base("chunked-then-request", (HOST, TE), b"0\r\n\r\n" + SMUGGLED),
        Base("cl-then-request", (HOST, b"Content-Length: 0"), SMUGGLED),
    ]
    return out


# --- chunk sizes, extensions, line ends, trailers ---------------------------------------------------
CHUNK_BODIES = [
    b"5;ext=1\r\nhello\r\n0\r\n\r\n", b"5;ext\r\nhello\r\n0\r\n\r\n", b"5 ;ext\r\nhello\r\n0\r\n\r\n",
    b'5;a="b;c"\r\nhello\r\n0\r\n\r\n', b"5;\x00\r\nhello\r\n0\r\n\r\n", b"5;a\nb\r\nhello\r\n0\r\n\r\n",
    b"5;\r\nhello\r\n0\r\n\r\n", b"a\r\n0123456789\r\n0\r\n\r\n", b"A\r\n0123456789\r\n0\r\n\r\n",
    b"0005\r\nhello\r\n0\r\n\r\n", b"0000000000000000000000005\r\nhello\r\n0\r\n\r\n", b"-5\r\nhello\r\n0\r\n\r\n",
    b"+5\r\nhello\r\n0\r\n\r\n", b"0x5\r\nhello\r\n0\r\n\r\n", b"5 \r\nhello\r\n0\r\n\r\n", b" 5\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello0\r\n\r\n", b"5\r\nhelloXX\r\n0\r\n\r\n", b"5\nhello\n0\n\n", b"5\r\nhello\n0\r\n\r\n",
    b"5\rhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
    b"5\r\nhello\r\n0\r\nContent-Length: 99\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n", b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    b"1000000000000000005\r\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0;ext\r\n\r\n", b"5\r\nhello\r\n00\r\n\r\n",
    b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", b"0\r\n\r\n", b"5\r\nhel\r\n0\r\n\r\n", b"5\r\nhello\r\n0\r\n\n",
    b"5\r\nhello\r\n\r\n0\r\n\r\n", b"g\r\nhello\r\n0\r\n\r\n",
]  # fmt: skip


def _chunks() -> list[Base]:
    return [Base(f"chunks-{body!r}", (HOST, TE), body) for body in CHUNK_BODIES]


# --- line ends, obs-fold, NUL and control bytes ------------------------------------------------------
HEAD_LINES = {
    "obs-fold-value": (b"X-A: b", b" c", CL5),
    "obs-fold-tab": (b"X-A: b", b"\tc", CL5),
    "obs-fold-cl": (b"Content-Length:", b" 5"),
    "obs-fold-te": (b"Transfer-Encoding:", b" chunked"),
    "obs-fold-connection": (b"Connection: keep-alive,", b" content-length", CL5),
    "obs-fold-first-line": (b" X-A: b", CL5),
    "nul-in-name": (b"X-A\x00: b", CL5),
    "nul-in-value": (b"X-A: b\x00c", CL5),
    "soh-in-value": (b"X-A: b\x01c", CL5),
    "del-in-value": (b"X-A: b\x7fc", CL5),
    "esc-in-value": (b"X-A: b\x1bc", CL5),
    "cr-in-value": (b"X-A: b\rc", CL5),
    "cr-in-value-then-cl": (b"X-A: b\rContent-Length: 99", CL5),
    "lf-in-cl-line": (b"X-A: b\nContent-Length: 0", CL5),
    "space-in-name": (b"X A: b", CL5),
    "empty-name": (b": b", CL5),
    "no-colon": (b"X-A", CL5),
    "no-space": (b"X-A:b", b"Content-Length:5"),
    "space-before-colon": (b"X-A : b", CL5),
    "tab-before-colon": (b"X-A\t: b", CL5),
    "obs-text": (b"X-A: \xff\xfe", CL5),
    "nul-after-cl": (b"Content-Length: 5\x00", ),
    "ctl-in-cl-name": (b"Content-Length\x01: 5", CL5),
    "cl-nbsp": (b"Content-Length: \xa05",),
}


def _lines() -> list[Base]:
    out = [Base(name, (HOST, *ls), CHUNKS if b"Transfer" in ls[0] else HELLO) for name, ls in HEAD_LINES.items()]
    out += [
        Base("bare-lf-cl", (HOST, CL5), HELLO, eol=b"\n"),
        Base("bare-lf-chunked", (HOST, TE), CHUNKS, eol=b"\n"),
        Base("bare-cr-cl", (HOST, CL5), HELLO, eol=b"\r"),
        Base("bare-lf-one-line", (HOST + b"\nX-A: b", CL5), HELLO),
        Base("bare-cr-one-line", (HOST + b"\rX-A: b", CL5), HELLO),
        Base("lf-cr", (HOST, CL5), HELLO, eol=b"\n\r"),
    ]
    return out


# --- the request line, Host, Expect, Upgrade ---------------------------------------------------------
def _request_line() -> list[Base]:
    return [
        Base("absolute-form", (HOST, CL5), HELLO, target=b"http://proxy{p}a"),
        Base("absolute-form-https", (HOST, CL5), HELLO, target=b"https://proxy{p}a"),
        Base("absolute-form-other-host", (HOST, CL5), HELLO, target=b"http://evil{p}a"),
        Base("absolute-form-upper", (HOST,), method=b"GET", target=b"HTTP://proxy{p}a"),
        Base("http10-host", (HOST, CL5), HELLO, version=b" HTTP/1.0"),
        Base("http10-no-host", (CL5,), HELLO, version=b" HTTP/1.0"),
        Base("http10-keep-alive", (HOST, b"Connection: keep-alive", CL5), HELLO, version=b" HTTP/1.0"),
        Base("http10-keep-alive-no-host", (b"Connection: keep-alive", CL5), HELLO, version=b" HTTP/1.0"),
        Base("http10-chunked", (HOST, TE), CHUNKS, version=b" HTTP/1.0"),
        Base("http11-no-host", (CL5,), HELLO),
        Base("http12", (HOST, CL5), HELLO, version=b" HTTP/1.2"),
        Base("http20", (HOST, CL5), HELLO, version=b" HTTP/2.0"),
        Base("http09", (), method=b"GET", version=b""),
        Base("version-lower", (HOST, CL5), HELLO, version=b" http/1.1"),
        Base("version-trailing-space", (HOST, CL5), HELLO, version=b" HTTP/1.1 "),
        Base("method-lower", (HOST, CL5), HELLO, method=b"post"),
        Base("method-odd", (HOST, CL5), HELLO, method=b"PO-ST"),
        Base("target-space", (HOST, CL5), HELLO, target=b"{p}a b"),
        Base("target-fragment", (HOST, CL5), HELLO, target=b"{p}a#f"),
        Base("target-query", (HOST, CL5), HELLO, target=b"{p}a?q=1"),
        Base("target-dots", (HOST, CL5), HELLO, target=b"{p}x/../a"),
        Base("two-hosts", (HOST, b"Host: evil", CL5), HELLO),
        Base("empty-host", (b"Host:", CL5), HELLO),
        Base("host-space", (b"Host: a b", CL5), HELLO),
        Base("host-port", (b"Host: proxy:99999", CL5), HELLO),
        Base("expect", (HOST, b"Expect: 100-continue", CL5), HELLO),
        Base("expect-case", (HOST, b"Expect: 100-Continue", CL5), HELLO),
        Base("expect-list", (HOST, b"Expect: 100-continue, x", CL5), HELLO),
        Base("expect-unknown", (HOST, b"Expect: x-unknown", CL5), HELLO),
        Base("expect-chunked", (HOST, b"Expect: 100-continue", TE), CHUNKS),
        Base("expect-empty-body", (HOST, b"Expect: 100-continue", b"Content-Length: 0")),
        Base("upgrade-h2c", (HOST, b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c", H2C_SETTINGS, CL5), HELLO),
        Base("upgrade-websocket-no-key", (HOST, b"Connection: Upgrade", b"Upgrade: websocket"), method=b"GET"),
        Base("upgrade-without-connection", (HOST, b"Upgrade: websocket", CL5), HELLO),
        Base("upgrade-other-with-body", (HOST, b"Connection: upgrade", b"Upgrade: foo/1", CL5), HELLO),
        Base("upgrade-smuggle", (HOST, b"Connection: upgrade, content-length", b"Upgrade: foo/1", LEN), SMUGGLED),
        Base("head-with-body", (HOST, CL5), HELLO, method=b"HEAD"),
        Base("get-chunked", (HOST, TE), CHUNKS, method=b"GET"),
        Base("options-star", (HOST,), method=b"OPTIONS", target=b"*"),
    ]


BASES = [*_named(), *_framing(), *_chunks(), *_lines(), *_request_line()]


def request_mutations() -> list[Mutation]:
    """Every base alone, then followed by a pipelined GET on the same connection."""
    out = []
    for pipelined in (False, True):
        for base in BASES:
            n = len(out)
            data = base.render(n) + (PIPELINED.replace(b"{p}", b"/m/%d/" % n) if pipelined else b"")
            methods = (base.method.upper(), b"GET") if pipelined else (base.method.upper(),)
            out.append(Mutation(base.name + (" +pipelined" if pipelined else ""), n, data, methods))
    return out


# --- answers -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    name: str
    data: bytes  # what the upstream writes
    method: bytes = b"GET"
    eof: bool = False  # the upstream closes the connection after it


OK = b"HTTP/1.1 200 OK\r\n"
ANSWER_FRAMINGS = {  # head lines after the status line, body
    "cl": (b"Content-Length: 5\r\n", HELLO),
    "cl-dup-same": (b"Content-Length: 5\r\nContent-Length: 5\r\n", HELLO),
    "cl-dup-differ": (b"Content-Length: 5\r\nContent-Length: 3\r\n", HELLO),
    "cl-list": (b"Content-Length: 5, 5\r\n", HELLO),
    "cl-plus": (b"Content-Length: +5\r\n", HELLO),
    "cl-leading-zeros": (b"Content-Length: 005\r\n", HELLO),
    "cl-spaces": (b"Content-Length:   5  \r\n", HELLO),
    "cl-hex": (b"Content-Length: 0x5\r\n", HELLO),
    "cl-short": (b"Content-Length: 3\r\n", HELLO),
    "cl-huge": (b"Content-Length: 99999999999999999999\r\n", HELLO),
    "cl-upper-name": (b"CONTENT-LENGTH: 5\r\n", HELLO),
    "cl-space-before-colon": (b"Content-Length : 5\r\n", HELLO),
    "te": (b"Transfer-Encoding: chunked\r\n", CHUNKS),
    "te-upper": (b"Transfer-Encoding: CHUNKED\r\n", CHUNKS),
    "te-and-cl": (b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", CHUNKS),
    "cl-and-te": (b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", CHUNKS),
    "te-xchunked": (b"Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n", HELLO),
    "te-identity": (b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n", HELLO),
    "te-chunked-identity": (b"Transfer-Encoding: chunked, identity\r\n", CHUNKS),
    "te-gzip-chunked": (b"Transfer-Encoding: gzip, chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    "te-twice": (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", CHUNKS),
    "chunk-ext": (b"Transfer-Encoding: chunked\r\n", b"5;a=b\r\nhello\r\n0\r\n\r\n"),
    "chunk-upper-hex": (b"Transfer-Encoding: chunked\r\n", b"A\r\n0123456789\r\n0\r\n\r\n"),
    "chunk-zeros": (b"Transfer-Encoding: chunked\r\n", b"0005\r\nhello\r\n0\r\n\r\n"),
    "chunk-split": (b"Transfer-Encoding: chunked\r\n", b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"),
    "chunk-trailer": (b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"),
    "chunk-trailer-cl": (b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\nContent-Length: 9\r\n\r\n"),
    "chunk-bare-lf": (b"Transfer-Encoding: chunked\r\n", b"5\nhello\n0\n\n"),
    "chunk-no-crlf": (b"Transfer-Encoding: chunked\r\n", b"5\r\nhello0\r\n\r\n"),
    "chunk-negative": (b"Transfer-Encoding: chunked\r\n", b"-5\r\nhello\r\n0\r\n\r\n"),
    "chunk-overlong": (b"Transfer-Encoding: chunked\r\n", b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    "connection-content-length": (b"Connection: content-length\r\nContent-Length: 5\r\n", HELLO),
    "connection-content-length-upper": (b"Connection: keep-alive, CONTENT-LENGTH\r\nContent-Length: 5\r\n", HELLO),
    "connection-transfer-encoding": (b"Connection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n", CHUNKS),
    "connection-te-list": (b"Connection: x, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n", CHUNKS),
    "connection-close-cl": (b"Connection: close\r\nContent-Length: 5\r\n", HELLO),
    "obs-fold": (b"X-A: b\r\n c\r\nContent-Length: 5\r\n", HELLO),
    "obs-fold-cl": (b"Content-Length:\r\n 5\r\n", HELLO),
    "nul-in-value": (b"X-A: b\x00c\r\nContent-Length: 5\r\n", HELLO),
    "ctl-in-value": (b"X-A: b\x01c\r\nContent-Length: 5\r\n", HELLO),
    "cr-in-value": (b"X-A: b\rc\r\nContent-Length: 5\r\n", HELLO),
    "space-in-name": (b"X A: b\r\nContent-Length: 5\r\n", HELLO),
    "empty-name": (b": b\r\nContent-Length: 5\r\n", HELLO),
}
STATUS_LINES = {  # how the answer begins
    "": OK,
    "bare-lf": b"HTTP/1.1 200 OK\n",
    "no-reason": b"HTTP/1.1 200\r\n",
    "after-100": b"HTTP/1.1 100 Continue\r\n\r\n" + OK,
    "after-103": b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + OK,
    "http10": b"HTTP/1.0 200 OK\r\n",
}


def _answers() -> list[Answer]:
    out = []
    for status_name, status in STATUS_LINES.items():
        for name, (lines, body) in ANSWER_FRAMINGS.items():
            if status_name == "bare-lf":
                lines = lines.replace(b"\r\n", b"\n")
            data = status + lines + (b"\n" if status_name == "bare-lf" else b"\r\n") + body
            out.append(Answer(f"{name} {status_name}".strip(), data, eof=status_name == "http10"))
    return out


ODD_ANSWERS = [
    Answer("until-eof", OK + b"Content-Type: text/plain\r\n\r\nhello", eof=True),
    Answer("until-eof-empty", OK + b"\r\n", eof=True),
    Answer("until-eof-http10", b"HTTP/1.0 200 OK\r\n\r\nhello", eof=True),
    Answer("extra-after-body", OK + b"Content-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTRAY"),
    Answer("extra-garbage-after-body", OK + b"Content-Length: 5\r\n\r\nhello\r\nxyz"),
    Answer("extra-after-chunks", OK + b"Transfer-Encoding: chunked\r\n\r\n" + CHUNKS + b"STRAY"),
    Answer("204-with-cl", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"),
    Answer("204-with-body-no-cl", b"HTTP/1.1 204 No Content\r\n\r\nhello"),
    Answer("204-chunked", b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKS),
    Answer("304-with-cl", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"),
    Answer("304-with-body", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello"),
    Answer("head-cl", OK + b"Content-Length: 5\r\n\r\n", method=b"HEAD"),
    Answer("head-with-body", OK + b"Content-Length: 5\r\n\r\nhello", method=b"HEAD"),
    Answer("head-chunked", OK + b"Transfer-Encoding: chunked\r\n\r\n", method=b"HEAD"),
    Answer("head-connection-cl", OK + b"Connection: content-length\r\nContent-Length: 5\r\n\r\n", method=b"HEAD"),
    Answer("101-unasked", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n", eof=True),
    Answer("status-999", b"HTTP/1.1 999 Odd\r\nContent-Length: 5\r\n\r\nhello"),
    Answer("status-099", b"HTTP/1.1 099 Odd\r\nContent-Length: 5\r\n\r\nhello"),
    Answer("not-http", b"NOT HTTP AT ALL\r\n\r\n", eof=True),
    Answer("http09-style", b"hello", eof=True),
    Answer("cl-short-then-close", OK + b"Content-Length: 10\r\n\r\nhello", eof=True),
    Answer("chunks-cut", OK + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", eof=True),
    Answer("500-cl", b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\nhello"),
    Answer("404-chunked", b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKS),
]


def answer_mutations() -> list[Answer]:
    return [*_answers(), *ODD_ANSWERS]
