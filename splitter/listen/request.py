"""One request on a client connection: the ASGI `receive` and `send` the app gets, and the response head
built in one pass (`response_head`). The connection (listen/http.py) feeds it the body its parser reads."""

from __future__ import annotations

import asyncio
import http
import logging
import re
from typing import Any, Protocol

from uvicorn.server import ServerState

from ..bypass import RELAYABLE
from ..headers import relayable
from ..record import error_body
from .states import DONE, GONE, QUEUED, RUNNING, SENDING, to
from .transport import Coalescing


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (code, phrase)


STATUS_LINE = {code: _status_line(code) for code in range(100, 600)}
_HEADER_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')  # uvicorn's checks, for its messages
_HEADER_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_FRAMING = frozenset([b"content-length", b"transfer-encoding", b"connection"])
BAD_REQUEST = "invalid HTTP request"

LOG = logging.getLogger("uvicorn.error")  # where uvicorn reports a failing app: operators' filters stay true


class Connection(Protocol):
    """What a request uses of its connection (listen.http.HttpProtocol)."""

    loop: asyncio.AbstractEventLoop
    out: Coalescing
    server_state: ServerState
    write_paused: bool

    def resume_reading(self) -> None: ...

    def drained(self) -> asyncio.Future[None]: ...

    def response_done(self, request: Request) -> None: ...

    def close(self) -> None: ...

    def answered_early(self, request: Request) -> None: ...


class _Done:
    """An awaitable that is already complete (awaiting it returns None at once, no coroutine made)."""

    __slots__ = ()

    def __await__(self) -> Any:
        return iter(())


READY = _Done()  # what send() returns when it need not wait


def response_head(
    status: int, headers: list[tuple[bytes, bytes]], head_request: bool, keep_alive: bool, checked: bool = False
) -> tuple[bytes, int | None, bool]:
    """(the head's bytes, the body length it promises (None: chunked), keep-alive after it), in one pass:
    one check for all fields (upstream.relayable: the characters uvicorn refuses, with uvicorn's message
    when one is there; skipped when the app says its fields are `checked`, see RELAYABLE) and only the three
    framing names looked at; the bytes are uvicorn's (the first Content-Length counts, chunked wins, chunked
    added when neither is given and a body may follow)."""
    if not checked and not relayable(headers):
        for name, value in headers:
            if _HEADER_NAME.search(name):
                raise RuntimeError("Invalid HTTP header name.")
            if _HEADER_VALUE.search(value):
                raise RuntimeError("Invalid HTTP header value.")
    content = [STATUS_LINE[status]]
    chunked: bool | None = None
    length = 0
    close = False
    for name, value in headers:
        name = name.lower()
        if name in _FRAMING:
            if name == b"content-length":
                if chunked is None:
                    length, chunked = int(value.decode()), False
            elif name == b"transfer-encoding":
                if value.lower() == b"chunked":
                    length, chunked = 0, True
            elif b"close" in [token.lower().strip() for token in value.split(b",")]:
                keep_alive, close = False, True
        content += (name, b": ", value, b"\r\n")
    if not keep_alive and not close:
        content.append(b"connection: close\r\n")
    if chunked is None and not head_request and status not in (204, 304):
        chunked = True  # neither Content-Length nor Transfer-Encoding
        content.append(b"transfer-encoding: chunked\r\n")
    content.append(b"\r\n")
    return b"".join(content), None if chunked else length, keep_alive


