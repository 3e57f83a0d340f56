"""The Seller API client against the fake Ozon on loopback: paging, chunks, limits and errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from pydantic import SecretStr

from capability_service.marketplaces.ozon import OzonSellerClient
from capability_service.marketplaces.ozon_errors import (
    OzonAuthError,
    OzonCircleOpen,
    OzonRateLimited,
    OzonUnavailable,
)
from capability_service.marketplaces.ozon_types import OzonCredentials, PictureImport
from tests.fakes.ozon_server import OzonSellerFake


class RecordedSleep:
    """Stands in for asyncio.sleep: records the waits the client asks for and yields once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def ozon() -> Iterator[OzonSellerFake]:
    with OzonSellerFake().running() as fake:
        yield fake


@pytest.fixture
def creds(ozon: OzonSellerFake) -> OzonCredentials:
    return OzonCredentials(client_id=ozon.client_id, api_key=SecretStr(ozon.api_key))


@pytest.fixture
def sleep() -> RecordedSleep:
    return RecordedSleep()


@pytest.fixture
async def client(ozon: OzonSellerFake, sleep: RecordedSleep) -> AsyncIterator[OzonSellerClient]:
    seller = OzonSellerClient(base_url=ozon.url, sleep=sleep)
    yield seller
    await seller.close()


async def test_paging_walks_2500_products_with_last_id(
    ozon: OzonSellerFake, client: OzonSellerClient, creds: OzonCredentials
) -> None:
    ozon.add_catalogue(2500)
    seen: list[int] = []
    last_id = ""
    pages = 0
    while True:
        page = await client.list_page(creds, last_id)
        seen.extend(page.product_ids)
        pages += 1
        assert page.total == 2500
        if not page.last_id:
            break
        last_id = page.last_id
    assert pages == 3
    assert seen == list(range(100_001, 102_501))
    bodies = [request.json for request in ozon.calls("/v3/product/list")]
    assert [body["limit"] for body in bodies] == [1000, 1000, 1000]
    assert all(body["filter"] == {"visibility": "ALL"} for body in bodies)
    assert bodies[0]["last_id"] == ""
    assert bodies[1]["last_id"] and bodies[2]["last_id"] and bodies[1]["last_id"] != bodies[2]["last_id"]


async def test_catalogue_page_gives_products_with_pictures(
    ozon: OzonSellerFake, client: OzonSellerClient, creds: OzonCredentials
) -> None:
    ozon.add_catalogue(30, images=3)
    lookup, next_id = await client.catalogue_page(creds, "", 20)
    assert [product.offer_id for product in lookup.products] == [f"OFF-{n:05d}" for n in range(1, 21)]
    assert len(lookup.products[0].images) == 3
    assert next_id
    rest, end = await client.catalogue_page(creds, next_id, 20)
    assert len(rest.products) == 10 and end == ""
    info = ozon.calls("/v3/product/info/list")
    assert info[0].json == {"product_id": [str(n) for n in range(100_001, 100_021)]}


async def test_selection_is_split_into_calls_of_1000_ids_and_keeps_its_order(
    ozon: OzonSellerFake, client: OzonSellerClient, creds: OzonCredentials
) -> None:
    ozon.add_catalogue(2500, images=1)
    wanted = [f"OFF-{n:05d}" for n in reversed(range(1, 2501))]
    lookup = await client.product_info(creds, wanted, "offer_id")
    assert [product.offer_id for product in lookup.products] == wanted
    assert lookup.errors == []
    sizes = [len(request.json["offer_id"]) for request in ozon.calls("/v3/product/info/list")]
    assert sizes == [1000, 1000, 500]
    for request in ozon.calls("/v3/product/info/list"):
        assert request.headers["client-id"] == ozon.client_id
        assert request.headers["api-key"] == ozon.api_key
        assert request.headers["content-type"] == "application/json"


async def test_unknown_and_malformed_ids_are_per_product_errors(
    ozon: OzonSellerFake, client: OzonSellerClient, creds: OzonCredentials
) -> None:
    ozon.add_catalogue(3)
    lookup = await client.product_info(creds, ["100001", "999999", "abc", "100003", "100001"], "product_id")
    assert [product.product_id for product in lookup.products] == [100_001, 100_003]
    errors = {error.id: error.error for error in lookup.errors}
    assert errors == {
        "abc": "product_id must be a positive whole number",
        "999999": "no product with this product_id in the account",
    }
    # The malformed id never reached Ozon, and the repeated one was asked once.
    assert ozon.calls("/v3/product/info/list")[0].json == {"product_id": ["100001", "999999", "100003"]}


