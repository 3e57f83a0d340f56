"""Reading source images: `data:` URIs and http(s) URLs, each with a size cap and a timeout."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

import httpx

from capability_service.core.config import Settings
from capability_service.sources.errors import SourceError
from capability_service.storage.base import Storage

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+/-]*)(?P<params>(?:;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)


@dataclass(frozen=True, slots=True)
class FetchedSource:
    data: bytes
    # Where the bytes came from, for logs and metadata; never contains a data: payload.
    origin: str


@dataclass(frozen=True, slots=True)
class FetchLimits:
    max_bytes: int = 50 * 1024 * 1024
    connect_timeout: float = 5.0
    total_timeout: float = 30.0


def decode_data_uri(uri: str, max_bytes: int) -> bytes:
    match = _DATA_URI.match(uri)
    if not match or not match.group("b64"):
        raise SourceError("data: URI must be base64-encoded (data:image/...;base64,...)", rule="data-uri")
    payload = uri[match.end() :]
    # Base64 is 4 characters per 3 bytes: refuse before decoding anything too large.
    if len(payload) * 3 // 4 > max_bytes:
        raise SourceError(f"data: URI is larger than the {max_bytes} byte limit", rule="too-large")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise SourceError("data: URI holds invalid base64", rule="data-uri") from None


class SourceFetcher:
    """Fetches sources for jobs. One instance (and one HTTP connection pool) per process."""

    def __init__(self, limits: FetchLimits, client: httpx.AsyncClient | None = None) -> None:
        self.limits = limits
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(limits.total_timeout, connect=limits.connect_timeout),
            follow_redirects=True,
            max_redirects=5,
        )

    @classmethod
    def from_settings(cls, settings: Settings, storage: Storage | None = None) -> SourceFetcher:
        limits = FetchLimits(
            max_bytes=settings.source_max_bytes,
            connect_timeout=settings.source_connect_timeout_seconds,
            total_timeout=settings.source_timeout_seconds,
        )
        return cls(limits)

    async def fetch(self, url: str) -> FetchedSource:
        if url[:5].lower() == "data:":
            return FetchedSource(decode_data_uri(url, self.limits.max_bytes), origin="data: URI")
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme not in {"http", "https"}:
            raise SourceError(f"unsupported source scheme {scheme or '(none)'!r}: use http(s) or data:", rule="scheme")
        return FetchedSource(await self._fetch_http(url), origin=url)

    async def _fetch_http(self, url: str) -> bytes:
        try:
            async with self._client.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise SourceError(f"source answered HTTP {response.status_code}", rule="http-status")
                chunks: list[bytes] = []
                received = 0
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    if received > self.limits.max_bytes:
                        raise SourceError(
                            f"source is larger than the {self.limits.max_bytes} byte limit", rule="too-large"
                        )
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.TimeoutException:
            raise SourceError("source download timed out", rule="timeout") from None
        except httpx.HTTPError as exc:
            raise SourceError(f"source download failed: {type(exc).__name__}", rule="fetch-failed") from None

    async def close(self) -> None:
        await self._client.aclose()
