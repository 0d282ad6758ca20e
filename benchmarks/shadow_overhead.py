"""What shadow traffic costs the user: p50/p99 at a paced 200 req/s with shadow off vs on.

    .venv/bin/python benchmarks/shadow_overhead.py

Both backends are one trivial nginx upstream; with shadow on, every GET is
copied to the other backend and the answers are compared.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench import NGINX_CONF, PY, ROOT, Procs, free_port, paced_latency, wait_port


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="splitter-shadow-"))
    work.chmod(0o755)
    (work / "files").mkdir()
    upstream, split = free_port(), free_port()
    (work / "nginx.conf").write_text(NGINX_CONF.format(work=work, upstream=upstream, split=split))
    procs = Procs()
    try:
        procs.start([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(work / "nginx.conf"), "-g", "daemon off;"])
        wait_port(upstream)
        results = {}
        for label, shadow in (
            ("shadow off", ""),
            ("shadow on (100% of GETs)", "\n    shadow: {percent: 100, methods: [GET]}"),
        ):
            cfg = work / f"routes-{len(results)}.yaml"
            cfg.write_text(
                f"""environment: production
backends:
  legacy: {{url: "http://127.0.0.1:{upstream}"}}
  new: {{url: "http://127.0.0.1:{upstream}"}}
user_id: [{{header: X-User-ID}}]
routes:
  - name: auth
    prefix: /api/auth
    percent: 10{shadow}
unmatched: legacy
"""
            )
            port, admin = free_port(), free_port()
            p = procs.start(
                [
                    PY,
                    "-m",
                    "splitter",
                    "serve",
                    "--config",
                    str(cfg),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--admin-port",
                    str(admin),
                ],
                cwd=ROOT,
            )
            wait_port(port)
            asyncio.run(paced_latency(port, 200, 2))  # warm-up
            results[label] = asyncio.run(paced_latency(port, 200, 10))
            if shadow:
                metrics = subprocess.run(
                    ["curl", "-s", f"http://127.0.0.1:{admin}/metrics"], capture_output=True, text=True
                ).stdout
                print("\n".join(line for line in metrics.splitlines() if line.startswith("splitter_shadow_total")))
            procs.stop(p)
        print("\npaced 200 req/s for 10 s, GET /api/auth/me:")
        for label, (p50, p99) in results.items():
            print(f"  {label:<26} p50 {p50:.3f} ms   p99 {p99:.3f} ms")
        (off50, _), (on50, _) = results.values()
        print(f"  p50 difference: {on50 - off50:+.3f} ms")
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
