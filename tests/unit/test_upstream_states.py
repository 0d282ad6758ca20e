"""The data plane's three state machines, walked whole (as test_rollout_states.py walks the rollout's):
an upstream exchange's Phase, an upstream connection's ConnState and a request body's BodyState each
move only along their table; every other move raises, naming both states. Then each is driven with a
fake transport and a fake client (uvicorn tests its protocols so): no socket, no process."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from splitter.body import BODY_MOVES, BodyState, RequestBody
from splitter.config import Backend
from splitter.refused import Refused
from splitter.upstream import (
    CONN_MOVES,
    HIGH_WATER,
    MOVES,
    Aborted,
    BodyCut,
    ConnectFailed,
    Connection,
    ConnState,
    Exchange,
    Phase,
    Pool,
    UpstreamTimeout,
)


def _walk(states: Any, table: dict[Any, Any], make: Any) -> tuple[int, int]:
    """Every (from, to) pair: allowed ones land on `to`, the rest raise and leave the state as it was."""
    moved = refused = 0
    for start in states:
        for to in states:
            thing = make()
            thing.state = start
            if to in table[start]:
                thing.move(to)
                assert thing.state is to
                moved += 1
            else:
                with pytest.raises(RuntimeError, match=f"from {start.name} to {to.name}"):
                    thing.move(to)
                assert thing.state is start
                refused += 1
    assert moved == sum(len(v) for v in table.values()) and moved + refused == len(states) ** 2
    return moved, refused


class _PhaseView:
    """An exchange seen through `state`, so the one walker serves all three tables."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ex = Exchange("GET", loop)

    @property
    def state(self) -> Phase:
        return self.ex.phase

    @state.setter
    def state(self, phase: Phase) -> None:
        self.ex.phase = phase

    def move(self, to: Phase) -> None:
        self.ex.move(to)


