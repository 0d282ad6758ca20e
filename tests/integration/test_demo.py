"""`make run`: the whole demo answers through the proxy within 20 s, and Ctrl-C stops all three."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import FIXED_PORTS, ROOT, ports_in_use


def listening_ports(group: int) -> set[int]:
    """The TCP ports the processes of process group `group` listen on (/proc: each socket's inode, its state)."""
    inodes: set[str] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != group:
                continue
            for fd in (stat.parent / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except (OSError, ValueError, IndexError):
            continue  # a process that ended meanwhile
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@FIXED_PORTS
def test_demo_script_starts_four_processes_and_ctrl_c_stops_them(tmp_path):
    busy = ports_in_use((8001, 8002, 8003, 8080, 8081))
    assert not busy, f"ports {busy} are taken; stop what runs there to test the demo"
    env = {**os.environ, "PY": sys.executable, "DATABASE_URL": f"sqlite:///{tmp_path}/demo.db", "UPLOAD_DIR": str(tmp_path / "up"), "SPLITTER_STATE": str(tmp_path / "state.db"), "ACCESS_LOG": str(tmp_path / "access.log")}
    log = open(tmp_path / "demo.log", "wb")  # noqa: SIM115
    p = subprocess.Popen(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # ready, not just listening: the script announces the demo once all three answer their readiness URLs
        deadline = time.monotonic() + 20
        while "Ctrl-C stops all four" not in (tmp_path / "demo.log").read_text() and time.monotonic() < deadline:
            assert p.poll() is None, (tmp_path / "demo.log").read_text()
            time.sleep(0.1)
        r = httpx.get("http://localhost:8080/api/auth/me", headers={"X-User-ID": "alice"}, timeout=5)
        assert r.status_code == 401 and r.headers["x-splitter-handler"] in ("old_auth", "new_auth"), (tmp_path / "demo.log").read_text()
        # routes.yaml's cohorts and the upload route's own service: staff reach the new side at 0 %
        staff = {"X-User-ID": "alice", "X-Staff": "1"}
        r = httpx.get("http://localhost:8080/api/upload/1", headers=staff, timeout=5)
        assert r.headers["x-served-by"] == "upload_service" and r.headers["x-splitter-handler"] == "new_upload"
        r = httpx.get("http://localhost:8080/api/upload/1", headers={"X-User-ID": "alice"}, timeout=5)
        assert r.headers["x-served-by"] == "legacy_backend" and r.headers["x-splitter-handler"] == "old_upload"
        r = httpx.get("http://localhost:8080/api/auth/me", headers=staff, timeout=5)
        assert r.headers["x-served-by"] == "new_backend" and r.headers["x-splitter-handler"] == "new_auth"
        os.killpg(p.pid, signal.SIGINT)
        p.wait(15)
        assert not ports_in_use((8001, 8002, 8003, 8080, 8081), wait=10)
        out = (tmp_path / "demo.log").read_text()
        assert "curl -si localhost:8080/api/auth/me -H 'X-User-ID: alice'" in out
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        log.close()


@FIXED_PORTS
def test_demo_says_which_service_failed_to_start(tmp_path):
    busy = ports_in_use((8001, 8002, 8003, 8080, 8081))
    assert not busy, f"ports {busy} are taken; stop what runs there to test the demo"
    env = {**os.environ, "PY": sys.executable, "DATABASE_URL": f"sqlite:///{tmp_path}/demo.db", "UPLOAD_DIR": str(tmp_path / "up"), "SPLITTER_STATE": str(tmp_path / "state.db"), "ACCESS_LOG": str(tmp_path / "access.log")}
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a test before may leave TIME_WAITs on 8002
        squatter.bind(("127.0.0.1", 8002))  # new_backend cannot listen
        squatter.listen(1)
        r = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, start_new_session=True)
    assert r.returncode == 1
    assert "new_backend failed to start" in r.stderr and "demo is up" not in r.stdout, r.stderr[-2000:]
    assert not ports_in_use((8001, 8003, 8080, 8081), wait=10), "the others were stopped"


def test_make_run_sets_jwt_secret_so_no_backend_warns_and_faults_can_target_one_backend(procs, tmp_path):
    """demo.sh exports JWT_SECRET (the development default): "not set" would be false. NEW_FAULT_ERROR_RATE fails
    new alone; FAULT_ERROR_RATE still fails both (every backend reads it, the prefixed ones only theirs)."""
    from backends import start_backend

    demo_env = subprocess.run(["bash", "-c", "grep '^export JWT_SECRET=' scripts/demo.sh"], cwd=ROOT, capture_output=True, text=True).stdout
    dev_default = demo_env.split(":-", 1)[1].rstrip("}\n")
    legacy = start_backend(procs, "legacy", tmp_path, {"JWT_SECRET": dev_default, "NEW_FAULT_ERROR_RATE": "1"})
    new = start_backend(procs, "new", tmp_path, {"JWT_SECRET": dev_default, "NEW_FAULT_ERROR_RATE": "1"})
    assert httpx.get(legacy + "/api/auth/me").status_code == 401 and httpx.get(new + "/api/auth/me").status_code == 500
    both = tmp_path / "both"
    both.mkdir()
    unset = {"JWT_SECRET": "", "FAULT_ERROR_RATE": "1"}
    legacy2, new2 = start_backend(procs, "legacy", both, unset), start_backend(procs, "new", both, {**unset, "NEW_FAULT_ERROR_RATE": "0"})
    assert httpx.get(legacy2 + "/api/auth/me").status_code == 500, "FAULT_ERROR_RATE applies to each backend"
    assert httpx.get(new2 + "/api/auth/me").status_code == 401, "NEW_FAULT_ERROR_RATE=0 wins for new"
    logs = {p: p.read_text() for p in (tmp_path / "legacy.log", tmp_path / "new.log", both / "legacy.log")}
    assert "JWT_SECRET not set" not in logs[tmp_path / "legacy.log"] + logs[tmp_path / "new.log"]
    assert "legacy_backend: JWT_SECRET not set" in logs[both / "legacy.log"], "still warns when it is not set"


def test_readme_and_the_docs_quote_urls_with_a_query_string():
    """zsh expands an unquoted ? (no matches found): every curl URL with a query string is quoted."""
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    lines = [line for page in pages for line in page.read_text().splitlines()]
    assert any(re.search(r"curl .*'[^']*\?", line) for line in lines), "the check still sees the quoted ones"
    unquoted = [line for line in lines if re.search(r"curl [^'\"]*\s[^\s'\"]*\?", line)]
    assert unquoted == []


@FIXED_PORTS
def test_base_port_moves_the_whole_stack_and_the_terminal_shows_no_request(tmp_path):
    """BASE_PORT=9000: legacy 9001, new 9002, upload_service 9003, proxy 9080, admin 9081, on the routes file as
    written (--backend-url, so an edit still reloads; here ROUTES=examples/rollout.yaml); the per-request lines go
    to the access log file the banner names, the terminal keeps the banner."""
    ports = (9001, 9002, 9003, 9080, 9081)
    busy = ports_in_use(ports + (8001, 8002, 8003, 8080, 8081))  # the default ports too: checked free below
    assert not busy, f"ports {busy} are taken; stop what runs there to test the demo"
    access = tmp_path / "access.log"
    env = {**os.environ, "PY": sys.executable, "BASE_PORT": "9000", "ACCESS_LOG": str(access), "ROUTES": "examples/rollout.yaml",
           "DATABASE_URL": f"sqlite:///{tmp_path}/demo.db", "UPLOAD_DIR": str(tmp_path / "up"), "SPLITTER_STATE": str(tmp_path / "state.db")}
    out = tmp_path / "demo.log"
    with open(out, "wb") as log:
        p = subprocess.Popen(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while "Ctrl-C stops all four" not in out.read_text() and time.monotonic() < deadline:
            assert p.poll() is None, out.read_text()
            time.sleep(0.1)
        banner = out.read_text()
        for line in ("proxy          http://localhost:9080", "http://127.0.0.1:9081/metrics", "legacy         http://127.0.0.1:9001",
                     "new            http://127.0.0.1:9002", "upload_service http://127.0.0.1:9003", f"access log     {access}",
                     "curl -si localhost:9080/api/auth/me -H 'X-User-ID: alice'", "export SPLITTER_ADMIN_URL=http://127.0.0.1:9081"):
            assert line in banner, banner
        assert "routes         examples/rollout.yaml" in banner, banner
        (rollout,) = httpx.get("http://127.0.0.1:9081/admin/rollouts", timeout=5).json()  # ROUTES= served
        assert rollout["route"] == "auth" and rollout["steps"] == [20, 50, 100]
        staff = {"X-User-ID": "alice", "X-Staff": "1"}
        r = httpx.get("http://localhost:9080/api/upload/1", headers=staff, timeout=5)
        assert r.headers["x-served-by"] == "upload_service" and r.headers["x-splitter-handler"] == "new_upload"
        r = httpx.get("http://localhost:9080/api/upload/1", headers={"X-User-ID": "alice"}, timeout=5)
        assert r.headers["x-served-by"] == "legacy_backend"
        rid = r.headers["x-request-id"]
        assert listening_ports(p.pid) == set(ports), "the demo listens on the moved ports, none of the default ones"
        # the access log is written in batches (0.1 s): wait for this request's own line, then read the terminal
        deadline = time.monotonic() + 10
        while rid not in (access.read_text() if access.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rid in access.read_text()
        os.killpg(p.pid, signal.SIGINT)
        p.wait(15)
        terminal = out.read_text()
        assert rid not in terminal and '"request_id"' not in terminal and "/api/upload" not in terminal.replace(banner, ""), terminal
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
