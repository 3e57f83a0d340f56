"""The seller's Ozon catalogue: products with their pictures, and the pictures as one streamed ZIP.

Ozon credentials come per request in `X-Ozon-Client-Id` / `X-Ozon-Api-Key` (both, or neither to use
`OZON_CLIENT_ID` / `OZON_API_KEY`); they are passed to Ozon and nowhere else.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from capability_service.api.deps import ApiKeyDep, BaseUrlDep, ServicesDep, TenantDep, UserIdDep
from capability_service.jobs.errors import InvalidSubmission, JobConflict, Unavailable
from capability_service.jobs.models import ImageStatus, Job, resolve_result_url
from capability_service.marketplaces.ozon_types import OzonCredentials
from capability_service.plugins.base import PluginDisabled
from capability_service.plugins.ozon.download import DownloadSelection, OzonDownloadPlugin, OzonSelection
from capability_service.plugins.ozon.publish import ProcessedPicture, PublishRefused, reachability_problem
from capability_service.services import Services
from capability_service.storage.keys import owner_prefix

router = APIRouter(prefix="/ozon", tags=["ozon catalogue"], dependencies=[ApiKeyDep])

OZON_PLUGIN = "ozon-download"
# Headers of a download a browser may read (CORS), beside the body.
DOWNLOAD_HEADERS = ("Content-Disposition", "X-Ozon-Last-Id")


async def ozon_plugin(services: ServicesDep) -> OzonDownloadPlugin:
    return await resolve_ozon_plugin(services)


async def resolve_ozon_plugin(services: Services) -> OzonDownloadPlugin:
    """The enabled ozon-download plugin, or `Unavailable` (503) saying why not."""
    if OZON_PLUGIN not in services.plugins:
        raise Unavailable("the ozon-download plugin is not installed in this service")
    plugin = services.plugins.get(OZON_PLUGIN)
    assert isinstance(plugin, OzonDownloadPlugin)
    try:
        plugin.ensure_enabled()
    except PluginDisabled as exc:
        raise Unavailable(str(exc)) from None
    return plugin


OzonPluginDep = Annotated[OzonDownloadPlugin, Depends(ozon_plugin)]


async def ozon_credentials(
    plugin: OzonPluginDep,
    x_ozon_client_id: Annotated[str | None, Header(alias="X-Ozon-Client-Id", max_length=64)] = None,
    x_ozon_api_key: Annotated[str | None, Header(alias="X-Ozon-Api-Key", max_length=256)] = None,
) -> OzonCredentials:
    return plugin.credentials(x_ozon_client_id, x_ozon_api_key)


OzonCredentialsDep = Annotated[OzonCredentials, Depends(ozon_credentials)]


@router.post("/products")
async def list_products(selection: OzonSelection, plugin: OzonPluginDep, creds: OzonCredentialsDep) -> dict[str, Any]:
    """The selected products with their picture URLs (site order, main first), per-id errors, and
    `last_id` for the next catalogue page ("" when there is none)."""
    lookup, last_id = await plugin.products(creds, selection)
    return {
        "products": [product.view() for product in lookup.products],
        "errors": [error.view() for error in lookup.errors],
        "last_id": last_id,
    }


@router.post("/download", response_class=StreamingResponse)
async def download(
    selection: DownloadSelection,
    plugin: OzonPluginDep,
    creds: OzonCredentialsDep,
    tenant: TenantDep,
    user_id: UserIdDep,
) -> StreamingResponse:
    """The selected products' pictures as one ZIP (`{offer_id}/{position:02}.{ext}`, position 01 is the
    main picture, plus `manifest.json`), streamed while the pictures download."""
    archive = await plugin.open_download(creds, selection, owner=owner_prefix(tenant, user_id))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    headers = {
        "Content-Disposition": f'attachment; filename="ozon-pictures-{stamp}.zip"',
        "Cache-Control": "no-store",
    }
    if archive.next_last_id is not None and not selection.all:
        headers["X-Ozon-Last-Id"] = archive.next_last_id
    return StreamingResponse(archive.stream(), media_type="application/zip", headers=headers)


class PublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dry_run: bool = Field(True, description="answer what each product's pictures would become; send nothing")
    include_failing_checks: bool = Field(
        False, description="also publish results whose Ozon check found problems (moderation may refuse them)"
    )


# The job API's job id pattern (api/v1/ai.py), repeated here because that module imports this one.
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


async def _processed_pictures(job: Job, services: Services) -> list[ProcessedPicture]:
    pictures = []
    for image in job.images:
        facts = job.facts_of(image.index)
        if "product_id" not in facts:
            continue
        result_url = None
        if image.status is ImageStatus.succeeded and image.result_key:
            # A fresh URL: a presigned one from the job's time may be close to expiry.
            result_url = await services.storage.url_for(image.result_key)
        marketplace = image.metadata.get("marketplace")
        check = marketplace.get("ozon") if isinstance(marketplace, dict) else None
        pictures.append(
            ProcessedPicture(
                product_id=int(facts["product_id"]),
                offer_id=str(facts.get("offer_id") or ""),
                position=int(facts.get("position") or 0),
                source_url=job.source_image_urls[image.index],
                result_url=result_url,
                error=image.error or (None if result_url else f"the image ended {image.status.value}"),
                check=check if isinstance(check, dict) else None,
            )
        )
    return pictures


@router.post("/jobs/{job_id}/publish")
async def publish_job(
    job_id: Annotated[str, Path(pattern=JOB_ID_PATTERN)],
    services: ServicesDep,
    plugin: OzonPluginDep,
    creds: OzonCredentialsDep,
    tenant: TenantDep,
    user_id: UserIdDep,
    base_url: BaseUrlDep,
    request: PublishRequest | None = None,
) -> dict[str, Any]:
    """Put a finished job's results back on its Ozon products, replacing exactly the processed pictures.

    `dry_run` (the default) answers each product's picture list before and after; otherwise the lists
    are imported and each product's import is followed until Ozon has taken or refused it.
    """
    options = request or PublishRequest()
    job = await services.jobs.get(tenant, job_id, user_id)
    if not job.status.is_final:
        raise JobConflict(f"job {job_id!r} is still {job.status.value}; publish it once it has finished")
    pictures = await _processed_pictures(job, services)
    if not pictures:
        raise InvalidSubmission("job_id", "the job was not made from an Ozon selection (source.ozon): nothing to send")
    settings = services.settings
    presigned = settings.storage_backend == "s3" and not settings.s3_public_base_url
    urls = [picture.result_url for picture in pictures if picture.result_url]
    problem = reachability_problem(urls, settings.s3_presign_expires if presigned else None)
    if problem is not None and not options.dry_run:
        raise PublishRefused(f"not published: {problem}")
    # Checked above as stored: a result URL relative to this service (no PUBLIC_BASE_URL) is never sent
    # to Ozon, which fetches long after this request, from outside; the dry run shows it as this caller would.
    pictures = [replace(picture, result_url=resolve_result_url(picture.result_url, base_url)) for picture in pictures]
    publisher = plugin.publisher(creds)
    plans = await publisher.plan(pictures, options.include_failing_checks)
    if not options.dry_run:
        await publisher.publish(plans)
    return {
        "job_id": job.job_id,
        "dry_run": options.dry_run,
        "publishable": problem is None,
        "problem": problem,
        "products": [plan.view() for plan in plans],
    }


# Ozon's import task ids are int64.
MAX_TASK_ID = 2**63 - 1


@router.get("/imports/{task_id}")
async def import_status(
    task_id: Annotated[int, Path(gt=0, le=MAX_TASK_ID)], creds: OzonCredentialsDep, plugin: OzonPluginDep
) -> dict[str, Any]:
    """Where a picture import stands now, per product (for imports still pending when publish answered)."""
    statuses = await plugin.client.import_info(creds, task_id)
    return {
        "task_id": task_id,
        "products": [
            {"offer_id": s.offer_id, "product_id": s.product_id, "status": s.status, "errors": list(s.errors)}
            for s in statuses
        ],
    }
