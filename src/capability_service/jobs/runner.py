"""The in-process job engine: a bounded queue, a limit of running jobs and of images in flight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from capability_service.jobs.errors import Unavailable
from capability_service.jobs.models import ImageOutcome, ImageStatus, Job, JobStatus
from capability_service.jobs.pipeline import ImagePipeline
from capability_service.jobs.store import JobStore
from capability_service.plugins.manager import PluginRegistry

log = logging.getLogger(__name__)

# Told to clients when the queue is full: roughly how long a slot takes to free up.
QUEUE_FULL_RETRY_AFTER = 10


class LocalJobRunner:
    """Runs jobs in this process. Image work goes to the CPU executor and async network calls."""

    def __init__(
        self,
        *,
        store: JobStore,
        plugins: PluginRegistry,
        pipeline: ImagePipeline,
        max_concurrent_jobs: int,
        max_images_in_flight: int,
        queue_size: int,
        shutdown_grace: float,
        max_held_source_bytes: int = 1 << 30,
        housekeeping: Callable[[], object] | None = None,
        housekeeping_interval: float = 60.0,
    ) -> None:
        self.store = store
        self.plugins = plugins
        self.pipeline = pipeline
        self.max_concurrent_jobs = max_concurrent_jobs
        self.max_images_in_flight = max_images_in_flight
        self.shutdown_grace = shutdown_grace
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self._workers: list[asyncio.Task[None]] = []
        self._image_tasks: dict[str, set[asyncio.Task[None]]] = {}
        self._runs: set[asyncio.Task[None]] = set()
        self._cancel_reasons: dict[str, str] = {}
        self.max_held_source_bytes = max_held_source_bytes
        self._held: dict[str, int] = {}
        self._held_bytes = 0
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
        # Pending jobs hold their sources (data: URIs can be megabytes) until they finish: bound the total.
        size = sum(len(url) for url in job.source_image_urls)
        if self._held_bytes and self._held_bytes + size > self.max_held_source_bytes:
            raise Unavailable(
                f"the service holds {self._held_bytes} bytes of sources of unfinished jobs, its limit is "
                f"{self.max_held_source_bytes}; try again shortly or pass image URLs instead of data: URIs",
                retry_after=QUEUE_FULL_RETRY_AFTER,
            )
        self._queue.put_nowait(job.job_id)
        self._held[job.job_id] = size
        self._held_bytes += size

    def _release(self, job_id: str) -> None:
        self._held_bytes -= self._held.pop(job_id, 0)

    async def cancel(self, job_id: str, reason: str = "Cancelled") -> None:
        """Stop a job this process runs or holds; a job not started yet ends at once."""
        tasks = self._image_tasks.get(job_id)
        if tasks is not None:
            # Read by the job's own run when it closes, which also forgets it.
            self._cancel_reasons.setdefault(job_id, reason)
            for task in tasks:
                task.cancel()
            return
        job = await self.store.get(job_id)
        if job is not None and job.status is JobStatus.pending:
            await self.store.finish(job_id, JobStatus.cancelled, self._cancel_message(job, reason))

    def stats(self) -> dict[str, Any]:
        return {"engine": "local", "running": len(self._image_tasks), "queued": self._queue.qsize()}

    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            run = asyncio.create_task(self._run_job_safely(job_id), name=f"job-{job_id}")
            self._runs.add(run)
            run.add_done_callback(self._runs.discard)
            try:
                # Shielded: stopping a worker must not abandon a job half-recorded.
                await asyncio.shield(run)
            finally:
                self._queue.task_done()

    async def _run_job_safely(self, job_id: str) -> None:
        try:
            await self._run_job(job_id)
        except Exception:
            log.exception("job %s stopped on an unexpected error", job_id)
            await self.store.finish(job_id, JobStatus.failed, "Failed: internal error while running the job")
        finally:
            self._cancel_reasons.pop(job_id, None)
            self._release(job_id)

    async def _run_job(self, job_id: str) -> None:
        job = await self.store.get(job_id)
        if job is None or job.status.is_final:
            return
        if job.cancel_requested:
            await self.store.finish(job_id, JobStatus.cancelled, self._cancel_message(job, "Cancelled"))
            return
        plugin = self.plugins.get(job.plugin)
        config = plugin.validate(job.type, job.config)
        started = await self.store.mark_processing(job_id)
        if started is None:
            return
        semaphore = asyncio.Semaphore(self.max_images_in_flight)

        async def one(index: int) -> None:
            async with semaphore:
                await self.store.update_image(job_id, ImageOutcome(index=index, status=ImageStatus.processing))
                outcome = await self.pipeline.run(started, index, plugin, config)
                await self.store.update_image(job_id, outcome)

        tasks = {asyncio.create_task(one(index), name=f"{job_id}:{index}") for index in range(started.total)}
        self._image_tasks[job_id] = tasks
        try:
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            del self._image_tasks[job_id]
        for result in results:
            if isinstance(result, Exception):
                log.error("image task of job %s failed: %r", job_id, result)
        await self._close(job_id)

    async def _close(self, job_id: str) -> None:
        job = await self.store.get(job_id)
        if job is None:
            return
        reason = self._cancel_reasons.pop(job_id, None)
        if reason is not None or job.cancel_requested:
            await self.store.finish(job_id, JobStatus.cancelled, self._cancel_message(job, reason or "Cancelled"))
        elif job.succeeded:
            await self.store.finish(job_id, JobStatus.completed)
        else:
            await self.store.finish(job_id, JobStatus.failed)

    @staticmethod
    def _cancel_message(job: Job, reason: str) -> str:
        return f"{reason}: {job.succeeded} of {job.total} images finished before the job stopped"

    async def shutdown(self) -> None:
        """Stop taking jobs, let running ones finish within the grace period, cancel the rest."""
        self._accepting = False
        shutdown_reason = "Cancelled: the service shut down"
        while not self._queue.empty():
            job_id = self._queue.get_nowait()
            self._queue.task_done()
            self._release(job_id)
            job = await self.store.get(job_id)
            if job is not None and not job.status.is_final:
                await self.store.finish(job_id, JobStatus.cancelled, f"{shutdown_reason} before the job started")
        if self._runs:
            log.info("waiting up to %.0f s for %d running jobs", self.shutdown_grace, len(self._runs))
            await asyncio.wait(set(self._runs), timeout=self.shutdown_grace)
        for job_id in list(self._image_tasks):
            await self.cancel(job_id, shutdown_reason)
        if self._runs:
            # Give the cancelled jobs a moment to record their final state.
            await asyncio.wait(set(self._runs), timeout=5)
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
