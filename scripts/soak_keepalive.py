"""Upstream keep-alive soak: a real uvicorn backend that closes idle connections after 2 s
(`--timeout-keep-alive 2`) behind a real splitter, and a POST every 1.9-2.1 s (random), so each
POST lands near the moment the backend closes the connection the last one used. A POST is never
sent twice, so a connection reused as the backend closes it would be a 502 (issue #37); the
pool's `idle_timeout_s` (default 1.5 s) must give it up first.

    python scripts/soak_keepalive.py [--minutes 5]

Prints the POSTs sent and the 502s seen; exits 1 on any 502 or failed request.
tests/integration/test_soak_keepalive.py runs the same `soak` for ~25 s.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
KEEP_ALIVE_S = 2  # the backend's --timeout-keep-alive
INTERVAL_S = (1.9, 2.1)  # between POSTs: around the backend's keep-alive timeout


def backend_app() -> Any:
    """The backend (uvicorn --factory): reads the whole body, answers 200 with its size."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = b'{"received": %d}' % size
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until `url` answers 200 (ready, not just listening), or the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def stack(work: Path, idle_timeout_s: float | None = None) -> Iterator[str]:
    """The backend and a splitter in front of it (both sides on it); yields the proxy's URL.
    `idle_timeout_s`: the backend's setting (None: the default), to see the soak catch a wrong one."""
    backend_port, port, admin_port = _free_port(), _free_port(), _free_port()
    backend = f"http://127.0.0.1:{backend_port}"
    side = f'{{url: "{backend}"' + ("}" if idle_timeout_s is None else f", idle_timeout_s: {idle_timeout_s}}}")
    (work / "routes.yaml").write_text(
        f"environment: production\nbackends:\n  legacy: {side}\n  new: {side}\n"
        "routes:\n  - {name: soak, prefix: /soak, percent: 50}\nunmatched: legacy\n"
    )
    started: list[subprocess.Popen[bytes]] = []
    log = open(work / "soak.log", "ab")  # noqa: SIM115 - closed below, after both processes
    try:
        started.append(subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "soak_keepalive:backend_app",
             "--app-dir", str(ROOT / "scripts"), "--host", "127.0.0.1", "--port", str(backend_port),
             "--timeout-keep-alive", str(KEEP_ALIVE_S), "--log-level", "warning", "--no-access-log"],
            stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip
        _wait_ready(backend + "/ready", started[0])
        started.append(subprocess.Popen(
            [sys.executable, "-m", "splitter", "serve", "--config", str(work / "routes.yaml"), "--host", "127.0.0.1",
             "--port", str(port), "--admin-port", str(admin_port), "--no-access-log"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip
        _wait_ready(f"http://127.0.0.1:{admin_port}/readyz", started[1])
        yield f"http://127.0.0.1:{port}"
    finally:
        for proc in reversed(started):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def soak(url: str, seconds: float, rng: random.Random) -> dict[str, int]:
    """POST to the proxy every 1.9-2.1 s for `seconds`: counts of sent, 502 and other failures."""
    counts = {"sent": 0, "502": 0, "failed": 0}
    end = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=10) as client:
        while time.monotonic() < end:
            time.sleep(rng.uniform(*INTERVAL_S))  # the point: each POST near the backend's idle close
            counts["sent"] += 1
            uid = str(rng.randrange(1_000_000))
            try:
                r = client.post("/soak/item", content=b'{"n": %d}' % counts["sent"], headers={"X-User-ID": uid})
            except httpx.HTTPError:
                counts["failed"] += 1
                continue
            if r.status_code == 502:
                counts["502"] += 1
            elif r.status_code != 200:
                counts["failed"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to send POSTs (default 5)")
    parser.add_argument("--idle-timeout", type=float, default=None, help="the backends' idle_timeout_s (a control)")
    parser.add_argument("--seed", type=int, default=None, help="the intervals' random seed (default: a new one)")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        print("soak_keepalive: --minutes must be above 0", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), args.idle_timeout) as url:
        counts = soak(url, args.minutes * 60, random.Random(args.seed))
    print(f"{counts['sent']} POSTs in {args.minutes:g} min: {counts['502']} 502s, {counts['failed']} other failures")
    return 1 if counts["502"] or counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
