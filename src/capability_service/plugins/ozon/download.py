"""The `ozon-download` plugin: a seller's Ozon catalogue as product lists, a streamed ZIP, or job sources.

Unlike the image plugins it transforms no image: it reads a selection of products from the Ozon
Seller API and fetches their pictures from Ozon's CDN through the same guarded `SourceFetcher` as job
sources (the address policy and size limits apply; Ozon's CDN is public). Its plugin settings
(`config/plugins.yaml`, `ozon-download`): `max_workers` downloads at once per request [5], each
bounded by `timeout_sec` [20], and `default_field` [offer_id] for selections that do not name one.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from capability_service.core.config import ConfigError
from capability_service.core.image_formats import detect_image_format
from capability_service.imaging.types import EncodedImage
from capability_service.marketplaces.ozon import OzonSellerClient
from capability_service.marketplaces.ozon_errors import OzonCredentialsMissing, OzonError
from capability_service.marketplaces.ozon_types import (
    MAX_IDS_PER_CALL,
    IdField,
    OzonCredentials,
    OzonProduct,
    ProductLookup,
    item_key,
)
from capability_service.plugins.base import (
    BasePlugin,
    PluginDeps,
    PluginHealth,
    PluginOptions,
    ProcessContext,
    ProcessingMode,
)
from capability_service.plugins.ozon.manifest import DownloadManifest
from capability_service.plugins.ozon.publish import OzonPublisher
from capability_service.plugins.ozon.zipstream import ZipStreamWriter
from capability_service.sources.errors import SourceError
from capability_service.sources.fetch import SourceFetcher

log = logging.getLogger(__name__)

# Ids one selection may name (ten /v3/product/info/list calls); bigger catalogues page with last_id or `all`.
MAX_SELECTION_IDS = 10_000
# Members bigger than this are written off the event loop (CRC-32 of tens of MB takes milliseconds).
_THREAD_WRITE_BYTES = 512 * 1024
_EXTENSIONS = {"jpeg": "jpg", "tiff": "tif"}
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


class OzonDownloadOptions(PluginOptions):
    """The plugin's settings from `config/plugins.yaml` (`ozon-download`)."""

    max_workers: int = Field(5, ge=1, le=64)
    timeout_sec: float = Field(20.0, gt=0, le=600)
    default_field: IdField = "offer_id"
    # A real publish follows Ozon's import status this long, asking every `publish_poll_sec`.
    publish_wait_sec: float = Field(120.0, ge=0, le=3600)
    publish_poll_sec: float = Field(2.0, gt=0, le=60)


class OzonSelection(BaseModel):
    """Which products: `ids` of one kind (`field`), or a page of the whole catalogue (`last_id`, `limit`)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str | int] | None = Field(
        None, min_length=1, max_length=MAX_SELECTION_IDS, description="offer_ids, product_ids or skus"
    )
    field: IdField | None = Field(None, description="what `ids` holds; default: the plugin's default_field")
    last_id: str | None = Field(None, max_length=512, description='page token from a previous answer; "" for the first')
    limit: int = Field(100, ge=1, le=MAX_IDS_PER_CALL, description="products per catalogue page")

    @model_validator(mode="after")
    def _one_kind_of_selection(self) -> OzonSelection:
        if self.ids is not None and self.last_id is not None:
            raise ValueError("give either ids (with field) or last_id/limit for a catalogue page, not both")
        return self

    def description(self, default_field: IdField) -> dict[str, Any]:
        if self.ids is not None:
            return {"ids": len(self.ids), "field": self.field or default_field}
        return {"last_id": self.last_id or "", "limit": self.limit}


class DownloadSelection(OzonSelection):
    """A selection for the ZIP download; `all` walks the whole catalogue, page after page."""

    all: bool = Field(False, description="every product of the catalogue (ignores last_id and limit)")

    @model_validator(mode="after")
    def _all_alone(self) -> DownloadSelection:
        if self.all and self.ids is not None:
            raise ValueError("give either ids or all, not both")
        return self


class OzonJobSource(BaseModel):
    """A job's sources as an Ozon selection: the pictures of these products (main only, or all)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str | int] = Field(min_length=1, max_length=MAX_SELECTION_IDS)
    field: IdField | None = None
    images: Literal["main", "all"] = "main"


