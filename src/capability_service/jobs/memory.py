"""The in-memory job store: the embedded default, bounded by a TTL and a job count."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from capability_service.jobs import lifecycle
from capability_service.jobs.events import EventHub, discard_from
from capability_service.jobs.models import ImageOutcome, Job, JobStatus, summarize_source
from capability_service.jobs.store import CreateRefused


class MemoryJobStore:
    def __init__(self, *, ttl_seconds: float, max_jobs: int, clock: Callable[[], float] = time.time) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._hub = EventHub()
        self._cancel_watchers: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._locks: dict[str, float] = {}
        # Bytes of the sources each live job holds (data: URIs are kept whole until the job ends).
        self._held: dict[str, int] = {}
        self._held_bytes = 0
        # Keys of the live jobs of each tenant, for TENANT_MAX_LIVE_JOBS.
        self._live_by_tenant: defaultdict[str, set[str]] = defaultdict(set)
        self._ttl = ttl_seconds
        self._max_jobs = max_jobs
        self._clock = clock

    @property
    def hub(self) -> EventHub:
        return self._hub

    def __len__(self) -> int:
        return len(self._jobs)

    def evict(self) -> int:
        """Drop finished jobs older than the TTL, then the oldest finished ones beyond `max_jobs`.

        Jobs still pending or running are never evicted, so the count can exceed `max_jobs` only by
        the number of live jobs, which the engine's queue bounds.
        """
        now = self._clock()
        expired = [
            key for key, job in self._jobs.items() if job.finished_at is not None and now - job.finished_at > self._ttl
        ]
        for key in expired:
            del self._jobs[key]
        excess = len(self._jobs) - self._max_jobs
        if excess > 0:
            for key in [key for key, job in self._jobs.items() if job.status.is_final][:excess]:
                del self._jobs[key]
                expired.append(key)
        return len(expired)

    def _changed(self, job: Job) -> Job:
        job.version += 1
        snapshot = job.model_copy(deep=True)
        snapshot.source_image_urls = [summarize_source(url) for url in job.source_image_urls]
        self._hub.publish(job.key, snapshot)
        if job.cancel_requested or job.status.is_final:
            for event in self._cancel_watchers.get(job.key, ()):
                event.set()
        return snapshot

    async def create(self, job: Job, held_limit: int = 0, tenant_live_limit: int = 0) -> tuple[Job, bool]:
        # Expired jobs go in the engine's periodic sweep; here only the count cap is kept, so a submit
        # scans the store only when it is full.
        if len(self._jobs) >= self._max_jobs:
            self.evict()
        existing = self._jobs.get(job.key)
        if existing is not None:
            return existing.model_copy(deep=True), False
        if not job.status.is_final:
            live = self._live_by_tenant[job.tenant]
            if tenant_live_limit and len(live) >= tenant_live_limit:
                raise CreateRefused("TENANT_MAX_LIVE_JOBS", count=len(live), limit=tenant_live_limit, tenant=job.tenant)
            size = job.source_bytes
            if held_limit and self._held_bytes and self._held_bytes + size > held_limit:
                raise CreateRefused(
                    "MAX_PENDING_SOURCE_BYTES", count=self._held_bytes, limit=held_limit, tenant=job.tenant
                )
            self._held[job.key] = size
            self._held_bytes += size
            live.add(job.key)
        self._jobs[job.key] = job.model_copy(deep=True)
        self._changed(self._jobs[job.key])
        return self._jobs[job.key].model_copy(deep=True), True

    async def get(self, key: str) -> Job | None:
        job = self._jobs.get(key)
        return job.model_copy(deep=True) if job is not None else None

    async def snapshot(self, key: str) -> Job | None:
        job = await self.get(key)
        if job is not None:
            job.source_image_urls = [summarize_source(url) for url in job.source_image_urls]
        return job

    async def delete(self, key: str) -> None:
        self._jobs.pop(key, None)
        self._release(key)

    def _release(self, key: str) -> None:
        self._held_bytes -= self._held.pop(key, 0)
        for tenant, live in list(self._live_by_tenant.items()):
            live.discard(key)
            if not live:
                del self._live_by_tenant[tenant]

    async def mark_processing(self, key: str) -> Job | None:
        job = self._jobs.get(key)
        if job is None or job.status.is_final:
            return None
        if lifecycle.start(job, self._clock()):
            self._changed(job)
        return job.model_copy(deep=True)

    async def record_image(self, key: str, outcome: ImageOutcome) -> tuple[Job | None, bool]:
        job = self._jobs.get(key)
        if job is None or job.status.is_final:
            return None, False
        changed, last = lifecycle.record_image(job, outcome)
        return (self._changed(job) if changed else job.model_copy(deep=True)), last

    async def finish(self, key: str, status: JobStatus, reason: str | None = None) -> Job | None:
        job = self._jobs.get(key)
        if job is None:
            return None
        if lifecycle.close(job, status, reason, self._clock()):
            self._release(key)
            return self._changed(job)
        return job.model_copy(deep=True)

    async def request_cancel(self, key: str) -> Job | None:
        job = self._jobs.get(key)
        if job is None:
            return None
        if lifecycle.request_cancel(job):
            return self._changed(job)
        return job.model_copy(deep=True)

    async def cancel_requested(self, key: str) -> bool:
        job = self._jobs.get(key)
        return job is None or job.cancel_requested or job.status.is_final

    def subscribe(self, key: str) -> AbstractAsyncContextManager[AsyncIterator[Job]]:
        return self._hub.subscribe(key)

    @asynccontextmanager
    async def watch_cancel(self, key: str) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        self._cancel_watchers[key].add(event)
        try:
            if await self.cancel_requested(key):
                event.set()
            yield event
        finally:
            discard_from(self._cancel_watchers, key, event)

    async def live_keys(self, limit: int = 1000) -> list[str]:
        return [key for key, job in self._jobs.items() if not job.status.is_final][:limit]

    async def forget_live(self, key: str) -> None:
        # Liveness is read off each job's status here; only its held bytes may be left to release.
        self._release(key)

    async def held_source_bytes(self) -> int:
        return self._held_bytes

    async def try_lock(self, name: str, seconds: float) -> bool:
        now = self._clock()
        if self._locks.get(name, 0.0) > now:
            return False
        self._locks[name] = now + seconds
        return True

    async def health(self) -> dict[str, Any]:
        return {
            "backend": "memory",
            "healthy": True,
            "jobs": len(self._jobs),
            "stream_subscribers": self._hub.subscriber_count(),
        }

    async def close(self) -> None:
        return None
