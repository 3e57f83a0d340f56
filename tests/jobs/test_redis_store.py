"""The Redis job store against a real redis-server: atomicity across instances, events, outages."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from capability_service.jobs import keys, redis_store
from capability_service.jobs.models import ImageOutcome, ImageStatus, Job, JobStatus
from capability_service.jobs.redis_store import RedisJobStore
from capability_service.jobs.store import JobStoreUnavailable
from tests.support.servers import free_port

TTL = 120
DATA_URI = "data:image/png;base64," + "A" * 4000


def make_job(images: int = 2, job_id: str | None = None) -> Job:
    return Job.new(
        job_id=job_id or f"t-{uuid.uuid4().hex[:12]}",
        user_id="u-1",
        job_type="batch_optimization",
        plugin="ai-playground",
        config={"format": "webp"},
        sources=[DATA_URI] + [f"http://127.0.0.1:9/{n}.jpg" for n in range(1, images)],
    )


def succeeded(index: int) -> ImageOutcome:
    return ImageOutcome(index=index, status=ImageStatus.succeeded, result_url=f"http://r/{index}.webp")


@pytest.fixture
async def make_store(redis_url: str) -> AsyncIterator[Callable[[], RedisJobStore]]:
    """Separate store instances stand for separate API or worker processes."""
    stores: list[RedisJobStore] = []

    def factory() -> RedisJobStore:
        store = RedisJobStore(redis_url, ttl_seconds=TTL)
        stores.append(store)
        return store

    yield factory
    for store in stores:
        await store.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_create_is_atomic_and_idempotent_across_instances(make_store: Callable[[], RedisJobStore]) -> None:
    job = make_job(3)
    stores = [make_store() for _ in range(4)]
    results = await asyncio.gather(*(store.create(job.model_copy(deep=True)) for store in stores for _ in range(5)))
    assert sum(created for _job, created in results) == 1
    assert {stored.fingerprint for stored, _created in results} == {job.fingerprint}
    stored = await stores[0].get(job.job_id)
    assert stored is not None
    assert stored.status is JobStatus.pending
    assert stored.version == 1
    # Live jobs keep their full sources; the data URI comes back byte for byte.
    assert stored.source_image_urls == job.source_image_urls
    assert [image.status for image in stored.images] == [ImageStatus.pending] * 3


async def test_concurrent_image_updates_from_many_workers_all_land(make_store: Callable[[], RedisJobStore]) -> None:
    total = 60
    job = make_job(total)
    api, *workers = [make_store() for _ in range(4)]
    await api.create(job)

    async def work(store: RedisJobStore, index: int) -> bool:
        await store.record_image(job.job_id, ImageOutcome(index=index, status=ImageStatus.processing))
        outcome = succeeded(index) if index % 3 else ImageOutcome(index=index, status=ImageStatus.failed, error="bad")
        _snapshot, last = await store.record_image(job.job_id, outcome)
        return last

    lasts = await asyncio.gather(*(work(workers[i % 3], i) for i in range(total)))
    # Exactly one writer learns it wrote the last image, so exactly one closes the job.
    assert sum(lasts) == 1
    stored = await api.get(job.job_id)
    assert stored is not None
    assert stored.processed == total
    assert stored.succeeded == total - total // 3
    assert stored.failed_count == total // 3
    assert all(image.index == i for i, image in enumerate(stored.images))
    assert stored.version == 1 + 2 * total
    assert stored.message == f"Processed {total} of {total} images"


async def test_a_final_image_outcome_is_never_replaced(make_store: Callable[[], RedisJobStore]) -> None:
    store = make_store()
    job = make_job(2)
    await store.create(job)
    await store.record_image(job.job_id, succeeded(0))
    # A retried or duplicated run of the same image changes nothing and is not counted twice.
    again, last = await store.record_image(job.job_id, ImageOutcome(index=0, status=ImageStatus.processing))
    assert again is not None and not last
    again, last = await store.record_image(job.job_id, ImageOutcome(index=0, status=ImageStatus.failed, error="x"))
    assert not last
    stored = await store.get(job.job_id)
    assert stored is not None
    assert stored.images[0].status is ImageStatus.succeeded
    assert stored.processed == 1
    _snapshot, last = await store.record_image(job.job_id, succeeded(1))
    assert last


async def test_finish_is_atomic_idempotent_and_expires(make_store: Callable[[], RedisJobStore], raw: Redis) -> None:
    store = make_store()
    job = make_job(3)
    await store.create(job)
    processing = await store.mark_processing(job.job_id)
    assert processing is not None and processing.status is JobStatus.processing
    assert processing.source_image_urls[0] == DATA_URI
    assert await raw.ttl(keys.job_key(job.job_id)) > TTL
    await store.record_image(job.job_id, succeeded(0))
    await store.record_image(job.job_id, ImageOutcome(index=1, status=ImageStatus.processing))

    first, second = await asyncio.gather(
        store.finish(job.job_id, JobStatus.cancelled), make_store().finish(job.job_id, JobStatus.failed, "other")
    )
    assert first is not None and second is not None
    assert first.status is second.status
    assert first.version == second.version
    final = await store.get(job.job_id)
    assert final is not None
    assert final.status is first.status
    assert [image.status for image in final.images] == [
        ImageStatus.succeeded,
        ImageStatus.cancelled,
        ImageStatus.cancelled,
    ]
    assert final.images[2].error == "cancelled before this image finished"
    assert final.finished_at is not None and final.started_at is not None
    # A finished job keeps summaries of its sources only, and expires after the result TTL.
    assert final.source_image_urls[0] == "data:image/png;base64,…(4000 base64 chars)"
    assert await raw.exists(keys.sources_key(job.job_id)) == 0
    assert 0 < await raw.ttl(keys.job_key(job.job_id)) <= TTL
    assert await raw.zscore(keys.LIVE_JOBS, job.job_id) is None
    # Nothing changes a final job any more.
    assert await store.record_image(job.job_id, succeeded(1)) == (None, False)
    assert await store.mark_processing(job.job_id) is None
    again = await store.finish(job.job_id, JobStatus.completed)
    assert again is not None and again.version == final.version and again.status is final.status


async def test_finish_recomputes_its_message_when_an_image_lands_meanwhile(
    make_store: Callable[[], RedisJobStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, worker = make_store(), make_store()
    job = make_job(2)
    await store.create(job)
    await store.record_image(job.job_id, succeeded(0))
    real_snapshot = store.snapshot
    calls = 0

    async def snapshot_then_race(job_id: str) -> Job | None:
        nonlocal calls
        calls += 1
        seen = await real_snapshot(job_id)
        if calls == 1:
            # Another worker records an image between the read and the write of `finish`.
            await worker.record_image(job.job_id, succeeded(1))
        return seen

    monkeypatch.setattr(store, "snapshot", snapshot_then_race)
    final = await store.finish(job.job_id, JobStatus.completed)
    assert calls == 2
    assert final is not None
    assert final.message == "Completed: 2 of 2 images processed"
    assert [image.status for image in final.images] == [ImageStatus.succeeded, ImageStatus.succeeded]


async def test_subscribers_on_another_instance_see_every_state_up_to_the_final_one(
    make_store: Callable[[], RedisJobStore],
) -> None:
    api, other_api, worker = make_store(), make_store(), make_store()
    job = make_job(3)
    await api.create(job)
    seen: list[Job] = []
    async with other_api.subscribe(job.job_id) as snapshots:

        async def follow() -> None:
            async for snapshot in snapshots:
                seen.append(snapshot)
                if snapshot.status.is_final:
                    return

        follower = asyncio.create_task(follow())
        await worker.mark_processing(job.job_id)
        for index in range(3):
            await worker.record_image(job.job_id, ImageOutcome(index=index, status=ImageStatus.processing))
            await asyncio.sleep(0.02)
            await worker.record_image(job.job_id, succeeded(index))
        await worker.finalize(job.job_id)
        await asyncio.wait_for(follower, timeout=5)
    versions = [snapshot.version for snapshot in seen]
    assert versions == sorted(versions)
    assert seen[-1].status is JobStatus.completed
    assert seen[-1].succeeded == 3
    assert seen[-1].version == 1 + 1 + 6 + 1
    assert any(snapshot.status is JobStatus.processing for snapshot in seen)
    # Snapshots are small: the data URI travels as a summary.
    assert all(snapshot.source_image_urls[0].endswith("(4000 base64 chars)") for snapshot in seen)
    assert other_api._events._channels == {}


async def test_cancel_on_one_instance_reaches_a_watcher_on_another_within_a_second(
    make_store: Callable[[], RedisJobStore],
) -> None:
    api, worker = make_store(), make_store()
    job = make_job(1)
    await api.create(job)
    async with worker.watch_cancel(job.job_id) as cancelled:
        assert not cancelled.is_set()
        started = time.perf_counter()
        await api.request_cancel(job.job_id)
        await asyncio.wait_for(cancelled.wait(), timeout=1)
        assert time.perf_counter() - started < 1
    stored = await api.get(job.job_id)
    assert stored is not None and stored.cancel_requested and stored.message == "Cancelling"
    # A watcher that arrives after the cancel sees it at once.
    async with worker.watch_cancel(job.job_id) as late:
        assert late.is_set()


async def test_delete_forgets_the_job(make_store: Callable[[], RedisJobStore], raw: Redis) -> None:
    store = make_store()
    job = make_job(1)
    await store.create(job)
    await store.delete(job.job_id)
    assert await store.get(job.job_id) is None
    assert await raw.exists(keys.job_key(job.job_id), keys.sources_key(job.job_id)) == 0
    assert job.job_id not in await store.live_job_ids(limit=100_000)


async def test_unreachable_redis_raises_a_clear_store_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_store, "SUBSCRIBE_READY_TIMEOUT_SECONDS", 0.5)
    port = free_port()
    store = RedisJobStore(f"redis://user:secret@127.0.0.1:{port}/0", ttl_seconds=TTL)
    try:
        started = time.perf_counter()
        with pytest.raises(JobStoreUnavailable, match=rf"Redis at 127\.0\.0\.1:{port}/0 is unreachable"):
            await store.get("x")
        assert time.perf_counter() - started < 5
        with pytest.raises(JobStoreUnavailable) as error:
            await store.create(make_job(1))
        assert "secret" not in str(error.value)
        with pytest.raises(JobStoreUnavailable, match="cannot subscribe to job events"):
            async with store.subscribe("x"):
                pass
        health = await store.health()
        assert health["healthy"] is False
        assert health["redis"] == f"127.0.0.1:{port}/0"
        assert "unreachable" in health["detail"]
    finally:
        await store.close()


async def test_health_reports_a_reachable_redis(make_store: Callable[[], RedisJobStore]) -> None:
    health = await make_store().health()
    assert health["healthy"] is True
    assert health["backend"] == "redis"
    assert isinstance(health["live_jobs"], int)
