"""The in-process engine: a bounded queue of jobs, a limit of running jobs and of images in flight.

It only decides when and how many: each image is an `ImageTasks.run`, exactly what a Redis worker
runs, and a cancel reaches running images through the store's cancel flag, as it does there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from capability_service.jobs import lifecycle
from capability_service.jobs.errors import Unavailable
from capability_service.jobs.models import Job, JobStatus
from capability_service.jobs.store import JobStore
from capability_service.jobs.task import ImageTasks

log = logging.getLogger(__name__)

# Told to clients when the queue is full: roughly how long a slot takes to free up.
QUEUE_FULL_RETRY_AFTER = 10
# How long cancelled jobs get, at shutdown, to record their final state.
SHUTDOWN_SETTLE_SECONDS = 5.0


class LocalJobRunner:
    """`Dispatcher` of the memory mode: runs jobs in this process."""

    def __init__(
        self,
        *,
        store: JobStore,
        tasks: ImageTasks,
        max_concurrent_jobs: int,
        max_images_in_flight: int,
        queue_size: int,
        shutdown_grace: float,
        housekeeping: Callable[[], object] | None = None,
        housekeeping_interval: float = 60.0,
    ) -> None:
        self.store = store
        self.tasks = tasks
        self.max_concurrent_jobs = max_concurrent_jobs
        self.max_images_in_flight = max_images_in_flight
        self.shutdown_grace = shutdown_grace
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self._workers: list[asyncio.Task[None]] = []
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._accepting = False
        # Periodic clean-up (e.g. evicting expired jobs) so memory shrinks even when no job arrives.
        self._housekeeping = housekeeping
        self._housekeeping_interval = housekeeping_interval

    async def start(self) -> None:
        self._accepting = True
        self._workers = [
            asyncio.create_task(self._work(), name=f"job-worker-{n}") for n in range(self.max_concurrent_jobs)
        ]
        if self._housekeeping is not None:
            self._workers.append(asyncio.create_task(self._keep_house(self._housekeeping), name="housekeeping"))

    async def _keep_house(self, chore: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(self._housekeeping_interval)
            chore()

    def check_capacity(self) -> None:
        if not self._accepting:
            raise Unavailable("the service is shutting down and takes no new jobs", retry_after=30)
        if self._queue.full():
            raise Unavailable(
                f"the job queue is full ({self._queue.maxsize} jobs waiting); try again shortly",
                retry_after=QUEUE_FULL_RETRY_AFTER,
            )

    async def dispatch(self, job: Job) -> None:
        self.check_capacity()
        self._queue.put_nowait(job.key)

    async def cancel(self, key: str) -> None:
        # Nothing to reach: the store has closed the job, its running images stop on the store's flag
        # and a queued one is skipped when its turn comes.
        return None

    def stats(self) -> dict[str, Any]:
        return {"engine": "local", "running": len(self._runs), "queued": self._queue.qsize()}

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            run = asyncio.create_task(self._run_job_safely(key), name=f"job-{key}")
            self._runs[key] = run
            try:
                # Shielded: stopping a worker must not abandon a job half-recorded.
                await asyncio.shield(run)
            finally:
                self._runs.pop(key, None)
                self._queue.task_done()

    async def _run_job_safely(self, key: str) -> None:
        try:
            await self._run_job(key)
        except Exception:
            log.exception("job %s stopped on an unexpected error", key)
            await self.store.finish(key, JobStatus.failed, "Failed: internal error while running the job")

    async def _run_job(self, key: str) -> None:
        job = await self.store.snapshot(key)
        if job is None or job.status.is_final:
            return
        semaphore = asyncio.Semaphore(self.max_images_in_flight)

        async def one(index: int) -> None:
            async with semaphore:
                await self.tasks.run(key, index)

        results = await asyncio.gather(*(one(index) for index in range(job.total)), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.error("an image task of job %s failed: %r", key, result)
        # Normally the last image's task has closed the job; this closes one whose task hit a bug.
        await lifecycle.close_when_done(self.store, key)

    async def shutdown(self) -> None:
        """Stop taking jobs, let running ones finish within the grace period, cancel the rest."""
        self._accepting = False
        while not self._queue.empty():
            key = self._queue.get_nowait()
            self._queue.task_done()
            await lifecycle.cancel(self.store, key, f"{lifecycle.SHUTDOWN} before the job started")
        if self._runs:
            log.info("waiting up to %.0f s for %d running jobs", self.shutdown_grace, len(self._runs))
            await asyncio.wait(set(self._runs.values()), timeout=self.shutdown_grace)
        for key in list(self._runs):
            await lifecycle.cancel(self.store, key, lifecycle.SHUTDOWN)
        if self._runs:
            await asyncio.wait(set(self._runs.values()), timeout=SHUTDOWN_SETTLE_SECONDS)
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
