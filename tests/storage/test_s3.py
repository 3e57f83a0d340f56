"""The S3 backend against a real SeaweedFS over HTTP and HTTPS: signatures, presigned expiry, errors."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from capability_service.core.config import Settings
from capability_service.sources.fetch import FetchLimits, SourceFetcher
from capability_service.sources.netguard import AddressPolicy
from capability_service.storage.base import StorageError
from capability_service.storage.factory import create_storage
from capability_service.storage.keys import result_key
from capability_service.storage.s3 import S3Storage
from tests.storage.clients import boto3_client
from tests.support.seaweed import Seaweed
from tests.support.servers import free_port

DATA = Path(__file__).parent.parent / "data"
PNG = (DATA / "chelsea.png").read_bytes()
JPEG = (DATA / "rocket.jpg").read_bytes()

StorageFactory = Callable[..., S3Storage]


@pytest.fixture(params=["http", "https"])
def scheme(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def endpoint_of(seaweed: Seaweed, scheme: str) -> str:
    return seaweed.https_endpoint if scheme == "https" else seaweed.http_endpoint


def browser(seaweed: Seaweed) -> httpx.AsyncClient:
    """What fetches a result URL: a plain HTTP client that trusts the test CA, with no S3 credentials."""
    return httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(seaweed.ca_file)), timeout=10)


@pytest.fixture
async def make_storage(seaweed: Seaweed, scheme: str) -> AsyncIterator[StorageFactory]:
    made: list[S3Storage] = []

    def factory(**overrides: Any) -> S3Storage:
        values: dict[str, Any] = {
            "bucket": seaweed.bucket,
            "endpoint_url": endpoint_of(seaweed, scheme),
            "region": "auto",
            "access_key_id": seaweed.access_key,
            "secret_access_key": seaweed.secret_key,
            "ca_bundle": str(seaweed.ca_file),
        }
        values.update(overrides)
        storage = S3Storage(**values)
        made.append(storage)
        return storage

    yield factory
    for storage in made:
        await storage.close()


async def test_upload_then_fetch_the_presigned_url(make_storage: StorageFactory, seaweed: Seaweed, scheme: str) -> None:
    storage = make_storage()
    key = result_key("default", "seller 42", f"job-{scheme}", 0, "png")
    stored = await storage.put(key, PNG, "image/png")
    assert stored.key == key
    assert stored.size == len(PNG)
    assert stored.url.startswith(f"{endpoint_of(seaweed, scheme)}/{seaweed.bucket}/{key}?")
    assert "X-Amz-Signature=" in stored.url
    async with browser(seaweed) as client:
        response = await client.get(stored.url)
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert await storage.get(key) == PNG


async def test_url_without_signature_is_refused(make_storage: StorageFactory, seaweed: Seaweed) -> None:
    storage = make_storage()
    stored = await storage.put("ai-playground/u/j/1.png", PNG, "image/png")
    unsigned = stored.url.split("?", 1)[0]
    tampered = stored.url.replace("ai-playground/u/j/1.png", "ai-playground/u/j/2.png")
    await storage.put("ai-playground/u/j/2.png", JPEG, "image/jpeg")
    async with browser(seaweed) as client:
        assert (await client.get(unsigned)).status_code == 403
        assert (await client.get(tampered)).status_code == 403


async def test_expired_presigned_url_is_refused(make_storage: StorageFactory, seaweed: Seaweed) -> None:
    # Long enough that the first fetch comes in time on a busy machine; the second waits until it has passed.
    lifetime = 3
    storage = make_storage(presign_expires=lifetime)
    stored = await storage.put("ai-playground/u/expiring/0.png", PNG, "image/png")
    signed_by = time.monotonic()  # the URL was signed before this
    async with browser(seaweed) as client:
        assert (await client.get(stored.url)).status_code == 200
        await asyncio.sleep(max(0.0, signed_by + lifetime + 1.2 - time.monotonic()))
        expired = await client.get(stored.url)
    assert expired.status_code == 403
    assert "expired" in expired.text.lower()


async def test_public_base_url(make_storage: StorageFactory, seaweed: Seaweed, scheme: str) -> None:
    base = f"{endpoint_of(seaweed, scheme)}/{seaweed.public_bucket}"
    storage = make_storage(bucket=seaweed.public_bucket, public_base_url=base + "/")
    key = result_key("default", "u", "public-job", 3, "jpg")
    stored = await storage.put(key, JPEG, "image/jpeg")
    assert stored.url == f"{base}/{key}"
    async with browser(seaweed) as client:
        response = await client.get(stored.url)
    assert response.status_code == 200
    assert response.content == JPEG
    assert response.headers["content-type"] == "image/jpeg"


async def test_wrong_secret_is_refused(make_storage: StorageFactory) -> None:
    storage = make_storage(secret_access_key="not-the-secret", max_attempts=1)
    with pytest.raises(StorageError, match="SignatureDoesNotMatch"):
        await storage.put("ai-playground/u/j/0.png", PNG, "image/png")
    with pytest.raises(StorageError):
        await storage.get("ai-playground/u/j/0.png")
    health = await storage.health()
    assert health["healthy"] is False
    assert health["bucket"] == "results"


async def test_unreachable_store_fails_with_a_reason(seaweed: Seaweed) -> None:
    storage = S3Storage(
        bucket="results",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        access_key_id=seaweed.access_key,
        secret_access_key=seaweed.secret_key,
        max_attempts=3,
        connect_timeout=1.0,
    )
    try:
        started = time.monotonic()
        with pytest.raises(StorageError, match="could not be reached"):
            await storage.put("ai-playground/u/j/0.png", PNG, "image/png")
        assert time.monotonic() - started < 15
        assert (await storage.health())["healthy"] is False
    finally:
        await storage.close()


async def test_missing_key_and_bucket(make_storage: StorageFactory) -> None:
    storage = make_storage()
    with pytest.raises(KeyError):
        await storage.get("ai-playground/u/j/never-written.png")
    assert (await storage.health()) == {
        "backend": "s3",
        "bucket": "results",
        "endpoint": storage.endpoint_url,
        "healthy": True,
    }
    missing = make_storage(bucket="no-such-bucket")
    report = await missing.health()
    assert report["healthy"] is False
    assert report["error"]


async def test_concurrent_uploads(make_storage: StorageFactory) -> None:
    storage = make_storage(max_workers=4)
    payloads = {result_key("default", "u", "many", i, "png"): PNG + bytes([i]) for i in range(12)}
    stored = await asyncio.gather(*(storage.put(key, data, "image/png") for key, data in payloads.items()))
    assert [item.key for item in stored] == list(payloads)
    for key, data in payloads.items():
        assert await storage.get(key) == data


async def test_uploads_do_not_block_the_event_loop(make_storage: StorageFactory) -> None:
    storage = make_storage()
    data = PNG + b"\0" * (6 * 1024 * 1024)
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            await asyncio.sleep(0.002)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    await storage.put("ai-playground/u/big/0.png", data, "image/png")
    elapsed = time.perf_counter() - started
    done.set()
    await task
    # While the upload runs on a worker thread the loop keeps turning.
    assert ticks >= min(5, int(elapsed / 0.01))


async def test_no_checksum_trailers_on_the_wire(make_storage: StorageFactory, seaweed: Seaweed) -> None:
    """R2 rejects the checksum trailers boto3 >= 1.36 adds by default (over HTTPS). The request our
    client sends has none; a default-configured client's request does, so the check can fail."""

    def sent_headers(client: Any, bucket: str) -> dict[str, str]:
        seen: dict[str, str] = {}

        def record(request: Any, **_: Any) -> None:
            seen.update({name.lower(): str(value) for name, value in request.headers.items()})

        client.meta.events.register("before-send.s3.PutObject", record)
        client.put_object(Bucket=bucket, Key="ai-playground/u/wire/0.png", Body=PNG, ContentType="image/png")
        return seen

    def is_checksummed(headers: dict[str, str]) -> bool:
        return "x-amz-trailer" in headers or any(name.startswith("x-amz-checksum-") for name in headers)

    storage = make_storage(endpoint_url=seaweed.https_endpoint)
    ours = await asyncio.to_thread(sent_headers, storage._client, seaweed.bucket)
    default = boto3_client(seaweed, https=True)
    try:
        theirs = await asyncio.to_thread(sent_headers, default, seaweed.bucket)
    finally:
        default.close()
    assert not is_checksummed(ours), ours
    assert is_checksummed(theirs), theirs


