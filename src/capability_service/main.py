"""The application: settings -> storage, sources, job engine and plugins -> routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from capability_service import __version__
from capability_service.api.auth import ApiKeyGate
from capability_service.api.errors import install_error_handlers
from capability_service.api.limits import BodySizeLimit
from capability_service.api.v1 import ai, files, health, image
from capability_service.core.allocator import tune_allocator
from capability_service.core.config import Environment, Settings, load_settings
from capability_service.core.logging import configure_logging
from capability_service.core.security import ApiKeyChecker
from capability_service.jobs.cpu import CpuExecutor
from capability_service.jobs.memory import MemoryJobStore
from capability_service.jobs.pipeline import ImagePipeline
from capability_service.jobs.runner import LocalJobRunner
from capability_service.jobs.service import Dispatcher, JobService
from capability_service.jobs.store import JobStore
from capability_service.plugins.manager import PluginRegistry, default_registry
from capability_service.providers.base import ImageEditProvider
from capability_service.providers.factory import create_provider
from capability_service.sources.fetch import SourceFetcher
from capability_service.storage.base import Storage
from capability_service.storage.factory import create_storage

log = logging.getLogger(__name__)

# Seconds one image may take end to end (download, model call, processing, upload).
IMAGE_TIMEOUT_SECONDS = 600.0


@dataclass
class Services:
    """Everything long-lived that requests and jobs share; one instance per process."""

    settings: Settings
    api_keys: ApiKeyChecker
    storage: Storage
    fetcher: SourceFetcher
    provider: ImageEditProvider | None
    plugins: PluginRegistry
    cpu: CpuExecutor
    store: JobStore
    dispatcher: Dispatcher
    jobs: JobService

    async def start(self) -> None:
        await self.dispatcher.start()

    async def stop(self) -> None:
        """Stop the job engine first (it may still use the rest), then close everything else.

        Every step runs whatever the others do: one failing close (say, Redis already gone) must not
        leave worker processes or open clients behind.
        """
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("job engine", self.dispatcher.shutdown),
            ("source fetcher", self.fetcher.close),
            ("job store", self.store.close),
            ("storage", self.storage.close),
            ("image workers", self.cpu.close),
        ]
        if self.provider is not None:
            steps.insert(2, ("remote model client", self.provider.close))
        for name, step in steps:
            try:
                await step()
            except Exception as exc:
                log.warning("shutdown: closing the %s failed: %s", name, exc)


def build_services(settings: Settings) -> Services:
    storage = create_storage(settings)
    fetcher = SourceFetcher.from_settings(settings, storage=storage)
    provider = create_provider(settings)
    plugins = default_registry(settings, provider)
    cpu = CpuExecutor(settings.cpu_executor, settings.cpu_workers, nice=settings.cpu_nice)
    pipeline = ImagePipeline(fetcher=fetcher, storage=storage, cpu=cpu, image_timeout=IMAGE_TIMEOUT_SECONDS)
    store: JobStore
    dispatcher: Dispatcher
    if settings.job_backend == "redis":
        from capability_service.jobs.distributed import build_redis_backend

        store, dispatcher = build_redis_backend(settings, plugins=plugins, pipeline=pipeline)
    else:
        memory_store = MemoryJobStore(ttl_seconds=settings.job_result_ttl_seconds, max_jobs=settings.job_store_max_jobs)
        store = memory_store
        dispatcher = LocalJobRunner(
            store=memory_store,
            plugins=plugins,
            pipeline=pipeline,
            max_concurrent_jobs=settings.max_concurrent_jobs,
            max_images_in_flight=settings.max_images_in_flight,
            queue_size=settings.job_queue_size,
            shutdown_grace=settings.shutdown_grace_seconds,
            max_held_source_bytes=settings.max_pending_source_bytes,
            housekeeping=memory_store.evict,
            housekeeping_interval=min(60.0, settings.job_result_ttl_seconds / 2),
        )
    jobs = JobService(store=store, plugins=plugins, dispatcher=dispatcher, max_images=settings.max_images_per_job)
    return Services(
        settings=settings,
        api_keys=ApiKeyChecker(settings.api_keys),
        storage=storage,
        fetcher=fetcher,
        provider=provider,
        plugins=plugins,
        cpu=cpu,
        store=store,
        dispatcher=dispatcher,
        jobs=jobs,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    tune_allocator()
    settings = settings or load_settings()
    configure_logging(settings.log_level)
    services = build_services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

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
    # Added innermost first: a request meets CORS, then the key check, then the body limits, so
    # error answers carry CORS headers and nobody without a key gets a body read or measured.
    app.add_middleware(
        BodySizeLimit,
        limits={
            "/api/v1/image/compress": settings.max_upload_bytes,
            "/api/v1/ai/job": settings.max_job_request_bytes,
        },
    )
    app.add_middleware(
        ApiKeyGate, checker=services.api_keys, prefix="/api/v1", open_paths=frozenset({"/api/v1/health"})
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["X-API-Key", "X-User-Id", "Content-Type"],
        expose_headers=["Retry-After", *image.COMPRESS_HEADERS],
    )
    install_error_handlers(app)
    app.include_router(health.router, prefix="/api/v1")
    app.include_router(ai.router, prefix="/api/v1")
    app.include_router(image.router, prefix="/api/v1")
    if settings.storage_backend == "local":
        app.include_router(files.router)
    return app


def __getattr__(name: str) -> Any:
    # `capability_service.main:app` is built on first use, so importing this module (tests, the CLI)
    # does not read settings or start anything by itself.
    if name == "app":
        globals()["app"] = application = create_app()
        return application
    raise AttributeError(name)
