"""The Redis dispatcher and workers in this process, against a real redis-server and real HTTP sources.

Each `build_services` call stands for one process (API instance or worker); they share only Redis and
the storage directory, as separate processes do. Real processes are in tests/e2e/test_scale_out.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from saq.job import Status as TaskStatus

from capability_service.core.config import Settings
from capability_service.jobs import distributed, keys, lifecycle
from capability_service.jobs.distributed import SWEPT_ERROR, ImageWorker, RedisDispatcher
from capability_service.jobs.errors import Unavailable
from capability_service.jobs.models import ImageOutcome, ImageStatus, Job, JobStatus, job_key
from capability_service.jobs.redis_store import RedisJobStore
from capability_service.services import Services, build_services
from tests.api.helpers import wait_final
from tests.jobs.samples import final, wait_for
from tests.support.data import AUTH, read_image
from tests.support.servers import photo_server

# A database of its own: the reconciler walks every live job of the database it works on.
DB = 2
PHOTO = read_image("rocket.jpg")


@pytest.fixture
async def db_url(redis_url: str) -> str:
    url = redis_url.rsplit("/", 1)[0] + f"/{DB}"
    client = Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    return url


@pytest.fixture
def images() -> Iterator[str]:
    with photo_server(PHOTO, {"/photo.jpg": 0, "/slow.jpg": 0.4, "/very-slow.jpg": 4}) as base:
        yield base


@pytest.fixture
async def cluster(make_settings: Callable[..., Settings], db_url: str) -> AsyncIterator[Callable[..., Any]]:
    """`cluster()` -> a started Services (one "process"); `cluster.worker(services, n)` -> a running worker."""
    started: list[Services] = []
    workers: list[ImageWorker] = []

    def settings(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "job_backend": "redis",
            "redis_url": db_url,
            "job_heartbeat_seconds": 2,
            "cpu_workers": 1,
            "shutdown_grace_seconds": 5,
        }
        return make_settings(**{**values, **overrides})

    async def process(**overrides: Any) -> Services:
        services = build_services(settings(**overrides))
        await services.start()
        started.append(services)
        return services

    async def worker(services: Services, concurrency: int = 1) -> ImageWorker:
        assert isinstance(services.dispatcher, RedisDispatcher)
        image_worker = services.dispatcher.worker(concurrency)
        await image_worker.start()
        workers.append(image_worker)
        return image_worker

    process.worker = worker  # type: ignore[attr-defined]
    yield process
    for image_worker in workers:
        await image_worker.stop()
    for services in reversed(started):
        await services.stop()


def dispatcher_of(services: Services) -> RedisDispatcher:
    assert isinstance(services.dispatcher, RedisDispatcher)
    return services.dispatcher


async def submit(services: Services, sources: list[str], job_id: str | None = None) -> Job:
    prepared = services.jobs.prepare(
        job_id=job_id or f"d-{uuid.uuid4().hex[:10]}",
        tenant="default",
        user_id=None,
        job_type="batch_optimization",
        config={"format": "webp", "maxSize": 320},
        sources=sources,
    )
    job, created, _quota = await services.jobs.submit(prepared)
    assert created
    return job


async def test_images_of_one_job_spread_over_workers(cluster: Any, images: str) -> None:
    api = await cluster()
    first, second = await cluster(), await cluster()
    await cluster.worker(first)
    await cluster.worker(second)
    job = await submit(api, [f"{images}/slow.jpg"] * 4)
    done = await wait_for(api.store, job.key, final)
    assert done.status is JobStatus.completed
    assert done.succeeded == 4
    assert all(Path(str(image.result_url)).suffix == ".webp" for image in done.images)
    tasks = await dispatcher_of(api).queue.jobs([keys.task_key(job.key, i) for i in range(4)])
    for task in tasks:
        # The job closes as its last image is recorded; SAQ marks that task complete a moment later.
        assert task is not None
        await task.refresh(until_complete=5)
        assert task.status is TaskStatus.COMPLETE
    assert len({task.worker_id for task in tasks if task is not None}) == 2


async def test_cancel_from_another_instance_stops_the_running_image_within_a_second(cluster: Any, images: str) -> None:
    api, other_api, worker_process = await cluster(), await cluster(), await cluster()
    await cluster.worker(worker_process, concurrency=1)
    job = await submit(api, [f"{images}/very-slow.jpg", f"{images}/photo.jpg"])
    await wait_for(api.store, job.key, lambda j: j.images[0].status is ImageStatus.processing)
    queue = dispatcher_of(api).queue

    cancelled = await other_api.jobs.cancel("default", job.job_id, None)
    started = time.monotonic()
    assert cancelled.status is JobStatus.cancelled
    running, queued = await queue.jobs([keys.task_key(job.key, 0), keys.task_key(job.key, 1)])
    assert running is not None
    await running.refresh(until_complete=5)
    assert running.status in (TaskStatus.COMPLETE, TaskStatus.ABORTED)
    assert time.monotonic() - started < 1, "the worker ran the image on for a second after the cancel"
    # The image waiting behind it never runs. With one worker slot it was never queued (the tenant's
    # window holds one image); had it been, its task is aborted or ends at once without processing.
    if queued is not None:
        await queued.refresh(until_complete=5)
        assert queued.status is TaskStatus.ABORTED or str(queued.result).startswith("skipped")
    [after] = await queue.jobs([keys.task_key(job.key, 1)])
    assert after is None or after.status is not TaskStatus.ACTIVE
    result = await api.store.get(job.key)
    assert result is not None
    assert result.status is JobStatus.cancelled
    assert [image.status for image in result.images] == [ImageStatus.cancelled, ImageStatus.cancelled]
    assert result.message == "Cancelled: 0 of 2 images finished before the job stopped"


async def test_duplicate_and_retried_tasks_never_redo_a_finished_image(cluster: Any, images: str) -> None:
    api = await cluster()
    dispatcher = dispatcher_of(api)
    job = await submit(api, [f"{images}/photo.jpg", f"{images}/very-slow.jpg"])
    # Queueing the same images again while they wait is a no-op.
    await dispatcher.dispatch(job)
    assert await dispatcher.queue.count("queued") == 2

    worker = await cluster.worker(await cluster(), concurrency=2)
    first = await wait_for(api.store, job.key, lambda j: j.images[0].status is ImageStatus.succeeded)
    result_file = Path(api.settings.local_storage_dir) / str(first.images[0].result_key)
    written = result_file.stat().st_mtime_ns
    # A second delivery of image 0 (as after a lost acknowledgement) finds it done and leaves it alone.
    first_task = await dispatcher.queue.job(keys.task_key(job.key, 0))
    assert first_task is not None
    await first_task.refresh(until_complete=5)
    retried = await dispatcher.queue.enqueue(
        distributed.TASK_FUNCTION, key=keys.task_key(job.key, 0), job_key=job.key, index=0, timeout=30
    )
    if retried is None:
        # Queued again already: the reconciler's own second delivery, to be left alone just the same.
        retried = await dispatcher.queue.job(keys.task_key(job.key, 0))
    assert retried is not None
    await retried.refresh(until_complete=10)
    assert retried.result == "skipped: image already succeeded"
    assert result_file.stat().st_mtime_ns == written
    now = await api.store.get(job.key)
    assert now is not None and now.images[0] == first.images[0] and now.processed == 1
    await worker.stop()


async def test_reconciler_fails_an_image_whose_task_was_given_up(cluster: Any, images: str) -> None:
    api = await cluster()
    queue = dispatcher_of(api).queue
    job = await submit(api, [f"{images}/photo.jpg", f"{images}/photo.jpg"])
    # What SAQ's sweep leaves when the last attempt's worker went silent.
    task = await queue.job(keys.task_key(job.key, 0))
    assert task is not None
    await queue.abort(task, SWEPT_ERROR)
    task.attempts = 3
    await queue.finish(task, TaskStatus.ABORTED, error=SWEPT_ERROR)

    reconciler = dispatcher_of(await cluster()).worker(1)
    assert await reconciler.reconcile() == 1
    after = await api.store.get(job.key)
    assert after is not None
    assert after.images[0].status is ImageStatus.failed
    assert after.images[0].error == "gave up after 3 attempts: the worker processing it stopped responding"
    assert after.status is JobStatus.pending
    # Image 1 still has its task, and the job closes when a worker has done it.
    await cluster.worker(await cluster())
    done = await wait_for(api.store, job.key, final)
    assert done.status is JobStatus.completed
    assert done.message == "Completed with 1 of 2 images failed"


async def test_reconciler_closes_jobs_left_open(cluster: Any, images: str, monkeypatch: pytest.MonkeyPatch) -> None:
    api = await cluster()
    store = api.store
    assert isinstance(store, RedisJobStore)
    # All images recorded, but the worker that recorded the last one died before closing the job.
    recorded = await submit(api, [f"{images}/photo.jpg"])
    await store.record_image(
        recorded.key, ImageOutcome(index=0, status=ImageStatus.succeeded, result_url="http://r/0.webp")
    )
    # Accepted, but never queued: the API instance died between storing and queueing.
    unqueued = lifecycle.new_job(
        job_id=f"d-{uuid.uuid4().hex[:10]}",
        user_id=None,
        job_type="batch_optimization",
        plugin="ai-playground",
        config={},
        sources=[f"{images}/photo.jpg"],
    )
    await store.create(unqueued)
    monkeypatch.setattr(distributed, "UNQUEUED_GRACE_SECONDS", 0.0)

    reconciler = dispatcher_of(await cluster()).worker(1)
    await reconciler.reconcile()
    closed = await store.get(recorded.key)
    assert closed is not None and closed.status is JobStatus.completed
    lost = await store.get(unqueued.key)
    assert lost is not None and lost.status is JobStatus.failed
    assert lost.images[0].error is not None and "never queued" in lost.images[0].error
    assert await store.live_keys() == []


async def test_serve_with_local_workers_runs_jobs_itself(
    make_client: Callable[..., Any], db_url: str, images: str
) -> None:
    client = await make_client(job_backend="redis", redis_url=db_url, serve_local_workers=2, cpu_workers=1)
    health = (await client.get("/api/v1/health", headers=AUTH)).json()
    assert health["jobs"]["backend"] == "redis"
    assert health["jobs"]["local_workers"] == 2
    payload = {"type": "batch_optimization", "config": {"format": "jpg"}, "source_image_urls": [f"{images}/photo.jpg"]}
    response = await client.post("/api/v1/ai/job", json=payload, headers=AUTH)
    assert response.status_code == 202
    assert (await wait_final(client, response.json()["data"]["job_id"]))["status"] == "completed"


async def test_a_full_work_queue_turns_new_jobs_away(cluster: Any, images: str) -> None:
    # No worker runs: queued images stay queued.
    api = await cluster(max_queued_images=3)
    await submit(api, [f"{images}/photo.jpg"] * 2)
    with pytest.raises(Unavailable, match="work queue holds 2 images") as refused:
        await submit(api, [f"{images}/photo.jpg"] * 2, job_id="too-many")
    assert refused.value.retry_after
    # The refused job is forgotten, so the same submission can be made again later.
    assert await api.store.get(job_key("default", "too-many")) is None
    await submit(api, [f"{images}/photo.jpg"])
