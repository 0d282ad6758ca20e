"""A raw-socket upstream that misbehaves on purpose, run in a thread of the test process,
so a test can look at what it received and what it saw of its connections.

Paths (the last segment decides; anything before it is echoed back):
  .../double-same      the answer and a second, unsolicited response in the same write
  .../double-later?d=S the answer, then S seconds later an unsolicited response (before reading on)
  .../ctl-01|ctl-0b|ctl-7f  a header value holding that control byte
  .../status-600|status-099 a status outside 100..599
  .../nocontent-cl     204 with Content-Length: 5 and a body
  .../notmodified-cl   304 with Content-Length: 5 (no body)
  .../switch           101 Switching Protocols to a request that asked for no upgrade
  .../head-body        Content-Length: 5 and a body, also to HEAD
  .../slow?s=S         answers after S seconds, or counts the proxy closing the connection first
  .../early-413        413 + Connection: close as soon as the head arrives, without reading the body
  .../early-401?after=N  401 (keep-alive) once N request body bytes are in (N=0: as soon as the head
                       arrives), then reads and drops whatever comes until the proxy closes the connection
  .../vanish?after=N   closes the connection without answering once N request body bytes are in
  .../digest           200, body = "<length> <sha256 hex>" of the request body it read (`Seen.body_read`
                       counts its bytes as they arrive); to `Expect: 100-continue`, a 100 Continue first
                       (?continue=never: none, a silent upstream; ?continue=held: once the test calls
                       `release_continue()`)
  .../big?n=N          200 with Content-Length N, the body big_body(N) in 64 KiB writes; &cut=K: only the
                       first K bytes, then (after &stall=S seconds) the connection closes; &extra=X: X
                       sent right after the N bytes, in the same write, unasked
  .../die-reused       the first request on a connection: 200 (path); any later one on it is read, then
                       the connection closes without an answer (a keep-alive race lost, or a crash)
  .../die-idle?s=S     200 (path); a later request on a connection that sat idle >= S seconds is read, then
                       the connection closes without an answer: the backend's keep-alive timeout fired just
                       as the request was written (the race an idle expiry below it avoids)
  .../twice            200 (path) echoing X-Request-ID, and the same answer written again 2 ms later
  .../id-other         200 (path) with an X-Request-ID that is not the request's
  .../id-echo          200 (path) echoing X-Request-ID
  .../bigchunked?n=N   200, chunked: big_body(N) in 64 KiB chunks
  anything else        200, body = the request path (so a user can tell their answer from another's)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

STRAY = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nSTRAY"


@dataclass
class Seen:
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    max_open: int = 0
    closed_while_waiting: list[float] = field(default_factory=list)
    body_read: int = 0


def big_body(n: int) -> bytes:
    """The body of .../big?n=N: N bytes no compression or pattern could fake."""
    return random.Random(n).randbytes(n)


def _answer(status: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body


class RawUpstream:
    def __init__(self) -> None:
        self.seen = Seen()
        self.writers: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        started.wait(5)
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.held = asyncio.Event()
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()
        server.close()
        for w in self.writers:
            w.close()
        tasks = asyncio.all_tasks(self.loop)
        for t in tasks:
            t.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, server.wait_closed(), return_exceptions=True))
        self.loop.close()

    def release_continue(self) -> None:
        """.../digest?continue=held sends its 100 Continue now."""
        self.loop.call_soon_threadsafe(self.held.set)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = self.seen
        self.writers.add(writer)
        seen.connections += 1
        seen.open_now += 1
        seen.max_open = max(seen.max_open, seen.open_now)
        served = 0  # requests answered on this connection
        try:
            while True:
                idle_since = time.monotonic()  # answered (or new): idle until the next head
                head = await reader.readuntil(b"\r\n\r\n")
                idle_for = time.monotonic() - idle_since
                seen.heads.append(head)
                method, target = head.split(b" ", 2)[:2]
                path, _, query = target.partition(b"?")
                last = path.rsplit(b"/", 1)[-1]
                length = 0
                chunked = False
                rid = b""
                for h in head.split(b"\r\n")[1:]:
                    name, _, value = h.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                    if name.lower() == b"transfer-encoding":
                        chunked = True
                    if name.lower() == b"x-request-id":
                        rid = value.strip()
                if last == b"early-413":
                    # refuse before reading the body, then close the way Go's server does (write side
                    # first, then discard what still arrives) so the kernel does not reset the answer away
                    writer.write(_answer(b"413 Payload Too Large", b"too big", b"Connection: close\r\n"))
                    await writer.drain()
                    writer.write_eof()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(2):
                            while await reader.read(65536):
                                pass
                    break
                body = b""
                if last == b"early-401":  # refuse before the body is in; what comes after is read and dropped
                    await _read_some(reader, int(_params(query).get(b"after", b"0")), length, chunked)
                    writer.write(_answer(b"401 Unauthorized", b"who are you"))
                    await writer.drain()
                    while await reader.read(65536):
                        pass
                    break
                if last == b"vanish":
                    await _read_some(reader, int(_params(query).get(b"after", b"0")), length, chunked)
                    break
                if last == b"digest":
                    go_ahead = _params(query).get(b"continue", b"now")
                    if b"\r\nexpect: 100-continue\r\n" in head.lower() and go_ahead != b"never":
                        if go_ahead == b"held":
                            await self.held.wait()
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    digest, n = hashlib.sha256(), 0
                    async for piece in _pieces(reader, length, chunked):
                        digest.update(piece)
                        n += len(piece)
                        seen.body_read += len(piece)
                    writer.write(_answer(b"200 OK", b"%d %s" % (n, digest.hexdigest().encode())))
                    await writer.drain()
                    continue
                if length:
                    body = await reader.readexactly(length)
                if chunked:
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        if size == 0:
                            await _skip_trailers(reader)
                            break
                        body += (await reader.readexactly(size + 2))[:-2]
                if last == b"die-reused" and served:
                    break
                if last == b"die-idle" and served and idle_for >= float(_params(query).get(b"s", b"2")):
                    break
                served += 1
                if last in (b"twice", b"id-echo", b"id-other"):
                    echoed = b"other" if last == b"id-other" else rid
                    answer = _answer(b"200 OK", path, b"X-Request-ID: " + echoed + b"\r\n")
                    writer.write(answer)
                    if last == b"twice":  # a buggy backend writes it again; the next request is read meanwhile
                        self.loop.call_later(0.002, lambda w=writer, a=answer: w.is_closing() or w.write(a))
                    await writer.drain()
                    continue
                if not await self._respond(method, path, last, query, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            seen.open_now -= 1
            self.writers.discard(writer)
            writer.close()

    async def _respond(self, method: bytes, path: bytes, last: bytes, query: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        params = _params(query)
        if last == b"double-same":
            writer.write(_answer(b"200 OK", path) + STRAY)
        elif last == b"double-later":
            writer.write(_answer(b"200 OK", path))
            await writer.drain()
            await asyncio.sleep(float(params.get(b"d", b"0.2")))
            writer.write(STRAY)
        elif last.startswith(b"ctl-"):
            byte = bytes([int(last[4:], 16)])
            writer.write(_answer(b"200 OK", b"ok", b"X-Bad: a" + byte + b"b\r\n"))
        elif last.startswith(b"status-"):
            writer.write(_answer(last[7:] + b" Odd", b"ok"))
        elif last == b"nocontent-cl":
            writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello")
        elif last == b"notmodified-cl":
            writer.write(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\n")
        elif last == b"switch":
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            await writer.drain()
            return False
        elif last == b"big":
            n = int(params[b"n"])
            cut = int(params.get(b"cut", n))
            sent = big_body(n)[:cut] + (params.get(b"extra", b"") if cut == n else b"")  # the stray in the body's last write
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % n)
            # the last 4 KiB go in a write of their own, so a stray rides in the same TCP segment as the
            # body's end (a 64 KiB write can exceed loopback's MSS and the stray would come late: the
            # case no HTTP/1.1 client can tell from the next answer)
            tail = max(0, len(sent) - 4096)
            for i in [*range(0, tail, 65536), tail]:
                writer.write(sent[i : min(i + 65536, tail)] if i < tail else sent[tail:])
                await writer.drain()
            if cut < n:
                await asyncio.sleep(float(params.get(b"stall", b"0")))
                return False
        elif last == b"bigchunked":
            body = big_body(int(params[b"n"]))
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(body), 65536):
                writer.write(b"%x\r\n%s\r\n" % (len(body[i : i + 65536]), body[i : i + 65536]))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        elif last == b"head-body":
            writer.write(_answer(b"200 OK", b"hello"))
        elif last == b"slow":
            try:
                data = await asyncio.wait_for(reader.read(1), float(params.get(b"s", b"8")))
            except TimeoutError:
                data = None
            if data == b"":
                self.seen.closed_while_waiting.append(time.monotonic())
                return False
            writer.write(_answer(b"200 OK", path))
        else:
            writer.write(_answer(b"200 OK", path))
        await writer.drain()
        return True


def _params(query: bytes) -> dict[bytes, bytes]:
    return dict(p.split(b"=", 1) for p in query.split(b"&") if b"=" in p)


async def _pieces(reader: asyncio.StreamReader, length: int, chunked: bool) -> AsyncIterator[bytes]:
    """The request body as it arrives, piece by piece, its chunked framing (if any) removed."""
    if not chunked:
        async for piece in _exactly(reader, length):
            yield piece
        return
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        async for piece in _exactly(reader, size):
            yield piece
        await reader.readexactly(2)
    await _skip_trailers(reader)


async def _exactly(reader: asyncio.StreamReader, n: int) -> AsyncIterator[bytes]:
    while n:
        piece = await reader.read(min(n, 65536))
        if not piece:
            raise asyncio.IncompleteReadError(b"", n)
        n -= len(piece)
        yield piece


async def _read_some(reader: asyncio.StreamReader, n: int, length: int, chunked: bool) -> None:
    """Until at least `n` body bytes are in (the pieces are dropped)."""
    if n:
        async for piece in _pieces(reader, length, chunked):
            n -= len(piece)
            if n <= 0:
                return


async def _skip_trailers(reader: asyncio.StreamReader) -> None:
    while (await reader.readuntil(b"\r\n")) != b"\r\n":
        pass