async def test_sku_selection(ozon: OzonSellerFake, client: OzonSellerClient, creds: OzonCredentials) -> None:
    ozon.add_catalogue(2)
    lookup = await client.product_info(creds, ["900100002"], "sku")
    assert [(p.offer_id, p.sku) for p in lookup.products] == [("OFF-00002", 900_100_002)]


async def test_pictures_main_first_without_duplicates_and_products_without_pictures(
    ozon: OzonSellerFake, client: OzonSellerClient, creds: OzonCredentials
) -> None:
    main, side, back = (f"https://cdn1.ozone.ru/s3/multimedia-1/{name}.jpg" for name in ("main", "side", "back"))
    # The main picture repeated inside `images`, in another place: it stays first, once.
    ozon.add_product(1, "DUP", primary_image=[main], images=[side, main, back], color_image=["https://c/x.jpg"])
    # Only `images`: its first is the main one.
    ozon.add_product(2, "NOPRIMARY", images=[side, back])
    ozon.add_product(3, "EMPTY")
    lookup = await client.product_info(creds, ["DUP", "NOPRIMARY", "EMPTY"], "offer_id")
    by_offer = {product.offer_id: product for product in lookup.products}
    assert by_offer["DUP"].images == (main, side, back)
    assert by_offer["DUP"].color_image == "https://c/x.jpg"
    assert by_offer["NOPRIMARY"].images == (side, back)
    assert by_offer["EMPTY"].images == ()
    assert lookup.errors == []


async def test_429_code_8_waits_retry_after_then_succeeds(
    ozon: OzonSellerFake, client: OzonSellerClient, creds: OzonCredentials, sleep: RecordedSleep
) -> None:
    ozon.add_catalogue(1)
    ozon.push(ozon.rate_limited(retry_after=2), ozon.rate_limited(retry_after=3))
    lookup = await client.product_info(creds, ["OFF-00001"], "offer_id")
    assert len(lookup.products) == 1
    assert sleep.waits == [2.0, 3.0]
    assert len(ozon.calls("/v3/product/info/list")) == 3


async def test_a_wait_longer_than_the_client_accepts_is_reported(
    ozon: OzonSellerFake, client: OzonSellerClient, creds: OzonCredentials, sleep: RecordedSleep
) -> None:
    ozon.push(ozon.item_rate_limited(minutes=5))
    with pytest.raises(OzonRateLimited) as caught:
        await client.import_pictures(creds, [PictureImport(offer_id="OFF-1", images=("https://x/a.jpg",))])
    assert caught.value.retry_after == 300
    assert "per-item import limit" in str(caught.value)
    assert sleep.waits == []
    assert len(ozon.calls("/v2/product/pictures/import")) == 1


async def test_rate_limit_that_never_lifts_ends_after_the_retries(
    ozon: OzonSellerFake, client: OzonSellerClient, creds: OzonCredentials, sleep: RecordedSleep
) -> None:
    ozon.push(*[ozon.rate_limited(retry_after=1) for _ in range(10)])
    with pytest.raises(OzonRateLimited, match="rate limit"):
        await client.list_page(creds)
    assert len(ozon.calls("/v3/product/list")) == client.max_retries + 1
    assert sleep.waits == [1.0] * client.max_retries


async def test_circle_open_stops_at_once_and_says_so(
    ozon: OzonSellerFake, client: OzonSellerClient, creds: OzonCredentials, sleep: RecordedSleep
) -> None:
    ozon.push(ozon.circle_open())
    with pytest.raises(OzonCircleOpen) as caught:
        await client.product_info(creds, ["OFF-1"], "offer_id")
    assert "Circle is open" in str(caught.value) and "/v3/product/info/list" in str(caught.value)
    assert sleep.waits == []
    assert len(ozon.calls("/v3/product/info/list")) == 1


async def test_server_errors_are_retried_with_backoff(
    ozon: OzonSellerFake, client: OzonSellerClient, creds: OzonCredentials, sleep: RecordedSleep
) -> None:
    ozon.add_catalogue(1)
    ozon.push(ozon.server_error(), ozon.server_error())
    lookup = await client.product_info(creds, ["OFF-00001"], "offer_id")
    assert len(lookup.products) == 1
    assert len(sleep.waits) == 2 and all(0 < wait <= 8 for wait in sleep.waits)


async def test_wrong_api_key_is_a_typed_error_without_the_key(ozon: OzonSellerFake, client: OzonSellerClient) -> None:
    wrong = OzonCredentials(client_id=ozon.client_id, api_key=SecretStr("wrong-key-0000"))
    with pytest.raises(OzonAuthError) as caught:
        await client.list_page(wrong)
    assert caught.value.which == "api_key"
    assert (caught.value.status, caught.value.code) == (404, 5)
    assert "wrong-key-0000" not in str(caught.value)
    assert len(ozon.calls("/v3/product/list")) == 1


