"""GET /api/notifications/ws: a hello naming this backend and the user, then an echo."""

from __future__ import annotations

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..services import security


async def notifications(websocket: WebSocket) -> None:
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=offered[0] if offered else None)
    user_id = None
    scheme, _, token = (websocket.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token:
        claims = security.read_token(websocket.app.state.auth.secret, token.strip())
        user_id = claims.get("sub") if claims else None
    if user_id is None:
        user_id = websocket.headers.get("x-user-id")
    await websocket.send_json({"backend": "legacy", "user_id": user_id})
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_json({"echo": message["text"], "backend": "legacy"})
            elif message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return
