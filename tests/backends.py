"""Start the reference backends as real processes for tests."""

from __future__ import annotations

from pathlib import Path

from conftest import PY, Proc, free_port, wait_http


def start_backend(procs: list[Proc], name: str, workdir: Path, extra_env: dict[str, str] | None = None) -> str:
    port = free_port()
    env = {
        "DATABASE_URL": f"sqlite:///{workdir / 'shared.db'}",
        "JWT_SECRET": "test-secret",
        "UPLOAD_DIR": str(workdir / "uploads"),
        "UPLOAD_MAX_BYTES": str(64 * 1024),
        **(extra_env or {}),
    }
    p = Proc([PY, "-m", f"{name}_backend", "--port", str(port)], env=env, log=workdir / f"{name}.log")
    procs.append(p)
    wait_http(f"http://127.0.0.1:{port}/health", proc=p.p)
    return f"http://127.0.0.1:{port}"
