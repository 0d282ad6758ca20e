"""splitter beside nginx and asgiproxy, measured in one run on this machine.

    make bench            (or: .venv/bin/python benchmarks/bench.py [--duration 5] [--rounds 7])

Starts a trivial nginx upstream, then drives the same wrk load (1 thread,
64 connections, a random X-User-ID per request) at: the upstream directly,
nginx split_clients, asgiproxy (with and without its access log), and splitter
with its full default feature set (metrics, access log, bucketing, header
handling, a guard's outcome window). Rounds are short and the order reverses
every round; ratios are taken within a round, between targets measured next to
each other, and their median is printed with their range. Then: added latency
at a paced 1,000 req/s, 1 GiB upload and download (direct, through nginx's
proxy, through splitter, in turn), RSS under 1,000 idle keep-alive connections,
and --workers 1 vs 2. splitter with 10,000 routes runs beside splitter with 3 in
every round (route matching walks path segments: the count must not cost req/s),
and so does splitter whose /api/auth carries 20 cohorts that never match (19 header
cohorts and a 10,000-member users list, all checked on every request), and splitter
with its state in memory (`--state :memory:`) beside the default embedded SQLite file
(no store I/O on the request path: the ratio must be 1).
--baseline REV runs splitter at that revision beside it everywhere but --workers
(req/s and CPU per request, latency, streams, idle RSS): before vs after, one run.
Only ratios within one run mean anything: this machine's CPU speed drifts by tens
of percent within a minute. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
PY = sys.executable
# A 100 MiB transfer lasts 35-60 ms here, so one scheduling hiccup moved a turn's share by
# tens of points; a 1 GiB transfer measures the sustained rate.
STREAM_MIB = 1024
STREAM_TURNS = 7


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], **kw: object) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **kw)  # type: ignore[call-overload]
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)


NGINX_CONF = """
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    keepalive_requests 1000000;
    upstream legacy {{ server 127.0.0.1:{upstream}; keepalive 128; }}
    upstream new {{ server 127.0.0.1:{upstream}; keepalive 128; }}
    split_clients "$http_x_user_id" $backend {{ 10% new; * legacy; }}
    server {{
        listen 127.0.0.1:{upstream};
        client_max_body_size 0;
        location /files/ {{ alias {work}/files/; }}
        location /upload {{
            root {work}/dav; dav_methods PUT; create_full_put_path on; client_body_temp_path {work}/dav-tmp;
        }}
        location / {{ return 200 "{{\\"ok\\": true}}\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{split};
        client_max_body_size 0;
        location / {{
            proxy_pass http://$backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def wrk(url: str, duration: int, connections: int = 64) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(HERE / "random_user.lua"), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    done = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_err = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "requests": float(done.group(1)) if done else 0.0,
        "p50": pct("50"),
        "p99": pct("99"),
        "non2xx": float(errors.group(1)) if errors else 0.0,
        "socket_errors": 1.0 if sock_err else 0.0,
    }


MANY = "splitter, 10,000 routes"
COHORTS = "splitter, 20 cohorts"
MEMORY = "splitter, state in memory"  # beside "splitter", whose state is the embedded SQLite file (the default)


def many_cohorts() -> str:
    """20 cohorts for /api/auth that wrk's requests never match, so each request checks them all:
    19 on headers (the X-User-ID it sends, and headers it does not send) and 10,000 users last."""
    ops = ("equals: nobody", "in: [a, b, c]", "prefix: admin-", "suffix: -staff")
    out = ["    cohorts:\n"]
    for i in range(19):
        header = "X-User-ID" if i % 2 else f"X-Cohort-{i}"
        out.append(f"      - {{name: c{i}, header: {header}, {ops[i % 4]}, to: new}}\n")
    members = ", ".join(f"member-{i}" for i in range(10_000))
    out.append(f"      - {{name: beta, users: [{members}], to: new}}\n")
    return "".join(out)


def many_routes(n: int) -> str:
    """n more routes for routes.yaml, nested two and three segments deep beside /api/auth."""
    out = []
    for i in range(n):
        prefix = f"/api/svc{i}" if i % 3 else f"/api/svc{i // 3}/v{i % 7}/items"
        out.append(f"  - name: extra_{i}\n    prefix: {prefix}\n    percent: {i % 101}\n")
    return "".join(out)


def rss_mib(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (workers), from /proc."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(x) for x in out]


async def paced_latency(port: int, rate: int, seconds: float) -> tuple[float, float]:
    """Open-loop: one request every 1/rate s, whatever the previous ones did; p50, p99 in ms."""
    import aiohttp

    lat: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as s:

        async def one(i: int) -> None:
            t0 = time.perf_counter()
            async with s.get(f"http://127.0.0.1:{port}/api/auth/me", headers={"X-User-ID": f"user-{i}"}) as r:
                await r.read()
            lat.append((time.perf_counter() - t0) * 1000)

        tasks = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.gather(*tasks)
    lat.sort()
    warm = lat[len(lat) // 10 :] if len(lat) > 100 else lat
    return statistics.median(warm), warm[int(len(warm) * 0.99) - 1]


def curl_speed(args: list[str], field: str) -> float:
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", f"%{{{field}}}", *args], capture_output=True, text=True, check=True
    ).stdout
    return float(out) / (1024 * 1024)


def idle_connections(port: int, n: int) -> list[socket.socket]:
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"GET /api/auth/me HTTP/1.1\r\nHost: x\r\nX-User-ID: idle-{i}\r\n\r\n".encode())
        socks.append(s)
    for s in socks:
        s.settimeout(10)
        s.recv(65536)
    return socks


ROUTES_YAML = """environment: production
backends:
  legacy: {{url: "http://127.0.0.1:{upstream}"}}
  new: {{url: "http://127.0.0.1:{upstream}"}}
user_id:
  - header: X-User-ID
  - jwt_sub: Authorization
  - cookie: user_id
anonymous: cookie
routes:
  - name: auth
    prefix: /api/auth
    percent: 10
{guard}  - name: upload
    prefix: /upload
    percent: 0
  - name: files
    prefix: /files
    percent: 0
{more}unmatched: legacy
"""
# the outcome window is on the hot path; --workers > 1 with a guard needs Redis (each worker would judge only
# its share), so the workers' file has none
GUARD = "    guard: {max_error_rate: 0.5, min_requests: 100000000, window_s: 60}\n"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    about = "rounds over all targets, the order reversed each round; medians are reported"
    ap.add_argument("--rounds", type=int, default=7, help=about)
    about = "also run splitter at this git revision (a worktree, same venv): before vs after in one run"
    ap.add_argument("--baseline", default=None, metavar="REV", help=about)
    about = "only the req/s table (no latency, throughput, RSS or workers)"
    ap.add_argument("--quick", action="store_true", help=about)
    return ap.parse_args()


def prepare(work: Path, upstream: int, split: int) -> None:
    """The files: nginx's config and the files it serves, and the four routes.yaml variants."""
    work.chmod(0o755)  # nginx workers run as an unprivileged user
    (work / "files").mkdir()
    (work / "dav").mkdir(mode=0o777)
    (work / "dav-tmp").mkdir(mode=0o777)
    with open(work / "files" / "big.bin", "wb") as f:
        f.truncate(STREAM_MIB * 1024 * 1024)
    (work / "nginx.conf").write_text(NGINX_CONF.format(work=work, upstream=upstream, split=split))
    (work / "routes.yaml").write_text(ROUTES_YAML.format(upstream=upstream, guard=GUARD, more=""))
    # the same routes plus 9,997 more (routes.py matches by segment): 10,000 vs 3 routes in one run
    many = ROUTES_YAML.format(upstream=upstream, guard=GUARD, more=many_routes(9_997))
    (work / "routes-10000.yaml").write_text(many)
    cohorts = ROUTES_YAML.format(upstream=upstream, guard=GUARD + many_cohorts(), more="")
    (work / "routes-cohorts.yaml").write_text(cohorts)
    (work / "routes-workers.yaml").write_text(ROUTES_YAML.format(upstream=upstream, guard="", more=""))


def serve(procs: Procs, config: Path, port: int, log: Path, *more: str, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    """`splitter serve` on 127.0.0.1:port, its output (the access log) to a file, as in production."""
    args = [PY, "-m", "splitter", "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--admin-port", str(free_port()), *more]
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    with open(log, "wb") as out:
        p = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    procs.procs.append(p)
    wait_port(port, timeout=60)
    return p


def throughput(targets: dict[str, int], args: argparse.Namespace, pids: dict[str, int]) -> None:
    """The req/s table and the ratios between targets measured next to each other. For the processes
    in `pids`, also the CPU time each request cost: unlike req/s it barely moves when something else
    on the machine takes a core, so it is the number to compare on a busy machine."""
    for port in targets.values():
        wrk(f"http://127.0.0.1:{port}/api/auth/me", 2)  # warm-up: pools, caches
    # This machine's CPU speed drifts by tens of percent within a minute, so one target's
    # median against another's is itself noisy. Rounds are short, the order reverses every
    # round (A B C, C B A, ...) so drift hits both sides of a pair alike, and each ratio is
    # taken within a round, between neighbours in time; the median of those ratios is shown.
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    order = list(targets)
    for i in range(args.rounds):
        for name in order if i % 2 == 0 else reversed(order):
            before = cpu_seconds(pids[name]) if name in pids else 0.0
            r = wrk(f"http://127.0.0.1:{targets[name]}/api/auth/me", args.duration)
            if name in pids and r["requests"]:
                r["cpu_us"] = (cpu_seconds(pids[name]) - before) / r["requests"] * 1e6
            rounds[name].append(r)
    results = {name: sorted(rs, key=lambda r: r["rps"])[len(rs) // 2] for name, rs in rounds.items()}
    print(f"{'target':<26} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10}   req/s of each round")
    for name, r in results.items():
        each = " ".join(f"{x['rps']:.0f}" for x in rounds[name])
        bad = "  (non-2xx!)" if any(x["non2xx"] for x in rounds[name]) else ""
        cpu = statistics.median(x["cpu_us"] for x in rounds[name]) if "cpu_us" in r else None
        cost = f"{cpu:>10.1f}" if cpu is not None else f"{'':>10}"
        print(f"{name:<26} {r['rps']:>10.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {cost}   {each}{bad}")

    def paired(a: str, b: str, key: str = "rps") -> str:
        ratios = sorted(x[key] / y[key] for x, y in zip(rounds[a], rounds[b], strict=True))
        return f"{statistics.median(ratios):.2f}x (rounds: {ratios[0]:.2f}..{ratios[-1]:.2f})"

    def p99(a: str, b: str) -> str:
        return f"p99 {results[a]['p99']:.2f} ms vs {results[b]['p99']:.2f} ms"

    quiet, sp = "asgiproxy, no access log", "splitter"
    print("\nratios are medians of per-round ratios (the two measured next to each other)")
    print(f"splitter / asgiproxy req/s, both logging: {paired(sp, 'asgiproxy')}   {p99(sp, 'asgiproxy')}")
    print(f"splitter / asgiproxy at its fastest (no access log) req/s: {paired(sp, quiet)}   {p99(sp, quiet)}")
    print(f"splitter / nginx split_clients req/s: {paired('splitter', 'nginx split_clients')}")
    print(f"splitter with 10,000 routes / with 3 routes req/s: {paired(MANY, 'splitter')}")
    print(f"splitter with 10,000 routes / with 3 routes CPU per request: {paired(MANY, 'splitter', 'cpu_us')}")
    print(f"splitter with 20 cohorts on the route / with none req/s: {paired(COHORTS, 'splitter')}")
    print(f"splitter with 20 cohorts on the route / with none CPU per request: {paired(COHORTS, 'splitter', 'cpu_us')}")
    print(f"splitter (state in SQLite, the default) / state in memory req/s: {paired('splitter', MEMORY)}")
    print(f"splitter (state in SQLite) / state in memory CPU per request: {paired('splitter', MEMORY, 'cpu_us')}")
    if args.baseline:
        base = f"splitter@{args.baseline}"
        print(f"splitter / {base} req/s: {paired('splitter', base)}   {p99('splitter', base)}")
        print(f"splitter / {base} CPU per request: {paired('splitter', base, 'cpu_us')} (below 1: cheaper)")


def latency(upstream: int, proxies: dict[str, int]) -> None:
    """Paced latency: direct and through each proxy (splitter, and the baseline if any) in turn, five
    times; medians."""
    lat: dict[str, list[tuple[float, float]]] = {"direct": [], **{name: [] for name in proxies}}
    for _ in range(5):
        lat["direct"].append(asyncio.run(paced_latency(upstream, 1000, 4)))
        for name, port in proxies.items():
            lat[name].append(asyncio.run(paced_latency(port, 1000, 4)))
    d50, d99 = (statistics.median(x[i] for x in lat["direct"]) for i in (0, 1))
    print(f"\nadded latency at 1,000 req/s (open loop, 4 s, median of 5 turns; direct {d50:.2f}/{d99:.2f} ms):")
    for name in proxies:
        s50, s99 = (statistics.median(x[i] for x in lat[name]) for i in (0, 1))
        print(f"  {name}: p50 {s50 - d50:+.2f} ms, p99 {s99 - d99:+.2f} ms  ({s50:.2f}/{s99:.2f})")


def streams(work: Path, ports: dict[str, int]) -> None:
    """1 GiB each way, direct and through the proxies in turn; each ratio against the direct run just before."""
    big = str(work / "files" / "big.bin")
    speeds: dict[str, dict[str, list[float]]] = {way: {name: [] for name in ports} for way in ("upload", "download")}
    for _ in range(STREAM_TURNS):
        for name, port in ports.items():
            speeds["upload"][name].append(curl_speed(["-T", big, f"http://127.0.0.1:{port}/upload"], "speed_upload"))
            down = curl_speed([f"http://127.0.0.1:{port}/files/big.bin"], "speed_download")
            speeds["download"][name].append(down)
    print(
        f"\n{STREAM_MIB} MiB through each, {STREAM_TURNS} times in turn "
        "(median MiB/s; % of the direct run just before; each turn's %)"
    )
    for way, by in speeds.items():
        line = f"{way + ':':<10} direct {statistics.median(by['direct']):.0f}"
        for name in [n for n in by if n != "direct"]:
            share = statistics.median(x / d for x, d in zip(by[name], by["direct"], strict=True))
            each = " ".join(f"{x / d:.0%}" for x, d in zip(by[name], by["direct"], strict=True))
            line += f", {name} {statistics.median(by[name]):.0f} ({share:.0%}: {each})"
        print(line)


def idle_rss(servers: dict[str, tuple[subprocess.Popen[bytes], int]]) -> None:
    for name, (sp, port) in servers.items():
        before = rss_mib([sp.pid])
        socks = idle_connections(port, 1000)
        time.sleep(1)
        during = rss_mib([sp.pid])
        for s in socks:
            s.close()
        print(f"\nRSS of {name} with 1,000 idle keep-alive connections: {during:.0f} MiB (idle: {before:.0f} MiB)")


def workers(procs: Procs, work: Path, duration: int) -> None:
    print("\n--workers scaling (multiprocess metrics on, no guard):")
    for n in (1, 2):
        port = free_port()
        w = serve(procs, work / "routes-workers.yaml", port, work / f"workers-{n}.log", "--workers", str(n))
        time.sleep(1.0)
        wrk(f"http://127.0.0.1:{port}/api/auth/me", 2)
        r = wrk(f"http://127.0.0.1:{port}/api/auth/me", duration)
        print(f"  --workers {n}: {r['rps']:.0f} req/s, p99 {r['p99']:.2f} ms")
        procs.stop(w)


def main() -> None:
    args = parse_args()
    for tool in ("nginx", "wrk", "curl"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is missing: apt-get install -y nginx wrk curl (make bench does)")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix="splitter-bench-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    upstream, split, asgi, asgi_quiet, proxy, many, cohorts, memory = (free_port() for _ in range(8))
    prepare(work, upstream, split)
    procs = Procs()
    try:
        procs.start([nginx, "-c", str(work / "nginx.conf"), "-g", "daemon off;"])
        wait_port(upstream)
        wait_port(split)
        asgiproxy = [PY, str(HERE / "asgiproxy_app.py"), f"http://127.0.0.1:{upstream}"]
        procs.start([*asgiproxy, str(asgi)])
        procs.start([*asgiproxy, str(asgi_quiet), "--no-access-log"])
        wait_port(asgi)
        wait_port(asgi_quiet)
        sp = serve(procs, work / "routes.yaml", proxy, work / "splitter.log")
        sp_many = serve(procs, work / "routes-10000.yaml", many, work / "splitter-10000.log")
        sp_cohorts = serve(procs, work / "routes-cohorts.yaml", cohorts, work / "splitter-cohorts.log")
        sp_memory = serve(procs, work / "routes.yaml", memory, work / "splitter-memory.log", "--state", ":memory:")
        pids = {"splitter": sp.pid, MANY: sp_many.pid, COHORTS: sp_cohorts.pid, MEMORY: sp_memory.pid}

        print(
            f"wrk -t1 -c64 -d{args.duration}s x {args.rounds} rounds (order reversed each round; medians shown), "
            "random X-User-ID, GET /api/auth/me"
        )
        print(
            "splitter: defaults (metrics, JSON access log to a file, bucketing, header handling, a guard's window); "
            "asgiproxy: its CLI defaults, and without its access log\n"
        )
        targets = {"direct (nginx upstream)": upstream, "nginx split_clients": split, "asgiproxy": asgi}
        targets.update({"asgiproxy, no access log": asgi_quiet, "splitter": proxy, MANY: many, COHORTS: cohorts})
        targets[MEMORY] = memory
        if args.baseline:
            tree = work / "baseline"
            add = ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.baseline]
            subprocess.run(add, check=True, capture_output=True)
            base_port = free_port()
            sp_base = serve(procs, work / "routes.yaml", base_port, work / "baseline.log", cwd=tree)
            pids[f"splitter@{args.baseline}"] = sp_base.pid
            targets[f"splitter@{args.baseline}"] = base_port
        throughput(targets, args, pids)
        if args.quick:
            return
        # the rest compares splitter with the baseline too, when there is one
        proxies, servers = {"splitter": proxy}, {"splitter": (sp, proxy)}
        if args.baseline:
            proxies[f"splitter@{args.baseline}"] = base_port
            servers[f"splitter@{args.baseline}"] = (sp_base, base_port)
        latency(upstream, proxies)
        streams(work, {"direct": upstream, "nginx proxy": split, **proxies})
        idle_rss(servers)
        procs.stop(sp)
        workers(procs, work, args.duration)
    finally:
        procs.stop_all()
        if args.baseline:
            remove = ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work / "baseline")]
            subprocess.run(remove, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
