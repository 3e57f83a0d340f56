"""The AI job API: submit, status, result, cancel and a Server-Sent Events stream."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sse_starlette import EventSourceResponse, ServerSentEvent

from capability_service.api.deps import ApiKeyDep, BaseUrlDep, ServicesDep, TenantDep, UserIdDep
from capability_service.api.errors import STORE_DOWN
from capability_service.api.job_body import JobBodyRoute
from capability_service.api.v1.ozon import resolve_ozon_plugin
from capability_service.jobs.errors import InvalidSubmission, JobNotFound
from capability_service.jobs.models import Job, job_key
from capability_service.jobs.store import JobStoreUnavailable
from capability_service.plugins.ozon.download import OzonJobSource
from capability_service.services import Services

log = logging.getLogger(__name__)
# JobBodyRoute: submissions are read as they stream in, each data: URI measured on the way.
router = APIRouter(tags=["ai jobs"], dependencies=[ApiKeyDep], route_class=JobBodyRoute)

# Seconds a stream has, once the server begins to shut down, to tell its client before it is closed.
SHUTDOWN_NOTICE_SECONDS = 1.0

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
JobIdPath = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="the job id")]


class JobSource(BaseModel):
    """Where a job's images come from when they are not listed as URLs."""

    model_config = ConfigDict(extra="forbid")

    ozon: OzonJobSource


class JobSubmission(BaseModel):
    """A job as the front end submits it: `source_image_urls`, or `source.ozon` (a catalogue selection)."""

    model_config = ConfigDict(extra="ignore")

    job_id: str | None = Field(None, pattern=JOB_ID_PATTERN)
    user_id: str | None = Field(None, min_length=1, max_length=128)
    type: str = Field(min_length=1, max_length=64)
    config: dict[str, Any] = Field(default_factory=dict)
    source_image_urls: list[Annotated[str, Field(min_length=1)]] | None = None
    source: JobSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> JobSubmission:
        if self.source_image_urls is None and self.source is None:
            raise ValueError("give source_image_urls (a list of image URLs) or source.ozon (an Ozon selection)")
        if self.source_image_urls is not None and self.source is not None:
            raise ValueError("give either source_image_urls or source.ozon, not both")
        return self

    @model_validator(mode="after")
    def _text_is_valid_unicode(self) -> JobSubmission:
        # JSON can carry lone surrogate escapes ("\ud800") that no encoder accepts later: refuse them here
        # rather than fail when the job is stored, echoed or sent to a remote model.
        texts = [self.job_id or "", self.user_id or "", self.type, json.dumps(self.config, ensure_ascii=False)]
        for text in texts + (self.source_image_urls or []):
            if text.isascii():
                # No copy for the common case (a data: URI can be hundreds of megabytes).
                continue
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("the request holds text that is not valid Unicode (a lone surrogate escape)") from None
        return self


