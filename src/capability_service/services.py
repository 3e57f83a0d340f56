"""The shared services of one process, built from settings: the API and the worker both start here.

Nothing here knows of HTTP: `main.create_app` puts these services behind the routes, and
`capability-service worker` runs the Redis engine's workers on the same services without importing
the web stack.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from capability_service.core import metrics
from capability_service.core.config import Settings
from capability_service.core.security import ApiKeyChecker
from capability_service.jobs.cpu import CpuExecutor
from capability_service.jobs.memory import MemoryJobStore
from capability_service.jobs.pipeline import ImagePipeline
from capability_service.jobs.quotas import SubmitQuotas
from capability_service.jobs.redis_store import RedisJobStore
from capability_service.jobs.result_cache import ResultCache
from capability_service.jobs.runner import LocalJobRunner
from capability_service.jobs.service import Dispatcher, JobLimits, JobService
from capability_service.jobs.store import JobStore
from capability_service.jobs.task import ImageTasks
from capability_service.marketplaces.ozon import OzonSellerClient
from capability_service.plugins.manager import PluginRegistry, default_registry
from capability_service.providers.base import ImageEditProvider
from capability_service.providers.factory import create_provider
from capability_service.sources.fetch import SourceFetcher
from capability_service.storage.base import Storage
from capability_service.storage.factory import create_storage

log = logging.getLogger(__name__)

# Longest wait for one step of the shutdown (beyond the job engine's grace period).
STOP_STEP_SECONDS = 15.0


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
    ozon: OzonSellerClient

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
            ("Ozon client", self.ozon.close),
            ("job store", self.store.close),
            ("storage", self.storage.close),
            ("image workers", self.cpu.close),
        ]
        if self.provider is not None:
            steps.insert(2, ("remote model client", self.provider.close))
        for name, step in steps:
            # The job engine has its grace period; a close of anything else that hangs (a connection
            # stuck half-closed) must not keep the process from exiting.
            limit = (
                self.settings.shutdown_grace_seconds + STOP_STEP_SECONDS if name == "job engine" else STOP_STEP_SECONDS
            )
            try:
                async with asyncio.timeout(limit):
                    await step()
            except TimeoutError:
                log.warning("shutdown: closing the %s did not finish within %.0f s; going on", name, limit)
            except Exception as exc:
                log.warning("shutdown: closing the %s failed: %s", name, exc)


def build_services(settings: Settings) -> Services:
    """Every service of one process, wired; nothing connects or starts before `Services.start`."""
    storage = create_storage(settings)
    metrics.storage_in_use(storage.backend)
    fetcher = SourceFetcher.from_settings(settings, storage=storage)
    provider = create_provider(settings)
    ozon_client = OzonSellerClient(base_url=settings.ozon_api_base)
    plugins = default_registry(settings, provider, fetcher=fetcher, ozon=ozon_client)
    cpu = CpuExecutor(settings.cpu_executor, settings.cpu_workers, nice=settings.cpu_nice)
    pipeline = ImagePipeline(
        fetcher=fetcher,
        storage=storage,
        cpu=cpu,
        image_timeout=settings.image_timeout_seconds,
        cache=ResultCache(storage, enabled=settings.result_cache, ttl_seconds=settings.result_cache_ttl_seconds),
        storage_retry_seconds=settings.storage_retry_seconds,
    )
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
            tasks=ImageTasks(store=memory_store, plugins=plugins, pipeline=pipeline),
            max_images_in_flight=settings.max_images_in_flight,
            tenant_max_images_in_flight=settings.tenant_max_images_in_flight,
            queue_size=settings.job_queue_size,
            shutdown_grace=settings.shutdown_grace_seconds,
            housekeeping=memory_store.evict,
            housekeeping_interval=min(60.0, settings.job_result_ttl_seconds / 2),
        )
    limits = JobLimits(
        images_per_job=settings.max_images_per_job,
        held_source_bytes=settings.max_pending_source_bytes,
        tenant_live_jobs=settings.tenant_max_live_jobs,
    )
    quotas = SubmitQuotas.from_settings(settings, store.redis if isinstance(store, RedisJobStore) else None)
    jobs = JobService(store, plugins, dispatcher, limits, quotas)
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
        ozon=ozon_client,
    )
