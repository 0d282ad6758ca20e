"""The batched access-log writer: whole lines, and no busy loop when stdout is a full non-blocking pipe."""

import fcntl
import os
import threading
import time

import httpx
import pytest

from splitter.logs import BatchedLogger


def test_a_full_non_blocking_stdout_waits_instead_of_spinning():
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) | os.O_NONBLOCK)
    try:
        while True:  # fill the pipe
            os.write(w, b"x" * 65536)
    except BlockingIOError:
        pass
    log = BatchedLogger(w)
    cpu: list[float] = []

    def writer() -> None:
        t0 = time.thread_time()
        for i in range(50):
            log._pending.append(f'{{"event": "request", "n": {i}}}'.encode())
        log.flush()
        cpu.append(time.thread_time() - t0)

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(1.0)  # the writer is blocked on the full pipe all this time
    assert t.is_alive()
    drained = b""
    while t.is_alive() or not drained.endswith(b"}\n"):
        drained += os.read(r, 1 << 20)
        time.sleep(0.01)
    t.join(5)
    os.close(r)
    os.close(w)
    assert cpu and cpu[0] < 0.2, f"spent {cpu[0]:.2f} s of CPU waiting for a full pipe"
    lines = [line for line in drained.split(b"\n") if b"{\"event\"" in line]
    assert len(lines) == 50


@pytest.mark.parametrize("workers", [1, 2])
def test_access_log_goes_to_its_file_whole_lines_and_stdout_keeps_warnings(standin, splitter, tmp_path, workers):
    """--access-log PATH at --log-level warning (make run's terminal): every request's line in the file, one JSON
    object per line from every worker, none on stdout; a warning (a rejected reload) still on stdout."""
    import json

    from conftest import eventually, routes_yaml

    access = tmp_path / "access.log"
    args = ["--access-log", str(access), "--log-level", "warning", "--workers", str(workers)]
    s = splitter(routes_yaml(standin("legacy"), standin("new")), args=args)
    ids = [httpx.get(s.url + "/api/auth/x", headers={"X-User-ID": f"u{i}"}).headers["x-request-id"] for i in range(40)]
    lines = eventually(lambda: (t := access.read_text().splitlines()) and len(t) >= 40 and t, timeout=10)
    entries = [json.loads(line) for line in lines]  # whole lines: each parses
    assert sorted(e["request_id"] for e in entries) == sorted(ids) and {e["route"] for e in entries} == {"auth"}
    s.config.write_text("routes: [broken")
    s.wait_log(lambda e: e.get("level") == "error" and "reload" in e.get("event", ""), timeout=10)
    assert not any(rid in s.proc.output() for rid in ids) and '"request_id"' not in s.proc.output()
