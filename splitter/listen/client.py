"""What the proxy may ask of a client connection (bypass.ClientConnection), as methods of the protocol:
splicing a download past it, reading an upload past the parser, an early answer's lingering close, the send
timeout's cut. HttpProtocol (listen/http.py) is the one class that has them; the attributes below are its."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from ..bypass import Stall, drop_rest
from .request import Request
from .states import BUSY, CLOSED, CLOSING, DETACHED, SENDING, Conn, to
from .transport import Coalescing, send_timed_out

LINGER_WAIT = 5.0  # seconds a read of a body dropped after an early answer may wait (nginx's lingering_timeout)


class ClientSide:
    """HttpProtocol's half that the proxy calls (through the scope's CLIENT_HOOK)."""

    app: Any
    loop: asyncio.AbstractEventLoop
    client: tuple[str, int] | None
    transport: asyncio.Transport
    out: Coalescing
    state: Conn
    stalled: bool
    send_timeout: float
    current: Request | None
    parsing: Request | None
    _on_lost: Callable[[], None] | None
    _after_close: Callable[[], None] | None
    _splicing: Request | None
    _send_clock: Stall | None

    def pause_reading(self) -> None:
        raise NotImplementedError  # HttpProtocol's

    def resume_reading(self) -> None:
        raise NotImplementedError  # HttpProtocol's

    def close(self) -> None:
        raise NotImplementedError  # HttpProtocol's

    def watch(self, hook: Callable[[], None] | None) -> bool:
        """Call `hook()` when the client goes away (None: stop watching). False if it already has."""
        if hook is not None and (self.transport is None or self.out.is_closing()):
            return False
        self._on_lost = hook
        return True

    async def splice_target(self, size: int) -> int | None:
        """The client socket, to take `size` body bytes of the response going out that bypass the protocol
        (bypass.splice), once all written before them has reached the kernel; None when it cannot (a
        chunked or shorter response, a closing connection, a client not reading fast enough)."""
        request, out = self.current, self.out
        if request is None or request.state is not SENDING or request.left is None or request.left < size:
            return None
        if out.is_closing():  # nothing more goes out on it
            return None
        out.flush()
        if out.get_write_buffer_size():
            await asyncio.sleep(0)  # uvloop sends what it queued at the end of this loop step
            if out.get_write_buffer_size() or out.is_closing():
                return None
        sock = out.get_extra_info("socket")
        if sock is None:
            return None
        self._splicing = request
        return int(sock.fileno())

    def sent_outside(self, n: int) -> None:
        """`n` body bytes went to the client past the protocol: counted against the Content-Length check
        of the response they belong to (the one splice_target handed the socket out for)."""
        request, self._splicing = self._splicing, None
        if request is not None and request.left is not None:
            request.left -= n

    def take_body(self, delivered: int) -> int | None:
        """A duplicate of the client socket's fd, for reading the rest of the request body past the parser;
        only when all it has parsed of the body (`delivered` bytes) reached the app. Nothing is read
        meanwhile, and the connection closes after the response: the parser would take the next
        request's bytes for this body."""
        request = self.parsing
        if request is None or request.parsed != delivered or self.out.is_closing():
            return None
        fd = self._dup()
        if fd is not None:  # else the parser reads it
            self._detach(request)
        return fd

    def body_taken(self, whole: bool = True) -> None:
        """The proxy is done reading the body itself: the parser reads again, to hear of a disconnect.
        Not `whole`: the client closed or reset mid-body; no answer goes out (a 500 to a request that
        never arrived), the connection closes."""
        if whole:
            if self.state is DETACHED:
                to(self, BUSY)
                self.resume_reading()
            return
        if self.parsing is not None:
            self.parsing.gone()
        self.close()

    def cut_body(self, scope: Any) -> tuple[int, int] | None:
        """The app reads no more of the request body of `scope` (the answer came first): a duplicate of the
        client socket to read the rest from and drop it, and how many body bytes the parser handed on.
        Nothing more is read, and the connection closes after the response. None when the parser has
        the whole body already (nothing is left to drop: the connection lives on) or it is closing."""
        request = self.parsing
        if request is None or scope is not request.scope or not request.more_body or self.out.is_closing():
            return None
        if self.out.get_extra_info("socket") is None:
            return None
        request.keep_alive = False
        fd = self._dup()
        if fd is None:
            return None  # it closes without reading the rest
        self._detach(request)
        return fd, request.parsed

    def answered_early(self, request: Request) -> None:
        """An answer starts before its request body is all in and the proxy did not cut the body (a 413 or
        400 decided on the head, a 500): it says Connection: close, and the rest of the body is dropped
        after it (lingering close), instead of the parser reading up to the declared length (2 GB) as
        the body of an answered request, and a pipelined request as more of it."""
        cut = self.cut_body(request.scope)
        if cut is None:
            return
        fd, parsed = cut
        length = next((value for name, value in request.scope["headers"] if name == b"content-length"), None)
        left = int(length) - parsed if length is not None and length.isdigit() else None
        drop_rest(self, fd, left, LINGER_WAIT)

    def _dup(self) -> int | None:
        """A duplicate of the client socket's fd; None without a socket or out of file descriptors."""
        sock = self.out.get_extra_info("socket")
        try:
            return None if sock is None else os.dup(sock.fileno())
        except OSError:
            return None

    def _detach(self, request: Request) -> None:
        request.keep_alive = False
        self.pause_reading()
        to(self, DETACHED)

    def after_close(self, hook: Callable[[], None]) -> None:
        """Call `hook()` once the connection is closed (all written before has reached the kernel), at once if it is."""
        if self.state is CLOSED:
            hook()
        else:
            self._after_close = hook

    def cut_stalled(self) -> None:
        """The client took no response bytes for send_timeout seconds (nginx's send_timeout): abort the
        connection; the proxy's `watch` hook frees the upstream connection. Counted and logged."""
        if self.stalled:
            return
        self.stalled = True
        send_timed_out(self.app, self.client, self.send_timeout)
        if self.current is not None:
            self.current.gone()  # the app's return is not "an incomplete response" (connection_lost comes later)
        if self.state is not CLOSED:
            to(self, CLOSING)
        self.out.abort()

    def _send_stalled(self) -> None:
        """Also when the connection is closing: a close waits for the buffer to drain, which never comes."""
        self._send_clock = None
        if self.state is not CLOSED:
            self.cut_stalled()
