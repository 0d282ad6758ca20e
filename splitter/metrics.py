"""The registry and the metric objects. Names and labels are a contract: the Grafana dashboard,
the Prometheus alerts (deploy/) and operators' queries rely on them, so a rename is a breaking change.

One `observe()` per request. In one process the request count and duration are plain numbers
(`Traffic`) turned into metric families at scrape time; with several workers they are prometheus_client's
children (values in its files), cached so the hot path does a dict lookup instead of `labels()` each time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import floatToGoString

from . import __version__

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NOTIFY_DROPPED = ("queue_full", "deadline", "failed", "shutdown")  # notify.py's reasons, each shown from 0
REQUESTS_ABOUT = "Requests answered, by route, backend, handler and status code."
DURATION_ABOUT = "Time from request start to the last response byte."
DURATION_LABELS = ("route", "backend", "handler")
REQUESTS_LABELS = (*DURATION_LABELS, "code")


class Traffic:
    """splitter_requests_total and splitter_request_duration_seconds in one process: plain numbers a
    request adds to (no lock, no Python loop over the buckets: prometheus_client's two children took
    ~1.1 us a request, three locks and that loop; this ~0.3 us), made into the two metric families
    when Prometheus scrapes (a collector of the registry). The event loop is the only writer."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.les = [floatToGoString(b) for b in bounds] + ["+Inf"]
        # (route, backend, handler, code) -> [requests, the durations of (route, backend, handler)]
        self.rows: dict[tuple[str, str, str, int], list[Any]] = {}
        # (route, backend, handler) -> [sum of seconds, then one count per bucket (not cumulative), +Inf's last]
        self.durations: dict[tuple[str, str, str], list[float]] = {}

    def observe(self, route: str, backend: str, handler: str, code: int, seconds: float) -> None:
        row = self.rows.get((route, backend, handler, code))
        if row is None:
            key = (route, backend, handler)
            durations = self.durations.setdefault(key, [0.0] * (len(self.bounds) + 2))
            row = self.rows[(route, backend, handler, code)] = [0, durations]
        row[0] += 1
        durations = row[1]
        durations[0] += seconds
        durations[1 + bisect_left(self.bounds, seconds)] += 1  # the first bucket whose `le` holds it

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("splitter_requests_total", REQUESTS_ABOUT, labels=REQUESTS_LABELS)
        for (route, backend, handler, code), row in self.rows.items():
            requests.add_metric([route, backend, handler, str(code)], row[0])
        yield requests
        duration = HistogramMetricFamily("splitter_request_duration_seconds", DURATION_ABOUT, labels=DURATION_LABELS)
        for labels, counts in self.durations.items():
            buckets, total = [], 0.0
            for le, n in zip(self.les, counts[1:], strict=True):
                total += n
                buckets.append((le, total))
            duration.add_metric(list(labels), buckets, counts[0])
        yield duration


