"""Large job submissions, in both engines: data: URIs measured as they arrive, large bodies take turns.

Two shops share one service: one shop's large submissions must neither exhaust its memory nor stop
the other shop's small ones.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from capability_service.api.large_bodies import LargeBodyTurns
from tests.api.helpers import data_uri, wait_final

SHOP_A = {"X-API-Key": "shop-a-key-0123456789", "Content-Type": "application/json"}
SHOP_B = {"X-API-Key": "shop-b-key-0123456789", "Content-Type": "application/json"}
KEYS = ["shop-a:shop-a-key-0123456789", "shop-b:shop-b-key-0123456789"]
OPTIMIZE = {"format": "jpg", "maxSize": 128}
SOURCE_LIMIT = 1024 * 1024  # camera_3648x2736.jpg (2.8 MB) is above it, grace_hopper.jpg (61 kB) below


def body(job_id: str, sources: list[str]) -> bytes:
    payload = {"job_id": job_id, "type": "batch_optimization", "config": OPTIMIZE, "source_image_urls": sources}
    return json.dumps(payload).encode()


async def pieces(
    data: bytes, size: int = 65536, gate: asyncio.Event | None = None, hold_after: int = 0
) -> AsyncIterator[bytes]:
    """`data` in pieces, as a client sends it; with `gate`, the rest waits for it after `hold_after` bytes."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
        if gate is not None and start + size > hold_after:
            await gate.wait()


def turns_of(client: httpx.AsyncClient) -> LargeBodyTurns:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    turns: LargeBodyTurns = transport.app.state.large_bodies  # type: ignore[attr-defined]
    return turns


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait, yielding to the event loop, until `condition` holds (the state the test needs)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.fixture
async def shops(make_client: Callable[..., Any]) -> httpx.AsyncClient:
    client: httpx.AsyncClient = await make_client(
        api_keys=KEYS,
        source_max_bytes=SOURCE_LIMIT,
        large_body_bytes=256 * 1024,
        max_concurrent_large_bodies=1,
        large_body_wait_seconds=0.5,
    )
    return client


async def test_a_data_uri_over_the_source_limit_is_413_naming_its_index(shops: httpx.AsyncClient) -> None:
    photo = data_uri("camera_3648x2736.jpg")
    small = data_uri("grace_hopper.jpg")
    # After the oversized source come many more bytes: the read stops at that source, not at the end.
    data = body("too-big", [small, photo] + [small] * 40)
    sent = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal sent
        async for piece in pieces(data):
            sent += len(piece)
            yield piece

    response = await shops.post("/api/v1/ai/job", content=counted(), headers=SHOP_A)
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert detail.startswith("source_image_urls[1]: ") and "SOURCE_MAX_BYTES" in detail
    assert sent < len(photo) + 2 * 65536 + len(small)
    # No job was made; the other shop's job within the limit runs.
    assert (await shops.get("/api/v1/ai/job/too-big", headers=SHOP_A)).status_code == 404
    accepted = await shops.post("/api/v1/ai/job", content=body("fits", [small, small]), headers=SHOP_B)
    assert accepted.status_code == 202, accepted.text
    assert (await wait_final(shops, "fits", headers=SHOP_B))["status"] == "completed"


async def test_escaped_and_percent_encoded_data_uris_are_measured_as_they_decode(shops: httpx.AsyncClient) -> None:
    # `\/` escapes (as some JSON encoders write every slash) do not make a source that fits look too big.
    small = data_uri("grace_hopper.jpg")
    escaped = json.dumps(small).replace("/", "\\/")
    text = '{"job_id": "escaped", "type": "batch_optimization", "source_image_urls": [' + escaped + "]}"
    response = await shops.post("/api/v1/ai/job", content=text.encode(), headers=SHOP_A)
    assert response.status_code == 202, response.text
    result = await wait_final(shops, "escaped", headers=SHOP_A)
    assert result["status"] == "completed", result["errors"]


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_large_bodies_take_turns_and_small_ones_never_wait(shops: httpx.AsyncClient, declared: bool) -> None:
    large = body("large-1", [data_uri("rocket.jpg")] * 4)
    turns = turns_of(shops)
    assert len(large) > turns.threshold
    held = asyncio.Event()
    first_headers = {**SHOP_A, "Content-Length": str(len(large))} if declared else SHOP_A
    first = asyncio.create_task(
        shops.post(
            "/api/v1/ai/job", content=pieces(large, gate=held, hold_after=turns.threshold), headers=first_headers
        )
    )
    try:
        # Content-Length: the turn is taken before the first byte is read; chunked, once 256 kB arrived.
        await until(lambda: turns.active == 1)

        other_headers = {**SHOP_B, "Content-Length": str(len(large))} if declared else SHOP_B
        refused = await shops.post(
            "/api/v1/ai/job", content=pieces(body("large-2", [data_uri("rocket.jpg")] * 4)), headers=other_headers
        )
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "1"
        assert "MAX_CONCURRENT_LARGE_BODIES" in refused.json()["detail"]

        small = await shops.post(
            "/api/v1/ai/job", content=body("small-1", [data_uri("grace_hopper.jpg")]), headers=SHOP_B
        )
        assert small.status_code == 202, small.text
    finally:
        held.set()
    assert (await first).status_code == 202
    assert turns.active == 0
    # The turn is free again: the refused submission goes through when retried.
    retried = await shops.post("/api/v1/ai/job", content=body("large-2", [data_uri("rocket.jpg")] * 4), headers=SHOP_B)
    assert retried.status_code == 202, retried.text
    for job_id, headers in (("large-1", SHOP_A), ("small-1", SHOP_B), ("large-2", SHOP_B)):
        assert (await wait_final(shops, job_id, headers=headers))["status"] == "completed"
