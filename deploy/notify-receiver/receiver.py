"""The compose demo's notification receiver: prints every change splitter POSTs, one JSON line each.

    docker compose logs -f notify-receiver

Point routes.yaml's `notify:` at your chat or paging bridge instead (or at Slack with
`format: slack` and `url_env`); this stands in for it so the demo shows what is sent.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            event = json.loads(body)
            print(json.dumps({"received": event}), flush=True)
            self.send_response(204)
        except ValueError:
            self.send_response(400)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
