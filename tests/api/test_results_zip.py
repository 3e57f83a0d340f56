"""`GET /api/v1/ai/job/{id}/results.zip`: a job's finished results in one streamed archive."""

from __future__ import annotations

import base64
import io
import zipfile

import httpx
import pytest

from tests.api.helpers import data_uri, submit, wait_final
from tests.support.data import AUTH, read_image

BROKEN = "data:image/jpeg;base64," + base64.b64encode(read_image("rocket.jpg")[:3000]).decode()


async def _finished_job(client: httpx.AsyncClient, job_id: str, user_id: str | None = None) -> dict[str, object]:
    sources = [data_uri("rocket.jpg"), BROKEN, data_uri("chelsea.png", "image/png"), data_uri("rocket.jpg")]
    response = await submit(
        client,
        job_id=job_id,
        user_id=user_id,
        type="batch_optimization",
        config={"format": "jpg", "maxSize": 200},
        source_image_urls=sources,
    )
    assert response.status_code == 202
    return await wait_final(client, job_id)


async def test_the_archive_holds_every_result_under_the_names_given(client: httpx.AsyncClient) -> None:
    result = await _finished_job(client, "zip-1")
    assert result["status"] == "completed"
    response = await client.get(
        "/api/v1/ai/job/zip-1/results.zip",
        params=[("name", "Red shoe.JPG"), ("name", "broken.jpg"), ("name", "../../cat.png"), ("name", "red shoe.jpg")],
        headers=AUTH,
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == 'attachment; filename="zip-1-results.zip"'
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.testzip() is None
    assert archive.namelist() == ["Red_shoe.jpg", "cat.jpg", "red_shoe-2.jpg", "errors.txt"]
    # Each entry is the stored result, byte for byte.
    urls = result["result_image_urls"]
    assert isinstance(urls, list)
    for entry, url in zip(["Red_shoe.jpg", "cat.jpg", "red_shoe-2.jpg"], [urls[0], urls[2], urls[3]], strict=True):
        stored = await client.get(url.removeprefix("http://testserver"))
        assert archive.read(entry) == stored.content
    errors = archive.read("errors.txt").decode()
    assert errors.startswith("2: ")
    assert "broken or truncated" in errors or "could not be" in errors


async def test_without_names_entries_are_numbered(client: httpx.AsyncClient) -> None:
    await _finished_job(client, "zip-2")
    response = await client.get("/api/v1/ai/job/zip-2/results.zip", headers=AUTH)
    names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    assert names == ["image-001.jpg", "image-003.jpg", "image-004.jpg", "errors.txt"]


async def test_unknown_jobs_and_jobs_without_results_are_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/ai/job/nope/results.zip", headers=AUTH)).status_code == 404
    response = await submit(client, job_id="zip-bad", type="batch_optimization", source_image_urls=[BROKEN])
    assert response.status_code == 202
    assert (await wait_final(client, "zip-bad"))["status"] == "failed"
    missing = await client.get("/api/v1/ai/job/zip-bad/results.zip", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json()["detail"] == "job 'zip-bad' has no finished results yet"


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong-key-123456"}])
async def test_it_needs_a_valid_key(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    await _finished_job(client, "zip-3")
    assert (await client.get("/api/v1/ai/job/zip-3/results.zip", headers=headers)).status_code == 401


async def test_another_users_job_is_unknown(client: httpx.AsyncClient) -> None:
    await _finished_job(client, "zip-4", user_id="u-1")
    other = await client.get("/api/v1/ai/job/zip-4/results.zip", headers={**AUTH, "X-User-Id": "u-2"})
    assert other.status_code == 404
    own = await client.get("/api/v1/ai/job/zip-4/results.zip", headers={**AUTH, "X-User-Id": "u-1"})
    assert own.status_code == 200
