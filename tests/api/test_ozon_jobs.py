"""Jobs from an Ozon selection and publishing their results back, in memory and Redis mode.

The fake Seller API and a fake CDN run on loopback; the job pipeline, storage and engine are real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import pyvips

from tests.api.helpers import wait_final
from tests.fakes.ozon_cdn import FakeCdn
from tests.fakes.ozon_server import OzonSellerFake
from tests.support.data import AUTH, read_image

PUBLIC = "https://img.shop.example"
OPTIMIZE_JPG = {"format": "jpg", "quality": "standard", "maxSize": 1920}


def product_on_white() -> bytes:
    """A 3:4 product shot on a white backdrop, as a seller's main picture should be."""
    canvas = pyvips.Image.black(900, 1200, bands=3).new_from_image([255, 255, 255])
    product = pyvips.Image.black(500, 700, bands=3).new_from_image([30, 60, 160])
    return bytes(canvas.insert(product, 200, 250).copy(interpretation="srgb").jpegsave_buffer(Q=90))


@pytest.fixture
def ozon() -> Iterator[OzonSellerFake]:
    with OzonSellerFake().running() as fake:
        fake.pending_polls = 1
        yield fake


@pytest.fixture
def catalogue(ozon: OzonSellerFake, cdn: FakeCdn) -> dict[str, list[str]]:
    shirt = [
        cdn.put("s3/shirt-main.jpg", product_on_white()),
        cdn.put("s3/shirt-side.jpg", read_image("rocket.jpg")),
        cdn.put("s3/shirt-back.png", read_image("chelsea.png"), "image/png"),
    ]
    mug = [cdn.put("s3/mug-main.jpg", read_image("grace_hopper.jpg"))]
    ozon.add_product(501, "SHIRT-1", primary_image=shirt[:1], images=shirt, color_image=["https://c.example/blue.jpg"])
    ozon.add_product(502, "MUG-2", images=mug)
    ozon.add_product(503, "BARE")
    return {"SHIRT-1": shirt, "MUG-2": mug}


@pytest.fixture
def service(make_client: Callable[..., Any], ozon: OzonSellerFake) -> Callable[..., Any]:
    async def factory(**overrides: Any) -> httpx.AsyncClient:
        values = {
            "ozon_api_base": ozon.url,
            "ozon_client_id": ozon.client_id,
            "ozon_api_key": ozon.api_key,
            "public_base_url": PUBLIC,
            **overrides,
        }
        client: httpx.AsyncClient = await make_client(**values)
        return client

    return factory


async def submit_ozon(
    client: httpx.AsyncClient, job_id: str, ids: list[str], images: str = "all", **extra: Any
) -> httpx.Response:
    payload = {
        "job_id": job_id,
        "type": "batch_optimization",
        "config": extra.pop("config", OPTIMIZE_JPG),
        "source": {"ozon": {"ids": ids, "images": images}},
    }
    return await client.post("/api/v1/ai/job", json=payload, headers={**AUTH, **extra.pop("headers", {})})


async def test_a_job_from_a_selection_carries_each_pictures_product(
    service: Callable[..., Any], catalogue: dict[str, list[str]]
) -> None:
    client = await service()
    response = await submit_ozon(client, "oz-1", ["SHIRT-1", "GONE", "BARE", "MUG-2"])
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert data["total"] == 4
    assert data["source_errors"] == [
        {"id": "GONE", "error": "no product with this offer_id in the account"},
        {"id": "BARE", "error": "the product has no pictures"},
    ]
    result = await wait_final(client, "oz-1")
    assert result["status"] == "completed", result
    assert result["source_image_urls"] == [*catalogue["SHIRT-1"], *catalogue["MUG-2"]]
    images = result["metadata"]["images"]
    assert [(i["offer_id"], i["product_id"], i["position"]) for i in images] == [
        ("SHIRT-1", 501, 1),
        ("SHIRT-1", 501, 2),
        ("SHIRT-1", 501, 3),
        ("MUG-2", 502, 1),
    ]
    checks = [image["marketplace"]["ozon"] for image in images]
    assert [check["checked_as"] for check in checks] == ["main", "additional", "additional", "main"]
    assert checks[0] == {"ok": True, "problems": [], "advice": [], "checked_as": "main"}
    # The mug's main picture is a portrait on a dark, busy background: moderation would refuse it.
    assert not checks[3]["ok"] and "background" in checks[3]["problems"][0]
    # The side picture is fine for Ozon, but not 3:4 and small: advice only.
    assert checks[1]["ok"] and checks[1]["advice"]