async def test_results_read_back_as_sources(make_storage: StorageFactory) -> None:
    """A result URL fed to a later job is read from the bucket, even with the address policy on and
    the store on loopback: the fetcher never connects to the store's address over HTTP itself."""
    storage = make_storage(presign_expires=60)
    stored = await storage.put("ai-playground/u/chain/0.png", PNG, "image/png")
    assert storage.key_from_url(stored.url) == stored.key
    fetcher = SourceFetcher(FetchLimits(), policy=AddressPolicy(allow_private=False), storage=storage)
    try:
        assert (await fetcher.fetch(stored.url)).data == PNG
        assert (await fetcher.fetch(stored.key)).data == PNG
        other = stored.url.replace("ai-playground/u/chain/0.png", "elsewhere/x.png")
        with pytest.raises(Exception, match="not a result of this service"):
            await fetcher.fetch(other)
    finally:
        await fetcher.close()


def test_from_settings_and_factory(make_settings: Callable[..., Settings], seaweed: Seaweed) -> None:
    settings = make_settings(
        storage_backend="s3",
        s3_endpoint_url=seaweed.http_endpoint + "/",
        s3_bucket=seaweed.bucket,
        s3_access_key_id=seaweed.access_key,
        s3_secret_access_key=seaweed.secret_key,
        s3_presign_expires=120,
        s3_public_base_url="https://img.example.com/",
    )
    storage = create_storage(settings)
    assert isinstance(storage, S3Storage)
    assert storage.endpoint_url == seaweed.http_endpoint
    assert storage.presign_expires == 120
    assert storage.public_base_url == "https://img.example.com"
    config: Any = storage._client.meta.config  # botocore's stubs lack these options
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.retries == {"total_max_attempts": 5, "mode": "standard"}
    asyncio.run(storage.close())
