"""Operating the service over HTTP: request ids, request metrics and the `GET /metrics` route.

- `X-Request-ID`: taken from the request when it is a sane id, else made; returned on every answer and
  carried by every log line of that request (`asgi-correlation-id` keeps it in a context variable).
- `HttpMetrics`: requests by method, route template and status, and their latency. Route templates
  (`/api/v1/ai/job/{job_id}/status`), never raw paths, so the number of series stays bounded.
- `GET /metrics`: Prometheus text; with `METRICS_TOKEN` set it needs `Authorization: Bearer <token>`.
  It is not under `/api/v1`, so an API key neither opens nor is needed for it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, Request, Response
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from capability_service.core import metrics

REQUEST_ID_HEADER = "X-Request-ID"
# What a caller's id may be: bounded, and nothing that could break a log line or a header.
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
UNMATCHED_ROUTE = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def valid_request_id(value: str) -> bool:
    return REQUEST_ID_PATTERN.fullmatch(value) is not None


def new_request_id() -> str:
    return uuid.uuid4().hex


class RouteTemplates:
    """Turns a request path into the template of the route that serves it (`/api/v1/ai/job/{job_id}`).

    Built from the routes themselves, so requests answered before routing (the API-key gate's 401, a
    body limit's 413) get their route's template too; paths no route serves are `unmatched`.
    """

    def __init__(self, app_routes: Sequence[BaseRoute]) -> None:
        # The application's own routes (docs, routes added later) are read at each request.
        self._app_routes = app_routes
        self._included: list[tuple[re.Pattern[str], str]] = []
        self._compiled: dict[str, tuple[re.Pattern[str], str]] = {}

    def _compile(self, path: str) -> tuple[re.Pattern[str], str]:
        if path not in self._compiled:
            regex, template, _convertors = compile_path(path)
            self._compiled[path] = (regex, template)
        return self._compiled[path]

    def include(self, routes: Iterable[BaseRoute], prefix: str = "") -> None:
        """Add the routes of a router included under `prefix`."""
        for route in routes:
            path = getattr(route, "path", None)
            if isinstance(path, str):
                self._included.append(self._compile(prefix + path))

    def template(self, path: str) -> str:
        for regex, template in self._included:
            if regex.match(path):
                return template
        for route in self._app_routes:
            route_path = getattr(route, "path", None)
            if isinstance(route_path, str):
                regex, template = self._compile(route_path)
                if regex.match(path):
                    return template
        return UNMATCHED_ROUTE


class HttpMetrics:
    """Counts every HTTP answer and observes its latency up to the answer's headers.

    Headers, not the end of the body: an SSE stream stays open for minutes, and its wait says nothing
    about how fast the service answers.
    """

    def __init__(self, app: ASGIApp, templates: RouteTemplates) -> None:
        self.app = app
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        elapsed: float | None = None

        async def timed_send(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status = int(message["status"])
                elapsed = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            method = scope.get("method", "GET")
            method = method if method in KNOWN_METHODS else "other"
            route = self.templates.template(scope.get("path", ""))
            metrics.HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
            metrics.HTTP_DURATION.labels(method=method, route=route).observe(
                elapsed if elapsed is not None else time.perf_counter() - started
            )


router = APIRouter()


def install_metrics(app: FastAPI, token: SecretStr | None, *collectors: Collector) -> None:
    """Serve `GET /metrics` on `app`: this host's metrics (or this process's) plus `collectors`."""
    app.state.metrics_token = token.get_secret_value() if token is not None else None
    app.state.metrics_registry = metrics.build_registry(*collectors)
    app.include_router(router)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def bearer_matches(expected: str | None, authorization: str | None) -> bool:
    """True when no token is required, or `authorization` is `Bearer <expected>`; constant time."""
    if expected is None:
        return True
    scheme, _, token = (authorization or "").strip().partition(" ")
    presented = token.strip() if scheme.lower() == "bearer" else ""
    # Equal-length digests: neither the token's length nor its content leaks through timing.
    return hmac.compare_digest(_digest(presented), _digest(expected)) and bool(presented)


@router.get("/metrics", include_in_schema=False)
async def get_metrics(
    request: Request, authorization: Annotated[str | None, Header(alias="Authorization")] = None
) -> Response:
    """Prometheus text exposition of this host's processes (or of this process, without multiprocess)."""
    token: str | None = request.app.state.metrics_token
    if not bearer_matches(token, authorization):
        return Response(
            '{"detail": "GET /metrics needs Authorization: Bearer <METRICS_TOKEN>"}',
            status_code=401,
            media_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    registry: CollectorRegistry = request.app.state.metrics_registry
    # Multiprocess mode reads a file per process: off the event loop.
    body, content_type = await run_in_threadpool(metrics.render, registry, request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type})
