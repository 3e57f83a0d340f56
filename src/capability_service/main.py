"""The web application: settings -> the shared services (`services.py`) -> routers and middleware."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from capability_service import __version__
from capability_service.api.auth import ApiKeyGate
from capability_service.api.errors import install_error_handlers
from capability_service.api.large_bodies import LargeBodyGate, LargeBodyTurns
from capability_service.api.limits import BodySizeLimit
from capability_service.api.observe import (
    REQUEST_ID_HEADER,
    HttpMetrics,
    RouteTemplates,
    install_metrics,
    new_request_id,
    valid_request_id,
)
from capability_service.api.observe import router as metrics_router
from capability_service.api.v1 import ai, files, health, image, job_types, ozon, results_zip
from capability_service.core import metrics
from capability_service.core.allocator import tune_allocator
from capability_service.core.config import Environment, Settings, load_settings
from capability_service.core.logging import configure_logging
from capability_service.jobs.quotas import QUOTA_HEADERS
from capability_service.playground import router as playground_router
from capability_service.services import build_services

# Largest body of the Ozon catalogue routes: 10,000 ids fit many times over.
OZON_REQUEST_BYTES = 2 * 1024 * 1024


def create_app(settings: Settings | None = None) -> FastAPI:
    tune_allocator()
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    metrics.prepare_multiprocess_dir()
    services = build_services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()
            metrics.process_exiting()

    # Interactive API docs in development only: production answers nothing it does not have to.
    docs = settings.environment is not Environment.production
    app = FastAPI(
        title="Capability Service",
        version=__version__,
        description="Image processing for marketplace sellers, as plugins and async jobs.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.services = services
    # Added innermost first: a request meets the request id, the request metrics, CORS, then the key
    # check, then the body limits, so every answer (401s and 413s too) carries its request id and CORS
    # headers and is counted, and nobody without a key gets a body read or measured.
    # Innermost of the body checks: a body over its size limit is refused before it waits for a turn.
    app.state.large_bodies = LargeBodyTurns(
        threshold=settings.large_body_bytes,
        slots=settings.max_concurrent_large_bodies,
        wait=settings.large_body_wait_seconds,
    )
    app.add_middleware(LargeBodyGate, paths=frozenset({"/api/v1/ai/job"}), turns=app.state.large_bodies)
    app.add_middleware(
        BodySizeLimit,
        limits={
            "/api/v1/image/compress": settings.max_upload_bytes,
            "/api/v1/ai/job": settings.max_job_request_bytes,
            "/api/v1/ozon/products": OZON_REQUEST_BYTES,
            "/api/v1/ozon/download": OZON_REQUEST_BYTES,
        },
    )
    app.add_middleware(
        ApiKeyGate, checker=services.api_keys, prefix="/api/v1", open_paths=frozenset({"/api/v1/health"})
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=[
            "X-API-Key",
            "X-User-Id",
            "Content-Type",
            "X-Ozon-Client-Id",
            "X-Ozon-Api-Key",
            REQUEST_ID_HEADER,
        ],
        expose_headers=[
            "Retry-After",
            REQUEST_ID_HEADER,
            *QUOTA_HEADERS,
            *image.COMPRESS_HEADERS,
            *ozon.DOWNLOAD_HEADERS,
        ],
    )
    templates = RouteTemplates(app.router.routes)
    app.add_middleware(HttpMetrics, templates=templates)
    app.add_middleware(
        CorrelationIdMiddleware, header_name=REQUEST_ID_HEADER, generator=new_request_id, validator=valid_request_id
    )
    install_error_handlers(app)
    install_metrics(app, settings.metrics_token, metrics.EngineStatsCollector(services.dispatcher.stats))
    templates.include(metrics_router.routes)
    routers: list[tuple[APIRouter, str]] = [
        (health.router, "/api/v1"),
        (ai.router, "/api/v1"),
        (image.router, "/api/v1"),
        (job_types.router, "/api/v1"),
        (results_zip.router, "/api/v1"),
        (ozon.router, "/api/v1"),
    ]
    if settings.storage_backend == "local":
        routers.append((files.router, ""))
    if settings.playground_on:
        routers.append((playground_router, ""))
    for router, prefix in routers:
        app.include_router(router, prefix=prefix)
        templates.include(router.routes, prefix)
    return app


def __getattr__(name: str) -> Any:
    # `capability_service.main:app` is built on first use, so importing this module (tests, the CLI)
    # does not read settings or start anything by itself.
    if name == "app":
        globals()["app"] = application = create_app()
        return application
    raise AttributeError(name)
