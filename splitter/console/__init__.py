"""GET /ui on the admin listener: one self-contained page (no CDN, no build step).

The page is static (index.html, app.js, app.css in this package) and reads
/admin/overview once a second (routes, their cohorts' requests apart from the
comparison, rollouts and the change history, shown as a timeline in each route's
card); actions go to the admin API with the token the operator typed (whose it is:
/admin/whoami), kept in the tab's sessionStorage and sent as the Bearer header, never in a cookie. Served with a strict
Content-Security-Policy: scripts and styles only from this origin, no inline script, no framing.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

HERE = Path(__file__).resolve().parent
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
FILES = {
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/ui/app.css": ("app.css", "text/css; charset=utf-8"),
}


def console_routes() -> list[Route]:
    routes = []
    for path, (name, media_type) in FILES.items():
        body = (HERE / name).read_bytes()  # read once, at start

        async def serve(request: Request, body: bytes = body, media_type: str = media_type) -> Response:
            """The console (one page, its script and style; read once at start)."""
            return Response(body, media_type=media_type, headers=SECURITY_HEADERS)

        routes.append(Route(path, serve))
    return routes
