"""One image of one job, as both engines run it: the in-process runner and the Redis workers.

Mark the job started, run the pipeline under a watch for a cancel, record the outcome, and close the
job when this was its last image. The engines differ only in how these tasks are queued and who runs
them; everything a task decides is here and in `jobs.lifecycle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pydantic import BaseModel, ValidationError

from capability_service.core import log_context
from capability_service.jobs import lifecycle
from capability_service.jobs.image_metrics import count_image
from capability_service.jobs.models import ImageOutcome, ImageStatus, Job, JobStatus
from capability_service.jobs.pipeline import ImagePipeline
from capability_service.jobs.store import JobStore
from capability_service.plugins.base import BasePlugin
from capability_service.plugins.manager import PluginRegistry

log = logging.getLogger(__name__)


class ImageTasks:
    """Runs image tasks against one store, plugin registry and pipeline; keeps no per-task state."""

    def __init__(self, *, store: JobStore, plugins: PluginRegistry, pipeline: ImagePipeline) -> None:
        self.store = store
        self.plugins = plugins
        self.pipeline = pipeline

    async def run(self, key: str, index: int) -> str:
        """Process image `index` of the job `key`; returns what happened, in words (for task records).

        Safe to run twice (a retried or duplicated task): a finished image or job is left alone.
        """
        job = await self.store.get(key)
        if job is None:
            return "skipped: the job no longer exists"
        # Every line logged for this image, here and in the work it starts, names its job and tenant.
        with log_context.image_work(tenant=job.tenant, job_id=job.job_id, index=index):
            return await self._run(key, index, job)

    async def _run(self, key: str, index: int, job: Job) -> str:
        if job.status.is_final:
            return f"skipped: the job is already {job.status.value}"
        if not 0 <= index < job.total:
            return f"skipped: the job has no image {index}"
        if job.images[index].is_final:
            return f"skipped: image already {job.images[index].status.value}"
        if job.cancel_requested:
            # Whoever took the cancel closes the job; this covers a canceller that died before it could.
            await self.store.finish(key, JobStatus.cancelled)
            return "skipped: the job was cancelled"
        if job.status is JobStatus.pending:
            await self.store.mark_processing(key)
        plugin = self.plugins.for_job_type(job.type)
        try:
            if plugin is None:
                raise KeyError(f"no plugin runs {job.type!r} jobs here")
            config = plugin.validate(job.type, job.config)
        except (KeyError, ValidationError) as exc:
            # Accepted by an API instance whose plugins or settings differ from this process's.
            reason = f"this worker cannot run {job.type!r} jobs: {exc}"
            count_image(job.type, "failed", "internal")
            return await self._record(key, ImageOutcome(index=index, status=ImageStatus.failed, error=reason))
        await self.store.record_image(key, ImageOutcome(index=index, status=ImageStatus.processing))
        outcome = await self._run_until_cancelled(job, index, plugin, config)
        return await self._record(key, outcome)

    async def fail(self, key: str, index: int, reason: str) -> str:
        """Record image `index` as failed with `reason` (its run broke off), closing the job if it was the last."""
        return await self._record(key, ImageOutcome(index=index, status=ImageStatus.failed, error=reason))

    async def _record(self, key: str, outcome: ImageOutcome) -> str:
        log.info("image %s%s", outcome.status.value, f": {outcome.error}" if outcome.error else "")
        _snapshot, last = await self.store.record_image(key, outcome)
        if last:
            await lifecycle.close_when_done(self.store, key)
        return outcome.status.value

    async def _run_until_cancelled(self, job: Job, index: int, plugin: BasePlugin, config: BaseModel) -> ImageOutcome:
        async with self.store.watch_cancel(job.key) as cancelled:
            work = asyncio.create_task(self.pipeline.run(job, index, plugin, config), name=f"{job.job_id}:{index}")
            stop = asyncio.create_task(cancelled.wait())
            try:
                await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                if not work.done():
                    work.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await work
        if work.cancelled():
            return ImageOutcome(index=index, status=ImageStatus.cancelled, error=lifecycle.IMAGE_STOPPED)
        return work.result()
