"""Quotas per tenant and per user: 429 with Retry-After and the RateLimit headers, in both engines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.api.helpers import data_uri, wait_final
from tests.support.data import read_image
from tests.support.servers import http_server, static_bytes

SHOP_A = {"X-API-Key": "shop-a-key-0123456789"}
SHOP_B = {"X-API-Key": "shop-b-key-0123456789"}
KEYS = ["shop-a:shop-a-key-0123456789", "shop-b:shop-b-key-0123456789"]
PHOTO = data_uri("rocket.jpg")


async def submit(
    client: httpx.AsyncClient,
    key: dict[str, str],
    job_id: str,
    images: int = 1,
    sources: list[str] | None = None,
    user: str | None = None,
) -> httpx.Response:
    body = {
        "job_id": job_id,
        "type": "batch_optimization",
        "config": {"format": "jpg", "maxSize": 64},
        "source_image_urls": sources or [PHOTO] * images,
    }
    headers = key | ({"X-User-Id": user} if user else {})
    return await client.post("/api/v1/ai/job", json=body, headers=headers)


async def test_submits_per_tenant_are_limited_with_retry_after_and_ratelimit_headers(
    make_client: Callable[..., Any],
) -> None:
    client = await make_client(api_keys=KEYS, rate_limit_submits="2/minute")
    first = await submit(client, SHOP_A, "a1")
    assert first.status_code == 202
    assert first.headers["RateLimit-Limit"] == "2" and first.headers["RateLimit-Remaining"] == "1"
    assert first.headers["RateLimit-Policy"] == "2;w=60"
    assert (await submit(client, SHOP_A, "a2")).status_code == 202
    over = await submit(client, SHOP_A, "a3")
    assert over.status_code == 429
    assert 1 <= int(over.headers["Retry-After"]) <= 60
    assert over.headers["RateLimit-Remaining"] == "0"
    assert "RATE_LIMIT_SUBMITS" in over.json()["detail"] and "shop-a" in over.json()["detail"]
    # The refused job is unknown; the same submission again is a replay of nothing, still refused.
    assert (await client.get("/api/v1/ai/job/a3/status", headers=SHOP_A)).status_code == 404
    # A replay of an accepted job spends nothing, and another tenant has its own budget.
    assert (await submit(client, SHOP_A, "a1")).status_code == 202
    assert (await submit(client, SHOP_B, "b1")).status_code == 202
    for job_id in ("a1", "a2"):
        await wait_final(client, job_id, headers=SHOP_A)


async def test_images_per_minute_count_every_image_of_a_job(make_client: Callable[..., Any]) -> None:
    client = await make_client(api_keys=KEYS, rate_limit_images="5/minute")
    assert (await submit(client, SHOP_A, "three", images=3)).status_code == 202
    over = await submit(client, SHOP_A, "three-more", images=3)
    assert over.status_code == 429 and "RATE_LIMIT_IMAGES" in over.json()["detail"]
    assert (await submit(client, SHOP_A, "two", images=2)).status_code == 202
    never = await submit(client, SHOP_B, "too-big", images=6)
    assert never.status_code == 429 and "split it" in never.json()["detail"]
    await wait_final(client, "three", headers=SHOP_A)
    await wait_final(client, "two", headers=SHOP_A)


async def test_each_user_has_a_budget_of_its_own(make_client: Callable[..., Any]) -> None:
    client = await make_client(api_keys=KEYS, rate_limit_user_submits="1/minute")
    assert (await submit(client, SHOP_A, "u1-a", user="u1")).status_code == 202
    over = await submit(client, SHOP_A, "u1-b", user="u1")
    assert over.status_code == 429 and "this user" in over.json()["detail"]
    assert (await submit(client, SHOP_A, "u2-a", user="u2")).status_code == 202
    # Jobs without a user are limited by the tenant's budgets only.
    assert (await submit(client, SHOP_A, "nobody")).status_code == 202
    for job_id, user in (("u1-a", "u1"), ("u2-a", "u2")):
        await wait_final(client, job_id, headers=SHOP_A | {"X-User-Id": user})


async def test_a_tenant_has_at_most_its_live_jobs(make_client: Callable[..., Any]) -> None:
    client = await make_client(api_keys=KEYS, tenant_max_live_jobs=1)
    with http_server({"/slow.jpg": static_bytes(read_image("rocket.jpg"), delay=1.0)}) as base:
        assert (await submit(client, SHOP_A, "slow", sources=[f"{base}/slow.jpg"])).status_code == 202
        over = await submit(client, SHOP_A, "next")
        assert over.status_code == 429 and "TENANT_MAX_LIVE_JOBS" in over.json()["detail"]
        assert int(over.headers["Retry-After"]) > 0
        assert (await submit(client, SHOP_B, "other-shop")).status_code == 202
        await wait_final(client, "slow", headers=SHOP_A)
    assert (await submit(client, SHOP_A, "next")).status_code == 202
    await wait_final(client, "next", headers=SHOP_A)


@pytest.mark.engines("redis")
async def test_every_api_instance_counts_against_the_same_budget(make_client: Callable[..., Any]) -> None:
    first = await make_client(api_keys=KEYS, rate_limit_submits="2/minute")
    second = await make_client(api_keys=KEYS, rate_limit_submits="2/minute")
    assert (await submit(first, SHOP_A, "i1")).status_code == 202
    assert (await submit(second, SHOP_A, "i2")).status_code == 202
    assert (await submit(first, SHOP_A, "i3")).status_code == 429
    assert (await submit(second, SHOP_A, "i4")).status_code == 429
    for job_id in ("i1", "i2"):
        await wait_final(first, job_id, headers=SHOP_A)
