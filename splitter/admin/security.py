"""Who may use the admin listener: the Host guard against DNS rebinding (and nosniff on every answer), the
bearer token behind a request (`identify`), the gate that makes reads need a viewer token when routes.yaml
says `admin: {reads: token}`, and an operator's token behind every write (`authorize`, `writer`)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..refused import Refused
from ..tokens import Identity
from .common import NOT_TEXT, Actor, JSONResponse, loads, rt_of

if TYPE_CHECKING:
    from ..runtime import Runtime


HOW = "set SPLITTER_ADMIN_TOKEN or SPLITTER_ADMIN_TOKENS_FILE in the proxy's environment"
NO_TOKENS = f"admin changes are disabled: {HOW} and send a token as 'Authorization: Bearer <token>'"
WRONG_TOKEN = "wrong or missing admin token (Authorization: Bearer <SPLITTER_ADMIN_TOKEN or a tokens file token>)"
CLIENT_SOURCES = ("cli", "console")


def identify(rt: Runtime, headers: Headers) -> Identity | None:
    """The identity the request's bearer token proves; None without one; 401 for a wrong one."""
    value = headers.get("authorization", "")
    if not value:
        return None
    scheme, _, given = value.partition(" ")
    identity = rt.tokens.identify(given.strip()) if scheme.lower() == "bearer" else None
    if identity is None:
        raise Refused(401, "unauthorized", WRONG_TOKEN)
    return identity


class ViewerTokenGate:
    """`admin: {reads: token}`: a read of /admin/* needs a viewer (or operator) token."""

    def __init__(self, app: Any, rt: Runtime) -> None:
        self.app, self.rt = app, rt

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        gated = self.rt.snapshot.config.admin_reads == "token" and scope["type"] == "http"
        if gated and scope["path"].startswith("/admin/") and scope["method"] in ("GET", "HEAD"):
            try:
                if not self.rt.tokens.configured:
                    raise Refused(403, "forbidden",
                        f"reads need a token (admin.reads: token) but none is configured: {HOW}")
                if identify(self.rt, Headers(scope=scope)) is None:
                    raise Refused(401, "unauthorized",
                        "reads need a viewer token (admin.reads: token): Authorization: Bearer <token>")
            except Refused as exc:
                await JSONResponse({"error": exc.message}, exc.status)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def authorize(request: Request) -> Actor:
    """Who makes this change: 403 without tokens configured or for a viewer, 401 for none or a wrong one."""
    rt = rt_of(request)
    if not rt.tokens.configured:
        raise Refused(403, "forbidden", NO_TOKENS)
    identity = identify(rt, request.headers)
    if identity is None:
        raise Refused(401, "unauthorized", WRONG_TOKEN)
    if not identity.may_change:
        raise Refused(403, "forbidden",
            f"token {identity.name!r} has the role {identity.role}: changes need an operator token")
    source = request.headers.get("x-splitter-source", "")
    try:
        data = loads(await request.body() or b"{}")
    except UnicodeEncodeError:
        raise Refused(400, "bad_request", NOT_TEXT) from None
    except ValueError:
        data = {}  # the endpoint says what is wrong with its body
    reason = data.get("reason", "") if isinstance(data, dict) else ""
    if not isinstance(reason, str) or len(reason) > 500:
        raise Refused(400, "bad_request", "reason must be a string of at most 500 characters")
    on_behalf = request.headers.get("x-splitter-actor", "")[:64] or None
    return Actor(identity.name, source if source in CLIENT_SOURCES else "api", reason, on_behalf)


Write = Callable[[Request, Actor], Awaitable[Any]]


def writer(impl: Write) -> Callable[[Request], Awaitable[Response]]:
    """One wrapper for every write: authorize, then answer JSON (errors: common.ERRORS)."""

    async def endpoint(request: Request) -> Response:
        result = await impl(request, await authorize(request))
        return result if isinstance(result, Response) else JSONResponse(result)

    return endpoint


NOSNIFF = (b"x-content-type-options", b"nosniff")


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """A `Host` header value (`name`, `name:port`, `1.2.3.4:port`, `[::1]:port`) the admin listener answers."""
    if "*" in allowed:
        return True
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")]  # an IPv6 literal
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.removesuffix(".")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name == "localhost" or name in allowed
    return True  # an IP literal: a browser sends one only to that address, no DNS name to rebind


class HostGuard:
    """Pure ASGI around the admin app: the Host check, and nosniff on every answer (also
    Starlette's own 404s and 500s). A request without a Host header (HTTP/1.0) is answered:
    a browser always sends one."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v for k, v in scope["headers"] if k == b"host"), None)
        if host is not None and not host_allowed(host.decode("latin-1"), self.allowed):
            why = f"Host {host.decode('latin-1')!r} is not allowed on the admin listener (DNS rebinding)"
            fix = "use an IP address or localhost, or list the name in --admin-allowed-hosts"
            body = json.dumps({"error": f"{why}: {fix}"}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), NOSNIFF]
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(k == NOSNIFF[0] for k, _ in headers):  # the console's pages set it themselves
                    message["headers"] = [*headers, NOSNIFF]
            await send(message)

        await self.app(scope, receive, send_nosniff)
