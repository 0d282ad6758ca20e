import argparse

import uvicorn

from .app import create_app
from .settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m new_backend", description="The new reference backend.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--name", default="new_backend", help="the service's name in X-Served-By (e.g. upload_service)")
    args = parser.parse_args()
    uvicorn.run(
        create_app(Settings.from_env(), args.name),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


main()
