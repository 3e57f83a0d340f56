"""S3-compatible storage: Cloudflare R2, AWS S3, MinIO, SeaweedFS...

boto3 is blocking, so every call runs on this backend's own small thread pool: the event loop never
waits on the network, and a burst of uploads cannot starve the default pool other code relies on.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from capability_service.core.config import Settings
from capability_service.storage.base import StorageError, StoredObject, TransientStorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")

# A result URL is written once per job image, so caches may keep it for a day (same as /files).
CACHE_CONTROL = "public, max-age=3600"


# Answers S3 and R2 give while overloaded or restarting, whatever their HTTP status.
_TRANSIENT_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"})


def _client_error_is_transient(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return status >= 500 or exc.response.get("Error", {}).get("Code") in _TRANSIENT_CODES


def _client_error_text(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    code = error.get("Code") or "error"
    message = error.get("Message") or ""
    return f"{code}: {message}".rstrip(": ")


class S3Storage:
    """Results in an S3 bucket; URLs under a public base URL, else presigned GET URLs."""

    backend = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "auto",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        public_base_url: str | None = None,
        presign_expires: int = 3600,
        ca_bundle: str | None = None,
        max_attempts: int = 5,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_workers: int = 8,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.presign_expires = presign_expires
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        # R2 and several other S3-compatible stores reject the checksum trailers boto3 >= 1.36 adds by
        # default; checksums are sent only where an operation requires them. Path-style addressing works
        # on every custom endpoint without wildcard DNS; AWS itself keeps its default.
        common: dict[str, Any] = {
            "signature_version": "s3v4",
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            "s3": {"addressing_style": "path" if self.endpoint_url else "auto"},
        }
        self._client: S3Client = session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            verify=ca_bundle,
            config=Config(
                **common,
                retries={"total_max_attempts": max_attempts, "mode": "standard"},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                max_pool_connections=max_workers,
            ),
        )
        # Health is asked often and must answer fast: one attempt, short timeouts.
        self._probe: S3Client = session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            verify=ca_bundle,
            config=Config(
                **common,
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=min(connect_timeout, 3.0),
                read_timeout=3.0,
            ),
        )
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="s3")

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        """Build from `S3_*` settings; the CA bundle, if any, comes from `AWS_CA_BUNDLE` as in boto3."""
        if not settings.s3_bucket:
            raise ValueError("S3_BUCKET is required when STORAGE_BACKEND=s3")
        secret = settings.s3_secret_access_key
        return cls(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
            public_base_url=settings.s3_public_base_url,
            presign_expires=settings.s3_presign_expires,
        )

    async def _run(self, call: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(call, *args, **kwargs))

    async def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        try:
            await self._run(
                self._client.put_object,
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                CacheControl=CACHE_CONTROL,
            )
        except ClientError as exc:
            text = _client_error_text(exc)
            if _client_error_is_transient(exc):
                raise TransientStorageError(f"the object store failed the upload ({text})") from exc
            raise StorageError(f"the object store refused the upload ({text})") from exc
        except (BotoConnectionError, HTTPClientError) as exc:
            raise TransientStorageError(f"the object store could not be reached: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"the object store could not be reached: {exc}") from exc
        return StoredObject(key=key, url=await self.url_for(key), size=len(data), content_type=content_type)

    async def get(self, key: str) -> bytes:
        def read() -> bytes:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            try:
                return body.read()
            finally:
                body.close()

        try:
            return await self._run(read)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                raise KeyError(key) from None
            raise StorageError(f"could not read {key!r} ({_client_error_text(exc)})") from exc
        except BotoCoreError as exc:
            raise StorageError(f"the object store could not be reached: {exc}") from exc

    async def url_for(self, key: str) -> str:
        if self.public_base_url:
            return f"{self.public_base_url}/{quote(key)}"
        url: str = await self._run(
            self._client.generate_presigned_url,
            "get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=self.presign_expires,
        )
        return url

    def key_from_url(self, url: str) -> str | None:
        """The key behind a URL this storage handed out (public or presigned), else None."""
        if self.public_base_url and url.startswith(self.public_base_url + "/"):
            return unquote(urlsplit(url[len(self.public_base_url) + 1 :]).path)
        if self.endpoint_url:
            prefix = f"{self.endpoint_url}/{self.bucket}/"
            if url.startswith(prefix):
                return unquote(urlsplit(url[len(prefix) :]).path)
        return None

    async def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {"backend": self.backend, "bucket": self.bucket}
        if self.endpoint_url:
            report["endpoint"] = self.endpoint_url
        try:
            await self._run(self._probe.head_bucket, Bucket=self.bucket)
        except ClientError as exc:
            return {**report, "healthy": False, "error": _client_error_text(exc)}
        except BotoCoreError as exc:
            return {**report, "healthy": False, "error": str(exc)}
        except RuntimeError as exc:
            # The executor is already shut down: the service is stopping.
            return {**report, "healthy": False, "error": str(exc)}
        return {**report, "healthy": True}

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()
        self._probe.close()
