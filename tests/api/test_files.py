"""`/files/`: local results with their content type; nothing outside the storage directory."""

from __future__ import annotations

import httpx
import pytest

from tests.api.helpers import data_uri, submit, wait_final


async def test_a_result_is_served_with_its_type_and_cache_headers(client: httpx.AsyncClient) -> None:
    await submit(
        client,
        job_id="f",
        type="batch_optimization",
        config={"format": "png"},
        source_image_urls=[data_uri("rocket.jpg")],
    )
    url = (await wait_final(client, "f"))["result_image_urls"][0]
    response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert (await client.head(url)).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/files/../../etc/passwd",
        "/files/%2e%2e/%2e%2e/etc/passwd",
        "/files/ai-playground/..%2f..%2f..%2fetc%2fpasswd",
        "/files/" + "a" * 300,
        "/files/ai-playground/" + "b/" * 2000 + "x.png",
        "/files/",
        "/files/ai-playground/u/j/9.png",
    ],
)
async def test_unknown_or_escaping_paths_are_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
