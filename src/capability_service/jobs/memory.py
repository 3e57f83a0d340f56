"""The in-memory job store: the embedded default, bounded by a TTL and a job count."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from capability_service.jobs.events import EventHub
from capability_service.jobs.models import ImageOutcome, ImageStatus, Job, JobStatus, summarize_source


class MemoryJobStore:
    def __init__(self, *, ttl_seconds: float, max_jobs: int, clock: Callable[[], float] = time.time) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._hub = EventHub()
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
            job_id
            for job_id, job in self._jobs.items()
            if job.finished_at is not None and now - job.finished_at > self._ttl
        ]
        for job_id in expired:
            del self._jobs[job_id]
        excess = len(self._jobs) - self._max_jobs
        if excess > 0:
            for job_id in [jid for jid, job in self._jobs.items() if job.status.is_final][:excess]:
                del self._jobs[job_id]
                expired.append(job_id)
        return len(expired)

    def _changed(self, job: Job) -> Job:
        job.version += 1
        self._hub.publish(job.model_copy(deep=True))
        return job.model_copy(deep=True)

    async def create(self, job: Job) -> tuple[Job, bool]:
        # Expired jobs go in the engine's periodic sweep; here only the count cap is kept, so a submit
        # scans the store only when it is full.
        if len(self._jobs) >= self._max_jobs:
            self.evict()
        existing = self._jobs.get(job.job_id)
        if existing is not None:
            return existing.model_copy(deep=True), False
        self._jobs[job.job_id] = job.model_copy(deep=True)
        return self._changed(self._jobs[job.job_id]), True

    async def get(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        return job.model_copy(deep=True) if job is not None else None

    async def delete(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    async def mark_processing(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.status.is_final:
            return None
        job.status = JobStatus.processing
        job.started_at = job.started_at or self._clock()
        job.message = f"Processing {job.total} images" if job.total > 1 else "Processing the image"
        return self._changed(job)

    async def update_image(self, job_id: str, outcome: ImageOutcome) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.status.is_final:
            return None
        job.images[outcome.index] = outcome.model_copy(deep=True)
        if outcome.is_final:
            job.message = f"Processed {job.processed} of {job.total} images"
        return self._changed(job)

    async def finish(self, job_id: str, status: JobStatus, message: str | None = None) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        if job.status.is_final:
            return job.model_copy(deep=True)
        for image in job.images:
            if not image.is_final:
                image.status = ImageStatus.cancelled
                image.error = image.error or "cancelled before this image finished"
        job.status = status
        job.finished_at = self._clock()
        job.started_at = job.started_at or job.finished_at
        job.message = message or job.closing_message()
        # Data URIs can be megabytes each; a finished job keeps only their summaries.
        job.source_image_urls = [summarize_source(url) for url in job.source_image_urls]
        return self._changed(job)

    async def request_cancel(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        if not job.status.is_final and not job.cancel_requested:
            job.cancel_requested = True
            job.message = "Cancelling"
            return self._changed(job)
        return job.model_copy(deep=True)

    def subscribe(self, job_id: str) -> AbstractAsyncContextManager[AsyncIterator[Job]]:
        return self._hub.subscribe(job_id)

    async def health(self) -> dict[str, Any]:
        return {
            "backend": "memory",
            "healthy": True,
            "jobs": len(self._jobs),
            "stream_subscribers": self._hub.subscriber_count(),
        }

    async def close(self) -> None:
        return None
