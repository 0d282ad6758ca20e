"""examples/rollout.yaml, the rollout the docs tell a new user to run on `make run`'s stack: the reference
backends (legacy and new, real processes), the file as shipped (only the backend URLs moved to free ports),
traffic from many users, and `splitter rollout wait` as CI would call it: done when new is healthy, rolled
back when new answers 500 to 30 % of requests (NEW_FAULT_ERROR_RATE=0.3, as `NEW_FAULT_ERROR_RATE=0.3 make
run` sets it)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from backends import start_backend
from conftest import PY, ROOT

EXAMPLE = ROOT / "examples" / "rollout.yaml"


def _example(legacy: str, new: str) -> str:
    text = EXAMPLE.read_text()
    assert text.count("http://127.0.0.1:8001") == 1 and text.count("http://127.0.0.1:8002") == 1
    text = text.replace("http://127.0.0.1:8001", legacy).replace("http://127.0.0.1:8002", new)
    return text.replace("http://127.0.0.1:8003", new)  # upload's own service: new's code, as in make run


def _traffic(url: str, stop: threading.Event) -> threading.Thread:
    """What the quickstart's loop sends: /api/auth/me from ever new users (401 from both backends, or 500)."""

    def run() -> None:
        with httpx.Client(base_url=url, timeout=5) as c:
            i = 0
            while not stop.is_set():
                i += 1
                c.get("/api/auth/me", headers={"X-User-ID": f"user-{i}"})

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _wait(admin: str, timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "splitter", "rollout", "wait", "auth", "--timeout", str(timeout), "--admin", admin],
        capture_output=True, text=True, timeout=timeout + 30,
    )


@pytest.mark.slow
@pytest.mark.parametrize(("fault", "code", "said"), [("0", 0, "done"), ("0.3", 3, "rolled_back")])
def test_the_example_rollout_finishes_on_the_reference_stack_and_rolls_back_a_failing_new(
    procs, tmp_path: Path, splitter, fault: str, code: int, said: str
) -> None:
    env = {"NEW_FAULT_ERROR_RATE": fault}
    legacy, new = start_backend(procs, "legacy", tmp_path, env), start_backend(procs, "new", tmp_path, env)
    s = splitter(_example(legacy, new))
    stop = threading.Event()
    threads = [_traffic(s.url, stop) for _ in range(2)]
    try:
        r = _wait(s.admin, 240)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert r.returncode == code, r.stdout + r.stderr
    view = httpx.get(s.admin + "/admin/rollouts", timeout=5).json()
    (auth,) = [v for v in view if v["route"] == "auth"]
    assert auth["status"] == said, auth
    if said == "done":
        assert auth["percent"] == 100, auth
    else:
        assert auth["percent"] == 0 and "max_error_rate" in auth["reason"], auth