@dataclass(slots=True)
class JobSources:
    """A selection resolved for a job: picture URLs, each one's facts, and ids that gave no picture."""

    urls: list[str]
    facts: list[dict[str, Any]]
    errors: list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class Picture:
    """One picture of one product; `position` 1 is the product's main picture."""

    product: OzonProduct
    position: int
    url: str


@dataclass(frozen=True, slots=True)
class _Fetched:
    picture: Picture
    data: bytes | None
    error: str | None


def safe_name(text: str, fallback: str) -> str:
    """A ZIP path segment from an offer_id: no separators, control characters or dot-only names."""
    cleaned = _UNSAFE_NAME.sub("_", text).strip().strip(".")
    return cleaned[:120] or fallback


class OzonDownloadPlugin(BasePlugin):
    name: ClassVar[str] = "ozon-download"
    display_name: ClassVar[str] = "Ozon catalogue"
    category: ClassVar[str] = "marketplace"
    processing_mode: ClassVar[ProcessingMode] = ProcessingMode.sync
    config_models: ClassVar[Mapping[str, type[BaseModel]]] = {"products": OzonSelection, "download": DownloadSelection}
    options_model: ClassVar[type[PluginOptions]] = OzonDownloadOptions
    options: OzonDownloadOptions

    def __init__(self, deps: PluginDeps) -> None:
        super().__init__(deps)
        if deps.ozon is None or deps.fetcher is None:
            raise ConfigError("plugin ozon-download needs the Ozon client and the source fetcher")
        self.client: OzonSellerClient = deps.ozon
        self.fetcher: SourceFetcher = deps.fetcher

    # -- credentials ----------------------------------------------------------------------------

    @property
    def credentials_configured(self) -> bool:
        settings = self.deps.settings
        return bool(settings.ozon_client_id and settings.ozon_api_key)

    def credentials(self, client_id: str | None, api_key: str | None) -> OzonCredentials:
        """The request's credentials (both headers) or else the configured ones; never a mix of the two."""
        client_id = (client_id or "").strip() or None
        api_key = (api_key or "").strip() or None
        if client_id is not None or api_key is not None:
            if client_id is None or api_key is None:
                raise OzonCredentialsMissing(
                    "send both X-Ozon-Client-Id and X-Ozon-Api-Key, or neither to use the configured account"
                )
            chosen = OzonCredentials(client_id=client_id, api_key=SecretStr(api_key))
        else:
            settings = self.deps.settings
            if not settings.ozon_client_id or settings.ozon_api_key is None:
                raise OzonCredentialsMissing(
                    "no Ozon credentials: send X-Ozon-Client-Id and X-Ozon-Api-Key, "
                    "or set OZON_CLIENT_ID and OZON_API_KEY on the service"
                )
            chosen = OzonCredentials(client_id=settings.ozon_client_id, api_key=settings.ozon_api_key)
        if not chosen.client_id.isascii() or not chosen.client_id.isdigit():
            raise OzonCredentialsMissing(
                "the Ozon Client-Id is a number (shown beside the Api-Key in the seller's Ozon settings)"
            )
        return chosen

    # -- plugin interface -----------------------------------------------------------------------

    async def process(self, operation: str, config: BaseModel, source: bytes, ctx: ProcessContext) -> EncodedImage:
        """Not an image transform: the catalogue is read through the routes under `/api/v1/ozon`."""
        raise NotImplementedError("ozon-download has no per-image operation; use the /api/v1/ozon routes")

    async def health_check(self) -> PluginHealth:
        if not self.enabled:
            return PluginHealth(healthy=False, detail=self.disabled_reason)
        if not self.credentials_configured:
            detail = "no OZON_CLIENT_ID/OZON_API_KEY configured: requests must send X-Ozon-Client-Id and X-Ozon-Api-Key"
            return PluginHealth(healthy=True, detail=detail)
        return PluginHealth(healthy=True)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "settings": {
                "max_workers": self.options.max_workers,
                "timeout_sec": self.options.timeout_sec,
                "default_field": self.options.default_field,
                "publish_wait_sec": self.options.publish_wait_sec,
            },
            "api_base": self.client.base_url,
            "credentials_configured": self.credentials_configured,
        }

    # -- products -------------------------------------------------------------------------------

    def id_field(self, selection: OzonSelection) -> IdField:
        return selection.field or self.options.default_field

    async def products(self, creds: OzonCredentials, selection: OzonSelection) -> tuple[ProductLookup, str]:
        """The selected products with their pictures, and the `last_id` of the next catalogue page."""
        if selection.ids is not None:
            ids = [str(value) for value in selection.ids]
            return await self.client.product_info(creds, ids, self.id_field(selection)), ""
        return await self.client.catalogue_page(creds, selection.last_id or "", selection.limit)

    async def job_sources(self, creds: OzonCredentials, source: OzonJobSource) -> JobSources:
        """The pictures a job over `source` processes, in selection order, with each one's product facts."""
        id_field = source.field or self.options.default_field
        lookup = await self.client.product_info(creds, [str(value) for value in source.ids], id_field)
        resolved = JobSources(urls=[], facts=[], errors=[error.view() for error in lookup.errors])
        for product in lookup.products:
            pictures = product.images[:1] if source.images == "main" else product.images
            if not pictures:
                resolved.errors.append({"id": item_key(product, id_field), "error": "the product has no pictures"})
            for position, url in enumerate(pictures, start=1):
                resolved.urls.append(url)
                resolved.facts.append(
                    {
                        "offer_id": product.offer_id,
                        "product_id": product.product_id,
                        "sku": product.sku,
                        "position": position,
                    }
                )
        return resolved

    def publisher(self, creds: OzonCredentials) -> OzonPublisher:
        return OzonPublisher(
            self.client,
            creds,
            wait_seconds=self.options.publish_wait_sec,
            poll_seconds=self.options.publish_poll_sec,
        )

    # -- the ZIP download -----------------------------------------------------------------------

    async def open_download(
        self, creds: OzonCredentials, selection: DownloadSelection, *, owner: str
    ) -> CatalogueDownload:
        """Resolve the first part of the selection now (so bad credentials fail before anything is sent),
        and return the archive to stream. `owner` scopes reads of this service's own results, as for jobs."""
        parts = _PartIterator(self, creds, selection)
        first = await parts.first()
        return CatalogueDownload(self, selection, first, parts, owner)

    async def fetch_picture(self, picture: Picture, owner: str) -> _Fetched:
        """One picture from the CDN, within `timeout_sec`; any failure is this picture's error.

        A picture URL that is one of this service's results is read only when it is `owner`'s."""
        url = picture.url
        if not url.lower().startswith(("https://", "http://")):
            return _Fetched(picture, None, "the picture URL is not an http(s) link")
        timeout = self.options.timeout_sec
        try:
            async with asyncio.timeout(timeout):
                fetched = await self.fetcher.fetch(url, owner=owner)
        except TimeoutError:
            return _Fetched(picture, None, f"the download took longer than {timeout:g} s")
        except SourceError as exc:
            return _Fetched(picture, None, str(exc))
        return _Fetched(picture, fetched.data, None)


