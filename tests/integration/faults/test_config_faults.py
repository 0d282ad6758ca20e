"""Config faults while serving: every request sees one whole config, and clients see no errors."""

import threading
import time

import httpx
from conftest import eventually, routes_yaml

from splitter.bucketing import bucket


def two_configs(legacy: str, new: str) -> tuple[str, str]:
    a = routes_yaml(legacy, new, routes="""  - name: auth_a
    prefix: /api/auth
    percent: 0""")
    b = routes_yaml(legacy, new, routes="""  - name: auth_b
    prefix: /api/auth
    percent: 100""")
    return a, b


def test_100_edits_in_10s_with_broken_ones_between(standin, splitter):
    legacy, new = standin("legacy"), standin("new")
    a, b = two_configs(legacy, new)
    s = splitter(a, args=["--no-access-log"])
    broken = ["", a[: len(a) // 2], a.replace("percent: 0", "percent: 150"), "routes: [\n", None]
    seen: list[tuple[str, str]] = []
    bad: list[str] = []
    stop = threading.Event()

    def load(k: int) -> None:
        with httpx.Client(timeout=10) as c:
            i = k
            while not stop.is_set():
                r = c.get(s.url + "/api/auth/x", headers={"X-User-ID": f"c{i}"})
                i += 3
                if r.status_code != 200:
                    bad.append(f"{r.status_code} {r.text[:100]}")
                    continue
                handler, backend = r.headers["x-splitter-handler"], r.json()["backend"]
                seen.append((handler, backend))
                # a whole config: auth_a sends everyone to legacy, auth_b everyone to new
                if (handler, backend) not in (("old_auth_a", "legacy"), ("new_auth_b", "new")):
                    bad.append(f"mixed config: {handler} -> {backend}")

    threads = [threading.Thread(target=load, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        t0 = time.monotonic()
        for i in range(100):
            if i % 5 == 4:
                junk = broken[(i // 5) % len(broken)]
                if junk is None:
                    s.config.unlink(missing_ok=True)
                else:
                    s.config.write_text(junk)
            else:
                s.config.write_text(a if i % 2 else b)
            time.sleep(max(0.0, t0 + (i + 1) * 0.1 - time.monotonic()))
        # a broken file held until the proxy has rejected it: a 100 ms one may fall between two
        # looks of the watcher on a loaded machine
        s.config.write_text("routes: [\n")
        eventually(lambda: (s.metric("splitter_config_reloads_total", result="failure") or 0) >= 1, timeout=15)
        s.config.write_text(b)
        eventually(lambda: httpx.get(s.url + "/api/auth/x", headers={"X-User-ID": "w"}).headers["x-splitter-handler"]
                   == "new_auth_b", timeout=15)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert bad == [], bad[:5]
    assert {h for h, _ in seen} == {"old_auth_a", "new_auth_b"}, "both configs were in force at some point"
    assert (s.metric("splitter_config_reloads_total", result="failure") or 0) >= 1
    r = httpx.get(s.url + "/api/auth/x", headers={"X-User-ID": "final"})
    assert r.headers["x-splitter-handler"] == "new_auth_b"
    assert bucket("final") >= 0
