"""Tenants: each API key's jobs and results are its tenant's alone, in both engines.

Two shops with two users each, as one operator would run the service for several sellers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.api.helpers import data_uri, wait_final

SHOP_A = {"X-API-Key": "shop-a-key-0123456789"}
SHOP_B = {"X-API-Key": "shop-b-key-0123456789"}
KEYS = ["shop-a:shop-a-key-0123456789", "shop-b:shop-b-key-0123456789"]
OPTIMIZE = {"format": "jpg", "maxSize": 128}


@pytest.fixture
async def shops(make_client: Callable[..., Any]) -> httpx.AsyncClient:
    client: httpx.AsyncClient = await make_client(api_keys=KEYS)
    return client


async def submit(client: httpx.AsyncClient, headers: dict[str, str], **payload: Any) -> httpx.Response:
    body = {"type": "batch_optimization", "config": OPTIMIZE, "source_image_urls": [data_uri("rocket.jpg")]} | payload
    return await client.post("/api/v1/ai/job", json=body, headers=headers)


def user(headers: dict[str, str], user_id: str) -> dict[str, str]:
    return {**headers, "X-User-Id": user_id}


async def test_two_tenants_may_use_the_same_job_id(shops: httpx.AsyncClient) -> None:
    first = await submit(shops, SHOP_A, job_id="catalogue-1")
    # Another payload under the same id: for shop B it is simply its own new job, not a 409.
    second = await submit(shops, SHOP_B, job_id="catalogue-1", config={"format": "webp", "maxSize": 64})
    assert first.status_code == second.status_code == 202
    assert first.json()["data"]["created"] and second.json()["data"]["created"]
    a = await wait_final(shops, "catalogue-1", headers=SHOP_A)
    b = await wait_final(shops, "catalogue-1", headers=SHOP_B)
    assert a["metadata"]["config"]["format"] == "jpg" and b["metadata"]["config"]["format"] == "webp"
    assert "/ai-playground/shop-a/" in a["result_image_urls"][0]
    assert "/ai-playground/shop-b/" in b["result_image_urls"][0]
    # The same payload again under the same id replays each tenant's own job.
    again = await submit(shops, SHOP_A, job_id="catalogue-1")
    assert again.status_code == 202 and again.json()["data"]["created"] is False


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/ai/job/{id}/status"),
        ("GET", "/api/v1/ai/job/{id}"),
        ("POST", "/api/v1/ai/job/{id}/cancel"),
    ],
)
async def test_another_tenants_job_is_unknown(shops: httpx.AsyncClient, method: str, path: str) -> None:
    await submit(shops, SHOP_A, job_id="private-1")
    await wait_final(shops, "private-1", headers=SHOP_A)
    response = await shops.request(method, path.format(id="private-1"), headers=SHOP_B)
    assert response.status_code == 404
    assert response.json() == {"detail": "job 'private-1' not found"}


async def test_another_tenants_stream_is_an_unknown_job(shops: httpx.AsyncClient) -> None:
    await submit(shops, SHOP_A, job_id="private-2")
    await wait_final(shops, "private-2", headers=SHOP_A)
    body = (await shops.get("/api/v1/ai/job/private-2/stream", headers=SHOP_B)).text
    assert "event: error" in body and "not found" in body


async def test_a_job_reads_its_own_tenants_results_only(shops: httpx.AsyncClient) -> None:
    await submit(shops, user(SHOP_A, "u1"), job_id="first")
    url = (await wait_final(shops, "first", headers=user(SHOP_A, "u1")))["result_image_urls"][0]
    # The same user id in another shop is another seller: the URL is refused as a source.
    await submit(shops, user(SHOP_B, "u1"), job_id="steal", source_image_urls=[url])
    stolen = await wait_final(shops, "steal", headers=user(SHOP_B, "u1"))
    assert stolen["status"] == "failed"
    assert "belongs to another user" in stolen["errors"][0]["error"]
    # Its own user in its own shop may build on it.
    await submit(shops, user(SHOP_A, "u1"), job_id="next", source_image_urls=[url])
    assert (await wait_final(shops, "next", headers=user(SHOP_A, "u1")))["status"] == "completed"


async def test_users_inside_a_tenant_keep_their_jobs_apart(shops: httpx.AsyncClient) -> None:
    await submit(shops, user(SHOP_A, "u1"), job_id="mine")
    await wait_final(shops, "mine", headers=user(SHOP_A, "u1"))
    assert (await shops.get("/api/v1/ai/job/mine", headers=user(SHOP_A, "u2"))).status_code == 404
    # Without X-User-Id the tenant's key sees all of its users' jobs, as before tenants.
    assert (await shops.get("/api/v1/ai/job/mine", headers=SHOP_A)).status_code == 200


async def test_a_body_user_that_contradicts_the_header_is_400(shops: httpx.AsyncClient) -> None:
    response = await submit(shops, user(SHOP_A, "u1"), job_id="who", user_id="u2")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "user_id"
    # The header alone names the job's user.
    accepted = await submit(shops, user(SHOP_A, "u1"), job_id="who")
    assert accepted.status_code == 202 and accepted.json()["data"]["user_id"] == "u1"


async def test_a_user_called_anonymous_cannot_read_jobs_without_a_user(shops: httpx.AsyncClient) -> None:
    await submit(shops, SHOP_A, job_id="no-user")
    url = (await wait_final(shops, "no-user", headers=SHOP_A))["result_image_urls"][0]
    await submit(shops, SHOP_A, job_id="pretender", user_id="anonymous", source_image_urls=[url])
    result = await wait_final(shops, "pretender", headers=SHOP_A)
    assert result["status"] == "failed" and "another user" in result["errors"][0]["error"]


async def test_job_ids_cannot_reach_another_jobs_keys(shops: httpx.AsyncClient) -> None:
    # In Redis, "W:sources" once named the sources key of job "W" and broke it for good.
    assert (await submit(shops, SHOP_A, job_id="W")).status_code == 202
    assert (await submit(shops, SHOP_A, job_id="W:sources")).status_code == 202
    for job_id in ("W", "W:sources"):
        result = await wait_final(shops, job_id, headers=SHOP_A)
        assert result["status"] == "completed", result
