"""The marketplace check of each result: would Ozon take this picture? Advisory, never fails an image."""

from __future__ import annotations

import logging
from typing import Any

from capability_service.imaging.border import border_stats
from capability_service.imaging.types import EncodedImage, ImageError
from capability_service.marketplaces.ozon_rules import PictureFacts, check_picture
from capability_service.plugins.base import CpuRunner

log = logging.getLogger(__name__)


async def marketplace_checks(result: EncodedImage, facts: dict[str, Any], run_cpu: CpuRunner) -> dict[str, Any]:
    """`{"ozon": {ok, problems, advice, checked_as}}` for one result.

    The main picture's own rules apply to position 1 of an Ozon selection; a result of a plain URL job
    is checked as an additional picture (which of a seller's pictures is the main one is not known).
    Only main pictures are decoded again (a thumbnail, for the background rule: 20-200 ms by format);
    every other rule reads what the encoder already knows.
    """
    main = facts.get("position") == 1
    stats = None
    if main:
        try:
            stats = await run_cpu(border_stats, result.data)
        except ImageError as exc:
            # Just encoded by us: unreadable here is a bug worth a log line, not an image error.
            log.warning("marketplace check could not measure a result: %s", exc)
    picture = PictureFacts(
        format=result.format,
        size_bytes=len(result.data),
        width=result.width,
        height=result.height,
        has_alpha=stats.has_alpha if stats is not None else False,
        border_luma=stats.border_luma if stats is not None else None,
        light_share=stats.light_share if stats is not None else None,
        border_spread=stats.border_spread if stats is not None else None,
    )
    view = check_picture(picture, main=main).view()
    return {"ozon": {**view, "checked_as": "main" if main else "additional"}}
