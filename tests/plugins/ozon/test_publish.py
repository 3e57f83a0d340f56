"""Publishing plans and imports against the fake Seller API; which result URLs Ozon could fetch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from capability_service.marketplaces.ozon import OzonSellerClient
from capability_service.marketplaces.ozon_types import OzonCredentials, OzonProduct
from capability_service.plugins.ozon.publish import (
    OzonPublisher,
    ProcessedPicture,
    plan_product,
    reachability_problem,
    unreachable_reason,
)
from tests.fakes.ozon_server import OzonSellerFake


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:8000/files/a.jpg", "loopback"),
        ("http://10.1.2.3/a.jpg", "private"),
        ("http://[::1]/a.jpg", "loopback"),
        ("http://169.254.169.254/a.jpg", "link-local"),
        ("http://localhost:8000/a.jpg", "local host name"),
        ("http://minio:9000/bucket/a.jpg", "local host name"),
        ("https://cdn.shop.internal/a.jpg", "local host name"),
        ("ftp://cdn.example.com/a.jpg", "not an http(s) URL"),
    ],
)
def test_addresses_ozon_cannot_reach(url: str, words: str) -> None:
    reason = unreachable_reason(url)
    assert reason is not None and words in reason


@pytest.mark.parametrize(
    "url", ["https://img.shop.example/files/a.jpg", "http://203.0.113.9.nip.io/a.jpg", "https://1.1.1.1/a.jpg"]
)
def test_public_addresses_pass(url: str) -> None:
    assert unreachable_reason(url) is None


def test_presigned_urls_must_outlive_ozons_fetch() -> None:
    urls = ["https://bucket.s3.example.com/a.jpg?X-Amz-Expires=900"]
    problem = reachability_problem(urls, url_lifetime=900)
    assert problem is not None and "S3_PRESIGN_EXPIRES" in problem and "900 s" in problem
    assert reachability_problem(urls, url_lifetime=3600) is None
    assert reachability_problem(urls, url_lifetime=None) is None


def picture(
    position: int, source: str, result: str | None, *, error: str | None = None, check: dict[str, Any] | None = None
) -> ProcessedPicture:
    return ProcessedPicture(
        product_id=1, offer_id="A", position=position, source_url=source, result_url=result, error=error, check=check
    )


def test_plan_replaces_in_place_and_says_why_others_are_kept() -> None:
    product = OzonProduct(product_id=1, offer_id="A", sku=None, name="", images=("s1", "s2", "s3", "s4"))
    plan = plan_product(
        product,
        [
            picture(3, "s3", "r3"),
            picture(1, "s1", "r1"),
            picture(2, "s2", None, error="the download took longer than 20 s"),
            picture(4, "s4", "r4", check={"ok": False, "problems": ["format WEBP: JPG or PNG only"]}),
            picture(5, "gone", "r5"),
        ],
        include_failing=False,
    )
    assert plan.images_after == ["r1", "s2", "r3", "s4"]
    assert [item["position"] for item in plan.replaced] == [1, 3]
    reasons = {item["position"]: item["reason"] for item in plan.skipped}
    assert reasons[2] == "the image failed in the job: the download took longer than 20 s"
    assert reasons[4].startswith("Ozon would refuse the result: format WEBP")
    assert "no longer on the product" in reasons[5]


@pytest.fixture
def ozon() -> Iterator[OzonSellerFake]:
    with OzonSellerFake().running() as fake:
        yield fake


@pytest.fixture
async def client(ozon: OzonSellerFake) -> AsyncIterator[OzonSellerClient]:
    seller = OzonSellerClient(base_url=ozon.url)
    yield seller
    await seller.close()


async def no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


async def test_more_than_100_products_go_in_batches(ozon: OzonSellerFake, client: OzonSellerClient) -> None:
    ozon.add_catalogue(150, images=2)
    ozon.pending_polls = 0
    creds = OzonCredentials(client_id=ozon.client_id, api_key=SecretStr(ozon.api_key))
    publisher = OzonPublisher(client, creds, wait_seconds=5, poll_seconds=0.01, sleep=no_wait)
    pictures = [
        ProcessedPicture(
            product_id=100_000 + n,
            offer_id=f"OFF-{n:05d}",
            position=1,
            source_url=f"https://cdn1.ozone.ru/s3/multimedia-1/{n:05d}-0.jpg",
            result_url=f"https://img.shop.example/{n}.jpg",
        )
        for n in range(1, 151)
    ]
    plans = await publisher.plan(pictures, include_failing=False)
    assert all(plan.status == "would_update" for plan in plans)
    await publisher.publish(plans)
    assert [len(call.json["items"]) for call in ozon.calls("/v2/product/pictures/import")] == [100, 50]
    assert all(plan.status == "imported" for plan in plans)
    assert ozon.products[100_150].images == [
        "https://img.shop.example/150.jpg",
        "https://cdn1.ozone.ru/s3/multimedia-1/00150-1.jpg",
    ]


async def test_per_item_rate_limit_marks_the_batch_and_goes_on(ozon: OzonSellerFake, client: OzonSellerClient) -> None:
    ozon.add_catalogue(1, images=1)
    creds = OzonCredentials(client_id=ozon.client_id, api_key=SecretStr(ozon.api_key))
    publisher = OzonPublisher(client, creds, wait_seconds=5, poll_seconds=0.01, sleep=no_wait)
    source = "https://cdn1.ozone.ru/s3/multimedia-1/00001-0.jpg"
    processed = ProcessedPicture(
        product_id=100_001,
        offer_id="OFF-00001",
        position=1,
        source_url=source,
        result_url="https://img.shop.example/1.jpg",
    )
    plans = await publisher.plan([processed], include_failing=False)
    ozon.push(ozon.item_rate_limited(minutes=3))
    await publisher.publish(plans)
    assert plans[0].status == "rate_limited" and plans[0].retry_after == 180
    assert "per-item import limit" in plans[0].errors[0]


async def test_products_of_another_account_are_not_found(ozon: OzonSellerFake, client: OzonSellerClient) -> None:
    creds = OzonCredentials(client_id=ozon.client_id, api_key=SecretStr(ozon.api_key))
    publisher = OzonPublisher(client, creds, wait_seconds=1, poll_seconds=0.01, sleep=no_wait)
    (plan,) = await publisher.plan([picture(1, "s1", "r1")], include_failing=False)
    assert plan.status == "not_found"
