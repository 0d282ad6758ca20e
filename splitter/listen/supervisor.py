"""The multi-worker supervisor: N worker processes (spawned, like uvicorn's) share both listening sockets."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import replace
from typing import Any

import structlog

from ..runtime import Settings
from .worker import STARTUP_FAILED, run_worker


class Supervisor:
    """SIGTERM/SIGINT: drain and stop every worker. SIGHUP: every worker reloads routes.yaml. SIGUSR2:
    rolling restart, one worker at a time, a new one started before the old one drains, so no request is
    refused. A handler per signal (uvicorn's supervisors/multiprocess.py has the same shape); the slow
    work (starting and joining workers) happens in `run`'s loop, not in a handler."""

    def __init__(self, settings: Settings, sockets: list[socket.socket], log_level: str) -> None:
        self.own_dir = not settings.multiprocess_dir
        self.settings = replace(settings, multiprocess_dir=settings.multiprocess_dir or _metrics_dir())
        self.sockets, self.log_level = sockets, log_level
        self.ctx = multiprocessing.get_context("spawn")
        self.log = structlog.get_logger("splitter")
        self.workers: list[Any] = []
        self.stopping = False
        self.restart = False  # a rolling restart was asked for (SIGUSR2)

    def run(self) -> int:
        mpdir = self.settings.multiprocess_dir
        assert mpdir is not None
        for name in os.listdir(mpdir):
            if name.endswith(".db"):
                os.unlink(os.path.join(mpdir, name))
        # set (not read) for prometheus_client, which reads it at import in each worker
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = mpdir
        self.workers = [self._start() for _ in range(self.settings.workers)]
        signal.signal(signal.SIGTERM, self.handle_term)
        signal.signal(signal.SIGINT, self.handle_int)
        signal.signal(signal.SIGHUP, self.handle_hup)
        signal.signal(signal.SIGUSR2, self.handle_usr2)
        try:
            while not self.stopping:
                if self.restart:
                    self.restart = False
                    self._rolling_restart()
                    continue
                self._replace_dead()
                time.sleep(0.2)
            for p in self.workers:
                p.join()
        finally:
            if self.own_dir:
                shutil.rmtree(mpdir, ignore_errors=True)
        return 0

    def handle_term(self, signum: int, frame: Any) -> None:
        self.stopping = True
        self._signal_all(signal.SIGTERM)

    def handle_int(self, signum: int, frame: Any) -> None:
        self.handle_term(signum, frame)

    def handle_hup(self, signum: int, frame: Any) -> None:
        self._signal_all(signal.SIGHUP)

    def handle_usr2(self, signum: int, frame: Any) -> None:
        self.restart = True

    def _start(self, wait: bool = False) -> Any:
        ready = self.ctx.Event()
        p = self.ctx.Process(
            target=run_worker, args=(self.settings, self.sockets, self.log_level, ready), daemon=False
        )  # fmt: skip
        p.ready = ready  # type: ignore[attr-defined]  # the child unpickles it after start(): keep it alive here
        p.start()
        if wait:
            ready.wait(60)
        return p

    def _signal_all(self, sig: int) -> None:
        for p in self.workers:
            if p.is_alive() and p.pid:
                os.kill(p.pid, sig)

    def _rolling_restart(self) -> None:
        self.log.info("rolling restart of workers")
        for i, old in enumerate(list(self.workers)):
            self.workers[i] = self._start(wait=True)  # accepting before the old one drains
            if old.pid and old.is_alive():
                os.kill(old.pid, signal.SIGTERM)
                old.join()

    def _replace_dead(self) -> None:
        for i, p in enumerate(self.workers):
            if not p.is_alive() and not self.stopping:
                if p.exitcode == STARTUP_FAILED:
                    self.log.error("worker failed to start; stopping")
                    self.handle_term(signal.SIGTERM, None)
                    return
                self.log.warning("worker died; restarting", pid=p.pid, exitcode=p.exitcode)
                self.workers[i] = self._start()


def _metrics_dir() -> str:
    return tempfile.mkdtemp(prefix="splitter-metrics-")
