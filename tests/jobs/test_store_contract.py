"""The job store contract, run against both stores: the memory store and the Redis store.

Every rule of `jobs.lifecycle` that a store applies is checked here once, for both. What only one store
has (TTL keys and outages in Redis, eviction in memory) is tested beside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from capability_service.jobs import lifecycle
from capability_service.jobs.memory import MemoryJobStore
from capability_service.jobs.models import ImageStatus, Job, JobStatus
from capability_service.jobs.redis_store import RedisJobStore
from capability_service.jobs.store import CreateRefused, JobStore
from tests.jobs.samples import DATA_URI, failed, make_job, processing, succeeded

TTL = 120
StoreFactory = Callable[[], JobStore]


@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Instances of one store: for Redis each call is another process's view of the same jobs."""
    if request.param == "memory":
        memory = MemoryJobStore(ttl_seconds=TTL, max_jobs=1000)
        yield lambda: memory
        return
    redis_url: str = request.getfixturevalue("redis_url")
    client = Redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    stores: list[RedisJobStore] = []

    def factory() -> JobStore:
        stores.append(RedisJobStore(redis_url, ttl_seconds=TTL))
        return stores[-1]

    yield factory
    for store in stores:
        await store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> JobStore:
    return make_store()


async def test_create_stores_a_pending_job_once(store: JobStore) -> None:
    job = make_job(3)
    first, created = await store.create(job)
    again, created_again = await store.create(make_job(5, job_id=job.job_id))
    assert created and not created_again
    assert again.total == first.total == 3
    stored = await store.get(job.key)
    assert stored is not None
    assert stored.status is JobStatus.pending
    assert stored.message == lifecycle.QUEUED
    # Live jobs keep their full sources; snapshots carry summaries.
    assert stored.source_image_urls == job.source_image_urls
    snapshot = await store.snapshot(job.key)
    assert snapshot is not None and snapshot.source_image_urls[0] == "data:image/png;base64,…(4000 base64 chars)"


async def test_the_same_job_id_of_two_tenants_names_two_jobs(store: JobStore) -> None:
    mine = make_job(1, job_id="shared-id", tenant="shop-a")
    theirs = make_job(2, job_id="shared-id", tenant="shop-b")
    assert (await store.create(mine))[1]
    assert (await store.create(theirs))[1]
    await store.finish(mine.key, JobStatus.cancelled)
    other = await store.get(theirs.key)
    assert other is not None and other.status is JobStatus.pending and other.total == 2


async def test_a_job_runs_through_its_life(store: JobStore) -> None:
    job = make_job(3)
    await store.create(job)
    started = await store.mark_processing(job.key)
    assert started is not None and started.status is JobStatus.processing
    assert started.message == lifecycle.processing_message(3) == "Processing 3 images"
    assert started.source_image_urls[0] == DATA_URI
    assert (await store.record_image(job.key, processing(0)))[1] is False
    assert (await store.record_image(job.key, succeeded(0)))[1] is False
    snapshot, last = await store.record_image(job.key, failed(1))
    assert snapshot is not None and not last
    assert snapshot.message == "Processed 2 of 3 images"
    assert (snapshot.processed, snapshot.succeeded, snapshot.failed_count) == (2, 1, 1)
    _snapshot, last = await store.record_image(job.key, succeeded(2))
    assert last
    final = await lifecycle.close_when_done(store, job.key)
    assert final is not None and final.status is JobStatus.completed
    assert final.message == "Completed with 1 of 3 images failed"
    assert final.progress == 100 and final.finished_at is not None
    assert final.source_image_urls[0].endswith("(4000 base64 chars)")


@pytest.mark.parametrize(
    ("outcomes", "status", "message"),
    [
        ([succeeded(0), succeeded(1)], JobStatus.completed, "Completed: 2 of 2 images processed"),
        ([failed(0), failed(1)], JobStatus.failed, "Failed: all 2 images failed"),
    ],
)
async def test_the_closing_status_and_message_follow_the_images(
    store: JobStore, outcomes: list[object], status: JobStatus, message: str
) -> None:
    job = make_job(2)
    await store.create(job)
    for outcome in outcomes:
        await store.record_image(job.key, outcome)  # type: ignore[arg-type]
    final = await lifecycle.close_when_done(store, job.key)
    assert final is not None and (final.status, final.message) == (status, message)


