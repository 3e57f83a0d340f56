"""The Redis mode: jobs in `RedisJobStore`, one SAQ task per image, run by any number of workers.

Why SAQ: it is asyncio-native like the rest of the service (the worker awaits the same `ImagePipeline`
as the in-process engine), it keeps its queue in the Redis we already need, and it has what
at-least-once processing takes: per-task heartbeats, timeouts, retries, a sweep that hands the tasks of
a dead worker to a live one, and an abort that reaches a running task.

Guarantees, and who gives them:
- a task per image, keyed by (job id, index): images of one job spread over every worker; enqueueing a
  key that is pending or running is a no-op, and a task whose image is already final does nothing, so a
  retry never redoes (or undoes) a finished image;
- at-least-once: a worker beats its heartbeat while it works; SAQ's sweep re-queues the task of a
  worker that went silent (killed, frozen) until `JOB_MAX_ATTEMPTS` is used up;
- the reconciler (one worker at a time, every sweep interval) fails the images whose task was given up
  with a reason and closes jobs whose last image was recorded but not closed, so no job stays
  `processing` forever;
- exactly-once closing: the store tells exactly one recorder that it wrote a job's last image, and the
  closing transition itself is atomic and idempotent in Redis;
- cancel from any API instance: the job is closed at once, workers running its images see the store's
  cancel flag over pub/sub within milliseconds and stop, queued tasks are aborted in SAQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import time
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from saq.job import Job as Task
from saq.job import Status as TaskStatus
from saq.queue.redis import RedisQueue
from saq.types import Context
from saq.worker import Worker

from capability_service.core.config import Settings
from capability_service.core.security import DEFAULT_TENANT
from capability_service.jobs import keys, lifecycle
from capability_service.jobs.errors import Unavailable
from capability_service.jobs.fair import Released
from capability_service.jobs.models import ImageOutcome, ImageStatus, Job
from capability_service.jobs.pipeline import ImagePipeline
from capability_service.jobs.redis_fair import RedisFairQueue
from capability_service.jobs.redis_store import RedisJobStore, make_redis
from capability_service.jobs.store import JobStoreUnavailable
from capability_service.jobs.task import ImageTasks
from capability_service.plugins.manager import PluginRegistry

log = logging.getLogger(__name__)

TASK_FUNCTION = "process_image"
# SAQ's error on a task it took from a silent worker.
SWEPT_ERROR = "swept: the worker processing this image stopped responding"
# SAQ's own timeout is a backstop behind the pipeline's per-image timeout.
TASK_TIMEOUT_MARGIN_SECONDS = 30
# Spacing of retries, so an image that kills its worker does not take them all down at once.
RETRY_DELAY_SECONDS = 1.0
# How long SAQ keeps a finished task's record, which the reconciler reads.
TASK_RECORD_TTL_SECONDS = 3600
# A job whose image has no task this long after creation was never queued (its API died mid-submit).
NEVER_QUEUED = "the image was never queued for processing (the service stopped while accepting the job)"
UNQUEUED_GRACE_SECONDS = 60.0
# A running task whose worker has not stopped on the cancel flag by then gets a SAQ abort.
STRAGGLER_ABORT_SECONDS = 2.0
# How long the sweep waits for a silent worker to acknowledge an abort before re-queueing its task.
SWEEP_ABORT_WAIT_SECONDS = 2.0
# An idle worker slot re-checks for shutdown this often, so a stop waits at most this long for idle slots.
# Each idle slot then asks Redis a blocking BLMOVE a few times a second: nothing for Redis, and a worker
# (or an API with local workers, as every Redis-mode test has) stops in a quarter of a second, not one.
DEQUEUE_TIMEOUT_SECONDS = 0.25
STATS_REFRESH_SECONDS = 5.0
# Told to clients when the work queue is full.
QUEUE_FULL_RETRY_AFTER_SECONDS = 10
# While Redis is unreachable: how long an idle worker slot waits between tries, and how often the same
# outage message of SAQ's may be logged again.
OUTAGE_PAUSE_SECONDS = 1.0
# How long past its grace period a stopping worker is waited for before it is cancelled.
STOP_MARGIN_SECONDS = 10.0
# How often the image slots of the registered workers (the fair share's capacity) are read again.
CAPACITY_REFRESH_SECONDS = 5.0
OUTAGE_LOG_WINDOW_SECONDS = 60.0


def sweep_interval(heartbeat_seconds: int) -> int:
    """How often workers look for silent workers' tasks and unfinished jobs."""
    return max(1, heartbeat_seconds // 3)


class _SetexAsSet:
    """SAQ 0.26 still calls SETEX, which redis-py 8 deprecates with a warning per call; SET EX is the same."""

    def setex(self, name: Any, time: Any, value: Any) -> Any:
        return self.set(name, value, ex=time)  # type: ignore[attr-defined]


class _QueuePipeline(_SetexAsSet, Pipeline):  # type: ignore[misc]
    pass


class QueueRedis(_SetexAsSet, Redis):  # type: ignore[misc]
    """The task queue's Redis client."""

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return _QueuePipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


class RedisOutage:
    """One log line when Redis goes away and one when it is back, instead of a traceback per attempt."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._since: float | None = None

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def lost(self, what: str, exc: BaseException) -> None:
        if self._since is None:
            self._since = time.monotonic()
            log.warning("lost Redis at %s while %s (%s); retrying until it is back", self.where, what, _describe(exc))

    def back(self) -> None:
        if self._since is not None:
            log.info("Redis at %s is back after %.0f s", self.where, time.monotonic() - self._since)
            self._since = None


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class QuietOutages(logging.Filter):
    """Turns SAQ's tracebacks for an unreachable Redis into one line, repeated at most every `window` s.

    SAQ logs every failed upkeep round and task update with `logger.exception`; while Redis is down
    that is a traceback a second for something an operator needs to read once.
    """

    def __init__(self, window: float = OUTAGE_LOG_WINDOW_SECONDS) -> None:
        super().__init__()
        self.window = window
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
            return True
        what = str(record.msg)
        now = time.monotonic()
        if now - self._last.get(what, -self.window) < self.window:
            return False
        self._last[what] = now
        record.msg = f"{record.getMessage()}: Redis unreachable ({_describe(exc)})"
        record.args, record.exc_info, record.exc_text = (), None, None
        return True


QUIET_OUTAGES = QuietOutages()


class ImageQueue(RedisQueue):
    """SAQ's Redis queue: a shorter wait for a silent worker's abort in the sweep, and calm outages.

    A dequeue that cannot reach Redis pauses and reports "nothing to do" instead of failing: SAQ would
    otherwise start the next dequeue at once, and log each failure as an unretrieved task exception.
    """

    def __init__(self, *args: Any, where: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outage = RedisOutage(where)

    async def sweep(self, lock: int = 60, abort: float = SWEEP_ABORT_WAIT_SECONDS) -> list[str]:
        swept: list[str] = await super().sweep(lock, abort)
        return swept

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Task | None:  # noqa: ASYNC109 - SAQ's signature
        try:
            task: Task | None = await super().dequeue(timeout, poll_interval)
        except (RedisError, OSError) as exc:
            self.outage.lost("waiting for images", exc)
            await asyncio.sleep(OUTAGE_PAUSE_SECONDS)
            return None
        self.outage.back()
        return task


class _TaskWorker(Worker[Context]):
    """SAQ's worker without its own signal handlers, whose upkeep stops first at shutdown.

    SAQ waits for every task of the worker at shutdown, its upkeep loops too; those sleep for up to a
    sweep interval, which would hold a graceful stop for no reason (or past the grace period, which
    then cancels the images still running).
    """

    SIGNALS: list[signal.Signals] = []  # noqa: RUF012 - overrides SAQ's class attribute

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._upkeep_tasks: list[asyncio.Task[None]] = []

    async def upkeep(self) -> list[asyncio.Task[None]]:
        tasks: list[asyncio.Task[None]] = await super().upkeep()
        self._upkeep_tasks = tasks
        return tasks

    async def stop(self) -> None:
        self.event.set()
        for task in self._upkeep_tasks:
            task.cancel()
        await super().stop()

    async def process(self) -> bool:
        # Recording a task's state can meet a Redis outage too; SAQ would leave that exception in a task
        # nobody awaits. The task itself stays in Redis, and the sweep re-queues it once Redis is back.
        try:
            return bool(await super().process())
        except (RedisError, OSError) as exc:
            if isinstance(self.queue, ImageQueue):
                self.queue.outage.lost("recording an image task", exc)
            return False


def _lost_reason(task: Task | None) -> str | None:
    """Why a released image will never be finished by its task; None while it still may be."""
    if task is None or task.status not in (TaskStatus.COMPLETE, TaskStatus.FAILED, TaskStatus.ABORTED):
        return None
    if task.status is TaskStatus.COMPLETE:
        return "internal error: processing ended without recording a result"
    error = task.error or ""
    if error.startswith("swept"):
        why = "the worker processing it stopped responding"
    elif "TimeoutError" in error:
        why = f"processing took longer than the {task.timeout} s limit"
    elif error == "cancelled":
        why = "its worker shut down before finishing it"
    else:
        why = "the worker hit an internal error"
    return f"gave up after {task.attempts} attempt{'s' if task.attempts != 1 else ''}: {why}"


class WorkerCapacity:
    """Image slots of the registered workers (the sum of their concurrency), read at most every few seconds."""

    def __init__(self, queue: ImageQueue, fallback: int) -> None:
        self.queue = queue
        self.fallback = fallback
        self._value = fallback
        self._read_at = -math.inf

    async def __call__(self) -> int:
        if time.monotonic() - self._read_at > CAPACITY_REFRESH_SECONDS:
            self._read_at = time.monotonic()
            try:
                workers = (await self.queue.info()).get("workers") or {}
                slots = sum(int((info.get("metadata") or {}).get("concurrency", 1)) for info in workers.values())
            except (RedisError, OSError, ValueError, TypeError) as exc:
                log.debug("worker capacity unknown, keeping %d: %s", self._value, exc)
            else:
                # No worker yet (they may start after the API): release as if one would come.
                self._value = slots or self.fallback
        return self._value


class ImageFeed:
    """Releases images from the tenants' fair windows into the task queue; shared by API and workers."""

    def __init__(self, *, queue: ImageQueue, fair: RedisFairQueue, settings: Settings, task_timeout: int) -> None:
        self.queue = queue
        self.fair = fair
        self.settings = settings
        self.task_timeout = task_timeout

    async def release(self, tenant: str) -> None:
        """Queue the tenant's next images while its window has room."""
        for item in await self.fair.release(tenant):
            await self.enqueue(item)

    async def enqueue(self, item: Released) -> None:
        await self.queue.enqueue(
            TASK_FUNCTION,
            key=keys.task_key(item.key, item.index),
            timeout=self.task_timeout,
            heartbeat=self.settings.job_heartbeat_seconds,
            retries=self.settings.job_max_attempts,
            retry_delay=RETRY_DELAY_SECONDS,
            ttl=TASK_RECORD_TTL_SECONDS,
            job_key=item.key,
            index=item.index,
            tenant=item.tenant,
        )


# Task slots of a worker beyond its `concurrency`, kept for the images of tenants that arrive.
ARRIVAL_SLOTS = 1


class ImageWorker:
    """Runs image tasks from the queue: `concurrency` images at a time, with heartbeats and reconciling."""

    def __init__(
        self,
        *,
        tasks: ImageTasks,
        feed: ImageFeed,
        concurrency: int,
        heartbeat_seconds: int,
        shutdown_grace: float,
    ) -> None:
        self.tasks = tasks
        self.store = tasks.store
        self.feed = feed
        self.queue = feed.queue
        self.concurrency = concurrency
        self.heartbeat_seconds = heartbeat_seconds
        self.sweep_seconds = sweep_interval(heartbeat_seconds)
        self._saq = _TaskWorker(
            self.queue,
            functions=[(TASK_FUNCTION, self.process_image)],
            # One task slot more than the capacity the fair windows share out (the metadata below): the
            # tenants at work fill `concurrency` slots, so the image of a tenant that arrives starts at once
            # and waits only for the next free CPU thread, which `FairGate` gives it first.
            concurrency=concurrency + ARRIVAL_SLOTS,
            timers={"schedule": 1, "worker_info": 5, "sweep": self.sweep_seconds, "abort": 1},
            dequeue_timeout=DEQUEUE_TIMEOUT_SECONDS,
            shutdown_grace_period_s=math.ceil(shutdown_grace),
            # Shown in the queue's worker list: which process on which machine holds which task.
            metadata={"concurrency": concurrency, "pid": os.getpid(), "host": socket.gethostname()},
        )
        self.shutdown_grace = shutdown_grace
        self._run: asyncio.Task[None] | None = None
        self._reconciler: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        worker_id: str = self._saq.id
        return worker_id

    async def start(self) -> None:
        # The same filter object each time: adding it again is a no-op.
        logging.getLogger("saq").addFilter(QUIET_OUTAGES)
        await self.queue.connect()
        self._run = asyncio.create_task(self._saq.start(), name="image-worker")
        self._reconciler = asyncio.create_task(self._reconcile_forever(), name="image-reconciler")
        log.info("image worker %s started: %d images at a time", self.id, self.concurrency)

    async def stop(self) -> None:
        """Take no new image; let the running ones finish within the grace period, re-queue the rest."""
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
            self._reconciler = None
        if self._run is not None:
            self._saq.event.set()
            # SAQ gives running images the grace period; past it (and a margin) the worker is abandoned.
            _done, stuck = await asyncio.wait({self._run}, timeout=self.shutdown_grace + STOP_MARGIN_SECONDS)
            if stuck:
                self._run.cancel()
                log.warning("image worker %s did not stop within its grace period; cancelled", self.id)
            self._run = None
            log.info("image worker %s stopped", self.id)

    async def process_image(self, ctx: Context, *, job_key: str, index: int, tenant: str = DEFAULT_TENANT) -> str:
        """One image of one job; the return value is the task's result in SAQ (for the record)."""
        task: Task = ctx["job"]
        heartbeat = asyncio.create_task(self._beat(task), name=f"heartbeat-{task.key}")
        try:
            result = await self.tasks.run(job_key, index)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        # The image is final (or was never to run): its place in the tenant's window goes to the next one.
        # Not on an error or a cancel: SAQ retries the task then, and it keeps its place meanwhile.
        await self.feed.fair.done(Released(tenant, job_key, index))
        await self.feed.release(tenant)
        return result

    async def _beat(self, task: Task) -> None:
        pulse = max(0.5, self.heartbeat_seconds / 3)
        while True:
            await asyncio.sleep(pulse)
            try:
                # Writes the task's `touched` time, which SAQ's sweep compares with the heartbeat.
                await task.update()
            except Exception as exc:
                log.warning("heartbeat of task %s failed: %s", task.key, exc)

    async def _reconcile_forever(self) -> None:
        # Until cancelled, even when a Redis call swallowed the cancel (seen under load): `stop` awaits this.
        while not (task := asyncio.current_task()) or not task.cancelling():
            await asyncio.sleep(self.sweep_seconds)
            try:
                if await self.store.try_lock(keys.RECONCILE_LOCK, self.sweep_seconds * 0.9):
                    await self.reconcile()
            except JobStoreUnavailable as exc:
                log.debug("reconcile skipped: %s", exc)
            except Exception:
                log.exception("reconciling live jobs failed")

    async def reconcile(self) -> int:
        """Put right what dead processes left: returns the images failed.

        Released images whose task vanished (the API died between releasing and queueing) are queued
        again; images whose task was given up fail with the reason; jobs never handed to the fair
        queue fail; jobs whose images are all final are closed; every window is topped up.
        """
        now = time.time()
        in_flight = await self._reconcile_windows(now)
        failed = 0
        for key in await self.store.live_keys():
            job = await self.store.snapshot(key)
            if job is None or job.status.is_final:
                await self.store.forget_live(key)
                continue
            open_images = [image.index for image in job.images if not image.is_final]
            if job.cancel_requested or not open_images:
                await lifecycle.close_when_done(self.store, key)
                continue
            released = [index for index in open_images if (key, index) in in_flight]
            tasks: list[Task | None] = await self.queue.jobs([keys.task_key(key, i) for i in released])
            lost: dict[int, str | None] = {
                index: _lost_reason(task) for index, task in zip(released, tasks, strict=True)
            }
            if (
                not released
                and now - job.created_at > UNQUEUED_GRACE_SECONDS
                and not await self.feed.fair.is_listed(key)
            ):
                lost = dict.fromkeys(open_images, NEVER_QUEUED)
            for index, reason in lost.items():
                if reason is None:
                    continue
                log.warning("job %s image %d: %s", job.job_id, index, reason)
                _snapshot, last = await self.store.record_image(
                    key, ImageOutcome(index=index, status=ImageStatus.failed, error=reason)
                )
                await self.feed.fair.done(Released(job.tenant, key, index))
                failed += 1
                if last:
                    await lifecycle.close_when_done(self.store, key)
        for tenant in await self.feed.fair.tenants():
            await self.feed.release(tenant)
        return failed

    async def _reconcile_windows(self, now: float) -> set[tuple[str, int]]:
        """Released images still in flight; stale entries leave, vanished tasks are queued again."""
        in_flight: set[tuple[str, int]] = set()
        for tenant in await self.feed.fair.tenants():
            entries = await self.feed.fair.in_flight(tenant)
            tasks: list[Task | None] = await self.queue.jobs([keys.task_key(i.key, i.index) for i, _at in entries])
            for (item, released_at), task in zip(entries, tasks, strict=True):
                job = await self.store.snapshot(item.key)
                if job is None or job.status.is_final or job.images[item.index].is_final:
                    await self.feed.fair.done(item)
                    continue
                in_flight.add((item.key, item.index))
                if task is None and now - released_at > UNQUEUED_GRACE_SECONDS:
                    log.warning("job %s image %d was released but never queued; queueing it", job.job_id, item.index)
                    await self.feed.enqueue(item)
        return in_flight


class RedisDispatcher:
    """`Dispatcher` of the Redis mode: queues a task per image; optionally runs a worker in this process."""

    def __init__(self, *, settings: Settings, store: RedisJobStore, tasks: ImageTasks) -> None:
        self.settings = settings
        self.store = store
        self.tasks = tasks
        # No socket timeout: an idle worker blocks on the queue for `DEQUEUE_TIMEOUT_SECONDS` at a time.
        self.queue = ImageQueue(
            make_redis(settings.redis_url, socket_timeout=None, client_class=QueueRedis),
            name=keys.QUEUE_NAME,
            where=store.where,
        )
        fair = RedisFairQueue(
            store.redis,
            WorkerCapacity(self.queue, fallback=settings.worker_concurrency),
            tenant_cap=settings.tenant_max_images_in_flight,
        )
        self.feed = ImageFeed(
            queue=self.queue,
            fair=fair,
            settings=settings,
            task_timeout=int(tasks.pipeline.image_timeout) + TASK_TIMEOUT_MARGIN_SECONDS,
        )
        self._accepting = False
        self._local: ImageWorker | None = None
        self._stats: dict[str, Any] = {}
        self._stats_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    def worker(self, concurrency: int) -> ImageWorker:
        """A worker of this process's queue, store, plugins and pipeline (not started)."""
        return ImageWorker(
            tasks=self.tasks,
            feed=self.feed,
            concurrency=concurrency,
            heartbeat_seconds=self.settings.job_heartbeat_seconds,
            shutdown_grace=self.settings.shutdown_grace_seconds,
        )

    async def check_capacity(self, job: Job) -> None:
        if not self._accepting:
            raise Unavailable("the service is shutting down and takes no new jobs", retry_after=30)
        try:
            waiting = await self.queue.count("queued") + await self.feed.fair.waiting_images()
        except Exception as exc:
            raise self._queue_down(exc) from exc
        limit = self.settings.max_queued_images
        if waiting + job.total > limit:
            # The same back-pressure as the memory mode's queue limit, counted in images since workers take images.
            raise Unavailable(
                f"the work queue holds {waiting} images waiting for a worker, its limit is {limit}; try again shortly",
                retry_after=QUEUE_FULL_RETRY_AFTER_SECONDS,
            )

    async def dispatch(self, job: Job) -> None:
        await self.check_capacity(job)
        try:
            await self.feed.fair.add(job)
            await self.feed.release(job.tenant)
        except Exception as exc:
            # Images queued before the failure find no job once the caller has deleted it, and do nothing.
            raise self._queue_down(exc) from exc

    def _queue_down(self, exc: Exception) -> Unavailable:
        # The cause, with Redis's host and command, is for the operator's log, not for the caller.
        log.warning("could not queue a job on Redis at %s: %r", self.store.where, exc)
        return Unavailable("the job queue is unavailable; try again shortly", retry_after=5)

    async def cancel(self, key: str) -> None:
        """Stop the queued and running tasks of a job the store has just closed as cancelled."""
        job = await self.store.snapshot(key)
        if job is None:
            return
        # Queued tasks are aborted now, so they never start. Running ones stop within milliseconds on the
        # store's cancel flag, which their worker follows over pub/sub; only a worker that missed it gets
        # an abort, a little later (SAQ applies aborts on its own 1 s poll, slower than the flag).
        task_keys = [keys.task_key(key, index) for index in range(job.total)]
        try:
            await self.feed.fair.forget(job)
            await self._abort(task_keys, TaskStatus.QUEUED)
            # The job's place in its tenant's window goes to the tenant's next job.
            await self.feed.release(job.tenant)
        except Exception as exc:
            log.warning("could not abort the queued tasks of job %s: %s", job.job_id, exc)
            return
        straggler = asyncio.create_task(self._abort_stragglers(job.job_id, task_keys), name=f"abort-{key}")
        self._background.add(straggler)
        straggler.add_done_callback(self._background.discard)

    async def _abort(self, task_keys: list[str], status: TaskStatus) -> None:
        tasks = await self.queue.jobs(task_keys)
        await asyncio.gather(
            *(self.queue.abort(task, "cancelled") for task in tasks if task is not None and task.status is status)
        )

    async def _abort_stragglers(self, job_id: str, task_keys: list[str]) -> None:
        await asyncio.sleep(STRAGGLER_ABORT_SECONDS)
        try:
            await self._abort(task_keys, TaskStatus.ACTIVE)
        except Exception as exc:
            log.warning("could not abort the running tasks of job %s: %s", job_id, exc)

    async def start(self) -> None:
        await self.queue.connect()
        self._accepting = True
        self._stats_task = asyncio.create_task(self._refresh_stats(), name="queue-stats")
        if self.settings.serve_local_workers > 0:
            self._local = self.worker(self.settings.serve_local_workers)
            await self._local.start()

    async def shutdown(self) -> None:
        """Stop taking jobs; a local worker finishes its images within the grace period. Queued jobs stay."""
        self._accepting = False
        for task in self._background:
            task.cancel()
        if self._local is not None:
            await self._local.stop()
            self._local = None
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
            self._stats_task = None
        await self.queue.disconnect()

    async def _refresh_stats(self) -> None:
        while True:
            try:
                info = await self.queue.info()
                self._stats = {
                    "workers": len(info.get("workers") or {}),
                    "queued_images": info.get("queued", 0),
                    "active_images": info.get("active", 0),
                }
            except Exception as exc:
                self._stats = {"queue_error": str(exc) or type(exc).__name__}
            await asyncio.sleep(STATS_REFRESH_SECONDS)

    def stats(self) -> dict[str, Any]:
        return {
            "engine": "saq",
            "queue": keys.QUEUE_NAME,
            "local_workers": self._local.concurrency if self._local is not None else 0,
            **self._stats,
        }


def build_redis_backend(
    settings: Settings, *, plugins: PluginRegistry, pipeline: ImagePipeline
) -> tuple[RedisJobStore, RedisDispatcher]:
    """The Redis mode's store and dispatcher (`JOB_BACKEND=redis`); nothing connects before first use."""
    store = RedisJobStore(settings.redis_url, ttl_seconds=settings.job_result_ttl_seconds)
    tasks = ImageTasks(store=store, plugins=plugins, pipeline=pipeline)
    return store, RedisDispatcher(settings=settings, store=store, tasks=tasks)
