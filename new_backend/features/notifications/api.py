"""Live notifications over WebSocket: a hello naming this backend and the user, then an echo."""

from __future__ import annotations

from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

BACKEND = "new"


def _user_id(websocket: WebSocket) -> Any:
    scheme, _, token = (websocket.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token:
        claims = websocket.app.state.auth.tokens.verify(token.strip())
        if claims:
            return claims.get("sub")
    return websocket.headers.get("x-user-id")


async def stream(websocket: WebSocket) -> None:
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=offered[0] if offered else None)
    await websocket.send_json({"backend": BACKEND, "user_id": _user_id(websocket)})
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_json({"echo": message["text"], "backend": BACKEND})
            elif message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


routes = [WebSocketRoute("/api/notifications/ws", stream)]
