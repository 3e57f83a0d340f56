"""Reading source images safely, whatever URL a job names.

Accepted forms, tried in this order:

- `data:image/...;base64,...`: size checked before decoding.
- Keys of our own storage: a bare key (`ai-playground/u/j/0.webp`) or a URL this service's storage
  handed out (`{PUBLIC_BASE_URL}/files/...`, `{S3_PUBLIC_BASE_URL}/...`, a presigned URL); read from
  the storage directly, never over HTTP.
- Local files, only when `SOURCE_LOCAL_ROOT` is set: `file:///abs/path`, `file:relative/path`
  (percent-decoded, relative to the root) or a bare absolute path `/abs/path` (taken literally); the
  resolved file, symlinks followed, must lie under the root and never inside `LOCAL_STORAGE_DIR`
  (results are read as keys, where their owner is checked).
- `http://` and `https://`: the address policy of `netguard` is enforced on every connection,
  redirects are followed by hand (at most `max_redirects`), the body is capped while streaming and
  must start like an image.

Every refusal or failure is a `SourceError` whose message can be shown to the seller as is.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import ssl
import stat
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes, urlsplit

import certifi
import httpx

from capability_service import __version__
from capability_service.core.config import Settings
from capability_service.sources.errors import SourceError
from capability_service.sources.magic import MAGIC_BYTES, describe, image_kind
from capability_service.sources.netguard import AddressPolicy, GuardedTransport, Resolver, system_resolver
from capability_service.storage.base import KeyFromUrl, Storage, StorageError
from capability_service.storage.keys import RESULT_PREFIX, is_result_key

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+/-]*)(?P<params>(?:;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)
_WHITESPACE = re.compile(r"\s+")
_REDIRECTS = {301, 302, 303, 307, 308}
_OK = {200, 203}


@dataclass(frozen=True, slots=True)
class FetchedSource:
    """The bytes of one source image."""

    data: bytes
    # Where the bytes came from, for logs and metadata: never a data: payload nor a URL's query
    # (presigned URLs carry credentials there).
    origin: str


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """Bounds on one download; `total_timeout` covers redirects and retries together."""

    max_bytes: int = 50 * 1024 * 1024
    connect_timeout: float = 5.0
    total_timeout: float = 30.0
    max_redirects: int = 5
    # Attempts after the first, on connection errors and 5xx answers.
    retries: int = 2
    backoff: float = 0.25
    # Downloads at once over all jobs, and at most this many of them from one host: a slow host can
    # then hold only part of the slots, and downloads from other hosts go on beside it.
    max_concurrency: int = 8
    max_per_host: int = 4


class _Retryable(Exception):
    """A failure worth another attempt; carries the error to report if attempts run out."""

    def __init__(self, error: SourceError) -> None:
        super().__init__(str(error))
        self.error = error


def _check_image(head: bytes) -> None:
    if image_kind(head) is None:
        what = describe(head)
        prefix = f"the source is {what}, " if what else "the source is "
        raise SourceError(
            prefix + "not a supported image (allowed: JPEG, PNG, WebP, GIF, TIFF, AVIF/HEIC, BMP)",
            rule="not-an-image",
        )


def decode_data_uri(uri: str, max_bytes: int) -> bytes:
    """The bytes of a base64 `data:` URI, refusing anything over `max_bytes` before decoding it."""
    match = _DATA_URI.match(uri)
    if not match or not match.group("b64"):
        raise SourceError("data: URI must be base64-encoded (data:image/...;base64,...)", rule="data-uri")
    too_large = SourceError(f"data: URI is larger than the {max_bytes} byte limit", rule="too-large")
    # Refuse from the length alone before copying or decoding anything: even fully percent-escaped
    # base64 takes at most 4 characters per byte.
    if len(uri) - match.end() > 4 * max_bytes + 16:
        raise too_large
    payload = uri[match.end() :]
    if "%" in payload:
        payload = unquote(payload)
    if _WHITESPACE.search(payload):
        payload = _WHITESPACE.sub("", payload)
    # Base64 is 4 characters per 3 bytes, so the decoded size is known before decoding.
    if len(payload) * 3 // 4 - payload[-2:].count("=") > max_bytes:
        raise too_large
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise SourceError("data: URI holds invalid base64", rule="data-uri") from None
    if len(data) > max_bytes:
        raise too_large
    return data


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """`host` matches an entry exactly, or a `*.example.com` entry as a subdomain."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
        elif host == entry:
            return True
    return False


