"""Listening: the sockets, the worker process (listen/worker.py: uvicorn.Server with splitter's own HTTP
protocol, listen/http.py, and the WebSocket one, listen/websocket.py) and, for several workers, the
supervisor (listen/supervisor.py)."""

from __future__ import annotations

import socket
from dataclasses import replace

import structlog

from ..runtime import Settings
from .http import ABSOLUTE_FORM, MAX_HEAD_BYTES, HttpProtocol
from .supervisor import Supervisor
from .worker import run_worker

__all__ = ["ABSOLUTE_FORM", "MAX_HEAD_BYTES", "BindError", "HttpProtocol", "bind", "run_worker", "serve"]


class BindError(Exception):
    pass


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, log_level: str, environment: str) -> int:
    proxy_sock = bind(settings.host, settings.port)
    admin_sock = bind(settings.admin_host, settings.admin_port)
    settings = replace(settings, port=proxy_sock.getsockname()[1], admin_port=admin_sock.getsockname()[1])
    log = structlog.get_logger("splitter")
    log.info(
        "listening", proxy=f"http://{settings.host}:{settings.port}",
        admin=f"http://{settings.admin_host}:{settings.admin_port}", workers=settings.workers,
        environment=settings.environment or environment,
    )
    if settings.workers == 1:
        run_worker(settings, [proxy_sock, admin_sock], log_level)
        return 0
    return Supervisor(settings, [proxy_sock, admin_sock], log_level).run()
