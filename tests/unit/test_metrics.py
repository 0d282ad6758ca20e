"""The request count and duration kept as plain numbers in one process (metrics.Traffic) scrape exactly as
prometheus_client's own Counter and Histogram would for the same requests: every sample, bucket
boundaries included (a duration equal to a bound is in that bucket: `le`)."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest

from splitter.metrics import DURATION_ABOUT, DURATION_BUCKETS, REQUESTS_ABOUT, Metrics, Traffic


def _samples(text: bytes) -> list[str]:
    return sorted(line for line in text.decode().splitlines() if line and not line.startswith("#"))


def test_traffic_scrapes_as_prometheus_clients_counter_and_histogram():
    disable_created_metrics()
    theirs = CollectorRegistry()
    rbh = ["route", "backend", "handler"]
    requests = Counter("splitter_requests_total", REQUESTS_ABOUT, [*rbh, "code"], registry=theirs)
    duration = Histogram("splitter_request_duration_seconds", DURATION_ABOUT, rbh, buckets=DURATION_BUCKETS, registry=theirs)
    ours = CollectorRegistry()
    traffic = Traffic(DURATION_BUCKETS)
    ours.register(traffic)
    rng = random.Random(7)
    # every bound itself, just above and below it, zero, and past the last bound (+Inf only)
    edges = [x for b in DURATION_BUCKETS for x in (b, b * 0.999, b * 1.001)] + [0.0, 31.0, 1e6]
    for i in range(3000):
        seconds = edges[i] if i < len(edges) else rng.choice([rng.random() * 0.05, rng.expovariate(2.0)])
        route, role = rng.choice(["auth", "orders", "unmatched"]), rng.choice(["legacy", "new"])
        handler, code = ("new_" if role == "new" else "old_") + route, rng.choice([200, 200, 404, 502])
        requests.labels(route, role, handler, str(code)).inc()
        duration.labels(route, role, handler).observe(seconds)
        traffic.observe(route, role, handler, code, seconds)
    assert _samples(generate_latest(ours)) == _samples(generate_latest(theirs))
    head = [line for line in generate_latest(ours).decode().splitlines() if line.startswith("#")]
    assert head == [line for line in generate_latest(theirs).decode().splitlines() if line.startswith("#")]


def test_one_process_scrapes_what_it_observed():
    metrics = Metrics()
    metrics.observe("auth", "new", "new_auth", 200, 0.003)
    metrics.observe("auth", "new", "new_auth", 200, 0.0025)
    text = metrics.render().decode()
    assert 'splitter_requests_total{backend="new",code="200",handler="new_auth",route="auth"} 2.0' in text
    assert 'splitter_request_duration_seconds_bucket{backend="new",handler="new_auth",le="0.0025",route="auth"} 1.0' in text
    assert 'splitter_request_duration_seconds_bucket{backend="new",handler="new_auth",le="0.005",route="auth"} 2.0' in text
    assert 'splitter_request_duration_seconds_count{backend="new",handler="new_auth",route="auth"} 2.0' in text