async def test_concurrent_image_updates_all_land_and_exactly_one_is_last(make_store: StoreFactory) -> None:
    total = 40
    job = make_job(total)
    api, *workers = [make_store() for _ in range(4)]
    await api.create(job)

    async def work(store: JobStore, index: int) -> bool:
        await store.record_image(job.key, processing(index))
        outcome = succeeded(index) if index % 3 else failed(index)
        return (await store.record_image(job.key, outcome))[1]

    lasts = await asyncio.gather(*(work(workers[i % 3], i) for i in range(total)))
    # Exactly one writer learns it wrote the last image, so exactly one closes the job.
    assert sum(lasts) == 1
    stored = await api.get(job.key)
    assert stored is not None
    assert (stored.processed, stored.failed_count) == (total, len(range(0, total, 3)))
    assert [image.index for image in stored.images] == list(range(total))
    assert stored.version == 1 + 2 * total
    assert stored.message == f"Processed {total} of {total} images"


async def test_a_final_image_outcome_is_never_replaced_or_recounted(store: JobStore) -> None:
    job = make_job(2)
    await store.create(job)
    await store.record_image(job.key, succeeded(0))
    # A retried or duplicated run of the same image changes nothing and is not counted twice.
    again, last = await store.record_image(job.key, processing(0))
    assert again is not None and not last
    _again, last = await store.record_image(job.key, failed(0))
    assert not last
    stored = await store.get(job.key)
    assert stored is not None and stored.images[0].status is ImageStatus.succeeded and stored.processed == 1
    assert (await store.record_image(job.key, succeeded(1)))[1]


async def test_finish_stops_unfinished_images_and_nothing_changes_a_final_job(store: JobStore) -> None:
    job = make_job(3)
    await store.create(job)
    await store.mark_processing(job.key)
    await store.record_image(job.key, succeeded(0))
    await store.record_image(job.key, processing(1))
    final = await store.finish(job.key, JobStatus.cancelled, "Cancelled: the service shut down")
    assert final is not None
    assert [image.status for image in final.images] == [ImageStatus.succeeded] + [ImageStatus.cancelled] * 2
    assert final.images[2].error == lifecycle.IMAGE_CANCELLED
    assert final.message == "Cancelled: the service shut down: 1 of 3 images finished before the job stopped"
    assert await store.record_image(job.key, succeeded(1)) == (None, False)
    assert await store.mark_processing(job.key) is None
    again = await store.finish(job.key, JobStatus.completed)
    assert again is not None and again.status is JobStatus.cancelled and again.version == final.version


async def test_cancel_flags_the_job_for_its_watchers_and_closes_it(make_store: StoreFactory) -> None:
    api, worker = make_store(), make_store()
    job = make_job(2)
    await api.create(job)
    await api.record_image(job.key, succeeded(0))
    async with worker.watch_cancel(job.key) as cancelled:
        assert not cancelled.is_set()
        assert not await worker.cancel_requested(job.key)
        final = await lifecycle.cancel(api, job.key)
        await asyncio.wait_for(cancelled.wait(), timeout=10)
    assert final is not None and final.status is JobStatus.cancelled and final.cancel_requested
    assert final.message == "Cancelled: 1 of 2 images finished before the job stopped"
    assert await worker.cancel_requested(job.key)
    # A watcher arriving after the cancel sees it at once.
    async with worker.watch_cancel(job.key) as late:
        assert late.is_set()


async def test_a_cancel_request_is_published_with_its_message(store: JobStore) -> None:
    job = make_job(1)
    await store.create(job)
    flagged = await store.request_cancel(job.key)
    assert flagged is not None and flagged.cancel_requested and flagged.message == lifecycle.CANCELLING
    # A job asked to cancel before it started does not say it is processing.
    started = await store.mark_processing(job.key)
    assert started is not None and started.message == lifecycle.CANCELLING
    final = await lifecycle.close_when_done(store, job.key)
    assert final is not None and final.status is JobStatus.cancelled


