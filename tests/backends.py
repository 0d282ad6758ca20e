"""Start the reference backends as real processes for tests."""

from __future__ import annotations

from pathlib import Path

from conftest import PY, Proc, free_port, wait_http


def start_backend(
    procs: list[Proc], name: str, workdir: Path, extra_env: dict[str, str] | None = None, *args: str
) -> str:
    port = free_port()
    env = {
        "DATABASE_URL": f"sqlite:///{workdir / 'shared.db'}",
        "JWT_SECRET": "test-secret",
        "UPLOAD_DIR": str(workdir / "uploads"),
        "UPLOAD_MAX_BYTES": str(64 * 1024),
        **(extra_env or {}),
    }
    p = Proc([PY, "-m", f"{name}_backend", "--port", str(port), *args], env=env, log=workdir / f"{name}.log")
    procs.append(p)
    wait_http(f"http://127.0.0.1:{port}/health", proc=p.p)
    return f"http://127.0.0.1:{port}"


class Postgres:
    """A real PostgreSQL server (Debian's binaries, `initdb` into a temporary directory, a free
    port, trust auth on loopback): one per test session, one fresh database per test."""

    def __init__(self) -> None:
        import glob
        import os
        import shutil
        import subprocess
        import tempfile

        workdir = Path(tempfile.mkdtemp(prefix="splitter-pg-"))  # not under pytest's 0700 root-owned tree: the server user must reach it

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed: `make test` installs Debian's postgresql")
        self.bin = Path(bins[-1]).parent
        self.dir = workdir
        self.port = free_port()
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # the server refuses to run as root
        if as_postgres:
            shutil.chown(workdir, "postgres")
        self._as = as_postgres
        subprocess.run([*as_postgres, str(self.bin / "initdb"), "-D", str(workdir / "data"), "-A", "trust", "-U", "splitter"], check=True, capture_output=True)
        opts = f"-p {self.port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run([*as_postgres, str(self.bin / "pg_ctl"), "-D", str(workdir / "data"), "-o", opts, "-l", str(workdir / "server.log"), "-w", "start"], check=True, capture_output=True)
        self.count = 0

    def database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        self.count += 1
        name = f"t{self.count}"
        with psycopg.connect(f"postgresql://splitter@127.0.0.1:{self.port}/postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return f"postgresql://splitter@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        import shutil
        import subprocess

        subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
