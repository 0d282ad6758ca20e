"""A recording upstream: raw sockets, every byte parsed by h11 (strict, independent of the proxy's parser).

It records each request it sees, per connection (method, target, headers, body bytes, whether its end
arrived), and every parse error with the target of the request before it on that connection (a request
smuggled in a body, or garbage left by an unframed one, shows up after the request that carried it).
Each request is answered with a small fixed response naming it: `METHOD TARGET BODY-LENGTH`, with its
X-Request-ID echoed. A target listed in `answers` is answered with those raw bytes instead (the answer
mutations); `eof` ones close the connection after them (a body delimited by the close).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from dataclasses import dataclass

import h11
from oracle import Parsed


@dataclass(frozen=True)
class Raw:
    """An answer written as these bytes; `eof`: the connection closes after them."""

    data: bytes
    eof: bool = False


@dataclass(frozen=True)
class ParseError:
    conn: int
    after: bytes | None  # the target of the last request parsed on that connection
    error: str
    raw: bytes  # the bytes h11 refused, from the end of the last whole request on (at most 300)


def named(method: bytes, target: bytes, body: bytes) -> bytes:
    """The body of the recorder's answer to a request."""
    return b"%s %s %d" % (method, target, len(body))


class Recorder:
    def __init__(self, answers: dict[bytes, Raw] | None = None) -> None:
        self.answers = answers or {}
        self.requests: list[Parsed] = []
        self.errors: list[ParseError] = []
        self._ids = itertools.count(1)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(5), "the recorder did not start"
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self.loop)
        for t in tasks:
            t.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, server.wait_closed(), return_exceptions=True))
        self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = next(self._ids)
        conn = h11.Connection(h11.SERVER)
        current: Parsed | None = None
        received = bytearray()  # everything that came on this connection
        mark = 0  # where the bytes after the last whole request begin
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    if not data and conn.their_state is not h11.IDLE:
                        return  # the proxy gave up mid-request (its client went away): `complete` stays False
                    received += data
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    current = Parsed(event.method, event.target, [(n, v) for n, v in event.headers], conn=number)
                    self.requests.append(current)
                    if conn.they_are_waiting_for_100_continue:
                        writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
                elif isinstance(event, h11.Data) and current is not None:
                    current.body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage) and current is not None:
                    current.complete = True
                    mark = len(received) - len(conn.trailing_data[0])
                    conn = await self._answer(conn, current, writer)
                    if conn is None:
                        return
                else:  # ConnectionClosed (or PAUSED after a close)
                    return
        except h11.RemoteProtocolError as exc:
            after = current.target if current else None
            self.errors.append(ParseError(number, after, str(exc), bytes(received[mark : mark + 300])))
        except (ConnectionError, h11.LocalProtocolError):
            pass
        finally:
            writer.close()

    async def _answer(self, conn: h11.Connection, req: Parsed, writer: asyncio.StreamWriter) -> h11.Connection | None:
        """Answer `req`; the connection's parser for the next request, or None when it closes."""
        raw = self.answers.get(req.target.split(b"?")[0])
        if raw is not None:
            writer.write(raw.data)
            await writer.drain()
            return None if raw.eof else h11.Connection(h11.SERVER)  # its head is ours: a fresh parser
        body = named(req.method, req.target, req.body)
        headers = [("content-length", str(len(body))), ("content-type", "text/plain")]
        rid = req.header(b"x-request-id")
        if rid is not None:
            headers.append(("x-request-id", rid.decode("latin-1")))
        writer.write(conn.send(h11.Response(status_code=200, headers=headers)) or b"")
        if req.method != b"HEAD":
            writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return None  # Connection: close
        conn.start_next_cycle()
        return conn
