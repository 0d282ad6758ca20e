"""The independent parser on both far sides of the proxy: h11, a strict HTTP/1.1 implementation that
shares no code with httptools/llhttp (what uvicorn and the proxy's upstream client use).

`requests(data)` is what a strict server makes of a client's bytes; `answer(method, data, eof)` what a
strict client makes of an upstream's. Both stop at the first thing h11 refuses and say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h11

_ANSWER = h11.Response(status_code=200, headers=[("content-length", "0")])


@dataclass
class Parsed:
    """One request as h11 parsed it (method, target, body), and whether its end arrived."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    complete: bool = False
    conn: int = 0  # which upstream connection it came on (the recorder's count)

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


@dataclass
class Requests:
    """What h11 parsed of a byte stream, in order, and the error that stopped it (None: none)."""

    parsed: list[Parsed] = field(default_factory=list)
    error: str | None = None


def requests(data: bytes) -> Requests:
    """A strict server's reading of a client's bytes: every request (answered with an empty 200 so the
    next is read, as a keep-alive server would), until the bytes end or h11 refuses them."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")  # the client sends nothing more
    out = Requests()
    current: Parsed | None = None
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                current = Parsed(event.method, event.target, [(n, v) for n, v in event.headers])
                out.parsed.append(current)
            elif isinstance(event, h11.Data) and current is not None:
                current.body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage) and current is not None:
                current.complete = True
                conn.send(_ANSWER)
                conn.send(h11.EndOfMessage())
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return out  # Connection: close or HTTP/1.0: nothing after this request is read
                conn.start_next_cycle()
                current = None
            else:  # NEED_DATA after the end (an incomplete request), ConnectionClosed, PAUSED
                return out
    except h11.RemoteProtocolError as exc:
        out.error = str(exc)
        return out


def answer(method: bytes, data: bytes, eof: bool) -> tuple[int, bytes] | None:
    """A strict client's reading of an upstream's bytes to one request: the final answer's status and
    body (interim 1xx skipped), or None when h11 refuses them or they end before the answer does.
    `eof`: the upstream closes the connection after these bytes (ends a body delimited by the close)."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("host", "upstream")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    status, body = 0, b""
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return status, body
            elif not isinstance(event, h11.InformationalResponse):
                return None  # NEED_DATA or closed before the answer's end
    except h11.RemoteProtocolError:
        return None