class Metrics:
    def __init__(self, multiprocess_dir: str | None = None, with_redis: bool = False) -> None:
        disable_created_metrics()  # no *_created series: dashboards never read them
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        # In multiprocess mode values live in files; exposition reads them all back.
        reg: Any = None if multiprocess_dir else self.registry
        self._define_traffic(reg)
        self._define_control(reg, with_redis)
        self.build_info.labels(__version__).set(1)
        if not multiprocess_dir:
            ProcessCollector(registry=self.registry)  # process_* (CPU, memory, fds, start time)
        self._children: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}
        self._cohort_children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}
        self._cohort_tally: dict[tuple[str, str], int] = {}  # (route, cohort) -> requests since take_cohort_tally()
        for result in ("success", "failure", "revoked"):  # revoked: a deleted or emptied tokens file
            self.reloads.labels(result)
        for reason in NOTIFY_DROPPED:
            self.notify_dropped.labels(reason)

    def _define_traffic(self, reg: Any) -> None:
        """What requests and WebSockets did: counts, durations, errors, aborts, in flight."""
        rbh = ["route", "backend", "handler"]
        live: Final = "livesum"  # a gauge's value over workers: their sum
        buckets = DURATION_BUCKETS
        self.observe: Callable[[str, str, str, int, float], None]
        if reg is None:  # several workers: the values live in prometheus_client's files
            self.requests = Counter("splitter_requests_total", REQUESTS_ABOUT, REQUESTS_LABELS, registry=None)
            about, name = DURATION_ABOUT, "splitter_request_duration_seconds"
            self.duration = Histogram(name, about, DURATION_LABELS, buckets=buckets, registry=None)
            self.observe = self._observe_children
        else:
            traffic = Traffic(buckets)
            reg.register(traffic)
            self.observe = traffic.observe
        about = "Upstream failures and 5xx answers, by kind (connect, timeout, protocol, status_5xx)."
        self.errors = Counter("splitter_errors_total", about, [*rbh, "kind"], registry=reg)
        about = "Requests the proxy refused itself, by reason."
        self.rejected = Counter("splitter_rejected_total", about, ["reason"], registry=reg)
        about = "Clients that went away mid-request."
        self.client_aborts = Counter("splitter_client_aborts_total", about, ["route", "handler"], registry=reg)
        about = "Shadow comparisons by result."
        self.shadow = Counter("splitter_shadow_total", about, ["route", "result"], registry=reg)
        about = "WebSocket connections open now (summed over workers)."
        self.ws_open = Gauge("splitter_websocket_open", about, rbh, registry=reg, multiprocess_mode=live)
        about = "WebSocket upgrades by result (accepted, refused, failed)."
        self.ws_connections = Counter("splitter_websocket_connections_total", about, [*rbh, "result"], registry=reg)
        about = "WebSocket messages relayed, by direction (upstream, downstream)."
        labels = ["route", "backend", "direction"]
        self.ws_messages = Counter("splitter_websocket_messages_total", about, labels, registry=reg)
        about = "Requests a route's cohort decided (kept out of the guard, rollout and console windows)."
        labels = ["route", "cohort", "backend"]
        self.cohort_requests = Counter("splitter_cohort_requests_total", about, labels, registry=reg)
        # the same requests' failures and durations, so `splitter report` can leave cohorts out of the
        # totals above (as the windows do): observed only for a cohort's requests, never for the rest
        about = "Failures among the requests a route's cohort decided (part of splitter_errors_total)."
        self.cohort_errors = Counter("splitter_cohort_errors_total", about, labels, registry=reg)
        about = "Durations of the requests a route's cohort decided (part of splitter_request_duration_seconds)."
        self.cohort_duration = Histogram(
            "splitter_cohort_request_duration_seconds", about, ["route", "backend"], buckets=buckets, registry=reg
        )
        about = "Requests being answered now (summed over workers)."
        self.in_flight = Gauge("splitter_requests_in_flight", about, registry=reg, multiprocess_mode=live)

    def _define_control(self, reg: Any, with_redis: bool) -> None:
        """What steers the split: percent, kill switch, reloads, Redis, guard, rollouts, changes, version."""
        last: Final = "mostrecent"  # a gauge's value over workers: the latest one
        about = "Effective percent of users sent to new."
        self.route_percent = Gauge("splitter_route_percent", about, ["route"], registry=reg, multiprocess_mode=last)
        about = "1 when the kill switch sends everything to legacy."
        self.kill_switch = Gauge("splitter_kill_switch", about, registry=reg, multiprocess_mode=last)
        about = "routes.yaml and tokens file reloads by result (revoked: a deleted or emptied tokens file)."
        self.reloads = Counter("splitter_config_reloads_total", about, ["result"], registry=reg)
        about = "1 when connected to Redis."
        self.redis_up = Gauge("splitter_redis_up", about, registry=reg, multiprocess_mode=last) if with_redis else None
        about = "Automatic rollbacks by the error guard."
        self.guard_trips = Counter("splitter_guard_trips_total", about, ["route", "reason"], registry=reg)
        events = "advanced, done, rolled_back, aborted, paused, resumed, promoted, awaiting_approval, stalled, baking, "
        events += "ready_to_retire, retired"
        about = f"Rollout transitions by event ({events})."
        self.rollout_events = Counter("splitter_rollout_events_total", about, ["route", "event"], registry=reg)
        about = "When legacy last served one of the route's requests (unix seconds, fleet-wide): ready to retire."
        name = "splitter_route_legacy_last_request_timestamp_seconds"
        self.legacy_last = Gauge(name, about, ["route"], registry=reg, multiprocess_mode="max")
        about = "Current percent step of a gated rollout."
        self.rollout_step = Gauge("splitter_rollout_step", about, ["route"], registry=reg, multiprocess_mode=last)
        about = "Changes by people and automation (history events), for Grafana annotations."
        self.changes = Counter("splitter_changes_total", about, ["route", "action", "source"], registry=reg)
        about = "Change notifications not delivered (every reason of splitter_notify_dropped_total)."
        self.notify_failures = Counter("splitter_notify_failures_total", about, registry=reg)
        about = f"Change notifications dropped, by reason ({', '.join(NOTIFY_DROPPED)})."
        self.notify_dropped = Counter("splitter_notify_dropped_total", about, ["reason"], registry=reg)
        about = "Always 1; the version label says which splitter runs."
        self.build_info = Gauge("splitter_build_info", about, ["version"], registry=reg, multiprocess_mode=last)

    def _observe_children(self, route: str, backend: str, handler: str, code: int, seconds: float) -> None:
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

    def cohort_request(self, route: str, cohort: str, backend: str, failed: bool, seconds: float | None) -> None:
        """One request a cohort decided: counted, its failure and (when the request's own duration was
        observed) its duration too, so they can be taken out of the route's totals."""
        key = (route, cohort, backend)
        children = self._cohort_children.get(key)
        if children is None:
            children = self._cohort_children[key] = (
                self.cohort_requests.labels(route, cohort, backend),
                self.cohort_errors.labels(route, cohort, backend),
                self.cohort_duration.labels(route, backend),
            )
        children[0].inc()
        if failed:
            children[1].inc()
        if seconds is not None:
            children[2].observe(seconds)
        tally = self._cohort_tally
        key2 = (route, cohort)
        tally[key2] = tally.get(key2, 0) + 1

    def take_cohort_tally(self) -> dict[tuple[str, str], int]:
        """This process's cohort requests by (route, cohort) since the last take (for the console's
        windows: the counter above cannot be read back per second)."""
        tally, self._cohort_tally = self._cohort_tally, {}
        return tally

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
