"""One worker process: the app under uvicorn.Server (sockets, lifespan, signals, graceful shutdown) with
splitter's own HTTP protocol and the WebSocket one, and the process tuning a proxy needs (gc, malloc,
dying with its supervisor)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from ..runtime import Settings
from .http import HttpProtocol
from .websocket import ProxyWebSocketProtocol

STARTUP_FAILED = 3  # the exit code of a worker whose server never started: the supervisor stops


def run_worker(settings: Settings, sockets: list[socket.socket], log_level: str, ready: Any = None) -> None:
    import uvicorn  # loaded in a worker only: the CLI and the supervisor never need them

    from ..app import create_app
    from ..logs import setup_logging

    setup_logging(log_level, settings.access_log_path)
    if ready is not None:
        _die_with_parent()
    app = create_app(settings)
    # Start-up objects never become garbage: move them out of the collector's way, and
    # collect the young generation less often. A proxy allocates a few hundred short-lived
    # objects per request; the default threshold (700) means a collection every few
    # requests, which cost ~15% of throughput and most of the p99 in the benchmark.
    # Much higher (50,000) gains nothing more and lets cyclic garbage of aborted
    # requests (with their body chunks) pile up to tens of MiB between collections.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    _keep_freed_buffers()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            loop="uvloop",
            interface="asgi3",  # App.__call__ returns the awaitable (a plain def: uvicorn would guess ASGI 2)
            http=functools.partial(  # type: ignore[arg-type]
                HttpProtocol, header_timeout=settings.header_timeout, send_timeout=settings.send_timeout
            ),
            ws=functools.partial(  # type: ignore[arg-type]
                ProxyWebSocketProtocol, graceful_timeout=settings.graceful_timeout, send_timeout=settings.send_timeout
            ),
            # a reload does not change it: needs a restart
            ws_max_size=app.runtime.snapshot.config.websocket.max_message_bytes,
            lifespan="on",
            server_header=False,
            proxy_headers=False,  # trusted_proxies in routes.yaml decides, not uvicorn
            date_header=False,
            access_log=False,
            log_config=None,
            log_level="warning",
            timeout_graceful_shutdown=int(settings.graceful_timeout),
            timeout_keep_alive=int(settings.keepalive_timeout),
        )
    )
    if ready is not None:  # tell the supervisor once this worker accepts connections

        def announce() -> None:
            deadline = time.monotonic() + 60
            while not server.started and time.monotonic() < deadline:
                time.sleep(0.05)
            ready.set()

        threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=sockets)
    if not server.started:
        sys.exit(STARTUP_FAILED)


def _libc() -> Any:
    """The C library, for the two calls Python has no wrapper for (mallopt, prctl)."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _keep_freed_buffers() -> None:
    """Streaming allocates a bytes object per socket read (uvloop reads up to 256 KB at a time).
    glibc serves allocations that size with a fresh mmap and unmaps them on free, so every read
    paid page faults and page zeroing: a third of the CPU of a proxied 1 GiB download in perf.
    Serving them from the heap (freed memory reused, the heap trimmed past 16 MiB free) took a
    100 MiB download from ~1.1 to ~1.7 GB/s and an upload from ~0.45 to ~0.8 GB/s here. No-op
    where mallopt does not exist (musl, macOS)."""
    m_trim_threshold, m_mmap_threshold = -1, -3
    try:
        libc = _libc()
        libc.mallopt(m_mmap_threshold, 4 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 16 * 1024 * 1024)
    except (OSError, AttributeError):
        pass


def _die_with_parent() -> None:
    """A worker must not outlive its supervisor (a SIGKILLed supervisor would leave orphans holding
    the ports and serving an old config): the kernel sends SIGTERM when the parent dies, which
    closes the listeners at once and drains. gunicorn polls getppid() for the same reason."""
    pr_set_pdeathsig = 1
    parent = os.getppid()
    try:
        libc = _libc()
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()  # not Linux: poll instead
    if os.getppid() != parent or parent == 1:
        os.kill(os.getpid(), signal.SIGTERM)  # the parent died before the request was in place


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)
