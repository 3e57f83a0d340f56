"""The API-key check, done before a request's body is read."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from capability_service.core.security import ApiKeyChecker

API_KEY_HEADER = b"x-api-key"


def key_problem(checker: ApiKeyChecker, presented: str | None) -> str | None:
    """Why a request's key is refused (never repeating the key), or None when it is accepted."""
    if checker.is_valid(presented):
        return None
    return "missing X-API-Key header" if not presented else "invalid API key"


class ApiKeyGate:
    """401 for requests under `prefix` without a valid key, before any of their body is read.

    Without it, FastAPI would parse a body (JSON, or a multipart upload spooled to disk) before the
    route's key dependency runs, letting anyone without a key make the service read large bodies.
    """

    def __init__(self, app: ASGIApp, checker: ApiKeyChecker, prefix: str, open_paths: frozenset[str]) -> None:
        self.app = app
        self.checker = checker
        self.prefix = prefix
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope.get("method") == "OPTIONS"
            or not path.startswith(self.prefix)
            or path in self.open_paths
        ):
            await self.app(scope, receive, send)
            return
        presented = None
        for name, value in scope.get("headers", []):
            if name == API_KEY_HEADER:
                presented = value.decode("latin-1")
                break
        problem = key_problem(self.checker, presented)
        if problem is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": problem}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"ApiKey"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
