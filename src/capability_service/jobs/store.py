"""The job store and event bus interface: the in-memory and Redis stores both implement all of it.

Every change goes through one of these methods, follows the rules of `jobs.lifecycle`, and is published
to the job's subscribers as a snapshot, so the HTTP layer never polls. One test suite
(`tests/jobs/test_store_contract.py`) runs against both stores.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Protocol

from capability_service.jobs.models import ImageOutcome, Job, JobStatus


class JobStoreUnavailable(Exception):
    """The store cannot be reached (e.g. Redis is down); the API answers 503."""


class CreateRefused(Exception):
    """The store refused a new live job: over a limit that only the store can check atomically.

    `limit` names the setting; `count` is where the store stood (bytes held, or the tenant's live jobs).
    """

    MESSAGES: ClassVar[dict[str, str]] = {
        "MAX_PENDING_SOURCE_BYTES": "the service holds {count} bytes of sources of unfinished jobs, its limit is "
        "{limit} (MAX_PENDING_SOURCE_BYTES); try again shortly or pass image URLs instead of data: URIs",
        "TENANT_MAX_LIVE_JOBS": "tenant {tenant!r} has {count} unfinished jobs, its limit is {limit} "
        "(TENANT_MAX_LIVE_JOBS); wait for one to finish or cancel one",
    }

    def __init__(self, setting: str, *, count: int, limit: int, tenant: str) -> None:
        super().__init__(self.MESSAGES[setting].format(count=count, limit=limit, tenant=tenant))
        self.setting = setting
        self.count = count
        self.limit = limit


class JobStore(Protocol):
    """Jobs by `Job.key` (a digest of tenant and job id, so no caller-chosen id names another's job)."""

    async def create(self, job: Job, held_limit: int = 0, tenant_live_limit: int = 0) -> tuple[Job, bool]:
        """Store a new job atomically; if its key exists, return the stored job and False.

        With `held_limit`, a live job is refused (`CreateRefused`) when the sources of the live jobs
        already stored plus its own would pass that many bytes; one job alone always fits. With
        `tenant_live_limit`, it is refused when its tenant has that many live jobs.
        """
        ...

    async def get(self, key: str) -> Job | None:
        """The job with its full sources while it is live (summaries once it is final)."""
        ...

    async def snapshot(self, key: str) -> Job | None:
        """The job with source summaries instead of the sources: cheap enough for every event."""
        ...

    async def delete(self, key: str) -> None:
        """Forget a job that could not be queued."""
        ...

    async def mark_processing(self, key: str) -> Job | None:
        """pending -> processing (sets started_at); None if the job is gone or already final."""
        ...

    async def record_image(self, key: str, outcome: ImageOutcome) -> tuple[Job | None, bool]:
        """Record one image's state; True when it was the job's last unfinished image.

        Ignored (None) once the job is final. A final outcome is kept: later outcomes of the same image
        (a retry, a duplicate run) are ignored, so exactly one caller gets True for a job.
        """
        ...

    async def finish(self, key: str, status: JobStatus, reason: str | None = None) -> Job | None:
        """Move the job to a final status; unfinished images become cancelled. Idempotent.

        The message comes from `lifecycle.closing_message` on the job as it is when it closes.
        """
        ...

    async def request_cancel(self, key: str) -> Job | None:
        """Flag the job for cancellation and publish it; its running images stop on the flag."""
        ...

    async def cancel_requested(self, key: str) -> bool:
        """True when the job is gone, final or asked to cancel: its images should stop."""
        ...

    def subscribe(self, key: str) -> AbstractAsyncContextManager[AsyncIterator[Job]]:
        """Snapshots of the job after each change, from now on, until the context exits."""
        ...

    def watch_cancel(self, key: str) -> AbstractAsyncContextManager[asyncio.Event]:
        """An event that is set once the job is asked to cancel, finishes or disappears."""
        ...

    async def live_keys(self, limit: int = 1000) -> list[str]:
        """Keys of jobs not final yet, oldest first."""
        ...

    async def forget_live(self, key: str) -> None:
        """Drop a job from the live list and release its share of the held source bytes."""
        ...

    async def held_source_bytes(self) -> int:
        """Bytes of the sources that live jobs hold."""
        ...

    async def try_lock(self, name: str, seconds: float) -> bool:
        """Take a lock that expires by itself; False when someone else holds it."""
        ...

    async def health(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...
