"""What can end an upstream exchange, and the one place that decides what a failure means for the client.

The tree (after httpx's _exceptions.py):
    UpstreamError            .status and .kind, what the client gets and how it is counted
      ├─ ConnectFailed        502 connect   refused, reset or closed before a response byte
      ├─ UpstreamTimeout      504 timeout   no connection / no bytes within the backend's timeouts
      ├─ ProtocolFailed       502 protocol  a malformed or unrelayable answer
      └─ Overflow             503 overflow  every connection of the backend busy past connect_timeout
    Aborted                  the client went away; the exchange was cancelled (not an upstream error)
      └─ SendTimedOut         the client took no bytes of a spliced body for the send timeout
    BodyCut                  raised by a request body stream that stops short because the answer came first
"""

from __future__ import annotations

import httptools


class UpstreamError(Exception):
    """`message` is what the client reads (one per kind); `detail` what the log says."""

    status = 502
    kind = "protocol"
    message = "upstream sent a malformed response"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ConnectFailed(UpstreamError):
    kind = "connect"
    message = "upstream connection failed"


class UpstreamTimeout(UpstreamError):
    status = 504
    kind = "timeout"
    message = "upstream timed out"


class ProtocolFailed(UpstreamError):
    kind = "protocol"


class Overflow(UpstreamError):
    status = 503
    kind = "overflow"
    message = "all connections to the backend are busy"


class Aborted(Exception):
    """The client went away and the exchange was cancelled."""


class SendTimedOut(Aborted):
    """The client took no response bytes for the send timeout: it is cut, the exchange cancelled."""


class BodyCut(Exception):
    """A request body stream stops short on purpose: the upstream answered (or failed) before it was all sent."""


def map_upstream_error(exc: BaseException) -> UpstreamError:
    """The one place that decides what an upstream failure means for the client."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout("upstream timed out")
    if isinstance(exc, httptools.HttpParserError):
        return ProtocolFailed(f"unparseable response: {exc}")
    if isinstance(exc, OSError):
        return ConnectFailed(f"{type(exc).__name__}: {exc}")
    return ProtocolFailed(f"upstream failed: {type(exc).__name__}: {exc}")
