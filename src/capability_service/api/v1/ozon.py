"""The seller's Ozon catalogue: products with their pictures, and the pictures as one streamed ZIP.

Ozon credentials come per request in `X-Ozon-Client-Id` / `X-Ozon-Api-Key` (both, or neither to use
`OZON_CLIENT_ID` / `OZON_API_KEY`); they are passed to Ozon and nowhere else.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from fastapi.responses import StreamingResponse

from capability_service.api.deps import ApiKeyDep, ServicesDep
from capability_service.jobs.errors import Unavailable
from capability_service.marketplaces.ozon_types import OzonCredentials
from capability_service.plugins.base import PluginDisabled
from capability_service.plugins.ozon.download import DownloadSelection, OzonDownloadPlugin, OzonSelection

router = APIRouter(prefix="/ozon", tags=["ozon catalogue"], dependencies=[ApiKeyDep])

OZON_PLUGIN = "ozon-download"
# Headers of a download a browser may read (CORS), beside the body.
DOWNLOAD_HEADERS = ("Content-Disposition", "X-Ozon-Last-Id")


async def ozon_plugin(services: ServicesDep) -> OzonDownloadPlugin:
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
async def download(selection: DownloadSelection, plugin: OzonPluginDep, creds: OzonCredentialsDep) -> StreamingResponse:
    """The selected products' pictures as one ZIP (`{offer_id}/{position:02}.{ext}`, position 01 is the
    main picture, plus `manifest.json`), streamed while the pictures download."""
    archive = await plugin.open_download(creds, selection)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    headers = {
        "Content-Disposition": f'attachment; filename="ozon-pictures-{stamp}.zip"',
        "Cache-Control": "no-store",
    }
    if archive.next_last_id is not None and not selection.all:
        headers["X-Ozon-Last-Id"] = archive.next_last_id
    return StreamingResponse(archive.stream(), media_type="application/zip", headers=headers)
