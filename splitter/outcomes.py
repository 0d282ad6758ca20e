"""How a request ends, for HTTP (proxy.py) and WebSocket (websocket.py) alike: its metrics, the
guard's, rollout's and console's windows, and the canonical log line. Before #37 the WebSocket path
kept its own copy of this logic; now both call here.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog

from .logs import ACCESS
from .record import RequestRecord, ms

if TYPE_CHECKING:
    from .runtime import Runtime

_ws_log = structlog.get_logger("splitter.access")


class Outcomes:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.access_log = runtime.settings.access_log

    def finish(self, call: RequestRecord) -> None:
        """Every HTTP request ends here, whatever its exit: its metrics, the windows and the access-log
        line. OPTIONS * (no role) only logs; a refusal counts as rejected."""
        error = call.error
        elapsed = time.perf_counter() - call.start
        if call.refused:
            self.rt.metrics.rejected.labels(error).inc()
        elif error == "client_abort":
            self.rt.metrics.client_aborts.labels(call.route_name, call.handler).inc()
        elif call.role is not None and error != "send_timeout":  # a stalled client: counted as rejected by the server
            assert call.handler is not None
            failed = error is not None or call.status >= 500
            if failed:
                self.rt.metrics.error(call.route_name, call.role, call.handler, error or "status_5xx")
            timed = error is None or not call.head_sent  # a body cut short is no latency sample
            if timed:
                self.rt.observe(call.route_name, call.role, call.handler, call.status, elapsed)
            # the proxy's own limit is not the backend's failure: no window sample (a cohort's still counts)
            self.record(call, failed, error != "overflow", elapsed, error, timed)
        if self.access_log:
            self._log(call, elapsed)

    def upgrade(self, call: RequestRecord, status: int, result: str, kind: str | None = None) -> None:
        """A WebSocket handshake's end, as a request: accepted (101), refused by the backend or failed
        (`kind`: the error it is counted as)."""
        assert call.role is not None and call.handler is not None
        metrics = self.rt.metrics
        metrics.ws_connections.labels(call.route_name, call.role, call.handler, result).inc()
        if kind is not None:
            metrics.error(call.route_name, call.role, call.handler, kind)
        self.rt.observe(call.route_name, call.role, call.handler, status, time.perf_counter() - call.start)
        self.record(call, kind is not None)

    def record(
        self,
        call: RequestRecord,
        error: bool,
        judged: bool = True,
        elapsed: float | None = None,
        kind: str | None = None,
        timed: bool = True,
    ) -> None:
        """Feed the guard, rollout and console windows, for the routes that have them. A cohort's
        requests are not a random sample of either side: they are counted apart, never judged.
        An error type (no_new_errors) is the proxy's failure kind, else a status >= 400 or one the
        route's gates list: counted only on those paths. `timed`: the request's duration was observed
        (splitter_request_duration_seconds), so a cohort's is too (report.py takes it out)."""
        reason = call.reason
        if reason is not None and reason.startswith("cohort:") and call.role is not None:
            seconds = (time.perf_counter() - call.start if elapsed is None else elapsed) if timed else None
            self.rt.metrics.cohort_request(call.route_name, reason[7:], call.role, error, seconds)
            return
        if not judged:
            return
        windows = self.rt.windows.get(call.route_name)
        if windows is not None and call.role is not None:
            seconds = time.perf_counter() - call.start if elapsed is None else elapsed
            status = call.status
            if kind is None and (status >= 400 or status in windows.typed):
                kind = str(status)
            windows.record(call.role, time.time(), error, seconds, kind, call.path)

    def _log(self, call: RequestRecord, elapsed: float) -> None:
        if not ACCESS.enabled:
            return
        pid, timestamp = ACCESS.stamp()
        fields = {
            "event": "request",
            "request_id": call.request_id,
            "method": call.method,
            "path": call.path,
            "route": call.route_name,
            "handler": call.handler,
            "status": call.status,
            "duration_ms": ms(elapsed),
            "user_bucket": call.user_bucket,
            "client": call.client,
            "bytes_in": call.bytes_in,
            "bytes_out": call.bytes_out,
            "role": call.role,
            "backend": call.backend,
            "upstream_ms": call.upstream_ms,
            "reason": call.reason,
            "pid": pid,
            "level": "info",
            "timestamp": timestamp,
        }
        if call.client_request_id is not None and call.client_request_id != call.request_id:
            fields["client_request_id"] = call.client_request_id
        if call.error:
            fields["error"] = call.error
        if call.detail:
            fields["detail"] = call.detail
        ACCESS.write(fields)


def log_websocket(call: RequestRecord, status: int, **more: Any) -> None:
    """A WebSocket's line (`event: websocket`): at its end, or when its handshake failed."""
    _ws_log.info(
        "websocket", request_id=call.request_id, path=call.path, route=call.route_name, handler=call.handler,
        role=call.role, backend=call.backend, reason=call.reason, status=status, user_bucket=call.user_bucket,
        client=call.client, **more,
    )  # fmt: skip