def _read_local_file(candidate: Path, root: Path, shown: str, max_bytes: int, forbidden: Sequence[Path] = ()) -> bytes:
    # Resolve symlinks and `..` first, then compare with the root: a link inside the root that points
    # outside is refused like a plain `../`. The message never shows where a link points.
    real = candidate.resolve(strict=False)
    if not real.is_relative_to(root):
        raise SourceError(f"{shown} is outside the allowed local source directory", rule="local-path")
    if any(real.is_relative_to(directory) for directory in forbidden):
        # A root that contains the result storage would let a path name any tenant's or user's result;
        # results are read by key or URL instead, where their owner is checked.
        raise SourceError(
            f"{shown} is inside the service's result storage (LOCAL_STORAGE_DIR), which file: sources may not "
            "read; give the result's URL or key instead",
            rule="local-path",
        )
    try:
        # O_NOFOLLOW: the path was resolved above, so a symlink appearing now is a swap; refuse it.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SourceError(f"no such file: {shown}", rule="local-path") from None
    except OSError as exc:
        raise SourceError(f"cannot open {shown}: {exc.strerror}", rule="local-path") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SourceError(f"{shown} is not a regular file", rule="local-path")
        if info.st_size > max_bytes:
            raise SourceError(f"{shown} is larger than the {max_bytes} byte limit", rule="too-large")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SourceError(f"{shown} is larger than the {max_bytes} byte limit", rule="too-large")
    return data


class _BodyDecoder:
    """Undoes Content-Encoding with a bound on the output, so a compression bomb stops at the cap."""

    def __init__(self, encoding: str) -> None:
        encoding = encoding.strip().lower()
        self._inflate: zlib._Decompress | None
        if encoding in ("", "identity"):
            self._inflate = None
        elif encoding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._inflate = zlib.decompressobj()
        else:
            raise SourceError(f"the source is sent with unsupported Content-Encoding {encoding!r}", rule="encoding")

    def decode(self, chunk: bytes, room: int) -> bytes:
        """At most `room + 1` bytes of output: one byte more than allowed is enough to say "too large"."""
        if self._inflate is None:
            return chunk
        try:
            out = self._inflate.decompress(chunk, room + 1)
        except zlib.error:
            raise SourceError("the source's compressed body is corrupt", rule="encoding") from None
        if self._inflate.unconsumed_tail:
            return out + b"\0"
        return out


class _HostSlots:
    """A semaphore per host, made when a host is first used and dropped when no download needs it."""

    def __init__(self, per_host: int) -> None:
        self._per_host = per_host
        self._slots: dict[str, asyncio.Semaphore] = {}
        # Downloads holding or waiting for each host's semaphore, so idle hosts leave no entry behind.
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def hold(self, host: str) -> AsyncIterator[None]:
        host = host.lower().rstrip(".")
        slots = self._slots.setdefault(host, asyncio.Semaphore(self._per_host))
        self._users[host] = self._users.get(host, 0) + 1
        try:
            async with slots:
                yield
        finally:
            self._users[host] -= 1
            if not self._users[host]:
                del self._users[host], self._slots[host]


