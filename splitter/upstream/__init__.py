"""The upstream HTTP/1.1 client: one connection pool per backend (pool.py), one request/response on a
connection (exchange.py, over connection.py), and the one place that maps failures (errors.py).
Importers take the names from here."""

from ..headers import relayable
from .connection import CONN_MOVES, Connection, ConnState
from .errors import (
    Aborted,
    BodyCut,
    ConnectFailed,
    Overflow,
    ProtocolFailed,
    SendTimedOut,
    UpstreamError,
    UpstreamTimeout,
    map_upstream_error,
)
from .exchange import CONTINUE_WAIT, HIGH_WATER, MOVES, Exchange, Phase
from .pool import Pool, once

__all__ = [
    "CONN_MOVES", "CONTINUE_WAIT", "HIGH_WATER", "MOVES", "Aborted", "BodyCut", "ConnState", "ConnectFailed",
    "Connection", "Exchange", "Overflow", "Phase", "Pool", "ProtocolFailed", "SendTimedOut", "UpstreamError",
    "UpstreamTimeout", "map_upstream_error", "once", "relayable",
]  # fmt: skip
