"""`POST /api/v1/image/compress`: one uploaded image in, the compressed image out.

The body limit (`MAX_UPLOAD_BYTES`, 413) is enforced by `api.limits.BodySizeLimit` while the
upload streams in, before it is read whole. Bad form fields are 400, an image that cannot be read
or processed is 422 with the reason.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import Response

from capability_service.api.deps import ApiKeyDep, ServicesDep
from capability_service.imaging.types import ImageError
from capability_service.jobs.errors import InvalidSubmission
from capability_service.plugins.base import ProcessContext
from capability_service.plugins.image_compress import ImageCompressPlugin

router = APIRouter(tags=["image"], dependencies=[ApiKeyDep])

COMPRESS_HEADERS = [
    "X-Original-Size",
    "X-Result-Size",
    "X-Original-Width",
    "X-Original-Height",
    "X-Original-Format",
    "X-Result-Width",
    "X-Result-Height",
    "X-Compression-Ratio",
    "X-Result-Format",
    "X-Quality",
    "X-Kept-Source",
    "X-Processing-Time-Ms",
]


async def _no_extra_sources(url: str) -> bytes:
    raise ImageError("image-compress reads no other sources")


@router.post("/image/compress")
async def compress(
    request: Request,
    services: ServicesDep,
    file: Annotated[UploadFile, File(description="the image to compress")],
    quality: Annotated[str, Form(description="low | standard | high")] = "standard",
    format: Annotated[str, Form(description="webp | jpg | png | avif")] = "webp",
    max_size: Annotated[int | None, Form(alias="maxSize", description="longest side, never upscaled")] = None,
    maintain_aspect: Annotated[bool | None, Form(alias="maintainAspect")] = None,
) -> Response:
    """Compress one image; the answer is the image itself, its facts in `X-...` headers."""
    # FastAPI binds the last of several `file` parts: refuse rather than drop the others unseen.
    sent = len((await request.form()).getlist("file"))
    if sent > 1:
        raise InvalidSubmission("file", f"send one image per request ({sent} were sent)")
    plugin = services.plugins.get(ImageCompressPlugin.name)
    fields: dict[str, object] = {"quality": quality, "format": format}
    if max_size is not None:
        fields["maxSize"] = max_size
    if maintain_aspect is not None:
        fields["maintainAspect"] = maintain_aspect
    # The same way in as a job's: disabled -> 503, a bad field -> 400 naming it.
    config = plugin.prepare("compress", fields)
    data = await file.read()
    ctx = ProcessContext(run_cpu=services.cpu.run, read_source=_no_extra_sources)
    try:
        result = await plugin.process("compress", config, data, ctx)
    except ImageError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    meta = result.metadata
    original_size = int(meta.get("original_bytes", len(data)))
    quality_value = meta.get("quality")
    headers = {
        "X-Original-Size": str(original_size),
        "X-Result-Size": str(len(result.data)),
        "X-Original-Width": str(meta.get("original_width", "")),
        "X-Original-Height": str(meta.get("original_height", "")),
        "X-Original-Format": str(meta.get("original_format", "")),
        "X-Result-Width": str(result.width),
        "X-Result-Height": str(result.height),
        "X-Compression-Ratio": f"{original_size / max(1, len(result.data)):.3f}",
        "X-Result-Format": result.format,
        "X-Quality": "" if quality_value is None else str(quality_value),
        "X-Kept-Source": "true" if meta.get("kept_source") else "false",
        "X-Processing-Time-Ms": str(meta.get("processing_ms", "")),
        "Content-Disposition": f'inline; filename="compressed.{result.format}"',
    }
    return Response(content=result.data, media_type=result.content_type, headers=headers)