async def test_subscribers_see_every_state_up_to_the_final_one(make_store: StoreFactory) -> None:
    api, follower_store, worker = make_store(), make_store(), make_store()
    job = make_job(3)
    await api.create(job)
    seen: list[Job] = []
    async with follower_store.subscribe(job.key) as snapshots:

        async def follow() -> None:
            async for snapshot in snapshots:
                seen.append(snapshot)
                if snapshot.status.is_final:
                    return

        follower = asyncio.create_task(follow())
        await worker.mark_processing(job.key)
        for index in range(3):
            await worker.record_image(job.key, processing(index))
            await worker.record_image(job.key, succeeded(index))
        await lifecycle.close_when_done(worker, job.key)
        await asyncio.wait_for(follower, timeout=5)
    versions = [snapshot.version for snapshot in seen]
    # Never out of order; Redis subscribers may see a state twice (the API drops repeats by version).
    assert versions == sorted(versions)
    assert seen[-1].status is JobStatus.completed and seen[-1].succeeded == 3
    assert seen[-1].version == 1 + 1 + 6 + 1
    # Snapshots are small: the data URI travels as a summary.
    assert all(snapshot.source_image_urls[0].endswith("(4000 base64 chars)") for snapshot in seen)


async def test_live_keys_list_unfinished_jobs_until_they_end(store: JobStore) -> None:
    running, done = make_job(1), make_job(1)
    await store.create(running)
    await store.create(done)
    await store.finish(done.key, JobStatus.failed)
    live = await store.live_keys(limit=100_000)
    assert running.key in live and done.key not in live
    await store.delete(running.key)
    await store.forget_live(running.key)
    assert running.key not in await store.live_keys(limit=100_000)
    assert await store.get(running.key) is None


async def test_a_lock_is_held_once_until_it_expires(store: JobStore) -> None:
    name = f"lock-{make_job(1).key}"
    assert await store.try_lock(name, 0.2)
    assert not await store.try_lock(name, 0.2)


async def test_health_names_the_backend(store: JobStore) -> None:
    health = await store.health()
    assert health["healthy"] is True and health["backend"] in {"memory", "redis"}


async def test_the_sources_of_live_jobs_are_bounded(make_store: StoreFactory) -> None:
    api, other_api = make_store(), make_store()
    first, second, third = make_job(1), make_job(1), make_job(1)
    limit = first.source_bytes * 2 + 100
    assert (await api.create(first, limit))[1]
    assert (await other_api.create(second, limit))[1]
    assert await api.held_source_bytes() == 2 * first.source_bytes
    with pytest.raises(CreateRefused, match="data: URIs") as refused:
        await other_api.create(third, limit)
    assert refused.value.count == 2 * first.source_bytes and refused.value.setting == "MAX_PENDING_SOURCE_BYTES"
    assert await api.get(third.key) is None
    # A job that ends, or is forgotten, gives its bytes back.
    await api.finish(first.key, JobStatus.completed)
    assert (await other_api.create(third, limit))[1]
    await api.delete(third.key)
    assert await api.held_source_bytes() == second.source_bytes
    # One job alone always fits, whatever its size.
    await api.finish(second.key, JobStatus.failed)
    assert (await api.create(make_job(3), 10))[1]


async def test_a_closed_job_is_counted_once_however_many_close_it(make_store: StoreFactory) -> None:
    # Several processes racing to close the same job (the last image's task, a cancel, the reconciler):
    # the jobs counter moves by exactly one, with the status that won.
    job = make_job(2, tenant="closing-race")
    await make_store().create(job)
    labels = {"type": job.type, "tenant": job.tenant}

    def counted(status: str) -> float:
        return REGISTRY.get_sample_value("capsvc_jobs_total", {**labels, "status": status}) or 0.0

    before = {status: counted(status) for status in ("completed", "failed", "cancelled")}
    closers = [make_store() for _ in range(4)]
    statuses = [JobStatus.cancelled, JobStatus.failed] * 2
    closed = await asyncio.gather(
        *(store.finish(job.key, status) for store, status in zip(closers, statuses, strict=True))
    )
    final = {result.status.value for result in closed if result is not None}
    assert len(final) == 1
    after = {status: counted(status) for status in ("completed", "failed", "cancelled")}
    assert {status: after[status] - before[status] for status in after} == {
        status: (1.0 if status in final else 0.0) for status in after
    }
