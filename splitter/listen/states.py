"""The states of a client connection (`Conn`) and of a request on it (`Phase`), and `to`, the one mover of
either: a move the table (`NEXT`) does not list is a bug and raises (tests/unit/test_listen.py walks it)."""

from __future__ import annotations

import enum
from typing import Any


class Conn(enum.Enum):
    IDLE = "idle"  # a response is done, no request arriving: the keep-alive deadline runs
    HEAD = "head"  # a new connection, or a request head arriving with none in flight: the header deadline runs
    BUSY = "busy"  # a request is in flight (a pipelined one waits behind it, reading paused)
    DETACHED = "detached"  # in flight, its body read or dropped past the parser: nothing is read
    CLOSING = "closing"  # closes once what is written is out
    UPGRADED = "upgraded"  # the WebSocket protocol owns the transport
    CLOSED = "closed"


class Phase(enum.Enum):
    QUEUED = "queued"  # pipelined behind the request in flight
    RUNNING = "running"  # its app runs, no response yet
    SENDING = "sending"  # the head is out, the body is going
    DONE = "done"
    GONE = "gone"  # the client went away (or was cut) before the response was complete


NEXT: dict[enum.Enum, frozenset[Any]] = {
    Conn.IDLE: frozenset([Conn.HEAD, Conn.CLOSING, Conn.CLOSED]),
    Conn.HEAD: frozenset([Conn.BUSY, Conn.CLOSING, Conn.UPGRADED, Conn.CLOSED]),
    Conn.BUSY: frozenset([Conn.IDLE, Conn.DETACHED, Conn.CLOSING, Conn.UPGRADED, Conn.CLOSED]),
    Conn.DETACHED: frozenset([Conn.BUSY, Conn.CLOSING, Conn.CLOSED]),
    Conn.CLOSING: frozenset([Conn.CLOSED]),
    Conn.UPGRADED: frozenset(),
    Conn.CLOSED: frozenset(),
    Phase.QUEUED: frozenset([Phase.RUNNING, Phase.GONE]),
    Phase.RUNNING: frozenset([Phase.SENDING, Phase.GONE]),
    Phase.SENDING: frozenset([Phase.DONE, Phase.GONE]),
    Phase.DONE: frozenset(),
    Phase.GONE: frozenset(),
}


def to(holder: Any, new: Any) -> None:
    """The one mover of a connection's or a request's state: a move the table does not list is a bug here.
    (A tuple on the member, not NEXT itself: an enum's hash is a Python call, this runs a few times a request.)"""
    old = holder.state
    if new is not old:
        if new not in old.moves:
            raise RuntimeError(f"{type(holder).__name__}: no move from {old.name} to {new.name}")
        holder.state = new


# The members as module constants, for the per-request code: an Enum attribute (Conn.IDLE) costs ~60 ns in 3.11,
# a global ~9, and a request reads about twenty
IDLE, HEAD, BUSY, DETACHED, CLOSING, UPGRADED, CLOSED = Conn
QUEUED, RUNNING, SENDING, DONE, GONE = Phase

for _state, _moves in NEXT.items():
    _state.moves = tuple(_moves)  # type: ignore[attr-defined]
