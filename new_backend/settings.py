"""The new service's settings; read from the environment here and only here
(FAULT_* apply to both backends, NEW_FAULT_* to this one alone and win)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

DEV_SECRET = "splitter-demo-development-secret-change-me"


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///./splitter-demo.db"
    jwt_secret: str = DEV_SECRET
    upload_dir: str = "./uploads"
    upload_max_bytes: int = 5 * 1024 * 1024
    fault_error_rate: float = 0.0
    fault_latency_ms: float = 0.0

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        secret = env.get("JWT_SECRET") or DEV_SECRET
        if not env.get("JWT_SECRET"):  # make run sets it (to the development default): no warning then
            print(
                "new_backend: JWT_SECRET not set; using the development default (never in production)", file=sys.stderr
            )
        return cls(
            database_url=env.get("DATABASE_URL", cls.database_url),
            jwt_secret=secret,
            upload_dir=env.get("UPLOAD_DIR", cls.upload_dir),
            upload_max_bytes=int(env.get("UPLOAD_MAX_BYTES", cls.upload_max_bytes)),
            # NEW_FAULT_* for this backend alone (NEW_FAULT_ERROR_RATE=0.3 make run), else FAULT_* (both)
            fault_error_rate=float(env.get("NEW_FAULT_ERROR_RATE") or env.get("FAULT_ERROR_RATE") or 0),
            fault_latency_ms=float(env.get("NEW_FAULT_LATENCY_MS") or env.get("FAULT_LATENCY_MS") or 0),
        )
