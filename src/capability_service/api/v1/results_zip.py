"""`GET /api/v1/ai/job/{job_id}/results.zip`: every finished result of a job in one download.

The archive is streamed as it is built: one stored result is read at a time, so memory holds one
image, not the job. Entries are stored uncompressed (the images are compressed already). Entry names
come from the `name` query parameters when given (one per source image, in order: the names the
caller knows, such as uploaded file names), else from the source URL, else `image-NNN`; the
extension is always the result's. `errors.txt` lists the images without a result and why.
"""

from __future__ import annotations

import asyncio
import re
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import PurePosixPath
from typing import Annotated
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse

from capability_service.api.deps import ServicesDep, TenantDep, UserIdDep
from capability_service.api.v1.ai import JobIdPath
from capability_service.jobs.models import ImageStatus, Job
from capability_service.storage.base import StorageError

router = APIRouter(tags=["ai jobs"])

_UNSAFE = re.compile(r"[^\w.-]+")
_NAME_LENGTH = 80


class _Chunks:
    """A write-only file for `zipfile`: collects what it writes until the response takes it."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return

    def close(self) -> None:
        return

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _stem(index: int, given: list[str], source: str) -> str:
    candidate = given[index] if index < len(given) else ""
    if not candidate and source[:5].lower() != "data:":
        candidate = unquote(urlsplit(source).path.rsplit("/", 1)[-1])
    # Only the last path component, without its extension, in characters every unzip tool accepts.
    stem = _UNSAFE.sub("_", PurePosixPath(candidate.replace("\\", "/")).stem).strip("._")[:_NAME_LENGTH]
    return stem or f"image-{index + 1:03d}"


def entry_names(job: Job, given: list[str]) -> dict[int, str]:
    """The archive name of each succeeded image, unique within the archive."""
    names: dict[int, str] = {}
    taken: set[str] = set()
    for image in job.images:
        if image.status is not ImageStatus.succeeded or image.result_key is None:
            continue
        stem = _stem(image.index, given, job.source_image_urls[image.index])
        extension = PurePosixPath(image.result_key).suffix
        name, number = f"{stem}{extension}", 2
        while name.lower() in taken or name.lower() == "errors.txt":
            name, number = f"{stem}-{number}{extension}", number + 1
        taken.add(name.lower())
        names[image.index] = name
    return names


@router.get("/ai/job/{job_id}/results.zip", response_class=StreamingResponse)
async def job_results_zip(
    job_id: JobIdPath,
    services: ServicesDep,
    tenant: TenantDep,
    user_id: UserIdDep,
    name: Annotated[
        list[str], Query(max_length=255, description="a file name per source image, in order (optional)")
    ] = [],  # noqa: B006 - FastAPI copies query defaults per request
) -> StreamingResponse:
    """The job's finished results as a ZIP archive (also while the job runs: what has finished so far)."""
    job = await services.jobs.get(tenant, job_id, user_id)
    names = entry_names(job, name)
    if not names:
        raise HTTPException(404, detail=f"job {job_id!r} has no finished results yet")
    storage = services.storage

    async def body() -> AsyncIterator[bytes]:
        sink = _Chunks()
        problems = [f"{image.index + 1}: {image.error}" for image in job.images if image.error]
        stamp = time.localtime(job.finished_at or time.time())[:6]
        # `zipfile` writes data descriptors when its file cannot seek, so each entry can go out at once.
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
            for index, entry in names.items():
                key = job.images[index].result_key
                assert key is not None
                try:
                    data = await storage.get(key)
                except (KeyError, StorageError) as exc:
                    problems.append(f"{index + 1}: the stored result could not be read ({exc})")
                    continue
                info = zipfile.ZipInfo(entry, date_time=stamp)
                # CRC-32 over megabytes of image: off the event loop.
                await asyncio.to_thread(archive.writestr, info, data)
                yield sink.drain()
            if problems:
                archive.writestr(zipfile.ZipInfo("errors.txt", date_time=stamp), "\n".join(problems) + "\n")
        yield sink.drain()

    filename = re.sub(r"[^A-Za-z0-9._-]", "_", job_id)
    return StreamingResponse(
        body(),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}-results.zip"', "Cache-Control": "no-store"},
    )