class _PartIterator:
    """The parts of a download selection, with the next catalogue page's `last_id` once known."""

    def __init__(self, plugin: OzonDownloadPlugin, creds: OzonCredentials, selection: DownloadSelection) -> None:
        self._plugin = plugin
        self._creds = creds
        self._selection = selection
        self._ids = selection.ids is not None
        self._id_iter: AsyncIterator[ProductLookup] | None = None
        self._last_id = "" if selection.all else (selection.last_id or "")
        self._pages_done = False
        self.next_last_id: str | None = None if self._ids else ""

    async def first(self) -> ProductLookup:
        part = await self.next()
        return part if part is not None else ProductLookup()

    async def next(self) -> ProductLookup | None:
        plugin, creds, selection = self._plugin, self._creds, self._selection
        if self._ids:
            if self._id_iter is None:
                ids = [str(value) for value in selection.ids or []]
                self._id_iter = plugin.client.iter_product_info(creds, ids, plugin.id_field(selection))
            return await anext(self._id_iter, None)
        if self._pages_done:
            return None
        limit = MAX_IDS_PER_CALL if selection.all else selection.limit
        part, next_id = await plugin.client.catalogue_page(creds, self._last_id, limit)
        self._last_id = next_id
        self.next_last_id = next_id
        if not selection.all or not next_id:
            self._pages_done = True
        return part


