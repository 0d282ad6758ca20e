"""Real processes on 127.0.0.1: stand-in upstreams, the two backends, splitter, redis-server."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


# Each xdist worker (`make test` runs several) hands out ports from its own block, below the kernel's ephemeral
# range (32768-60999): a port given to a child that has not bound it yet can then be taken neither by another
# worker nor by an outgoing connection, as one from bind(0) could. A random start keeps two sessions apart.
PORT_BLOCKS = range(20000, 32000, 1000)
_port_offsets = itertools.count(random.randrange(PORT_BLOCKS.step))

# A test that listens on fixed ports (make run's 8001-8003, 8080, 8081; BASE_PORT=9000's; the quickstart's 8090,
# 8091) runs on the xdist worker of this group, so never beside another one
FIXED_PORTS = pytest.mark.xdist_group("fixed_ports")


def ports_in_use(ports: tuple[int, ...], wait: float = 30.0) -> list[int]:
    """Which of `ports` something still listens on after up to `wait` seconds: the fixed-port test before this one
    on the worker may still be stopping what it started (a drain, a slow exit on a busy machine)."""
    deadline = time.monotonic() + wait
    while True:
        busy = []
        for port in ports:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    busy.append(port)
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(0.2)


def free_port() -> int:
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    first = PORT_BLOCKS[worker % len(PORT_BLOCKS)]
    for _ in range(PORT_BLOCKS.step):
        port = first + next(_port_offsets) % PORT_BLOCKS.step
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))  # free: nothing listens there, no connection lingers on it
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {first}-{first + PORT_BLOCKS.step - 1}")


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args} exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1).status_code == 200:  # ready, not just listening
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s: {last}")


class Proc:
    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, log: Path | None = None) -> None:
        self.args = args
        self.log = log
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        if log:
            with open(log, "ab") as out:
                self.p = subprocess.Popen(args, env=full_env, cwd=cwd or ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        else:
            self.p = subprocess.Popen(args, env=full_env, cwd=cwd or ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.p.pid

    def signal(self, sig: int) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, sig)

    def stop(self, timeout: float = 10) -> int | None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        return self.p.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.stop()


@pytest.fixture
def standin(procs: list[Proc], tmp_path: Path) -> Callable[[str], str]:
    """Start a stand-in upstream named NAME; returns its origin URL."""

    def start(name: str) -> str:
        port = free_port()
        p = Proc([PY, str(ROOT / "tests" / "standin.py"), "--port", str(port), "--name", name], log=tmp_path / f"standin-{name}.log")
        procs.append(p)
        wait_http(f"http://127.0.0.1:{port}/ready", proc=p.p)
        return f"http://127.0.0.1:{port}"

    return start


class Splitter:
    def __init__(self, proc: Proc, port: int, admin_port: int, config: Path) -> None:
        self.proc, self.port, self.admin_port, self.config = proc, port, admin_port, config
        self.url = f"http://127.0.0.1:{port}"
        self.admin = f"http://127.0.0.1:{admin_port}"

    def logs(self) -> list[dict[str, Any]]:
        import json

        return [json.loads(line) for line in self.proc.output().splitlines() if line.startswith("{")]

    def wait_log(self, match: Callable[[dict[str, Any]], bool], timeout: float = 3.0) -> dict[str, Any]:
        """The first JSON log entry that matches; logs are written in batches every 0.1 s."""
        return eventually(lambda: next((e for e in self.logs() if match(e)), None), timeout=timeout)  # type: ignore[no-any-return]

    def metrics(self) -> str:
        return httpx.get(self.admin + "/metrics", timeout=5).text

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of one series, labels matched exactly (order-free)."""
        want = {f'{k}="{v}"' for k, v in labels.items()}
        for line in self.metrics().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                series, _, value = line.rpartition(" ")
                got = set(series[series.find("{") + 1 : -1].split(",")) if "{" in series else set()
                if got == want:
                    return float(value)
        return None


@pytest.fixture
def splitter(procs: list[Proc], tmp_path: Path) -> Callable[..., Splitter]:
    """Start `splitter serve` on a routes.yaml text; waits for /readyz. Its state file (the embedded store,
    next to routes.yaml) is new unless `config` names the file of an earlier start (a restart)."""

    def start(routes_yaml: str, env: dict[str, str] | None = None, args: list[str] | None = None, config: Path | None = None, ready: bool = True) -> Splitter:
        cfg = config or tmp_path / "routes.yaml"
        if config is None:  # a fresh routes.yaml is a fresh proxy: the state file an earlier one left goes
            for old in tmp_path.glob("splitter-state.db*"):
                old.unlink()
        if config is None or not cfg.exists():
            cfg.write_text(routes_yaml)
        port, admin_port = free_port(), free_port()
        log = tmp_path / f"splitter-{port}.log"
        p = Proc([PY, "-m", "splitter", "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--admin-port", str(admin_port), *(args or [])], env=env, log=log)
        procs.append(p)
        s = Splitter(p, port, admin_port, cfg)
        if ready:
            wait_http(s.admin + "/readyz", proc=p.p)
            deadline = time.monotonic() + 10
            while httpx.get(s.admin + "/readyz").status_code != 200:
                assert time.monotonic() < deadline, "splitter never became ready"
                time.sleep(0.05)
        return s

    return start