class FakeTransport:
    """What an upstream connection writes, and whether it was paused or closed."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False
        self.paused = False
        self.on_write: Any = None

    def get_extra_info(self, name: str) -> None:
        return None  # no socket: the pool's zero-timeout poll has nothing to look at

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.on_write is not None:
            self.on_write(data)

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class FakePool(Pool):
    """A pool whose new connections get a fake transport that answers each request with `answer`."""

    def __init__(
        self, answer: bytes | None = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", idle_s: float = 1.5,
        read_s: float = 5.0,
    ):
        super().__init__(Backend("legacy", "http://127.0.0.1:1", 1.0, read_s, idle_timeout_s=idle_s))
        self.answer = answer
        self.made: list[Connection] = []

    async def _connect(self) -> Connection:
        self.open += 1
        return self.connected()

    def connected(self) -> Connection:
        conn = Connection(self)
        transport = FakeTransport()
        conn.connection_made(transport)
        if self.answer is not None:
            answer = self.answer
            transport.on_write = lambda data: asyncio.get_running_loop().call_soon(conn.data_received, answer)
        self.made.append(conn)
        return conn

    def kept(self, conn: Connection) -> None:
        """`conn` as if an earlier request left it idle here."""
        conn.move(ConnState.IDLE)
        conn.idle_since = time.monotonic()
        self.idle.append(conn)


def test_every_phase_state_and_body_state_moves_only_along_its_table():
    loop = asyncio.new_event_loop()
    try:
        assert _walk(list(Phase), MOVES, lambda: _PhaseView(loop)) == (11, 14)
    finally:
        loop.close()
    assert _walk(list(ConnState), CONN_MOVES, lambda: Connection(FakePool())) == (6, 10)
    assert _walk(list(BodyState), BODY_MOVES, lambda: RequestBody(_never, 10, 1.0, None)) == (7, 29)


def test_closed_is_final_and_every_connection_and_body_state_can_end():
    assert CONN_MOVES[ConnState.CLOSED] == frozenset()
    assert all(ConnState.CLOSED in CONN_MOVES[s] for s in ConnState if s is not ConnState.CLOSED)
    ends = [s for s in BodyState if s is not BodyState.STREAMING]
    assert BODY_MOVES[BodyState.STREAMING] == frozenset(ends), "a streaming body can end every way"
    assert {s for s in ends if BODY_MOVES[s]} == {BodyState.TIMED_OUT, BodyState.CUT}


async def _never() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


# --- the pool and its connections, with a fake transport ----------------------------------------
def test_a_kept_alive_answer_returns_its_connection_idle_and_the_next_request_reuses_it():
    async def scenario() -> list[object]:
        pool = FakePool()
        seen: list[object] = []
        for _ in range(2):
            ex = Exchange("GET")
            await pool.send_request(ex, "GET", b"/a", [(b"host", b"x")], None, False)
            seen += [ex.status, await ex.read(), ex.phase]
            ex.release()
        conn = pool.made[0]
        seen += [len(pool.made), conn.state, pool.idle == [conn], pool.open]
        seen.append(conn.transport.written[0])  # type: ignore[union-attr]
        return seen

    assert asyncio.run(scenario()) == [
        200, b"ok", Phase.DONE, 200, b"ok", Phase.DONE, 1, ConnState.IDLE, True, 1,
        b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n",
    ]  # fmt: skip


def test_a_connection_idle_past_idle_timeout_s_is_closed_with_every_older_one_and_a_new_one_opens():
    async def scenario() -> tuple[list[ConnState], int, int]:
        pool = FakePool(idle_s=1.5)
        old, older = pool.connected(), pool.connected()
        pool.open = 2
        pool.kept(older)
        pool.kept(old)
        older.idle_since = old.idle_since = time.monotonic() - 1.6  # the backend may close them any moment
        ex = Exchange("POST")
        await pool.send_request(ex, "POST", b"/p", [(b"host", b"x"), (b"content-length", b"0")], None, False)
        assert await ex.read() == b"ok"
        ex.release()  # read whole: the new connection is kept
        return [old.state, older.state], len(pool.made), pool.open

    states, made, open_now = asyncio.run(scenario())
    assert states == [ConnState.CLOSED, ConnState.CLOSED] and made == 3 and open_now == 1


def test_a_byte_on_an_idle_connection_closes_it_and_the_pool_forgets_it():
    async def scenario() -> tuple[ConnState, bool, list[Connection], int]:
        pool = FakePool()
        conn = pool.connected()
        pool.open = 1
        pool.kept(conn)
        conn.data_received(b"HTTP/1.1 200 OK\r\n")  # a stray answer nobody asked for
        return conn.state, conn.transport.closed, pool.idle, pool.open  # type: ignore[union-attr]

    assert asyncio.run(scenario()) == (ConnState.CLOSED, True, [], 0)


def test_a_reused_connection_closed_before_any_answer_byte_retries_a_get_but_never_a_post():
    async def attempt(method: str) -> tuple[str, int]:
        pool = FakePool()
        dead = pool.connected()
        dead.transport.on_write = lambda _: asyncio.get_running_loop().call_soon(dead.connection_lost, None)  # type: ignore[union-attr]
        pool.open = 1
        pool.kept(dead)
        ex = Exchange(method)
        try:
            await pool.send_request(ex, method, b"/r", [(b"host", b"x")], None, False)
        except ConnectFailed:
            return "502", len(pool.made)
        finally:
            ex.release()
        return str(ex.status), len(pool.made)

    assert asyncio.run(attempt("GET")) == ("200", 2), "replayable: once more on a fresh connection"
    assert asyncio.run(attempt("POST")) == ("502", 1), "a POST is never sent twice"


def test_a_body_over_high_water_pauses_reading_until_the_proxy_takes_it():
    async def scenario() -> list[bool]:
        pool = FakePool(answer=None)
        conn = pool.connected()
        ex = Exchange("GET")
        ex.conn, conn.exchange = conn, ex
        size = HIGH_WATER + 10
        ex.feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * 10)
        ex.feed(b"y" * HIGH_WATER)
        paused = conn.transport.paused  # type: ignore[union-attr]
        while ex.read_nowait():
            pass
        return [paused, conn.transport.paused, ex.phase is Phase.DONE]  # type: ignore[union-attr]

    assert asyncio.run(scenario()) == [True, False, True]


def test_a_silent_upstream_times_out_after_read_timeout():
    async def scenario() -> tuple[str, ConnState]:
        pool = FakePool(answer=None, read_s=0.05)  # it never answers
        ex = Exchange("GET")
        try:
            await pool.send_request(ex, "GET", b"/slow", [(b"host", b"x")], None, False)
        except UpstreamTimeout as exc:
            return exc.kind, pool.made[0].state
        finally:
            ex.release()
        return "answered", pool.made[0].state

    assert asyncio.run(scenario()) == ("timeout", ConnState.CLOSED)


def test_the_read_timeout_is_one_timer_per_connection_rearmed_for_the_time_left_when_it_fires():
    """A wait does not make a timer when its connection has one; the timer, fired before the wait's
    deadline (armed by an earlier wait), waits for the time left; past the deadline it times the wait out."""

    async def scenario() -> list[object]:
        pool = FakePool(answer=None)
        conn = pool.connected()
        ex = Exchange("GET")
        ex.conn, conn.exchange, ex.read_timeout = conn, ex, 30.0
        ex.waiting()
        first = conn.timer
        ex.deadline = 0.0
        ex.waiting()  # the next wait on the same connection
        seen: list[object] = [first is not None and conn.timer is first]
        conn.check_deadline()  # early: the deadline is 30 s away
        seen += [conn.timer is not None and conn.timer is not first, ex.error]
        ex.deadline = asyncio.get_running_loop().time() - 0.001  # the wait's time is up
        conn.check_deadline()
        seen += [type(ex.error).__name__, conn.state, conn.timer]
        return seen

    assert asyncio.run(scenario()) == [True, True, None, "UpstreamTimeout", ConnState.CLOSED, None]


# --- the request body, with a fake client -------------------------------------------------------
def _receiver(*messages: dict[str, Any]) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if not queue:
            await asyncio.Event().wait()
        return queue.pop(0)

    return receive


async def _drain(body: RequestBody) -> tuple[list[bytes], BaseException | None]:
    got: list[bytes] = []
    try:
        async for chunk in body.chunks():
            got.append(chunk)
    except (Aborted, BodyCut, Refused) as exc:
        return got, exc
    return got, None


def test_a_request_body_ends_complete_gone_or_too_large():
    part = {"type": "http.request", "body": b"abc", "more_body": True}
    last = {"type": "http.request", "body": b"de", "more_body": False}

    async def run(receive: Any, limit: int = 100) -> tuple[BodyState, list[bytes], str]:
        body = RequestBody(receive, limit, 5.0, None, 5)
        got, exc = await _drain(body)
        return body.state, got, type(exc).__name__ if exc is None else f"{type(exc).__name__}{getattr(exc, 'status', '')}"

    assert asyncio.run(run(_receiver(part, last))) == (BodyState.COMPLETE, [b"abc", b"de"], "NoneType")
    assert asyncio.run(run(_receiver(part, {"type": "http.disconnect"}))) == (BodyState.GONE, [b"abc"], "Aborted")
    assert asyncio.run(run(_receiver(part, last), limit=4)) == (BodyState.TOO_LARGE, [b"abc"], "Refused413")


def test_a_silent_client_gets_a_408_once_the_body_timeout_passes():
    async def scenario() -> tuple[BodyState, int]:
        body = RequestBody(_receiver({"type": "http.request", "body": b"a", "more_body": True}), 100, 0.05, None)
        _, exc = await _drain(body)
        assert isinstance(exc, Refused)
        return body.state, exc.status

    assert asyncio.run(scenario()) == (BodyState.TIMED_OUT, 408)


@pytest.mark.parametrize("first", ["answer", "watchdog"])
def test_an_answer_and_the_body_watchdog_at_once_the_answer_wins_in_either_order(first):
    """The upstream's answer and the watchdog end the same wait for the client; whichever lands first,
    the body stops with BodyCut (the answer goes out), never a 408."""

    async def scenario() -> tuple[BodyState, str]:
        body = RequestBody(_receiver(), 100, 60.0, None)
        task = asyncio.ensure_future(_drain(body))
        while body.waiting_since is None:  # held in receive(): the one wait both can end
            await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        assert body.task is not None
        body.waiting_since -= 61.0  # the watchdog's time is up
        steps = [body.interrupt, lambda: body._watch(loop, body.task)]
        for step in steps if first == "answer" else steps[::-1]:
            step()
        _, exc = await task
        return body.state, type(exc).__name__

    assert asyncio.run(scenario()) == (BodyState.CUT, "BodyCut")


def test_a_body_whose_last_piece_was_on_its_way_when_the_answer_came_is_still_complete():
    async def scenario() -> tuple[BodyState, list[bytes]]:
        body = RequestBody(_receiver({"type": "http.request", "body": b"all", "more_body": False}), 100, 5.0, None)
        chunks = body.chunks()
        first = await chunks.__anext__()
        body.interrupt()  # the answer arrives while the last piece is written upstream
        rest = [c async for c in chunks]
        return body.state, [first, *rest]

    assert asyncio.run(scenario()) == (BodyState.COMPLETE, [b"all"])
