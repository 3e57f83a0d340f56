"""Submitting, reading and cancelling jobs: the API's one entry into the job layer."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from pydantic import ValidationError

from capability_service.jobs.errors import InvalidSubmission, JobConflict, JobNotFound, Unavailable
from capability_service.jobs.models import Job
from capability_service.jobs.store import JobStore
from capability_service.plugins.base import PluginDisabled
from capability_service.plugins.manager import PluginRegistry

# Which plugin runs each job type of the job API.
JOB_TYPE_PLUGINS = {
    "background_replacement": "ai-playground",
    "batch_optimization": "ai-playground",
    "image_enhancement": "ai-playground",
}


class Dispatcher(Protocol):
    """Hands stored jobs to whatever runs them (this process, or workers behind Redis)."""

    def check_capacity(self) -> None:
        """Raise `Unavailable` when no job can be taken now (queue full, shutting down)."""
        ...

    async def dispatch(self, job: Job) -> None: ...

    async def cancel(self, job_id: str, reason: str = "Cancelled") -> None: ...

    async def start(self) -> None: ...

    async def shutdown(self) -> None:
        """Stop taking jobs; let running ones finish within the grace period; cancel the rest."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counts for the health endpoint (running, queued, workers...)."""
        ...


def first_validation_error(exc: ValidationError, prefix: str) -> InvalidSubmission:
    error = exc.errors()[0]
    loc = ".".join(str(part) for part in error["loc"])
    field = f"{prefix}.{loc}" if loc else prefix
    return InvalidSubmission(field, error["msg"])


class JobService:
    def __init__(self, *, store: JobStore, plugins: PluginRegistry, dispatcher: Dispatcher, max_images: int) -> None:
        self.store = store
        self.plugins = plugins
        self.dispatcher = dispatcher
        self.max_images = max_images

    async def submit(
        self,
        *,
        job_id: str | None,
        user_id: str | None,
        job_type: str,
        config: dict[str, Any],
        sources: list[str],
    ) -> tuple[Job, bool]:
        """Validate and store a job, then hand it on; returns (job, created). Never waits for work."""
        plugin_name = JOB_TYPE_PLUGINS.get(job_type)
        if plugin_name is None or plugin_name not in self.plugins:
            known = ", ".join(sorted(JOB_TYPE_PLUGINS))
            raise InvalidSubmission("type", f"unknown job type {job_type!r}; expected one of: {known}")
        if not sources:
            raise InvalidSubmission("source_image_urls", "at least one source image is required")
        if len(sources) > self.max_images:
            raise InvalidSubmission(
                "source_image_urls",
                f"{len(sources)} images is more than the limit of {self.max_images} per job",
            )
        plugin = self.plugins.get(plugin_name)
        try:
            plugin.ensure_enabled()
        except PluginDisabled as exc:
            raise Unavailable(str(exc)) from None
        try:
            parsed = plugin.validate(job_type, config)
        except ValidationError as exc:
            raise first_validation_error(exc, "config") from None
        reason = plugin.operation_unavailable(job_type, parsed)
        if reason:
            raise Unavailable(reason)

        job = Job.new(
            job_id=job_id or uuid.uuid4().hex,
            user_id=user_id,
            job_type=job_type,
            plugin=plugin_name,
            # The validated config: unknown fields are dropped and defaults filled in, so what the result
            # echoes is what ran, and two submissions meaning the same thing share a fingerprint.
            config=parsed.model_dump(mode="json", by_alias=True),
            sources=sources,
        )
        existing = await self.store.get(job.job_id)
        if existing is not None:
            return self._replay(existing, job), False
        self.dispatcher.check_capacity()
        stored, created = await self.store.create(job)
        if not created:
            return self._replay(stored, job), False
        try:
            await self.dispatcher.dispatch(stored)
        except Unavailable:
            # Forget the job, so the same submission can be retried once there is room.
            await self.store.delete(stored.job_id)
            raise
        return stored, True

    @staticmethod
    def _replay(existing: Job, submitted: Job) -> Job:
        if existing.fingerprint != submitted.fingerprint:
            raise JobConflict(
                f"job id {submitted.job_id!r} is already used by a job with a different payload; use a new job_id"
            )
        return existing

    async def get(self, job_id: str, user_id: str | None) -> Job:
        job = await self.store.get(job_id)
        # Another user's job is indistinguishable from a missing one.
        if job is None or (user_id is not None and job.user_id != user_id):
            raise JobNotFound(f"job {job_id!r} not found")
        return job

    async def cancel(self, job_id: str, user_id: str | None) -> Job:
        job = await self.get(job_id, user_id)
        if job.status.is_final:
            raise JobConflict(f"job {job_id!r} has already finished ({job.status.value}); nothing to cancel")
        await self.store.request_cancel(job_id)
        await self.dispatcher.cancel(job_id)
        return await self.get(job_id, user_id)