@pytest.mark.engines("memory")
async def test_main_only_takes_the_first_picture_of_each_product(
    service: Callable[..., Any], catalogue: dict[str, list[str]]
) -> None:
    client = await service()
    response = await submit_ozon(client, "oz-main", ["SHIRT-1", "MUG-2"], images="main")
    assert response.json()["data"]["total"] == 2
    result = await wait_final(client, "oz-main")
    assert result["source_image_urls"] == [catalogue["SHIRT-1"][0], catalogue["MUG-2"][0]]


@pytest.mark.engines("memory")
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"type": "batch_optimization", "source": {"ozon": {"ids": ["BARE", "GONE"]}}}, "source.ozon"),
        ({"type": "batch_optimization", "source": {"ozon": {"ids": []}}}, "ids"),
        ({"type": "batch_optimization", "source": {"ozon": {"ids": ["A"], "images": "some"}}}, "images"),
        (
            {"type": "batch_optimization", "source_image_urls": ["u"], "source": {"ozon": {"ids": ["A"]}}},
            "not both",
        ),
    ],
)
async def test_bad_ozon_sources_are_400(
    service: Callable[..., Any], catalogue: dict[str, list[str]], payload: dict[str, Any], field: str
) -> None:
    client = await service()
    response = await client.post("/api/v1/ai/job", json=payload, headers=AUTH)
    assert response.status_code == 400, response.text
    assert field in response.json()["detail"]
    assert "Value error" not in response.json()["detail"]


@pytest.mark.engines("memory")
async def test_too_many_pictures_name_the_selection(
    service: Callable[..., Any], catalogue: dict[str, list[str]]
) -> None:
    client = await service(max_images_per_job=2)
    response = await submit_ozon(client, "oz-big", ["SHIRT-1"])
    assert response.status_code == 400
    assert response.json()["detail"].startswith("source.ozon: 3 images is more than the limit of 2")


@pytest.mark.engines("memory")
async def test_a_wrong_ozon_key_on_submit_is_401(service: Callable[..., Any], catalogue: dict[str, list[str]]) -> None:
    client = await service(ozon_api_key="wrong-key-1")
    response = await submit_ozon(client, "oz-401", ["SHIRT-1"])
    assert response.status_code == 401
    assert "wrong-key-1" not in response.text


