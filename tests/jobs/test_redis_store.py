"""What only the Redis store has: atomicity across instances, expiring keys, outages (the rest is the contract)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from capability_service.jobs import keys, redis_store
from capability_service.jobs.models import ImageStatus, Job, JobStatus
from capability_service.jobs.redis_store import RedisJobStore
from capability_service.jobs.store import JobStoreUnavailable
from tests.jobs.samples import DATA_URI, make_job, processing, succeeded
from tests.support.servers import free_port

TTL = 120


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
    stored = await stores[0].get(job.key)
    assert stored is not None
    assert stored.status is JobStatus.pending
    assert stored.version == 1
    # Live jobs keep their full sources; the data URI comes back byte for byte.
    assert stored.source_image_urls == job.source_image_urls
    assert [image.status for image in stored.images] == [ImageStatus.pending] * 3


async def test_finish_is_atomic_idempotent_and_expires(make_store: Callable[[], RedisJobStore], raw: Redis) -> None:
    store = make_store()
    job = make_job(3)
    await store.create(job)
    started = await store.mark_processing(job.key)
    assert started is not None and started.status is JobStatus.processing
    assert started.source_image_urls[0] == DATA_URI
    assert await raw.ttl(keys.job_key(job.key)) > TTL
    await store.record_image(job.key, succeeded(0))
    await store.record_image(job.key, processing(1))

    first, second = await asyncio.gather(
        store.finish(job.key, JobStatus.cancelled), make_store().finish(job.key, JobStatus.failed, "other")
    )
    assert first is not None and second is not None
    assert first.status is second.status
    assert first.version == second.version
    final = await store.get(job.key)
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
    assert await raw.exists(keys.sources_key(job.key)) == 0
    assert 0 < await raw.ttl(keys.job_key(job.key)) <= TTL
    assert await raw.zscore(keys.LIVE_JOBS, job.key) is None
    # Nothing changes a final job any more.
    assert await store.record_image(job.key, succeeded(1)) == (None, False)
    assert await store.mark_processing(job.key) is None
    again = await store.finish(job.key, JobStatus.completed)
    assert again is not None and again.version == final.version and again.status is final.status


async def test_finish_recomputes_its_message_when_an_image_lands_meanwhile(
    make_store: Callable[[], RedisJobStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, worker = make_store(), make_store()
    job = make_job(2)
    await store.create(job)
    await store.record_image(job.key, succeeded(0))
    real_snapshot = store.snapshot
    calls = 0

    async def snapshot_then_race(key: str) -> Job | None:
        nonlocal calls
        calls += 1
        seen = await real_snapshot(key)
        if calls == 1:
            # Another worker records an image between the read and the write of `finish`.
            await worker.record_image(job.key, succeeded(1))
        return seen

    monkeypatch.setattr(store, "snapshot", snapshot_then_race)
    final = await store.finish(job.key, JobStatus.completed)
    assert calls == 2
    assert final is not None
    assert final.message == "Completed: 2 of 2 images processed"
    assert [image.status for image in final.images] == [ImageStatus.succeeded, ImageStatus.succeeded]


async def test_delete_forgets_the_job(make_store: Callable[[], RedisJobStore], raw: Redis) -> None:
    store = make_store()
    job = make_job(1)
    await store.create(job)
    await store.delete(job.key)
    assert await store.get(job.key) is None
    assert await raw.exists(keys.job_key(job.key), keys.sources_key(job.key)) == 0
    assert job.key not in await store.live_keys(limit=100_000)


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
