"""The proxy is an ASGI application: under plain uvicorn (its own HTTP protocol, none of splitter's short
paths: no splice, no body read past the parser) it still proxies a GET, an upload and a streamed download."""

from __future__ import annotations

import threading

import httpx
import uvicorn
from conftest import routes_yaml, wait_http

from splitter.app import create_app
from splitter.listen import bind
from splitter.runtime import Settings

UPLOAD = 2 * 1024 * 1024  # over bypass.BODY_BYPASS_MIN: splitter's own protocol would read it past the parser
DOWNLOAD = 3 * 1024 * 1024


def test_the_proxy_runs_under_plain_uvicorn_without_the_short_paths(standin, tmp_path):
    legacy, new = standin("legacy"), standin("new")
    path = tmp_path / "routes.yaml"
    path.write_text(routes_yaml(legacy, new))
    proxy_sock, admin_sock = bind("127.0.0.1", 0), bind("127.0.0.1", 0)
    settings = Settings(config_path=str(path), port=proxy_sock.getsockname()[1], admin_port=admin_sock.getsockname()[1])
    config = uvicorn.Config(
        create_app(settings), interface="asgi3", lifespan="on", log_config=None, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [proxy_sock, admin_sock]}, daemon=True)
    thread.start()
    proxy = f"http://127.0.0.1:{settings.port}"
    try:
        wait_http(f"http://127.0.0.1:{settings.admin_port}/readyz")
        assert config.http_protocol_class.__module__.startswith("uvicorn.protocols.http."), "uvicorn's own protocol"
        with httpx.Client(timeout=30) as client:
            got = client.get(proxy + "/api/auth/login?x=1")
            assert got.status_code == 200 and got.json()["backend"] == "legacy" and got.json()["query"] == "x=1"
            sent = client.post(proxy + "/api/upload/file", content=b"u" * UPLOAD)
            assert sent.status_code == 200 and sent.json()["body_bytes"] == UPLOAD
            with client.stream("GET", proxy + f"/api/auth/bytes?n={DOWNLOAD}") as streamed:
                assert streamed.status_code == 200
                assert sum(len(chunk) for chunk in streamed.iter_bytes()) == DOWNLOAD
    finally:
        server.should_exit = True
        thread.join(30)