class SourceFetcher:
    """Fetches sources for jobs. One instance (and one HTTP connection pool) per process."""

    def __init__(
        self,
        limits: FetchLimits | None = None,
        *,
        policy: AddressPolicy | None = None,
        allowed_hosts: Sequence[str] = (),
        local_root: Path | None = None,
        forbidden_local: Sequence[Path] = (),
        storage: Storage | None = None,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.limits = limits or FetchLimits()
        self.policy = policy or AddressPolicy()
        self.allowed_hosts = tuple(host.strip() for host in allowed_hosts if host.strip())
        self.local_root = local_root.resolve() if local_root is not None else None
        # Directories no local source may lie in, even under the root (resolved, symlinks included).
        self.forbidden_local = tuple(directory.resolve() for directory in forbidden_local)
        self.storage = storage
        self._slots = asyncio.Semaphore(self.limits.max_concurrency)
        self._host_slots = _HostSlots(min(self.limits.max_per_host, self.limits.max_concurrency))
        # The transport is used directly, without an httpx client around it: no cookie jar shared
        # between sellers' sources, no proxy from the environment, and redirects handled here only.
        self._transport = GuardedTransport(
            self.policy,
            resolver=resolver,
            ssl_context=ssl_context or ssl.create_default_context(cafile=certifi.where()),
            max_connections=max(self.limits.max_concurrency * 2, 8),
        )
        # The overall deadline is enforced around the whole fetch; these bound each step.
        self._timeouts = httpx.Timeout(self.limits.total_timeout, connect=self.limits.connect_timeout).as_dict()
        self._headers = {
            "User-Agent": f"capability-service/{__version__}",
            "Accept": "image/*",
            "Accept-Encoding": "identity",
        }

    @classmethod
    def from_settings(cls, settings: Settings, storage: Storage | None = None) -> SourceFetcher:
        """A fetcher configured by the `SOURCE_*` settings, reading our own keys from `storage`."""
        limits = FetchLimits(
            max_bytes=settings.source_max_bytes,
            connect_timeout=settings.source_connect_timeout_seconds,
            total_timeout=settings.source_timeout_seconds,
            max_concurrency=settings.source_max_concurrency,
            max_per_host=settings.source_max_per_host,
        )
        return cls(
            limits,
            policy=AddressPolicy(allow_private=settings.source_allow_private_networks),
            allowed_hosts=settings.source_allowed_hosts,
            local_root=settings.source_local_root,
            # The service's own results: a job reads them only by key or URL, as their owner.
            forbidden_local=(settings.local_storage_dir,) if storage is not None else (),
            storage=storage,
        )

    async def fetch(self, url: str, *, owner: str | None = None) -> FetchedSource:
        """The bytes of the image `url` names; raises `SourceError` with a reason a seller can act on.

        `owner` is the key prefix of the tenant's user a job runs for (`storage.keys.owner_prefix`):
        results of this service are then read only when they are under it (`None` means no scoping,
        for callers outside jobs).
        """
        url = url.strip()
        if not url:
            raise SourceError("the source URL is empty", rule="url")
        if url[:5].lower() == "data:":
            data = decode_data_uri(url, self.limits.max_bytes)
            _check_image(data[:MAGIC_BYTES])
            return FetchedSource(data, origin="data: URI")
        key = self._storage_key(url)
        if key is not None:
            return await self._fetch_stored(key, owner)
        if url[:5].lower() == "file:" or url.startswith("/"):
            return await self._fetch_local(url)
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme not in {"http", "https"}:
            raise SourceError(f"unsupported source scheme {scheme or '(none)'!r}: use http(s) or data:", rule="scheme")
        return await self._fetch_http(url)

    def _storage_key(self, url: str) -> str | None:
        if self.storage is None:
            return None
        if url.startswith(RESULT_PREFIX + "/"):
            return url
        if isinstance(self.storage, KeyFromUrl):
            try:
                return self.storage.key_from_url(url)
            except ValueError:
                # urllib refuses some URLs outright (an unclosed or bogus IPv6 literal): no URL of ours.
                raise SourceError("the source URL is not a valid URL", rule="url") from None
        return None

    async def _fetch_stored(self, key: str, owner: str | None) -> FetchedSource:
        assert self.storage is not None
        if not is_result_key(key):
            raise SourceError(f"{key!r} is not a result of this service", rule="storage-key")
        if owner is not None and not key.startswith(owner):
            # One seller's job never reads another seller's results, even by a known key or URL.
            raise SourceError("that stored result belongs to another user", rule="storage-key")
        try:
            data = await self.storage.get(key)
        except KeyError:
            raise SourceError(f"no stored result {key}", rule="storage-key") from None
        except StorageError as exc:
            raise SourceError(f"could not read stored result {key}: {exc}", rule="storage") from None
        if len(data) > self.limits.max_bytes:
            raise SourceError(
                f"stored result {key} is larger than the {self.limits.max_bytes} byte limit", rule="too-large"
            )
        _check_image(data[:MAGIC_BYTES])
        return FetchedSource(data, origin=f"storage:{key}")

    async def _fetch_local(self, url: str) -> FetchedSource:
        root = self.local_root
        if root is None:
            raise SourceError("local file sources are turned off (SOURCE_LOCAL_ROOT is not set)", rule="local-path")
        if "\x00" in url:
            raise SourceError("the file path contains a NUL character", rule="local-path")
        if url[:5].lower() == "file:":
            parts = urlsplit(url)
            if parts.netloc not in ("", "localhost"):
                raise SourceError("file: URLs must not name a host", rule="local-path")
            if parts.query or parts.fragment:
                raise SourceError("file: URLs must not have a query or fragment", rule="local-path")
            text = os.fsdecode(unquote_to_bytes(parts.path))
            if "\x00" in text:
                raise SourceError("the file path contains a NUL character", rule="local-path")
            shown = text
        else:
            text = shown = url
        candidate = Path(text) if os.path.isabs(text) else root / text
        data = await asyncio.to_thread(
            _read_local_file, candidate, root, shown, self.limits.max_bytes, self.forbidden_local
        )
        _check_image(data[:MAGIC_BYTES])
        return FetchedSource(data, origin=f"file:{shown}")

    def _checked_url(self, url: str | httpx.URL) -> httpx.URL:
        try:
            parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        except (httpx.InvalidURL, ValueError, TypeError):
            raise SourceError("the source URL is not a valid URL", rule="url") from None
        if parsed.scheme not in ("http", "https"):
            raise SourceError(
                f"unsupported source scheme {parsed.scheme or '(none)'!r}: use http(s) or data:", rule="scheme"
            )
        if parsed.userinfo:
            raise SourceError("source URLs must not contain a user name or password", rule="userinfo")
        if not parsed.host:
            raise SourceError("the source URL has no host", rule="url")
        if self.allowed_hosts and not host_allowed(parsed.host, self.allowed_hosts):
            raise SourceError(f"host {parsed.host} is not in the allowed source hosts", rule="host-not-allowed")
        return parsed

    async def _fetch_http(self, url: str) -> FetchedSource:
        target = self._checked_url(url)
        total = self.limits.total_timeout
        # The host's slot first: a download waiting for its busy host must not sit on one of the
        # shared slots meanwhile. The host is the one the job named; redirects stay in its slot.
        async with self._host_slots.hold(target.host), self._slots:
            try:
                async with asyncio.timeout(total):
                    return await self._attempts(target)
            except TimeoutError:
                raise SourceError(f"the download took longer than {total:g} s", rule="timeout") from None

    async def _attempts(self, target: httpx.URL) -> FetchedSource:
        for attempt in range(self.limits.retries + 1):
            try:
                return await self._follow(target)
            except _Retryable as exc:
                if attempt == self.limits.retries:
                    raise exc.error from None
                await asyncio.sleep(self.limits.backoff * (2**attempt))
        raise AssertionError("unreachable")

    async def _follow(self, target: httpx.URL) -> FetchedSource:
        current = target
        for hop in range(self.limits.max_redirects + 1):
            try:
                request = httpx.Request("GET", current, headers=self._headers, extensions={"timeout": self._timeouts})
                response = await self._transport.handle_async_request(request)
                response.request = request
            except httpx.TimeoutException:
                raise _Retryable(SourceError(f"connecting to {current.host} timed out", rule="timeout")) from None
            except httpx.TransportError as exc:
                raise _Retryable(
                    SourceError(f"could not connect to {current.host}: {exc or type(exc).__name__}", rule="connect")
                ) from None
            try:
                status = response.status_code
                location = response.headers.get("location")
                if status in _REDIRECTS and location:
                    if hop == self.limits.max_redirects:
                        raise SourceError(
                            f"the source redirects more than {self.limits.max_redirects} times", rule="redirects"
                        )
                    try:
                        next_url = current.join(location)
                    except (httpx.InvalidURL, ValueError):
                        raise SourceError("the source redirects to an invalid URL", rule="url") from None
                    current = self._checked_url(next_url)
                    continue
                if status >= 500:
                    raise _Retryable(SourceError(f"the source server answered HTTP {status}", rule="http-status"))
                if status not in _OK:
                    raise SourceError(f"the source server answered HTTP {status}", rule="http-status")
                data = await self._read_body(response)
            finally:
                await response.aclose()
            return FetchedSource(data, origin=str(current.copy_with(query=None, fragment=None)))
        raise AssertionError("unreachable")

    async def _read_body(self, response: httpx.Response) -> bytes:
        limit = self.limits.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise SourceError(f"the source is {int(declared)} bytes, above the {limit} byte limit", rule="too-large")
        decoder = _BodyDecoder(response.headers.get("content-encoding", ""))
        body = bytearray()
        checked = False
        try:
            # Raw bytes, decoded here: a false or absent Content-Length changes nothing, the cap is
            # counted on what actually arrives after decompression.
            async for chunk in response.aiter_raw():
                body += decoder.decode(chunk, limit - len(body))
                if len(body) > limit:
                    raise SourceError(f"the source is larger than the {limit} byte limit", rule="too-large")
                if not checked and len(body) >= MAGIC_BYTES:
                    # Stop a multi-megabyte HTML page after its first bytes, not after its last.
                    _check_image(bytes(body[:MAGIC_BYTES]))
                    checked = True
        except httpx.TimeoutException:
            raise SourceError("the source stopped sending data", rule="timeout") from None
        except httpx.TransportError as exc:
            raise _Retryable(
                SourceError(f"the connection broke during the download: {exc or type(exc).__name__}", rule="connect")
            ) from None
        if not checked:
            _check_image(bytes(body[:MAGIC_BYTES]))
        return bytes(body)

    async def close(self) -> None:
        """Close the connection pool; the fetcher is not used afterwards."""
        await self._transport.aclose()