class CatalogueDownload:
    """A selection's pictures as a ZIP stream: `{offer_id}/{position:02}.{ext}` and `manifest.json`.

    At most `max_workers` downloads run at once; finished pictures wait in a queue of `max_workers`
    while the archive is written, so memory holds at most about twice `max_workers` pictures
    whatever the size of the catalogue. Pictures are written as they arrive; the manifest says
    which file is which.
    """

    def __init__(
        self,
        plugin: OzonDownloadPlugin,
        selection: DownloadSelection,
        first: ProductLookup,
        parts: _PartIterator,
        owner: str,
    ) -> None:
        self._plugin = plugin
        self._owner = owner
        self._first: ProductLookup | None = first
        self._parts = parts
        self.manifest = DownloadManifest(selection.description(plugin.options.default_field))

    @property
    def next_last_id(self) -> str | None:
        return self._parts.next_last_id

    async def _feed(self, pictures: asyncio.Queue[Picture | None], workers: int) -> None:
        manifest = self.manifest
        try:
            part = self._first
            self._first = None
            while part is not None:
                for error in part.errors:
                    manifest.error(error.id, error.error)
                for product in part.products:
                    manifest.product({**product.view(), "pictures": len(product.images)})
                    if not product.images:
                        manifest.error(product.offer_id or str(product.product_id), "the product has no pictures")
                    for position, url in enumerate(product.images, start=1):
                        await pictures.put(Picture(product, position, url))
                part = await self._parts.next()
        except OzonError as exc:
            # The archive is already on its way: say in the manifest why it stops short.
            manifest.error("*", f"the catalogue could not be read to the end: {exc}")
        finally:
            manifest.last_id = self._parts.next_last_id
            for _ in range(workers):
                await pictures.put(None)

    async def _work(self, pictures: asyncio.Queue[Picture | None], results: asyncio.Queue[_Fetched | None]) -> None:
        while (picture := await pictures.get()) is not None:
            await results.put(await self._plugin.fetch_picture(picture, self._owner))

    async def _produce(self, results: asyncio.Queue[_Fetched | None]) -> None:
        workers = self._plugin.options.max_workers
        pictures: asyncio.Queue[Picture | None] = asyncio.Queue(maxsize=workers)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._feed(pictures, workers))
                for _ in range(workers):
                    group.create_task(self._work(pictures, results))
        finally:
            await results.put(None)

    async def stream(self) -> AsyncIterator[bytes]:
        results: asyncio.Queue[_Fetched | None] = asyncio.Queue(maxsize=self._plugin.options.max_workers)
        producer = asyncio.create_task(self._produce(results))
        writer = ZipStreamWriter()
        try:
            while (fetched := await results.get()) is not None:
                chunk = await self._write(writer, fetched)
                if chunk:
                    yield chunk
            await producer
            for chunk in writer.add_stream("manifest.json", self.manifest.render()):
                yield chunk
            yield writer.close()
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            self.manifest.close()

    async def _write(self, writer: ZipStreamWriter, fetched: _Fetched) -> bytes:
        picture = fetched.picture
        product = picture.product
        entry: dict[str, Any] = {
            "offer_id": product.offer_id,
            "product_id": product.product_id,
            "position": picture.position,
            "main": picture.position == 1,
            "source_url": picture.url,
            "file": None,
            "bytes": None,
            "error": fetched.error,
        }
        chunk = b""
        if fetched.data is not None:
            kind = detect_image_format(fetched.data) or "bin"
            folder = safe_name(product.offer_id, str(product.product_id))
            name = writer.unique(f"{folder}/{picture.position:02}.{_EXTENSIONS.get(kind, kind)}")
            data = fetched.data
            if len(data) > _THREAD_WRITE_BYTES:
                chunk = await asyncio.to_thread(writer.add, name, data)
            else:
                chunk = writer.add(name, data)
            entry.update(file=name, bytes=len(data), format=kind)
        self.manifest.image(entry)
        return chunk
