"""The peer: asgiproxy (aiohttp-based ASGI proxy) on uvicorn + uvloop + httptools."""

import sys

import uvicorn
from asgiproxy.__main__ import make_app

if __name__ == "__main__":
    app, _ = make_app(upstream_base_url=sys.argv[1])
    # asgiproxy's own CLI settings (uvicorn's default access log on), plus uvloop + httptools;
    # "--no-access-log": the peer at its fastest
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[2]),
        loop="uvloop",
        http="httptools",
        access_log="--no-access-log" not in sys.argv,
    )
