"""The job store and event bus interface: the in-memory and Redis modes both implement it.

Every change goes through one of these methods and is published to the job's subscribers as a
snapshot, so the HTTP layer never polls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from capability_service.jobs.models import ImageOutcome, Job, JobStatus


class JobStoreUnavailable(Exception):
    """The store cannot be reached (e.g. Redis is down); the API answers 503."""


class JobStore(Protocol):
    async def create(self, job: Job) -> tuple[Job, bool]:
        """Store a new job atomically; if the id exists, return the stored job and False."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def delete(self, job_id: str) -> None:
        """Forget a job that could not be queued."""
        ...

    async def mark_processing(self, job_id: str) -> Job | None:
        """pending -> processing (sets started_at); None if the job is gone or already final."""
        ...

    async def update_image(self, job_id: str, outcome: ImageOutcome) -> Job | None:
        """Record one image's state; ignored (None) once the job is final."""
        ...

    async def finish(self, job_id: str, status: JobStatus, message: str | None = None) -> Job | None:
        """Move the job to a final status; unfinished images become cancelled. Idempotent."""
        ...

    async def request_cancel(self, job_id: str) -> Job | None:
        """Flag the job for cancellation and publish it; the engine running it stops it."""
        ...

    def subscribe(self, job_id: str) -> AbstractAsyncContextManager[AsyncIterator[Job]]:
        """Snapshots of the job after each change, from now on, until the context exits."""
        ...

    async def health(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...
