"""The API-key check, done before a request's body is read."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from capability_service.core import log_context
from capability_service.core.security import ApiKeyChecker

API_KEY_HEADER = "x-api-key"


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
        presented = Headers(scope=scope).get(API_KEY_HEADER)
        tenant = self.checker.tenant_of(presented)
        if tenant is not None:
            # Every log line of the rest of this request names its tenant.
            log_context.set_tenant(tenant)
            await self.app(scope, receive, send)
            return
        problem = key_problem(self.checker, presented)
        response = JSONResponse({"detail": problem}, status_code=401, headers={"WWW-Authenticate": "ApiKey"})
        await response(scope, receive, send)