async def test_publish_dry_run_replaces_exactly_the_processed_pictures(
    service: Callable[..., Any], ozon: OzonSellerFake, catalogue: dict[str, list[str]]
) -> None:
    client = await service()
    # Only the shirt's side picture and the mug's main picture are processed.
    await submit_ozon(client, "oz-pub", ["SHIRT-1", "MUG-2"])
    result = await wait_final(client, "oz-pub")
    response = await client.post("/api/v1/ozon/jobs/oz-pub/publish", json={}, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is True and body["publishable"] is True and body["problem"] is None
    shirt, mug = body["products"]
    results = result["result_image_urls"]
    assert shirt["product_id"] == 501 and shirt["offer_id"] == "SHIRT-1"
    assert shirt["images_before"] == catalogue["SHIRT-1"]
    assert shirt["images_after"] == results[:3]
    assert all(url.startswith(PUBLIC + "/files/") for url in shirt["images_after"])
    assert shirt["status"] == "would_update"
    # The mug's result fails Ozon's check: kept as it is unless asked otherwise.
    assert mug["status"] == "unchanged" and mug["images_after"] == catalogue["MUG-2"]
    assert "Ozon would refuse the result" in mug["skipped"][0]["reason"]
    assert ozon.calls("/v2/product/pictures/import") == []

    forced = await client.post("/api/v1/ozon/jobs/oz-pub/publish", json={"include_failing_checks": True}, headers=AUTH)
    assert forced.json()["products"][1]["images_after"] == [results[3]]


@pytest.mark.engines("memory")
async def test_pictures_keep_their_place_when_only_some_were_processed(
    service: Callable[..., Any], ozon: OzonSellerFake, catalogue: dict[str, list[str]]
) -> None:
    client = await service()
    await submit_ozon(client, "oz-some", ["SHIRT-1"], images="main")
    result = await wait_final(client, "oz-some")
    # The seller added a picture after the job: it stays, after the others.
    added = "https://cdn1.ozone.ru/s3/new.jpg"
    ozon.products[501].images.append(added)
    body = (await client.post("/api/v1/ozon/jobs/oz-some/publish", json={"dry_run": True}, headers=AUTH)).json()
    (shirt,) = body["products"]
    assert shirt["images_after"] == [result["result_image_urls"][0], *catalogue["SHIRT-1"][1:], added]
    assert shirt["replaced"] == [{"position": 1, "from": catalogue["SHIRT-1"][0], "to": result["result_image_urls"][0]}]


async def test_real_publish_imports_and_follows_the_status(
    service: Callable[..., Any],
    ozon: OzonSellerFake,
    catalogue: dict[str, list[str]],
    tmp_path: Any,
) -> None:
    plugins = tmp_path / "plugins.yaml"
    plugins.write_text("plugins: {ozon-download: {publish_poll_sec: 0.05, publish_wait_sec: 10}}")
    client = await service(plugins_config=plugins)
    ozon.pending_polls = 2
    await submit_ozon(client, "oz-real", ["SHIRT-1", "MUG-2"])
    result = await wait_final(client, "oz-real")
    response = await client.post("/api/v1/ozon/jobs/oz-real/publish", json={"dry_run": False}, headers=AUTH)
    assert response.status_code == 200, response.text
    shirt, mug = response.json()["products"]
    assert shirt["status"] == "imported" and isinstance(shirt["task_id"], int)
    assert mug["status"] == "unchanged"
    (call,) = ozon.calls("/v2/product/pictures/import")
    assert call.json == {
        "items": [
            {
                "offer_id": "SHIRT-1",
                "images": result["result_image_urls"][:3],
                "color_image": "https://c.example/blue.jpg",
            }
        ]
    }
    assert call.headers["api-key"] == ozon.api_key
    assert ozon.products[501].images == result["result_image_urls"][:3]
    assert len(ozon.calls("/v1/product/import/info")) == 3
    status = await client.get(f"/api/v1/ozon/imports/{shirt['task_id']}", headers=AUTH)
    assert status.json()["products"][0]["status"] == "imported"


@pytest.mark.engines("memory")
async def test_a_refused_import_is_reported_per_product(
    service: Callable[..., Any], ozon: OzonSellerFake, catalogue: dict[str, list[str]], tmp_path: Any
) -> None:
    plugins = tmp_path / "plugins.yaml"
    plugins.write_text("plugins: {ozon-download: {publish_poll_sec: 0.05}}")
    client = await service(plugins_config=plugins)
    ozon.import_failures["SHIRT-1"] = "image is smaller than 200x200"
    await submit_ozon(client, "oz-fail", ["SHIRT-1"], images="main")
    await wait_final(client, "oz-fail")
    body = (await client.post("/api/v1/ozon/jobs/oz-fail/publish", json={"dry_run": False}, headers=AUTH)).json()
    assert body["products"][0]["status"] == "failed"
    assert body["products"][0]["errors"] == ["IMAGE_FAILED: image is smaller than 200x200 (images)"]


@pytest.mark.engines("memory")
async def test_publish_refuses_results_ozon_cannot_reach(
    service: Callable[..., Any], ozon: OzonSellerFake, catalogue: dict[str, list[str]]
) -> None:
    client = await service(public_base_url="http://127.0.0.1:8000")
    await submit_ozon(client, "oz-local", ["SHIRT-1"], images="main")
    await wait_final(client, "oz-local")
    dry = (await client.post("/api/v1/ozon/jobs/oz-local/publish", headers=AUTH)).json()
    assert dry["publishable"] is False and "loopback" in dry["problem"]
    real = await client.post("/api/v1/ozon/jobs/oz-local/publish", json={"dry_run": False}, headers=AUTH)
    assert real.status_code == 409
    assert "not reachable by Ozon" in real.json()["detail"] and "PUBLIC_BASE_URL" in real.json()["detail"]
    assert ozon.calls("/v2/product/pictures/import") == []


@pytest.mark.engines("memory")
async def test_publish_needs_public_base_url_when_result_urls_follow_the_request(
    service: Callable[..., Any], ozon: OzonSellerFake, catalogue: dict[str, list[str]]
) -> None:
    client = await service(public_base_url=None)
    await submit_ozon(client, "oz-relative", ["SHIRT-1"], images="main")
    await wait_final(client, "oz-relative")
    dry = (await client.post("/api/v1/ozon/jobs/oz-relative/publish", headers=AUTH)).json()
    assert dry["publishable"] is False and "PUBLIC_BASE_URL is not set" in dry["problem"]
    # The dry run shows the results where this caller can see them.
    (replaced,) = dry["products"][0]["replaced"]
    assert replaced["to"].startswith("http://testserver/files/ai-playground/")
    real = await client.post("/api/v1/ozon/jobs/oz-relative/publish", json={"dry_run": False}, headers=AUTH)
    assert real.status_code == 409 and "PUBLIC_BASE_URL" in real.json()["detail"]
    assert ozon.calls("/v2/product/pictures/import") == []


@pytest.mark.engines("memory")
async def test_publish_needs_a_finished_ozon_job(
    service: Callable[..., Any], ozon: OzonSellerFake, cdn: FakeCdn
) -> None:
    client = await service()
    plain = {
        "job_id": "plain",
        "type": "batch_optimization",
        "config": OPTIMIZE_JPG,
        "source_image_urls": [cdn.put("p.jpg", read_image("rocket.jpg"))],
    }
    await client.post("/api/v1/ai/job", json=plain, headers=AUTH)
    await wait_final(client, "plain")
    response = await client.post("/api/v1/ozon/jobs/plain/publish", headers=AUTH)
    assert response.status_code == 400 and "not made from an Ozon selection" in response.json()["detail"]
    assert (await client.post("/api/v1/ozon/jobs/nope/publish", headers=AUTH)).status_code == 404

    ozon.add_product(9, "SLOW", images=[cdn.slow("slow.jpg", 30, read_image("rocket.jpg"))])
    await submit_ozon(client, "running", ["SLOW"])
    response = await client.post("/api/v1/ozon/jobs/running/publish", headers=AUTH)
    assert response.status_code == 409 and "still" in response.json()["detail"]
    await client.post("/api/v1/ai/job/running/cancel", headers=AUTH)


@pytest.mark.engines("memory")
async def test_an_import_id_out_of_ozons_range_is_refused_without_asking_ozon(
    service: Callable[..., Any], ozon: OzonSellerFake
) -> None:
    client = await service()
    for task_id in ("0", str(2**63), "1" * 100):
        response = await client.get(f"/api/v1/ozon/imports/{task_id}", headers=AUTH)
        assert response.status_code == 400, (task_id, response.text)
        assert "task_id" in response.json()["detail"]
    assert ozon.calls("/v1/product/import/info") == []
