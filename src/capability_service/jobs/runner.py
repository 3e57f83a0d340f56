"""The in-process engine: each released image runs at once, as its own task.

It only decides when and how many: each image is an `ImageTasks.run`, exactly what a Redis worker
runs; which images run comes from the same fair-share rule (`jobs/fair.py`), whose windows share
`max_images_in_flight` between the tenants at work; a cancel reaches running images through the store's
cancel flag, as it does there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from capability_service.jobs import lifecycle
from capability_service.jobs.errors import Unavailable
from capability_service.jobs.fair import MemoryFairQueue, Released
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
        max_images_in_flight: int,
        queue_size: int,
        shutdown_grace: float,
        tenant_max_images_in_flight: int = 0,
        housekeeping: Callable[[], object] | None = None,
        housekeeping_interval: float = 60.0,
    ) -> None:
        self.store = store
        self.tasks = tasks
        self.queue_size = queue_size
        self.shutdown_grace = shutdown_grace
        self.fair = MemoryFairQueue(max_images_in_flight, self._is_live, tenant_max_images_in_flight)
        # Jobs accepted whose first image has not started: what JOB_QUEUE_SIZE bounds.
        self._unstarted: set[str] = set()
        self._running: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._housekeeper: asyncio.Task[None] | None = None
        self._accepting = False
        # Periodic clean-up (e.g. evicting expired jobs) so memory shrinks even when no job arrives.
        self._housekeeping = housekeeping
        self._housekeeping_interval = housekeeping_interval

    async def _is_live(self, key: str) -> bool:
        return not await self.store.cancel_requested(key)

    async def start(self) -> None:
        self._accepting = True
        if self._housekeeping is not None:
            self._housekeeper = asyncio.create_task(self._keep_house(self._housekeeping), name="housekeeping")

    async def _keep_house(self, chore: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(self._housekeeping_interval)
            chore()

    async def check_capacity(self, job: Job) -> None:
        if not self._accepting:
            raise Unavailable("the service is shutting down and takes no new jobs", retry_after=30)
        if len(self._unstarted) >= self.queue_size:
            raise Unavailable(
                f"the job queue is full ({len(self._unstarted)} jobs waiting); try again shortly",
                retry_after=QUEUE_FULL_RETRY_AFTER,
            )

    async def dispatch(self, job: Job) -> None:
        await self.check_capacity(job)
        self._unstarted.add(job.key)
        self._idle.clear()
        await self.fair.add(job)
        await self._release(job.tenant)

    async def _release(self, tenant: str) -> None:
        for item in await self.fair.release(tenant):
            self._unstarted.discard(item.key)
            task = asyncio.create_task(self._run(item), name=f"image-{item.key}-{item.index}")
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not self._running and not self._unstarted:
            self._idle.set()

    async def cancel(self, key: str) -> None:
        # The store has closed the job; its running images stop on the store's flag. Here its waiting
        # images are dropped, and its place in the tenant's window goes to the tenant's next job.
        job = await self.store.snapshot(key)
        self._unstarted.discard(key)
        if job is not None:
            await self.fair.forget(job)
            await self._release(job.tenant)

    def stats(self) -> dict[str, Any]:
        return {
            "engine": "local",
            "images_in_flight": len(self._running),
            "queued": len(self._unstarted),
        }

    async def _run(self, item: Released) -> None:
        try:
            await self.tasks.run(item.key, item.index)
        except Exception:
            # A bug, not bad input: the image fails with a reason, the job goes on and can close.
            log.exception("image %d of job %s stopped on an unexpected error", item.index, item.key)
            await self.tasks.fail(item.key, item.index, "internal error while processing this image")
        finally:
            await self.fair.done(item)
            await self._release(item.tenant)

    async def shutdown(self) -> None:
        """Stop taking jobs, let running ones finish within the grace period, cancel the rest."""
        self._accepting = False
        for key in await self.store.live_keys(limit=1 << 30):
            job = await self.store.snapshot(key)
            if job is not None and job.status is JobStatus.pending:
                await lifecycle.cancel(self.store, key, f"{lifecycle.SHUTDOWN} before the job started")
                await self.cancel(key)
        if not self._idle.is_set():
            log.info("waiting up to %.0f s for the running jobs", self.shutdown_grace)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.shutdown_grace)
        for key in await self.store.live_keys(limit=1 << 30):
            await lifecycle.cancel(self.store, key, lifecycle.SHUTDOWN)
            await self.cancel(key)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), SHUTDOWN_SETTLE_SECONDS)
        leftovers = [*self._running, *([self._housekeeper] if self._housekeeper else [])]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
