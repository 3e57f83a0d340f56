"""The in-memory store: atomic create, events to subscribers, bounded memory."""

from __future__ import annotations

import asyncio

from capability_service.jobs.memory import MemoryJobStore
from capability_service.jobs.models import ImageOutcome, ImageStatus, Job, JobStatus


def make_job(job_id: str, images: int = 2) -> Job:
    return Job.new(
        job_id=job_id,
        user_id="u",
        job_type="batch_optimization",
        plugin="ai-playground",
        config={},
        sources=[f"data:image/png;base64,{'A' * 1000}"] * images,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_create_is_idempotent() -> None:
    store = MemoryJobStore(ttl_seconds=60, max_jobs=10)
    first, created = await store.create(make_job("a"))
    second, created_again = await store.create(make_job("a", images=5))
    assert created and not created_again
    assert second.total == first.total == 2


async def test_subscribers_get_every_change_and_leave_nothing_behind() -> None:
    store = MemoryJobStore(ttl_seconds=60, max_jobs=10)
    await store.create(make_job("a"))
    seen: list[Job] = []

    async def follow() -> None:
        async with store.subscribe("a") as snapshots:
            async for job in snapshots:
                seen.append(job)
                if job.status.is_final:
                    return

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0)
    await store.mark_processing("a")
    await store.update_image("a", ImageOutcome(index=0, status=ImageStatus.succeeded, result_url="u0"))
    await store.update_image("a", ImageOutcome(index=1, status=ImageStatus.failed, error="broken"))
    await store.finish("a", JobStatus.completed)
    await asyncio.wait_for(follower, 5)
    assert [job.processed for job in seen] == [0, 1, 2, 2]
    assert seen[-1].status is JobStatus.completed
    assert [job.version for job in seen] == sorted({job.version for job in seen})
    assert store.hub.subscriber_count() == 0


async def test_updates_after_the_end_are_ignored() -> None:
    store = MemoryJobStore(ttl_seconds=60, max_jobs=10)
    await store.create(make_job("a"))
    await store.request_cancel("a")
    final = await store.finish("a", JobStatus.cancelled)
    assert final is not None and [image.status for image in final.images] == [ImageStatus.cancelled] * 2
    assert await store.update_image("a", ImageOutcome(index=0, status=ImageStatus.succeeded)) is None
    again = await store.finish("a", JobStatus.completed)
    assert again is not None and again.status is JobStatus.cancelled


async def test_finished_jobs_expire_after_the_ttl_and_live_ones_never_do() -> None:
    clock = Clock()
    store = MemoryJobStore(ttl_seconds=60, max_jobs=100, clock=clock)
    await store.create(make_job("done"))
    await store.create(make_job("running"))
    await store.mark_processing("running")
    await store.finish("done", JobStatus.completed)
    clock.now += 61
    store.evict()
    assert await store.get("done") is None
    assert await store.get("running") is not None


async def test_memory_stays_bounded_however_many_jobs_pass() -> None:
    store = MemoryJobStore(ttl_seconds=3600, max_jobs=50)
    for n in range(500):
        await store.create(make_job(f"job-{n}"))
        await store.finish(f"job-{n}", JobStatus.completed)
    assert len(store) <= 51
    assert await store.get("job-499") is not None


async def test_finished_jobs_drop_data_uri_payloads() -> None:
    store = MemoryJobStore(ttl_seconds=60, max_jobs=10)
    await store.create(make_job("a"))
    final = await store.finish("a", JobStatus.completed)
    assert final is not None
    assert all(len(url) < 100 and "1000 base64 chars" in url for url in final.source_image_urls)
