"""Jobs and outcomes for the store and engine tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from capability_service.jobs import lifecycle
from capability_service.jobs.models import ImageOutcome, ImageStatus, Job
from capability_service.jobs.store import JobStore

DATA_URI = "data:image/png;base64," + "A" * 4000


def make_job(images: int = 2, job_id: str | None = None, tenant: str = "default", user_id: str = "u-1") -> Job:
    """A job whose first source is a 4000-character data URI, the others URLs nobody answers."""
    return lifecycle.new_job(
        job_id=job_id or f"t-{uuid.uuid4().hex[:12]}",
        tenant=tenant,
        user_id=user_id,
        job_type="batch_optimization",
        plugin="ai-playground",
        config={"format": "webp"},
        sources=[DATA_URI] + [f"http://127.0.0.1:9/{n}.jpg" for n in range(1, images)],
    )


def succeeded(index: int) -> ImageOutcome:
    return ImageOutcome(index=index, status=ImageStatus.succeeded, result_url=f"http://r/{index}.webp")


def failed(index: int, error: str = "broken") -> ImageOutcome:
    return ImageOutcome(index=index, status=ImageStatus.failed, error=error)


def processing(index: int) -> ImageOutcome:
    return ImageOutcome(index=index, status=ImageStatus.processing)


async def wait_for(store: JobStore, key: str, done: Callable[[Job], bool], timeout: float = 20) -> Job:
    """The job's first state (now or after a change) for which `done` holds; fails after `timeout`."""
    async with asyncio.timeout(timeout), store.subscribe(key) as snapshots:
        job = await store.snapshot(key)
        assert job is not None, f"no job {key}"
        if done(job):
            return job
        async for snapshot in snapshots:
            if done(snapshot):
                return snapshot
    raise AssertionError("the subscription ended")  # pragma: no cover - snapshots never end by themselves


def final(job: Job) -> bool:
    return job.status.is_final
