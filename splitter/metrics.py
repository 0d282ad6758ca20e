"""The registry and the metric objects. Names and labels are a contract: the Grafana dashboard,
the Prometheus alerts (deploy/) and operators' queries rely on them, so a rename is a breaking change.

One `observe()` per request. Labelled children are cached so the hot path does a
dict lookup instead of `labels()` each time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from . import __version__

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self, multiprocess_dir: str | None = None, with_redis: bool = False) -> None:
        disable_created_metrics()  # no *_created series: dashboards never read them
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        # In multiprocess mode values live in files; exposition reads them all back.
        reg: Any = None if multiprocess_dir else self.registry
        self.requests = Counter(
            "splitter_requests_total",
            "Requests answered, by route, backend, handler and status code.",
            ["route", "backend", "handler", "code"],
            registry=reg,
        )
        self.duration = Histogram(
            "splitter_request_duration_seconds",
            "Time from request start to the last response byte.",
            ["route", "backend", "handler"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.errors = Counter(
            "splitter_errors_total",
            "Upstream failures and 5xx answers, by kind (connect, timeout, protocol, status_5xx).",
            ["route", "backend", "handler", "kind"],
            registry=reg,
        )
        self.route_percent = Gauge(
            "splitter_route_percent",
            "Effective percent of users sent to new.",
            ["route"],
            registry=reg,
            multiprocess_mode="mostrecent",
        )
        self.kill_switch = Gauge(
            "splitter_kill_switch",
            "1 when the kill switch sends everything to legacy.",
            registry=reg,
            multiprocess_mode="mostrecent",
        )
        self.reloads = Counter(
            "splitter_config_reloads_total", "routes.yaml reloads by result.", ["result"], registry=reg
        )
        self.redis_up = (
            Gauge("splitter_redis_up", "1 when connected to Redis.", registry=reg, multiprocess_mode="mostrecent")
            if with_redis
            else None
        )
        self.rejected = Counter(
            "splitter_rejected_total", "Requests the proxy refused itself, by reason.", ["reason"], registry=reg
        )
        self.client_aborts = Counter(
            "splitter_client_aborts_total", "Clients that went away mid-request.", ["route", "handler"], registry=reg
        )
        self.guard_trips = Counter(
            "splitter_guard_trips_total", "Automatic rollbacks by the error guard.", ["route", "reason"], registry=reg
        )
        self.shadow = Counter(
            "splitter_shadow_total", "Shadow comparisons by result.", ["route", "result"], registry=reg
        )
        events = "advanced, done, rolled_back, aborted, paused, resumed, promoted, awaiting_approval"
        about = f"Rollout transitions by event ({events})."
        self.rollout_events = Counter("splitter_rollout_events_total", about, ["route", "event"], registry=reg)
        self.rollout_step = Gauge(
            "splitter_rollout_step",
            "Current percent step of a gated rollout.",
            ["route"],
            registry=reg,
            multiprocess_mode="mostrecent",
        )
        self.ws_open = Gauge(
            "splitter_websocket_open",
            "WebSocket connections open now (summed over workers).",
            ["route", "backend", "handler"],
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.ws_connections = Counter(
            "splitter_websocket_connections_total",
            "WebSocket upgrades by result (accepted, refused, failed).",
            ["route", "backend", "handler", "result"],
            registry=reg,
        )
        self.ws_messages = Counter(
            "splitter_websocket_messages_total",
            "WebSocket messages relayed, by direction (upstream, downstream).",
            ["route", "backend", "direction"],
            registry=reg,
        )
        changes = "Changes by people and automation (history events), for Grafana annotations."
        self.changes = Counter("splitter_changes_total", changes, ["route", "action", "source"], registry=reg)
        failures = "Change notifications not delivered after every try."
        self.notify_failures = Counter("splitter_notify_failures_total", failures, registry=reg)
        self.in_flight = Gauge(
            "splitter_requests_in_flight",
            "Requests being answered now (summed over workers).",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.build_info = Gauge(
            "splitter_build_info",
            "Always 1; the version label says which splitter runs.",
            ["version"],
            registry=reg,
            multiprocess_mode="mostrecent",
        )
        self.build_info.labels(__version__).set(1)
        if not multiprocess_dir:
            ProcessCollector(registry=self.registry)  # process_* (CPU, memory, fds, start time)
        self._children: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}
        for result in ("success", "failure"):
            self.reloads.labels(result)

    def observe(self, route: str, backend: str, handler: str, code: int, seconds: float) -> None:
        key = (route, backend, handler, code)
        pair = self._children.get(key)
        if pair is None:
            pair = (
                self.requests.labels(route, backend, handler, str(code)),
                self.duration.labels(route, backend, handler),
            )
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def track_in_flight(self, read: Callable[[], float]) -> Any:
        """The in-flight gauge: read at scrape time in one process; in multiprocess mode (no
        callbacks there) the caller must inc()/dec() the gauge returned."""
        if self.multiprocess_dir:
            return self.in_flight
        self.in_flight.set_function(read)
        return None

    def error(self, route: str, backend: str, handler: str, kind: str) -> None:
        self.errors.labels(route, backend, handler, kind).inc()

    def render(self) -> bytes:
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
            # prometheus-client cannot aggregate process_* over workers: these are the answering worker's
            ProcessCollector(registry=registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
