"""The rules of a job's life: every state change, the decision behind it and the message it leaves.

`pending -> processing -> completed | failed | cancelled`. Both job stores follow these rules: the memory
store applies the functions below to its `Job` objects; the Redis store's Lua scripts make the same
changes atomically and take every text and decision from here as arguments. Nothing else in the
service writes a job's status or message.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from capability_service.core import metrics
from capability_service.jobs.models import (
    ImageOutcome,
    ImageStatus,
    Job,
    JobStatus,
    payload_fingerprint,
    summarize_source,
)
from capability_service.jobs.store import JobStore

# created: waiting for a slot.
QUEUED = "Queued"
# cancel requested: images still running are being stopped.
CANCELLING = "Cancelling"
# The reason of a cancel a caller asked for; the engine passes its own (shutdown) instead.
CANCELLED = "Cancelled"
SHUTDOWN = "Cancelled: the service shut down"
# An image the job closed before it finished.
IMAGE_CANCELLED = "cancelled before this image finished"
IMAGE_STOPPED = "the job was cancelled"
# image finished: `%d` are the processed and total counts (Lua's string.format takes the same template).
PROGRESS_TEMPLATE = "Processed %d of %d images"


def new_job(
    *,
    job_id: str | None,
    tenant: str = "default",
    user_id: str | None,
    job_type: str,
    plugin: str,
    config: dict[str, Any],
    sources: list[str],
    source_facts: list[dict[str, Any]] | None = None,
) -> Job:
    """A job as it is created: pending, every image pending, the fingerprint of its submission."""
    return Job(
        job_id=job_id or uuid.uuid4().hex,
        tenant=tenant,
        user_id=user_id,
        type=job_type,
        plugin=plugin,
        config=config,
        source_image_urls=sources,
        source_facts=source_facts or [],
        fingerprint=payload_fingerprint(job_type, user_id, config, sources),
        message=QUEUED,
        images=[ImageOutcome(index=i) for i in range(len(sources))],
    )


def processing_message(total: int) -> str:
    return f"Processing {total} images" if total > 1 else "Processing the image"


def progress_message(processed: int, total: int) -> str:
    return PROGRESS_TEMPLATE % (processed, total)


def closing_status(job: Job) -> JobStatus:
    """How a job whose images are all final ends: cancelled if asked, else completed iff one succeeded."""
    if job.cancel_requested:
        return JobStatus.cancelled
    return JobStatus.completed if job.succeeded else JobStatus.failed


def closing_message(job: Job, status: JobStatus, reason: str | None = None) -> str:
    """The `message` of a job closing with `status`; `reason` says why a job was cancelled or failed."""
    done, total, failed = job.succeeded, job.total, job.failed_count
    if status is JobStatus.cancelled:
        return f"{reason or CANCELLED}: {done} of {total} images finished before the job stopped"
    if reason:
        return reason
    if done == 0:
        return f"Failed: all {total} images failed" if total > 1 else "Failed: the image failed"
    if failed:
        return f"Completed with {failed} of {total} images failed"
    return f"Completed: {total} of {total} images processed"


def stopped_image(image: ImageOutcome) -> ImageOutcome:
    """What an unfinished image becomes when its job closes."""
    return image.model_copy(update={"status": ImageStatus.cancelled, "error": image.error or IMAGE_CANCELLED})


# The transitions, as the memory store applies them; each returns whether the job changed.


def start(job: Job, now: float | None = None) -> bool:
    if job.status is not JobStatus.pending:
        return False
    job.status = JobStatus.processing
    job.started_at = job.started_at or (now if now is not None else time.time())
    if not job.cancel_requested:
        job.message = processing_message(job.total)
    return True


def record_image(job: Job, outcome: ImageOutcome) -> tuple[bool, bool]:
    """Record one image's state: (changed, this was the job's last unfinished image).

    The first final outcome of an image wins: a retried or duplicated run neither undoes nor recounts
    it, so exactly one recorder learns that it finished the job.
    """
    if job.status.is_final or job.images[outcome.index].is_final:
        return False, False
    job.images[outcome.index] = outcome.model_copy(deep=True)
    if not outcome.is_final:
        return True, False
    job.message = progress_message(job.processed, job.total)
    return True, all(image.is_final for image in job.images)


def request_cancel(job: Job) -> bool:
    if job.status.is_final or job.cancel_requested:
        return False
    job.cancel_requested = True
    job.message = CANCELLING
    return True


def close(job: Job, status: JobStatus, reason: str | None = None, now: float | None = None) -> bool:
    """Move a job to a final status; unfinished images become cancelled. False when already final."""
    if job.status.is_final:
        return False
    job.images = [image if image.is_final else stopped_image(image) for image in job.images]
    job.status = status
    job.finished_at = now if now is not None else time.time()
    job.started_at = job.started_at or job.finished_at
    job.message = closing_message(job, status, reason)
    # Data URIs can be megabytes each; a finished job keeps only their summaries.
    job.source_image_urls = [summarize_source(url) for url in job.source_image_urls]
    observe_closed(job)
    return True


def observe_closed(job: Job, closed: bool = True) -> Job:
    """Count a job that has just closed (`closed`): call it once per job, where the close happened.

    The memory store closes through `close` above; the Redis store calls this when its atomic close
    reports that it, and no other process, made the change. Returns `job`.
    """
    if closed and job.finished_at is not None:
        metrics.job_closed(job.type, job.status.value, job.tenant, job.finished_at - job.created_at)
    return job


# The decisions that close a job, on any store.


async def close_when_done(store: JobStore, key: str) -> Job | None:
    """Close a job whose images are all final: cancelled if asked, else completed or failed."""
    job = await store.snapshot(key)
    if job is None or job.status.is_final:
        return job
    return await store.finish(key, closing_status(job))


async def cancel(store: JobStore, key: str, reason: str = CANCELLED) -> Job | None:
    """Stop a job now, keeping the images that finished: it is flagged (its running images stop on the
    flag, wherever they run) and closed at once, so no engine has to be reached for it to end."""
    job = await store.request_cancel(key)
    if job is None or job.status.is_final:
        return job
    return await store.finish(key, JobStatus.cancelled, reason)
