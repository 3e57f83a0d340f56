"""`GET /files/{key}`: results of the local storage backend, with content type and cache headers.

No API key: browsers load these URLs in `<img>` tags. Keys contain the job id, so results are as
private as job ids are; use the S3 backend with presigned URLs where that is not enough.
"""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from capability_service.api.deps import ServicesDep
from capability_service.storage.keys import is_result_key
from capability_service.storage.local import FILES_ROUTE, LocalStorage

router = APIRouter(tags=["files"])

_TYPES = {".webp": "image/webp", ".avif": "image/avif", ".png": "image/png", ".jpg": "image/jpeg"}


@router.api_route(FILES_ROUTE + "/{key:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def get_file(key: str, services: ServicesDep) -> FileResponse:
    storage = services.storage
    if not isinstance(storage, LocalStorage):
        raise HTTPException(404, detail="results are not served by this service")

    def locate() -> Path | None:
        if not is_result_key(key):
            # Only results are served; the result cache's entries live beside them.
            return None
        try:
            path = storage.path_for(key)
            return path if path.is_file() else None
        except (KeyError, OSError, ValueError):
            # Unknown, escaping, over-long or otherwise unusable names are all simply not there.
            return None

    path = await asyncio.to_thread(locate)
    if path is None:
        raise HTTPException(404, detail="no such file")
    media_type = _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    # A result stays under its key for the job's life; a job id reused after the job expired writes the
    # same keys again, so caches keep results for an hour rather than forever.
    return FileResponse(
        path,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
