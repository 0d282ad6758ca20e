"""A stand-in upstream for tests: reports what it received, and misbehaves on request.

    python tests/standin.py --port P --name legacy

GET/POST anything  -> 200 JSON {backend, method, path, raw_path, query, headers: [[k, v]...], body_bytes}
/redirect          -> 302 Location: /elsewhere
/cookies           -> two Set-Cookie headers
/gzip              -> a gzip body with Content-Encoding: gzip (never decoded by the proxy)
/slow?s=N          -> sleeps N seconds first
/delay?legacy_ms=A&new_ms=B -> sleeps A or B ms, by this stand-in's name
/sometimes?new_status=409&new_rate=0.05 -> answers that status at that rate, by this stand-in's name (else 200)
.../ok?new_ok=0.5  -> counts standin_ok_total at that rate by name (default 1), a business metric
/standin/metrics   -> standin_ok_total{backend=NAME} in Prometheus text format
/bytes?n=N         -> streams N bytes (chunked)
/status?code=N     -> answers N
.../flaky          -> on new, 3 requests in 10 answer 500
.../xss            -> JSON whose "note" holds markup on new (a shadow diff to render as text)
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
import time
from typing import Any

import uvicorn

GZIP_BODY = gzip.compress(b"hello gzip " * 100, mtime=0)
FLAKY = [0]
OK_TOTAL = [0]


def make_app(name: str) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
        size = 0
        while True:
            msg = await receive()
            size += len(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        headers: list[tuple[bytes, bytes]] = [(b"x-backend", name.encode())]
        status = 200
        if path.endswith("/slow"):
            await asyncio.sleep(float(query.get("s", "1")))
        if path.endswith("/delay"):  # /delay?legacy_ms=99&new_ms=101: each backend its own latency
            await asyncio.sleep(float(query.get(f"{name}_ms", "0")) / 1000)
        if path == "/standin/metrics":  # not /metrics: tests send that through the proxy as any path
            text = f'standin_ok_total{{backend="{name}"}} {OK_TOTAL[0]}\n'.encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": text})
            return
        if path.endswith("/ok") and random.random() < float(query.get(f"{name}_ok", "1")):
            OK_TOTAL[0] += 1
        if path.endswith("/sometimes") and random.random() < float(query.get(f"{name}_rate", "0")):
            status = int(query.get(f"{name}_status", "200"))
        if path.endswith("/redirect"):
            status = 302
            headers.append((b"location", b"/elsewhere"))
        if path.endswith("/cookies"):
            headers += [(b"set-cookie", b"a=1; Path=/"), (b"set-cookie", b"b=2; Path=/")]
        if path.endswith("/gzip"):
            await send({"type": "http.response.start", "status": 200, "headers": headers + [(b"content-encoding", b"gzip"), (b"content-type", b"text/plain"), (b"content-length", str(len(GZIP_BODY)).encode())]})
            await send({"type": "http.response.body", "body": GZIP_BODY})
            return
        if path.endswith("/bytes"):
            n = int(query.get("n", "0"))
            await send({"type": "http.response.start", "status": 200, "headers": headers + [(b"content-type", b"application/octet-stream")]})
            chunk = b"x" * 65536
            while n > 0:
                part = chunk[: min(n, len(chunk))]
                n -= len(part)
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if path.endswith("/status"):
            status = int(query.get("code", "200"))
        if path.endswith("/flaky") and name == "new":  # three in ten requests to new fail
            FLAKY[0] += 1
            status = 500 if FLAKY[0] % 10 < 3 else 200
        if path.endswith("/xss"):  # a shadow diff that carries markup: the console must show it as text
            note = "<script>window.__xss = 1</script><img src=x onerror=window.__xss=2>" if name == "new" else "plain"
            body = json.dumps({"id": 1, "note": note}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": headers + [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        if "/json/" in path:
            # deterministic JSON, except: generated_at (ignored by config), nonce (noise), score on new at /scored
            doc = {"id": 7, "items": [{"n": 1}, {"n": 2}], "score": 11 if name == "new" and path.endswith("/scored") else 10, "generated_at": time.time(), "nonce": random.random()}
            body = json.dumps(doc).encode()
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        body = json.dumps(
            {
                "backend": name,
                "method": scope["method"],
                "path": path,
                "raw_path": scope["raw_path"].decode("latin-1"),
                "query": scope["query_string"].decode("latin-1"),
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
                "body_bytes": size,
            }
        ).encode()
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", required=True)
    a = p.parse_args()
    uvicorn.run(make_app(a.name), host="127.0.0.1", port=a.port, loop="uvloop", http="httptools", log_level="warning", access_log=False)
