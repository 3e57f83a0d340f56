"""The Ozon catalogue routes through the ASGI app, against the fake Seller API and fake CDN on loopback."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import data_uri, wait_final
from tests.fakes.ozon_cdn import FakeCdn
from tests.fakes.ozon_server import OzonSellerFake
from tests.support.data import AUTH, read_image

# Nothing here runs a job: one engine is enough.
pytestmark = pytest.mark.engines("memory")

JPEG = read_image("rocket.jpg")
PNG = read_image("chelsea.png")


@pytest.fixture
def ozon() -> Iterator[OzonSellerFake]:
    with OzonSellerFake().running() as fake:
        yield fake


@pytest.fixture
def ozon_client(make_client: Callable[..., Any], ozon: OzonSellerFake, tmp_path: Path) -> Callable[..., Any]:
    """A service client wired to the fake Ozon; plugin settings and other settings may be overridden."""

    async def factory(
        *, configured: bool = True, plugin: dict[str, Any] | None = None, **overrides: Any
    ) -> httpx.AsyncClient:
        options = {"max_workers": 3, "timeout_sec": 5, "default_field": "offer_id", **(plugin or {})}
        config = tmp_path / "plugins.yaml"
        config.write_text(json.dumps({"plugins": {"ozon-download": options}}))
        values: dict[str, Any] = {"ozon_api_base": ozon.url, "plugins_config": config}
        if configured:
            values.update(ozon_client_id=ozon.client_id, ozon_api_key=ozon.api_key)
        values.update(overrides)
        client: httpx.AsyncClient = await make_client(**values)
        return client

    return factory


def unzip(content: bytes) -> tuple[dict[str, bytes], dict[str, Any]]:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert archive.testzip() is None
        files = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(files.pop("manifest.json"))
    return files, manifest


async def test_health_shows_the_plugin_its_settings_and_whether_credentials_are_set(
    ozon_client: Callable[..., Any], ozon: OzonSellerFake
) -> None:
    client = await ozon_client(plugin={"max_workers": 7, "timeout_sec": 9, "default_field": "sku"})
    public = {p["name"]: p for p in (await client.get("/api/v1/health")).json()["plugins"]}
    # Without a key the plugin is listed, its settings are not.
    assert public["ozon-download"] == {
        "name": "ozon-download",
        "display_name": "Ozon catalogue",
        "category": "marketplace",
        "enabled": True,
        "healthy": True,
    }
    response = await client.get("/api/v1/health", headers=AUTH)
    plugins = {plugin["name"]: plugin for plugin in response.json()["plugins"]}
    described = plugins["ozon-download"]
    assert described["enabled"] and described["healthy"]
    assert described["settings"] == {
        "max_workers": 7,
        "timeout_sec": 9.0,
        "default_field": "sku",
        "publish_wait_sec": 120.0,
    }
    assert described["credentials_configured"] is True
    assert ozon.api_key not in response.text and ozon.client_id not in response.text

    bare = await ozon_client(configured=False)
    described = {p["name"]: p for p in (await bare.get("/api/v1/health", headers=AUTH)).json()["plugins"]}[
        "ozon-download"
    ]
    assert described["credentials_configured"] is False
    assert "X-Ozon-Api-Key" in described["detail"]


async def test_products_by_offer_id_with_errors_per_id(ozon_client: Callable[..., Any], ozon: OzonSellerFake) -> None:
    ozon.add_catalogue(3, images=2)
    ozon.add_product(5, "NO-PICS")
    client = await ozon_client()
    response = await client.post(
        "/api/v1/ozon/products", json={"ids": ["OFF-00002", "MISSING", "NO-PICS"]}, headers=AUTH
    )
    assert response.status_code == 200
    body = response.json()
    assert [p["offer_id"] for p in body["products"]] == ["OFF-00002", "NO-PICS"]
    first = body["products"][0]
    assert set(first) >= {"offer_id", "product_id", "sku", "name", "images"}
    assert first["product_id"] == 100_002 and first["sku"] == 900_100_002
    assert first["images"][0].endswith("00002-0.jpg") and len(first["images"]) == 2
    assert body["products"][1]["images"] == []
    assert body["errors"] == [{"id": "MISSING", "error": "no product with this offer_id in the account"}]
    assert body["last_id"] == ""


async def test_products_catalogue_page(ozon_client: Callable[..., Any], ozon: OzonSellerFake) -> None:
    ozon.add_catalogue(5)
    client = await ozon_client()
    first = (await client.post("/api/v1/ozon/products", json={"last_id": "", "limit": 3}, headers=AUTH)).json()
    assert [p["product_id"] for p in first["products"]] == [100_001, 100_002, 100_003]
    second = (
        await client.post("/api/v1/ozon/products", json={"last_id": first["last_id"], "limit": 3}, headers=AUTH)
    ).json()
    assert [p["product_id"] for p in second["products"]] == [100_004, 100_005]
    assert second["last_id"] == ""


async def test_request_credentials_win_over_settings_and_go_only_to_ozon(
    ozon_client: Callable[..., Any], ozon: OzonSellerFake
) -> None:
    ozon.add_catalogue(1)
    client = await ozon_client(configured=False)
    missing = await client.post("/api/v1/ozon/products", json={"ids": ["OFF-00001"]}, headers=AUTH)
    assert missing.status_code == 400
    assert "X-Ozon-Client-Id" in missing.json()["detail"]
    half = await client.post(
        "/api/v1/ozon/products", json={"ids": ["OFF-00001"]}, headers={**AUTH, "X-Ozon-Api-Key": ozon.api_key}
    )
    assert half.status_code == 400 and "both" in half.json()["detail"]
    assert ozon.api_key not in half.text
    headers = {**AUTH, "X-Ozon-Client-Id": ozon.client_id, "X-Ozon-Api-Key": ozon.api_key}
    ok = await client.post("/api/v1/ozon/products", json={"ids": ["OFF-00001"]}, headers=headers)
    assert ok.status_code == 200 and len(ok.json()["products"]) == 1
    assert ozon.calls("/v3/product/info/list")[-1].headers["api-key"] == ozon.api_key


async def test_wrong_api_key_is_401_and_wrong_client_id_is_400_without_echoing_them(
    ozon_client: Callable[..., Any], ozon: OzonSellerFake
) -> None:
    client = await ozon_client(configured=False)
    wrong_key = {**AUTH, "X-Ozon-Client-Id": ozon.client_id, "X-Ozon-Api-Key": "not-the-key-123"}
    response = await client.post("/api/v1/ozon/products", json={"ids": ["A"]}, headers=wrong_key)
    assert response.status_code == 401
    assert "Api-Key" in response.json()["detail"] and "not-the-key-123" not in response.text
    wrong_client = {**AUTH, "X-Ozon-Client-Id": "4242424", "X-Ozon-Api-Key": ozon.api_key}
    response = await client.post("/api/v1/ozon/products", json={"ids": ["A"]}, headers=wrong_client)
    assert response.status_code == 400
    assert "Client-Id" in response.json()["detail"] and "4242424" not in response.text
    not_a_number = {**AUTH, "X-Ozon-Client-Id": "abc", "X-Ozon-Api-Key": ozon.api_key}
    response = await client.post("/api/v1/ozon/products", json={"ids": ["A"]}, headers=not_a_number)
    assert response.status_code == 400 and "number" in response.json()["detail"]


async def test_circle_open_is_503_with_retry_after(ozon_client: Callable[..., Any], ozon: OzonSellerFake) -> None:
    client = await ozon_client()
    ozon.push(ozon.circle_open())
    response = await client.post("/api/v1/ozon/products", json={"ids": ["A"]}, headers=AUTH)
    assert response.status_code == 503
    assert "Circle is open" in response.json()["detail"]
    assert int(response.headers["Retry-After"]) >= 60


async def test_a_long_rate_limit_is_429_with_retry_after(ozon_client: Callable[..., Any], ozon: OzonSellerFake) -> None:
    client = await ozon_client()
    ozon.push(ozon.rate_limited(retry_after=120))
    response = await client.post("/api/v1/ozon/products", json={"ids": ["A"]}, headers=AUTH)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "120"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ids": []}, "ids"),
        ({"ids": ["a"], "field": "barcode"}, "field"),
        ({"ids": ["a"], "last_id": ""}, "request"),
        ({"last_id": "", "limit": 5000}, "limit"),
        ({"ids": ["a"], "unknown": 1}, "unknown"),
    ],
)
async def test_bad_selections_are_400_naming_the_field(
    ozon_client: Callable[..., Any], body: dict[str, Any], field: str
) -> None:
    client = await ozon_client()
    response = await client.post("/api/v1/ozon/products", json=body, headers=AUTH)
    assert response.status_code == 400
    assert field in response.json()["detail"]


async def test_routes_need_the_service_key(ozon_client: Callable[..., Any]) -> None:
    client = await ozon_client()
    for path in ("/api/v1/ozon/products", "/api/v1/ozon/download"):
        assert (await client.post(path, json={"ids": ["a"]})).status_code == 401


async def test_download_streams_a_zip_with_a_manifest(
    ozon_client: Callable[..., Any], ozon: OzonSellerFake, cdn: FakeCdn
) -> None:
    main = cdn.put("s3/multimedia-1/main.jpg", JPEG)
    side = cdn.put("s3/multimedia-1/side.png", PNG, "image/png")
    html = cdn.html("s3/multimedia-1/broken.jpg")
    ozon.add_product(1, "SHOE/42", primary_image=[main], images=[side, main, html])
    ozon.add_product(2, "EMPTY")
    client = await ozon_client()
    response = await client.post("/api/v1/ozon/download", json={"ids": ["SHOE/42", "EMPTY", "GONE"]}, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    files, manifest = unzip(response.content)
    # The offer_id's slash cannot become a folder: it is replaced.
    assert files == {"SHOE_42/01.jpg": JPEG, "SHOE_42/02.png": PNG}
    assert manifest["counts"] == {
        "products": 2,
        "images": 3,
        "images_ok": 2,
        "images_failed": 1,
        "bytes": len(JPEG) + len(PNG),
        "errors": 2,
    }
    images = {entry["position"]: entry for entry in manifest["images"]}
    assert images[1] | {"source_url": main, "file": "SHOE_42/01.jpg", "main": True, "bytes": len(JPEG)} == images[1]
    assert images[3]["file"] is None and "HTML page" in images[3]["error"]
    assert {e["id"]: e["error"] for e in manifest["errors"]} == {
        "EMPTY": "the product has no pictures",
        "GONE": "no product with this offer_id in the account",
    }
    assert [p["offer_id"] for p in manifest["products"]] == ["SHOE/42", "EMPTY"]


async def test_download_bounds_concurrency_and_each_download_time(
    ozon_client: Callable[..., Any], ozon: OzonSellerFake, cdn: FakeCdn
) -> None:
    cdn.latency = 0.05
    urls = [cdn.put(f"p/{n}.jpg", JPEG) for n in range(12)]
    slow = cdn.slow("p/slow.jpg", 30, JPEG)
    ozon.add_product(1, "A", images=urls[:6])
    ozon.add_product(2, "B", images=[*urls[6:], slow])
    # A picture answers in 50 ms, the stalled one never within the 2 s each download may take.
    client = await ozon_client(plugin={"max_workers": 3, "timeout_sec": 2})
    response = await client.post("/api/v1/ozon/download", json={"ids": ["A", "B"]}, headers=AUTH)
    files, manifest = unzip(response.content)
    assert len(files) == 12
    assert cdn.max_in_flight <= 3
    (late,) = [entry for entry in manifest["images"] if entry["error"]]
    assert late["source_url"] == slow and "longer than 2 s" in late["error"]


async def test_download_of_the_whole_catalogue_walks_every_page(
    ozon_client: Callable[..., Any], ozon: OzonSellerFake, cdn: FakeCdn
) -> None:
    ozon.add_catalogue(2500, images=0)
    for n in (1, 1500, 2500):
        product = ozon.products[100_000 + n]
        product.images = [cdn.put(f"c/{n}.jpg", JPEG)]
    client = await ozon_client()
    response = await client.post("/api/v1/ozon/download", json={"all": True}, headers=AUTH)
    files, manifest = unzip(response.content)
    assert sorted(files) == ["OFF-00001/01.jpg", "OFF-01500/01.jpg", "OFF-02500/01.jpg"]
    assert manifest["counts"]["products"] == 2500
    assert manifest["last_id"] == ""
    assert len(ozon.calls("/v3/product/list")) == 3
    assert [len(r.json["product_id"]) for r in ozon.calls("/v3/product/info/list")] == [1000, 1000, 500]


async def test_download_page_says_where_the_next_page_starts(
    ozon_client: Callable[..., Any], ozon: OzonSellerFake
) -> None:
    ozon.add_catalogue(4, images=0)
    client = await ozon_client()
    response = await client.post("/api/v1/ozon/download", json={"last_id": "", "limit": 3}, headers=AUTH)
    _, manifest = unzip(response.content)
    assert response.headers["x-ozon-last-id"] == manifest["last_id"] != ""
    assert manifest["counts"]["products"] == 3


async def test_download_with_a_wrong_key_fails_before_streaming(
    ozon_client: Callable[..., Any], ozon: OzonSellerFake
) -> None:
    client = await ozon_client(ozon_api_key="wrong-key-000")
    response = await client.post("/api/v1/ozon/download", json={"ids": ["A"]}, headers=AUTH)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"


async def test_source_policy_applies_to_ozon_pictures(
    ozon_client: Callable[..., Any], ozon: OzonSellerFake, cdn: FakeCdn
) -> None:
    ozon.add_product(1, "A", images=[cdn.put("x.jpg", JPEG), "file:///etc/passwd"])
    client = await ozon_client(source_allow_private_networks=False)
    response = await client.post("/api/v1/ozon/download", json={"ids": ["A"]}, headers=AUTH)
    files, manifest = unzip(response.content)
    assert files == {}
    errors = {entry["position"]: entry["error"] for entry in manifest["images"]}
    assert "private address" in errors[1] or "loopback" in errors[1]
    assert errors[2] == "the picture URL is not an http(s) link"


async def test_download_reads_this_services_results_only_for_their_own_tenant(
    ozon_client: Callable[..., Any], ozon: OzonSellerFake
) -> None:
    keys = ["shop-a:shop-a-key-0123456789", "shop-b:shop-b-key-0123456789"]
    shop_a, shop_b = {"X-API-Key": "shop-a-key-0123456789"}, {"X-API-Key": "shop-b-key-0123456789"}
    client = await ozon_client(api_keys=keys)
    job = {
        "job_id": "mine",
        "type": "batch_optimization",
        "config": {"format": "jpg", "maxSize": 128},
        "source_image_urls": [data_uri("rocket.jpg")],
    }
    assert (await client.post("/api/v1/ai/job", json=job, headers=shop_a)).status_code == 202
    url = (await wait_final(client, "mine", headers=shop_a))["result_image_urls"][0]
    # A product whose picture link is one of shop A's results.
    ozon.add_product(1, "A", images=[url])
    files, _ = unzip((await client.post("/api/v1/ozon/download", json={"ids": ["A"]}, headers=shop_a)).content)
    assert list(files) == ["A/01.jpg"]
    files, manifest = unzip((await client.post("/api/v1/ozon/download", json={"ids": ["A"]}, headers=shop_b)).content)
    assert files == {}
    assert "belongs to another user" in manifest["images"][0]["error"]
