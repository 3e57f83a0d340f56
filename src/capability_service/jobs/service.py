"""Submitting, reading and cancelling jobs: the API's one entry into the job layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from capability_service.jobs import lifecycle
from capability_service.jobs.errors import InvalidSubmission, JobConflict, JobNotFound, Unavailable
from capability_service.jobs.models import Job, job_key
from capability_service.jobs.quotas import QuotaExceeded, QuotaState, SubmitQuotas
from capability_service.jobs.store import CreateRefused, JobStore
from capability_service.plugins.base import InvalidConfig, OperationUnavailable, PluginDisabled
from capability_service.plugins.manager import PluginRegistry

# Told to clients whose job's sources do not fit now: jobs finishing free their bytes.
SOURCE_BUDGET_RETRY_AFTER = 10
# Told to tenants at their live-job limit: about how long a job takes to finish.
LIVE_JOBS_RETRY_AFTER = 10


class Dispatcher(Protocol):
    """Hands stored jobs to whatever runs them (this process, or workers behind Redis)."""

    async def check_capacity(self, job: Job) -> None:
        """Raise `Unavailable` when this job cannot be taken now (queue full, shutting down)."""
        ...

    async def dispatch(self, job: Job) -> None: ...

    async def cancel(self, key: str) -> None:
        """Engine-side clean-up once the store has closed a job as cancelled (e.g. drop queued tasks)."""
        ...

    async def start(self) -> None: ...

    async def shutdown(self) -> None:
        """Stop taking jobs; let running ones finish within the grace period; cancel the rest."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counts for the health endpoint (running, queued, workers...)."""
        ...


class Submitted(NamedTuple):
    job: Job
    # False when the same submission was made before (nothing new runs).
    created: bool
    # Where the caller stands against its tightest rate limit (None without limits, or on a replay).
    quota: QuotaState | None = None


@dataclass(frozen=True, slots=True)
class JobLimits:
    """What one submission may be and what the engine may hold (0: no limit)."""

    images_per_job: int = 100
    # Live jobs keep their sources whole (data: URIs can be megabytes): a bound over the whole engine.
    held_source_bytes: int = 0
    tenant_live_jobs: int = 0


@dataclass(frozen=True, slots=True)
class JobService:
    """Submitting, reading and cancelling jobs over one store, plugin registry and engine."""

    store: JobStore
    plugins: PluginRegistry
    dispatcher: Dispatcher
    limits: JobLimits
    quotas: SubmitQuotas

    def prepare(
        self,
        *,
        job_id: str | None,
        tenant: str,
        user_id: str | None,
        job_type: str,
        config: dict[str, Any],
        sources: list[str],
        source_facts: list[dict[str, Any]] | None = None,
        sources_field: str = "source_image_urls",
    ) -> Job:
        """Validate a submission into a new job (nothing stored yet); raises `InvalidSubmission`/`Unavailable`.

        `sources_field` is how errors about the sources name them (`source.ozon` for a catalogue selection).
        """
        plugin = self.plugins.for_job_type(job_type)
        if plugin is None:
            known = ", ".join(self.plugins.job_types())
            raise InvalidSubmission("type", f"unknown job type {job_type!r}; expected one of: {known}")
        if not sources:
            raise InvalidSubmission(sources_field, "at least one source image is required")
        if len(sources) > self.limits.images_per_job:
            raise InvalidSubmission(
                sources_field,
                f"{len(sources)} images is more than the limit of {self.limits.images_per_job} per job",
            )
        try:
            parsed = plugin.prepare(job_type, config)
        except InvalidConfig as exc:
            raise InvalidSubmission(f"config.{exc.field}" if exc.field else "config", exc.reason) from None
        except (PluginDisabled, OperationUnavailable) as exc:
            raise Unavailable(str(exc)) from None
        return lifecycle.new_job(
            job_id=job_id,
            tenant=tenant,
            user_id=user_id,
            job_type=job_type,
            plugin=plugin.name,
            # The validated config: unknown fields are dropped and defaults filled in, so what the result
            # echoes is what ran, and two submissions meaning the same thing share a fingerprint.
            config=parsed.model_dump(mode="json", by_alias=True),
            sources=sources,
            source_facts=source_facts,
        )

    async def submit(self, job: Job) -> Submitted:
        """Store a prepared job and hand it on. Never waits for work.

        A replay of a known submission returns that job and spends no quota; a new one spends its
        tenant's and user's rate budgets (`QuotaExceeded` when over one) before it is stored.
        """
        existing = await self.store.snapshot(job.key)
        if existing is not None:
            return Submitted(self._replay(existing, job), False)
        await self.dispatcher.check_capacity(job)
        quota = await self.quotas.check(job.tenant, job.user_id, job.total)
        try:
            stored, created = await self.store.create(job, self.limits.held_source_bytes, self.limits.tenant_live_jobs)
        except CreateRefused as exc:
            # Sources over the byte budget are the service's load (503); live jobs are the tenant's quota (429).
            if exc.setting == "TENANT_MAX_LIVE_JOBS":
                raise QuotaExceeded(str(exc), retry_after=LIVE_JOBS_RETRY_AFTER) from None
            raise Unavailable(str(exc), retry_after=SOURCE_BUDGET_RETRY_AFTER) from None
        if not created:
            return Submitted(self._replay(stored, job), False)
        try:
            await self.dispatcher.dispatch(stored)
        except Unavailable:
            # Forget the job, so the same submission can be retried once there is room.
            await self.store.delete(stored.key)
            raise
        return Submitted(stored, True, quota)

    @staticmethod
    def _replay(existing: Job, submitted: Job) -> Job:
        if existing.fingerprint != submitted.fingerprint:
            raise JobConflict(
                f"job id {submitted.job_id!r} is already used by a job with a different payload; use a new job_id"
            )
        return existing

    async def get(self, tenant: str, job_id: str, user_id: str | None) -> Job:
        job = await self.store.snapshot(job_key(tenant, job_id))
        # Another user's job is indistinguishable from a missing one.
        if job is None or (user_id is not None and job.user_id != user_id):
            raise JobNotFound(f"job {job_id!r} not found")
        return job

    async def cancel(self, tenant: str, job_id: str, user_id: str | None) -> Job:
        job = await self.get(tenant, job_id, user_id)
        if job.status.is_final:
            raise JobConflict(f"job {job_id!r} has already finished ({job.status.value}); nothing to cancel")
        await lifecycle.cancel(self.store, job.key)
        await self.dispatcher.cancel(job.key)
        return await self.get(tenant, job_id, user_id)