@router.post("/ai/job", status_code=202)
async def submit_job(
    submission: JobSubmission,
    services: ServicesDep,
    tenant: TenantDep,
    user_id: UserIdDep,
    x_ozon_client_id: Annotated[str | None, Header(alias="X-Ozon-Client-Id", max_length=64)] = None,
    x_ozon_api_key: Annotated[str | None, Header(alias="X-Ozon-Api-Key", max_length=256)] = None,
) -> JSONResponse:
    started = time.perf_counter()
    if user_id is not None and submission.user_id is not None and submission.user_id != user_id:
        raise InvalidSubmission("user_id", "differs from the X-User-Id header; send one user, or the same in both")
    sources = submission.source_image_urls or []
    facts: list[dict[str, Any]] | None = None
    source_errors: list[dict[str, str]] | None = None
    if submission.source is not None:
        # An Ozon selection becomes picture URLs now, at submit time: the job is then an ordinary job.
        plugin = await resolve_ozon_plugin(services)
        creds = plugin.credentials(x_ozon_client_id, x_ozon_api_key)
        resolved = await plugin.job_sources(creds, submission.source.ozon)
        if not resolved.urls:
            reasons = "; ".join(f"{error['id']}: {error['error']}" for error in resolved.errors[:5])
            raise InvalidSubmission("source.ozon", f"the selection has no pictures ({reasons})")
        sources, facts, source_errors = resolved.urls, resolved.facts, resolved.errors
    prepared = services.jobs.prepare(
        job_id=submission.job_id,
        tenant=tenant,
        user_id=submission.user_id or user_id,
        job_type=submission.type,
        config=submission.config,
        sources=sources,
        source_facts=facts,
        sources_field="source.ozon" if facts is not None else "source_image_urls",
    )
    job, created, quota = await services.jobs.submit(prepared)
    data = {**job.status_view(), "type": job.type, "user_id": job.user_id, "created": created}
    if source_errors is not None:
        # Selected ids that gave no picture: unknown to the account, or products without pictures.
        data["source_errors"] = source_errors
    body = {
        "success": True,
        "data": data,
        "execution_time_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    return JSONResponse(body, status_code=202, headers=quota.headers() if quota is not None else None)


@router.get("/ai/job/{job_id}/status")
async def job_status(job_id: JobIdPath, services: ServicesDep, tenant: TenantDep, user_id: UserIdDep) -> dict[str, Any]:
    return (await services.jobs.get(tenant, job_id, user_id)).status_view()


@router.get("/ai/job/{job_id}")
async def job_result(
    job_id: JobIdPath, services: ServicesDep, tenant: TenantDep, user_id: UserIdDep, base_url: BaseUrlDep
) -> dict[str, Any]:
    return (await services.jobs.get(tenant, job_id, user_id)).result_view(base_url)


@router.post("/ai/job/{job_id}/cancel")
async def cancel_job(job_id: JobIdPath, services: ServicesDep, tenant: TenantDep, user_id: UserIdDep) -> dict[str, Any]:
    job = await services.jobs.cancel(tenant, job_id, user_id)
    return {"success": True, "message": f"cancel requested for job {job_id}", "data": job.status_view()}


def _event(job: Job) -> ServerSentEvent:
    name = job.status.value if job.status.is_final else "progress"
    return ServerSentEvent(data=json.dumps(job.status_view()), event=name, id=str(job.version))


async def _job_events(
    job_id: str, services: Services, tenant: str, user_id: str | None
) -> AsyncGenerator[ServerSentEvent]:
    # Subscribe before reading the current state, so no change can fall between the two.
    async with services.store.subscribe(job_key(tenant, job_id)) as snapshots:
        try:
            job = await services.jobs.get(tenant, job_id, user_id)
        except JobNotFound as exc:
            yield _error_event(job_id, str(exc))
            return
        yield _event(job)
        last_version = job.version
        if job.status.is_final:
            return
        async for snapshot in snapshots:
            if snapshot.version <= last_version:
                continue
            last_version = snapshot.version
            yield _event(snapshot)
            if snapshot.status.is_final:
                return


@router.get("/ai/job/{job_id}/stream")
async def stream_job(
    job_id: JobIdPath, services: ServicesDep, tenant: TenantDep, user_id: UserIdDep
) -> EventSourceResponse:
    # Set by sse-starlette when the server begins to shut down: the stream then says so and ends
    # within the grace period, instead of being cut without a final event.
    shutdown = anyio.Event()

    async def events() -> AsyncIterator[ServerSentEvent]:
        job_events = _job_events(job_id, services, tenant, user_id)
        pending: set[asyncio.Future[Any]] = set()
        try:
            while True:
                next_event = asyncio.ensure_future(anext(job_events))
                stopping = asyncio.ensure_future(shutdown.wait())
                pending = {next_event, stopping}
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if not next_event.done():
                    yield _error_event(job_id, "the service is shutting down; follow the job again once it is back")
                    return
                stopping.cancel()
                try:
                    yield next_event.result()
                except StopAsyncIteration:
                    return
        except JobStoreUnavailable as exc:
            # The stream has already answered 200: say why it ends instead of just closing it.
            log.warning("stream of job %s ends: %s", job_id, exc)
            yield _error_event(job_id, STORE_DOWN)
        finally:
            # Also on a client that went away: cancelling the read ends the subscription with it.
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await job_events.aclose()

    return EventSourceResponse(
        events(),
        ping=services.settings.sse_heartbeat_seconds,
        headers={"Cache-Control": "no-store"},
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_NOTICE_SECONDS,
    )


def _error_event(job_id: str, detail: str) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps({"job_id": job_id, "detail": detail}), event="error")