async def test_wrong_client_id_is_a_typed_error_and_its_echo_is_scrubbed(
    ozon: OzonSellerFake, client: OzonSellerClient
) -> None:
    wrong = OzonCredentials(client_id="5550001", api_key=SecretStr(ozon.api_key))
    with pytest.raises(OzonAuthError) as caught:
        await client.product_info(wrong, ["OFF-1"], "offer_id")
    assert caught.value.which == "client_id"
    assert (caught.value.status, caught.value.code) == (400, 3)
    # The fake echoes the Client-Id it got, as real APIs do: it must not reach our message.
    assert "5550001" not in str(caught.value)
    assert ozon.api_key not in str(caught.value)
    assert "<hidden>" in str(caught.value)


async def test_unreachable_api_is_unavailable(creds: OzonCredentials, sleep: RecordedSleep) -> None:
    dead = OzonSellerClient(base_url="http://127.0.0.1:9", sleep=sleep, max_retries=1)
    try:
        with pytest.raises(OzonUnavailable, match="could not reach"):
            await dead.list_page(creds)
    finally:
        await dead.close()
    assert len(sleep.waits) == 1


async def test_picture_import_and_its_status(
    ozon: OzonSellerFake, client: OzonSellerClient, creds: OzonCredentials
) -> None:
    ozon.add_catalogue(2)
    ozon.pending_polls = 2
    new = ("https://results.example/a.jpg", "https://results.example/b.jpg")
    task_id = await client.import_pictures(
        creds, [PictureImport(offer_id="OFF-00001", images=new, color_image="https://c/1.jpg")]
    )
    assert ozon.calls("/v2/product/pictures/import")[0].json == {
        "items": [{"offer_id": "OFF-00001", "images": list(new), "color_image": "https://c/1.jpg"}]
    }
    statuses = [await client.import_info(creds, task_id) for _ in range(3)]
    assert [s[0].status for s in statuses] == ["pending", "pending", "imported"]
    assert statuses[-1][0].product_id == 100_001
    lookup = await client.product_info(creds, ["OFF-00001"], "offer_id")
    assert lookup.products[0].images == new
    assert await client.picture_errors(creds, [100_001]) == {100_001: []}


async def test_import_failure_is_reported_per_product(
    ozon: OzonSellerFake, client: OzonSellerClient, creds: OzonCredentials
) -> None:
    ozon.add_catalogue(1)
    ozon.pending_polls = 0
    ozon.import_failures["OFF-00001"] = "the image could not be downloaded"
    task_id = await client.import_pictures(creds, [PictureImport(offer_id="OFF-00001", images=("https://r/a.jpg",))])
    (status,) = await client.import_info(creds, task_id)
    assert status.status == "failed"
    assert status.errors == ("IMAGE_FAILED: the image could not be downloaded (images)",)


class RecordingTransport(httpx.AsyncHTTPTransport):
    """Notes when each request leaves the client (after the rate limiter let it go)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(time.monotonic())
        return await super().handle_async_request(request)


async def test_requests_per_client_id_are_limited(ozon: OzonSellerFake, creds: OzonCredentials) -> None:
    # 20 requests per second with a burst of 20: by time t after the first, at most 20 + 20 t requests
    # can have left (a slow machine only lets them leave later), and 45 need at least 1.25 s.
    ozon.add_catalogue(1)
    transport = RecordingTransport()
    limited = OzonSellerClient(base_url=ozon.url, rate_per_second=20, transport=transport)
    other = OzonCredentials(client_id="9999999", api_key=SecretStr("another-key"))
    try:
        queued = [asyncio.ensure_future(limited.list_page(creds, "", 1)) for _ in range(45)]
        # Wait until the first bucket's burst has left and 25 requests queue behind it...
        async with asyncio.timeout(10):
            while len(transport.sent) < 20:
                await asyncio.sleep(0.005)
        # ...then another Client-Id, whose bucket is its own: its request does not queue behind them.
        with pytest.raises(OzonAuthError):
            await limited.list_page(other)
        other_sent = transport.sent[-1]
        # The first Client-Id's queue needs over a second more at its rate; the other request is done first.
        still_queued = sum(not request.done() for request in queued)
        await asyncio.gather(*queued)
    finally:
        await limited.close()
    sent = sorted(t for t in transport.sent if t != other_sent)
    assert len(sent) == 45
    assert still_queued > 0
    first_half_second = [t for t in sent if t - sent[0] < 0.5]
    assert len(first_half_second) <= 31
    assert sent[-1] - sent[0] >= 1.2
