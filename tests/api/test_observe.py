"""`GET /metrics`, request metrics and `X-Request-ID` over the real ASGI app, in both job engines.

Metric values are process-wide and earlier tests leave theirs behind, so every check compares a scrape
taken before with one taken after.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.api.helpers import data_uri, submit, wait_final, wait_status
from tests.support.data import AUTH, read_image
from tests.support.metrics import Scrape, delta
from tests.support.servers import http_server, static_bytes

TOKEN = "metrics-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
OPTIMIZE = {"format": "webp", "maxSize": 256}


async def scrape(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> Scrape:
    answer = await client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(answer.text)


async def wait_scrape(
    client: httpx.AsyncClient, until: Callable[[Scrape], bool], timeout: float = 15.0, **kwargs: Any
) -> Scrape:
    """Scrape until `until` holds (the Redis engine's queue figures refresh every few seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        current = await scrape(client, **kwargs)
        if until(current) or time.monotonic() > deadline:
            return current
        await asyncio.sleep(0.2)


async def test_a_completed_job_counts_its_job_images_stages_and_requests(
    make_client: Callable[..., Any], engine: dict[str, Any]
) -> None:
    client: httpx.AsyncClient = await make_client()
    before = await scrape(client)
    sources = [data_uri("rocket.jpg"), data_uri("grace_hopper.jpg")]
    answer = await submit(
        client, job_id="metrics-ok", type="batch_optimization", config=OPTIMIZE, source_image_urls=sources
    )
    assert answer.status_code == 202
    result = await wait_final(client, "metrics-ok")
    assert result["status"] == "completed"
    after = await scrape(client)

    job = {"type": "batch_optimization"}
    assert delta(before, after, "capsvc_jobs_total", **job, status="completed", tenant="default") == 1
    assert delta(before, after, "capsvc_job_duration_seconds_count", **job, status="completed") == 1
    assert delta(before, after, "capsvc_images_total", **job, outcome="succeeded", error="none") == 2
    assert delta(before, after, "capsvc_images_total", **job, outcome="failed") == 0
    # Optimization streams its decode through the encoder: fetch, process, encode and store are its stages.
    for stage in ("fetch", "process", "encode", "store"):
        assert delta(before, after, "capsvc_image_stage_seconds_count", **job, stage=stage) == 2, stage
        assert after.has("capsvc_image_stage_seconds_bucket", **job, stage=stage, le="+Inf")
    assert delta(before, after, "capsvc_image_stage_seconds_count", **job, stage="remote_model") == 0
    # The image's own timings say how long encoding took; the metric holds the same seconds.
    encode_seconds = sum(image["timings"]["encode_ms"] for image in result["metadata"]["images"]) / 1000
    observed = delta(before, after, "capsvc_image_stage_seconds_sum", **job, stage="encode")
    assert observed == pytest.approx(encode_seconds, abs=0.002)
    assert after.value("capsvc_images_in_flight", **job) == 0

    submitted = {"method": "POST", "route": "/api/v1/ai/job"}
    assert delta(before, after, "capsvc_http_requests_total", **submitted, status="202") == 1
    assert delta(before, after, "capsvc_http_request_duration_seconds_count", **submitted) == 1
    assert after.has("capsvc_http_request_duration_seconds_bucket", **submitted, le="0.005")
    # Route templates, not paths: the job id is not a label value.
    assert delta(before, after, "capsvc_http_requests_total", method="GET", route="/api/v1/ai/job/{job_id}") >= 1
    assert "metrics-ok" not in after.text


async def test_failed_and_cancelled_jobs_count_by_status_and_error_class(
    make_client: Callable[..., Any], engine: dict[str, Any]
) -> None:
    client: httpx.AsyncClient = await make_client()
    photo = read_image("rocket.jpg")
    with http_server({"/slow.jpg": static_bytes(photo, delay=3.0)}) as base:
        before = await scrape(client)
        broken = "data:image/jpeg;base64," + data_uri("rocket.jpg").split(",", 1)[1][:2000]
        answer = await submit(
            client,
            job_id="metrics-failed",
            type="image_enhancement",
            config={},
            source_image_urls=[f"{base}/missing.jpg", broken],
        )
        assert answer.status_code == 202
        failed = await wait_final(client, "metrics-failed")
        assert failed["status"] == "failed", failed

        answer = await submit(
            client,
            job_id="metrics-cancel",
            type="batch_optimization",
            config=OPTIMIZE,
            source_image_urls=[f"{base}/slow.jpg"],
        )
        assert answer.status_code == 202
        await wait_status(client, "metrics-cancel", lambda status: status["status"] == "processing")
        during = await wait_scrape(client, lambda s: s.value("capsvc_images_in_flight", type="batch_optimization") == 1)
        assert during.value("capsvc_images_in_flight", type="batch_optimization") == 1
        cancel = await client.post("/api/v1/ai/job/metrics-cancel/cancel", headers=AUTH)
        assert cancel.status_code == 200
        assert (await wait_final(client, "metrics-cancel"))["status"] == "cancelled"
        after = await wait_scrape(
            client, lambda s: s.value("capsvc_images_in_flight", type="batch_optimization") == 0, timeout=10.0
        )

    enhance = {"type": "image_enhancement"}
    assert delta(before, after, "capsvc_jobs_total", **enhance, status="failed", tenant="default") == 1
    assert delta(before, after, "capsvc_images_total", **enhance, outcome="failed", error="source") == 1
    assert delta(before, after, "capsvc_images_total", **enhance, outcome="failed", error="image") == 1
    optimize = {"type": "batch_optimization"}
    assert delta(before, after, "capsvc_jobs_total", **optimize, status="cancelled", tenant="default") == 1
    assert delta(before, after, "capsvc_images_total", **optimize, outcome="cancelled", error="cancelled") == 1
    assert after.value("capsvc_images_in_flight", **optimize) == 0


async def test_the_job_engine_reports_its_queue_and_work(
    make_client: Callable[..., Any], engine: dict[str, Any]
) -> None:
    client: httpx.AsyncClient = await make_client()
    if engine["job_backend"] == "memory":
        current = await scrape(client)
        assert current.has("capsvc_jobs_queued", engine="local")
        assert not current.has("capsvc_workers")
    else:
        # The Redis engine reads SAQ's queue info every few seconds; the API process's own worker shows.
        current = await wait_scrape(client, lambda s: s.value("capsvc_workers", engine="saq") >= 1)
        assert current.value("capsvc_workers", engine="saq") >= 1
        assert current.has("capsvc_images_queued", engine="saq")
        assert current.has("capsvc_images_active", engine="saq")


@pytest.mark.engines("memory")
async def test_metrics_token_is_required_when_set(make_client: Callable[..., Any]) -> None:
    client: httpx.AsyncClient = await make_client(metrics_token=TOKEN)
    refused = [
        {},
        {"Authorization": "Bearer wrong-token-0123456789abcdef"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer "},
        AUTH,  # an API key is no way in
    ]
    for headers in refused:
        answer = await client.get("/metrics", headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"] == 'Bearer realm="metrics"'
        assert "X-Request-ID" in answer.headers
        assert TOKEN not in answer.text
    current = await scrape(client, BEARER)
    assert "capsvc_http_requests_total" in current.text
    assert (await client.get("/metrics", headers={"Authorization": f"bearer  {TOKEN} "})).status_code == 200


@pytest.mark.engines("memory")
async def test_metrics_are_open_without_a_token_and_never_need_an_api_key(client: httpx.AsyncClient) -> None:
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert "# TYPE capsvc_jobs_total counter" in answer.text


async def test_storage_series_exist_before_the_first_retry(client: httpx.AsyncClient) -> None:
    # An alert on `rate(capsvc_storage_upload_retries_total[5m])` needs a series from the start.
    found = await scrape(client)
    assert found.has("capsvc_storage_upload_retries_total", backend="local")
    assert found.has("capsvc_storage_uploads_waiting", backend="local")


@pytest.mark.engines("memory")
async def test_request_id_is_taken_when_sane_and_made_otherwise(client: httpx.AsyncClient) -> None:
    sent = "req-2026.11.29:abc_DEF-1"
    answer = await client.get("/api/v1/health", headers={"X-Request-ID": sent})
    assert answer.headers["X-Request-ID"] == sent

    made = (await client.get("/api/v1/health")).headers["X-Request-ID"]
    assert len(made) == 32 and int(made, 16) >= 0
    assert made != (await client.get("/api/v1/health")).headers["X-Request-ID"]

    for bad in ("x" * 129, "has space", "semi;colon", "<script>", "naïve"):
        sent_bytes = [(b"X-Request-ID", bad.encode())]
        replaced = (await client.get("/api/v1/health", headers=sent_bytes)).headers["X-Request-ID"]
        assert replaced != bad and len(replaced) == 32


@pytest.mark.engines("memory")
async def test_every_answer_carries_its_request_id(make_client: Callable[..., Any]) -> None:
    client: httpx.AsyncClient = await make_client(max_job_request_bytes=2048)
    cases = [
        ("GET", "/api/v1/ai/job/x/status", {}, None, 401),  # no key: the gate answers
        ("GET", "/api/v1/ai/job/unknown/status", AUTH, None, 404),
        ("POST", "/api/v1/ai/job", AUTH, {"type": "nope", "source_image_urls": ["x"]}, 400),
        ("POST", "/api/v1/ai/job", AUTH, {"pad": "x" * 4096}, 413),
        ("GET", "/no/such/path", {}, None, 404),
    ]
    for number, (method, path, headers, body, status) in enumerate(cases):
        request_id = f"case-{number}"
        answer = await client.request(method, path, headers={**headers, "X-Request-ID": request_id}, json=body)
        assert answer.status_code == status, (path, answer.text)
        assert answer.headers["X-Request-ID"] == request_id, path


@pytest.mark.engines("memory")
async def test_an_unexpected_error_answers_500_with_the_request_id_and_is_counted(client: httpx.AsyncClient) -> None:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    app = transport.app
    assert isinstance(app, FastAPI)

    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/api/v1/broken/{thing}", broken)
    before = await scrape(client)
    unguarded = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t"
    )
    async with unguarded:
        answer = await unguarded.get("/api/v1/broken/1", headers={**AUTH, "X-Request-ID": "the-bad-one"})
    assert answer.status_code == 500
    assert answer.headers["X-Request-ID"] == "the-bad-one"
    assert answer.json() == {"detail": "internal error; quote request id the-bad-one when reporting it"}
    after = await scrape(client)
    assert delta(before, after, "capsvc_http_requests_total", route="/api/v1/broken/{thing}", status="500") == 1


@pytest.mark.engines("memory")
async def test_requests_refused_before_routing_are_counted_under_their_route(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    assert (await client.get("/api/v1/ai/job/abc/status")).status_code == 401
    assert (await client.get("/nowhere/at/all")).status_code == 404
    after = await scrape(client)
    route = "/api/v1/ai/job/{job_id}/status"
    assert delta(before, after, "capsvc_http_requests_total", method="GET", route=route, status="401") == 1
    assert delta(before, after, "capsvc_http_requests_total", method="GET", route="unmatched", status="404") == 1


async def test_result_cache_lookups_are_counted(make_client: Callable[..., Any], engine: dict[str, Any]) -> None:
    client: httpx.AsyncClient = await make_client()
    before = await scrape(client)
    job = {"type": "batch_optimization", "config": OPTIMIZE, "source_image_urls": [data_uri("rocket.jpg")]}
    for job_id in ("cache-first", "cache-again"):
        answer = await submit(client, job_id=job_id, **job)
        assert answer.status_code == 202
        result = await wait_final(client, job_id)
        assert result["status"] == "completed"
    assert result["metadata"]["images"][0]["cache"] == "hit"
    after = await scrape(client)
    assert delta(before, after, "capsvc_result_cache_total", result="miss") == 1
    assert delta(before, after, "capsvc_result_cache_total", result="hit") == 1
    # A reused result is fetched and stored, not processed: no process stage for it.
    assert delta(before, after, "capsvc_image_stage_seconds_count", type="batch_optimization", stage="process") == 1
    assert delta(before, after, "capsvc_image_stage_seconds_count", type="batch_optimization", stage="fetch") == 2
