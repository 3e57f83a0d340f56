"""The result cache through the job API, in both engines: reuse, its key, and when it must not reuse."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.api.helpers import data_uri, services_of, wait_final
from tests.support.data import AUTH

PHOTOS = [data_uri("rocket.jpg"), data_uri("chelsea.png", "image/png")]
SHOP_B = {"X-API-Key": "shop-b-key-0123456789"}
KEYS = ["test-key-0123456789", "shop-b:shop-b-key-0123456789"]


async def run(
    client: httpx.AsyncClient, job_id: str, config: dict[str, Any], headers: dict[str, str] = AUTH
) -> dict[str, Any]:
    body = {"job_id": job_id, "type": "batch_optimization", "config": config, "source_image_urls": PHOTOS}
    assert (await client.post("/api/v1/ai/job", json=body, headers=headers)).status_code == 202
    result = await wait_final(client, job_id, headers=headers)
    assert result["status"] == "completed", result
    return result


def caches(result: dict[str, Any]) -> list[str]:
    return [image["cache"] for image in result["metadata"]["images"]]


async def test_the_same_photos_and_config_reuse_the_stored_results(make_client: Callable[..., Any]) -> None:
    client = await make_client(api_keys=KEYS)
    first = await run(client, "first", {"format": "webp", "maxSize": 200})
    assert caches(first) == ["miss", "miss"]
    # Spelled differently, meaning the same: defaults filled in, snake_case for camelCase.
    again = await run(client, "again", {"format": "webp", "max_size": 200, "quality": "standard"})
    assert caches(again) == ["hit", "hit"]
    for before, after in zip(first["result_image_urls"], again["result_image_urls"], strict=True):
        assert before != after and "/again/" in after
        assert (await client.get(before)).content == (await client.get(after)).content
    assert [image["width"] for image in again["metadata"]["images"]] == [
        image["width"] for image in first["metadata"]["images"]
    ]
    # Another config is another result; another tenant never sees this tenant's entries.
    assert caches(await run(client, "other-size", {"format": "webp", "maxSize": 100})) == ["miss", "miss"]
    assert caches(await run(client, "other-shop", {"format": "webp", "maxSize": 200}, SHOP_B)) == ["miss", "miss"]


async def test_a_replaced_result_is_not_served_from_the_cache(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    first = await run(client, "original", {"format": "jpg", "maxSize": 120})
    storage = services_of(client).storage
    key = first["result_image_urls"][0].split("/files/", 1)[1]
    await storage.put(key, b"\xff\xd8\xff not the result any more", "image/jpeg")
    again = await run(client, "after-replace", {"format": "jpg", "maxSize": 120})
    assert caches(again) == ["miss", "hit"]


async def test_the_cache_can_be_switched_off(make_client: Callable[..., Any]) -> None:
    client = await make_client(result_cache=False)
    await run(client, "one", {"format": "png", "maxSize": 64})
    assert caches(await run(client, "two", {"format": "png", "maxSize": 64})) == ["miss", "miss"]


async def test_cache_entries_are_not_served_as_files(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    await run(client, "served", {"format": "webp", "maxSize": 64})
    results = services_of(client).settings.local_storage_dir
    entries = sorted(path.relative_to(results) for path in results.rglob("*.json"))
    assert entries and all(str(path).startswith("result-cache/default/") for path in entries)
    assert (await client.get(f"/files/{entries[0]}")).status_code == 404
