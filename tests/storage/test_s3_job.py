"""A job with STORAGE_BACKEND=s3 stores its results in a real SeaweedFS, and the URLs it hands out fetch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.api.helpers import data_uri, submit, wait_final
from tests.storage.clients import boto3_client
from tests.support.data import AUTH
from tests.support.seaweed import Seaweed


def s3_settings(seaweed: Seaweed, **extra: Any) -> dict[str, Any]:
    return {
        "storage_backend": "s3",
        "s3_endpoint_url": seaweed.http_endpoint,
        "s3_region": "auto",
        "s3_bucket": seaweed.bucket,
        "s3_access_key_id": seaweed.access_key,
        "s3_secret_access_key": seaweed.secret_key,
        "s3_presign_expires": 300,
        # Sources from loopback are refused: the second job reads the first job's result from the bucket.
        "source_allow_private_networks": False,
        **extra,
    }


def read_object(seaweed: Seaweed, key: str) -> bytes:
    client = boto3_client(seaweed)
    try:
        body: bytes = client.get_object(Bucket=seaweed.bucket, Key=key)["Body"].read()
        return body
    finally:
        client.close()


async def test_job_results_land_in_s3(make_client: Callable[..., Any], seaweed: Seaweed) -> None:
    client: httpx.AsyncClient = await make_client(**s3_settings(seaweed))

    health = (await client.get("/api/v1/health", headers=AUTH)).json()
    assert health["storage"]["backend"] == "s3"
    assert health["storage"]["healthy"] is True

    response = await submit(
        client,
        job_id="s3-job-1",
        user_id="seller/42",
        type="batch_optimization",
        config={"format": "webp", "maxSize": 640},
        source_image_urls=[data_uri("rocket.jpg"), "http://127.0.0.1:9/refused.jpg"],
    )
    assert response.status_code == 202
    result = await wait_final(client, "s3-job-1")
    assert result["status"] == "completed", result
    url, refused = result["result_image_urls"]
    assert refused is None
    assert url.startswith(f"{seaweed.http_endpoint}/{seaweed.bucket}/ai-playground/default/seller-42-")
    assert "/s3-job-1/0.webp?" in url

    async with httpx.AsyncClient(timeout=10) as browser:
        fetched = await browser.get(url)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/webp"
    assert fetched.content[:4] == b"RIFF" and fetched.content[8:12] == b"WEBP"
    key = url.split(f"/{seaweed.bucket}/", 1)[1].split("?", 1)[0]
    assert fetched.content == read_object(seaweed, key)

    # The first result fed to a second job: read straight from the bucket, not over HTTP.
    await submit(
        client,
        job_id="s3-job-2",
        user_id="seller/42",
        type="batch_optimization",
        config={"format": "png", "maxSize": 320},
        source_image_urls=[url],
    )
    second = await wait_final(client, "s3-job-2")
    assert second["status"] == "completed", second
    async with httpx.AsyncClient(timeout=10) as browser:
        png = await browser.get(second["result_image_urls"][0])
    assert png.status_code == 200
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")


async def test_upload_failure_fails_that_image_with_its_reason(
    make_client: Callable[..., Any], seaweed: Seaweed
) -> None:
    client: httpx.AsyncClient = await make_client(**s3_settings(seaweed, s3_secret_access_key="wrong-secret"))
    health = (await client.get("/api/v1/health", headers=AUTH)).json()
    assert health["storage"]["healthy"] is False
    await submit(client, job_id="s3-bad", type="batch_optimization", source_image_urls=[data_uri("rocket.jpg")])
    result = await wait_final(client, "s3-bad")
    assert result["status"] == "failed"
    assert result["result_image_urls"] == [None]
    assert "SignatureDoesNotMatch" in str(result)
    assert (await client.get("/api/v1/ai/job/s3-bad", headers=AUTH)).status_code == 200