def routes_yaml(legacy: str, new: str, routes: str = "", extra: str = "", environment: str = "production") -> str:
    return f"""environment: {environment}
backends:
  legacy: {{url: "{legacy}", read_timeout: 2}}
  new: {{url: "{new}", read_timeout: 2}}
user_id:
  - header: X-User-ID
  - jwt_sub: Authorization
  - cookie: user_id
anonymous: legacy
routes:
{routes or '''  - name: auth
    prefix: /api/auth
    percent: 50
  - name: upload
    prefix: /api/upload
    percent: 0
  - name: resume_review
    prefix: /api/resume
    percent: 100'''}
unmatched: legacy
{extra}
"""


@pytest.fixture(scope="session")
def redis_server_bin() -> str:
    path = shutil.which("redis-server")
    if path is None:
        pytest.fail("redis-server is not installed: `make test` installs it (apt-get install redis-server)")
    return path


class Redis:
    def __init__(self, binary: str, port: int, workdir: Path, args: tuple[str, ...] = (), password: str | None = None, conf: Path | None = None) -> None:
        self.binary, self.port, self.workdir = binary, port, workdir
        self.args, self.password = args, password  # extra redis-server flags (--replicaof, --requirepass, --sentinel)
        self.conf = conf  # a config file (a sentinel's: it rewrites it), given before the flags
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: Proc | None = None

    def start(self) -> None:
        base = [self.binary, *([str(self.conf)] if self.conf else []), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.proc = Proc([*base, *self.args], log=self.workdir / f"redis-{self.port}.log")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith((b"+PONG", b"-NOAUTH")):  # up (a password may be required)
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc:
            self.proc.p.kill()
            self.proc.p.wait()
            self.proc = None

    def command(self, *args: str) -> Any:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, password=self.password)
        try:
            return client.execute_command(*args)
        finally:
            client.close()


@pytest.fixture
def redis_server(redis_server_bin: str, tmp_path: Path) -> Iterator[Redis]:
    r = Redis(redis_server_bin, free_port(), tmp_path)
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium driven by Playwright, launched once per module (a launch takes about 1.5 s; browser_page
    gives each test its own context). Not once per session: between calls Playwright's sync API leaves its event
    loop marked running in this thread, and asyncio.run() in a later module's test would refuse to start."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("chromium is not installed: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"])
        yield launched
        launched.close()


@pytest.fixture
def browser_page(browser: Any) -> Iterator[Any]:
    """A page in a fresh context (no cookies or storage from the test before)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield context.new_page()
    context.close()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def eventually(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> Any:
    """Poll until check() is truthy; returns its value, fails with the last one.

    A server that is up but not ready yet (refused connection, a 503 in plain text where JSON is
    expected) is "not yet", not a failure: the poll goes on until the deadline.
    """
    deadline = time.monotonic() + timeout
    value: Any = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            value = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")


UNIT = Path(__file__).resolve().parent / "unit"


@pytest.fixture(autouse=True)
def unit_tests_start_no_process_and_listen_on_nothing(request: pytest.FixtureRequest) -> Iterator[None]:
    """The unit tier (`make test-unit`, the edit loop): no test in tests/unit starts a process or listens on a
    socket. Checked while each test runs, not by convention: one that does fails, naming what it did."""
    if UNIT not in Path(str(request.node.path)).resolve().parents:
        yield
        return
    did: list[str] = []
    popen, listen = subprocess.Popen.__init__, socket.socket.listen

    def no_popen(self: Any, *args: Any, **kwargs: Any) -> None:
        did.append(f"started a process: {args[0] if args else kwargs.get('args')!r}")
        popen(self, *args, **kwargs)

    def no_listen(self: socket.socket, *args: int) -> None:
        did.append(f"listened on {self.getsockname()!r}")
        listen(self, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subprocess.Popen, "__init__", no_popen)
        mp.setattr(socket.socket, "listen", no_listen)
        yield
    assert not did, f"a unit test may not: {did} (it belongs in tests/integration)"
