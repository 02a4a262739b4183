"""Token check in front of every HTTP route and WebSocket, when EDGEFLOW_TOKEN is set."""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import parse_qs

__all__ = ["TokenGate", "token_from_scope"]

ASGIApp = Any
_DETAIL = (
    "missing or wrong token: send the header 'Authorization: Bearer <token>' or 'X-EdgeFlow-Token: <token>', "
    "or add ?token=<token> to the URL"
)


def token_from_scope(scope: dict[str, Any]) -> str | None:
    """Return the token a request carries: Authorization Bearer, X-EdgeFlow-Token, or the `token` query parameter."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and rest.strip():
                return rest.strip()
        elif name == b"x-edgeflow-token":
            return value.decode("latin-1").strip()
    query = scope.get("query_string", b"").decode("latin-1")
    values = parse_qs(query).get("token")
    return values[0] if values else None


#: Probe paths that answer without the token (the kubelet's httpGet can't carry a secret), with their status code
#: and nothing else: {"status": "ok"} or {"status": "unavailable"}.
OPEN_PATHS = frozenset({"/health", "/ready"})


class TokenGate:
    """ASGI middleware: 401 for any request whose token does not match, compared in constant time.

    GETs of `open_paths` without the right token are still answered, with the route's status code and a
    body that reveals nothing more.
    """

    def __init__(self, app: ASGIApp, token: str, open_paths: frozenset[str] = OPEN_PATHS) -> None:
        self.app = app
        self._token = token.encode()
        self.open_paths = open_paths

    def allowed(self, scope: dict[str, Any]) -> bool:
        """Return True when the request carries the right token."""
        given = token_from_scope(scope)
        # compare_digest takes the same time whatever the first differing byte, so timing leaks nothing.
        return given is not None and hmac.compare_digest(given.encode(), self._token)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope.get("method") == "GET" and scope.get("path") in self.open_paths:
            await self._status_only(scope, receive, send)
            return
        body = json.dumps({"detail": _DETAIL}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if scope["type"] == "http":
            headers.append((b"www-authenticate", b'Bearer realm="edgeflow"'))
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        # A WebSocket is refused before it is accepted: with a real 401 where the server supports it.
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})

    async def _status_only(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Run the route, keep its status code, drop its headers and body, and answer a body of one word."""
        status = 500

        async def keep_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])

        await self.app(scope, receive, keep_status)
        body = json.dumps({"status": "ok" if status < 400 else "unavailable"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 200 if status < 400 else 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