def refusal(too_large: bool, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The answer to a request head the parser refuses, in the proxy's JSON like every answer it writes
    itself (SPEC: error bodies are JSON; uvicorn's was plain text): a 400, or a 431 when too large."""
    status, message = (431, "request header fields too large") if too_large else (400, BAD_REQUEST)
    return _json_answer(status, error_body(message, None, None), default_headers)


def _json_answer(status: int, body: bytes, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    content = [STATUS_LINE[status]]
    for name, value in default_headers:
        content += (name, b": ", value, b"\r\n")
    content.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
    content.append(b"connection: close\r\n\r\n" + body)
    return b"".join(content)


class Request:
    """One request on the connection: its scope, the body the parser has handed on, and its response's
    state; `receive` and `send` are the app's ASGI callables, each returning a done awaitable when it
    need not wait."""

    __slots__ = (
        "body", "conn", "continue_first", "head_request", "keep_alive", "left", "more_body", "news", "parsed",
        "scope", "state", "waiter",
    )  # fmt: skip

    def __init__(
        self, conn: Connection, scope: dict[str, Any], keep_alive: bool, expect_100: bool, queued: bool
    ) -> None:
        self.conn = conn
        self.scope = scope
        self.state = QUEUED if queued else RUNNING
        self.keep_alive = keep_alive
        self.continue_first = expect_100  # `100 Continue` goes out at the app's first receive()
        self.head_request = scope["method"] == "HEAD"
        self.left: int | None = 0  # response body bytes the head promised still to come (None: chunked)
        self.body = bytearray()
        self.more_body = True  # the parser has more of the request body to come
        self.parsed = 0  # request body bytes the parser has handed on
        self.news = False  # body, its end or a disconnect arrived since the app's last receive()
        self.waiter: asyncio.Future[dict[str, Any]] | None = None

    def receive(self) -> asyncio.Future[dict[str, Any]]:
        conn = self.conn
        if self.continue_first:
            self.continue_first = False
            if not conn.out.is_closing():
                conn.out.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        fut: asyncio.Future[dict[str, Any]] = conn.loop.create_future()
        if self.state is RUNNING or self.state is SENDING:
            conn.resume_reading()
            if not self.news:
                self.waiter = fut
                return fut
        self.news = False
        fut.set_result(self.message())
        return fut

    def message(self) -> dict[str, Any]:
        if self.state is DONE or self.state is GONE:
            return {"type": "http.disconnect"}
        body, self.body = self.body, bytearray()
        return {"type": "http.request", "body": bytes(body), "more_body": self.more_body}

    def wake(self) -> None:
        """Body, its end, or a disconnect arrived: a waiting receive() returns it now, a later one at once."""
        fut, self.waiter = self.waiter, None
        if fut is None or fut.done():  # a cancelled wait keeps the news for the next receive()
            self.news = True
        else:
            self.news = False
            fut.set_result(self.message())

    def send(self, message: dict[str, Any]) -> Any:
        """The head is written in one pass and the body at once; a completed awaitable is returned (no
        coroutine) unless the client's buffer is full, when the message waits for it to drain."""
        state = self.state
        if state is GONE:
            return READY
        if self.conn.write_paused:
            return self._send_drained(message)
        if state is RUNNING:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{message['type']}'.")
            self.start(message["status"], message.get("headers", []), RELAYABLE in message)
        elif state is SENDING:
            if message["type"] != "http.response.body":
                raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{message['type']}'.")
            self.write(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"Unexpected ASGI message '{message['type']}' sent, after response already completed.")
        return READY

    async def _send_drained(self, message: dict[str, Any]) -> None:
        await self.conn.drained()
        await self.send(message)

    def start(self, status: int, headers: Any, checked: bool = False) -> None:
        defaults = self.conn.server_state.default_headers
        if defaults:
            headers = defaults + list(headers)
        if self.more_body and self.keep_alive:  # the answer comes before the body, which nobody cut: it must not stay
            self.conn.answered_early(self)
        head, self.left, self.keep_alive = response_head(status, headers, self.head_request, self.keep_alive, checked)
        to(self, SENDING)
        self.continue_first = False
        self.conn.out.write(head)

    def write(self, body: bytes, more_body: bool) -> None:
        if self.head_request:
            self.left = 0
        elif self.left is None:
            chunk = [b"%x\r\n" % len(body), body, b"\r\n"] if body else []
            if not more_body:
                chunk.append(b"0\r\n\r\n")
            self.conn.out.write(b"".join(chunk))
        elif body:
            if len(body) > self.left:
                raise RuntimeError("Response content longer than Content-Length")
            self.left -= len(body)
            self.conn.out.write(body)
        if not more_body:
            if self.left:
                raise RuntimeError("Response content shorter than Content-Length")
            to(self, DONE)
            self.wake()
            self.conn.response_done(self)

    def gone(self) -> None:
        if self.state is not DONE:
            to(self, GONE)
            self.wake()

    def ended(self, exc: BaseException | None, result: Any) -> None:
        """The app returned or failed: uvicorn's answers (a 500 before the head, a closed connection after)."""
        state = self.state
        if state is DONE and exc is None and result is None:
            return  # answered whole and returned: nothing to say
        failed = exc is not None or result is not None
        if exc is not None:
            LOG.error("Exception in ASGI application\n", exc_info=exc)
        elif failed:
            LOG.error("ASGI callable should return None, but returned '%s'.", result)
        elif state is RUNNING:
            LOG.error("ASGI callable returned without starting response.")
        elif state is SENDING:
            LOG.error("ASGI callable returned without completing response.")
        if state is RUNNING and (exc is not None or not failed):
            body = error_body("internal server error", None, None)  # JSON, as every answer the proxy writes
            self.start(500, [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                             (b"connection", b"close")])  # fmt: skip
            self.write(body, False)
        elif failed or state is SENDING:
            self.conn.close()
