"""What only the in-memory store has: bounded memory by TTL and job count (the rest is the store contract)."""

from __future__ import annotations

from capability_service.jobs.memory import MemoryJobStore
from capability_service.jobs.models import JobStatus
from tests.jobs.samples import make_job


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_finished_jobs_expire_after_the_ttl_and_live_ones_never_do() -> None:
    clock = Clock()
    store = MemoryJobStore(ttl_seconds=60, max_jobs=100, clock=clock)
    done, running = make_job(), make_job()
    await store.create(done)
    await store.create(running)
    await store.mark_processing(running.key)
    await store.finish(done.key, JobStatus.completed)
    clock.now += 61
    store.evict()
    assert await store.get(done.key) is None
    assert await store.get(running.key) is not None


async def test_memory_stays_bounded_however_many_jobs_pass() -> None:
    store = MemoryJobStore(ttl_seconds=3600, max_jobs=50)
    for n in range(500):
        job = make_job(job_id=f"job-{n}")
        await store.create(job)
        await store.finish(job.key, JobStatus.completed)
    assert len(store) <= 51
    assert await store.get(make_job(job_id="job-499").key) is not None


async def test_a_lock_expires_on_the_stores_clock() -> None:
    clock = Clock()
    store = MemoryJobStore(ttl_seconds=60, max_jobs=10, clock=clock)
    assert await store.try_lock("reconcile", 5)
    assert not await store.try_lock("reconcile", 5)
    clock.now += 6
    assert await store.try_lock("reconcile", 5)


async def test_subscribers_leave_nothing_behind() -> None:
    store = MemoryJobStore(ttl_seconds=60, max_jobs=10)
    job = make_job()
    await store.create(job)
    async with store.subscribe(job.key), store.watch_cancel(job.key):
        assert store.hub.subscriber_count(job.key) == 1
    assert store.hub.subscriber_count() == 0
    assert not store._cancel_watchers
