"""The in-process engine: limits, cancellation and shutdown, with real slow sources on loopback."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx

from capability_service.core.config import Settings
from capability_service.jobs.models import job_key
from capability_service.main import create_app
from tests.api.helpers import data_uri, submit, wait_final
from tests.jobs.samples import wait_for
from tests.support.data import AUTH, read_image
from tests.support.servers import http_server, static_bytes

JPEG = read_image("rocket.jpg")


class ConcurrencyProbe:
    """A route that records how many requests it serves at once."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(self.delay)
            static_bytes(JPEG)(handler)
        finally:
            with self._lock:
                self.active -= 1


async def test_images_in_flight_per_job_are_bounded(make_client: Callable[..., Any]) -> None:
    client = await make_client(max_images_in_flight=3)
    probe = ConcurrencyProbe(delay=0.3)
    with http_server({"/img.jpg": probe}) as base:
        await submit(client, job_id="b", type="batch_optimization", source_image_urls=[f"{base}/img.jpg"] * 9)
        result = await wait_final(client, "b")
    assert result["status"] == "completed"
    assert probe.peak == 3


async def test_images_in_flight_are_bounded_over_all_jobs(make_client: Callable[..., Any]) -> None:
    client = await make_client(max_images_in_flight=2)
    probe = ConcurrencyProbe(delay=0.3)
    with http_server({"/img.jpg": probe}) as base:
        for n in range(5):
            await submit(client, job_id=f"j{n}", type="batch_optimization", source_image_urls=[f"{base}/img.jpg"])
        for n in range(5):
            assert (await wait_final(client, f"j{n}"))["status"] == "completed"
    assert probe.peak == 2


async def test_cancel_of_a_queued_job_ends_it_before_it_starts(make_client: Callable[..., Any]) -> None:
    client = await make_client(max_images_in_flight=1)
    with http_server({"/slow.jpg": static_bytes(JPEG, delay=1.0)}) as base:
        await submit(client, job_id="first", type="batch_optimization", source_image_urls=[f"{base}/slow.jpg"])
        await submit(client, job_id="second", type="batch_optimization", source_image_urls=[f"{base}/slow.jpg"])
        response = await client.post("/api/v1/ai/job/second/cancel", headers=AUTH)
        assert response.status_code == 200
        second = await wait_final(client, "second", timeout=5)
        assert second["status"] == "cancelled"
        assert second["processed"] == 0
        assert (await wait_final(client, "first"))["status"] == "completed"


async def test_shutdown_finishes_running_jobs_within_the_grace_period(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(shutdown_grace_seconds=10, max_images_in_flight=1))
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    with http_server({"/slow.jpg": static_bytes(JPEG, delay=0.5)}) as base:
        await submit(client, job_id="running", type="batch_optimization", source_image_urls=[f"{base}/slow.jpg"] * 2)
        await submit(client, job_id="queued", type="batch_optimization", source_image_urls=[f"{base}/slow.jpg"])
        store = app.state.services.store
        await wait_for(store, job_key("default", "running"), lambda job: job.status.value == "processing")
        await lifespan.__aexit__(None, None, None)
    running = await store.get(job_key("default", "running"))
    queued = await store.get(job_key("default", "queued"))
    assert running.status.value == "completed"
    assert queued.status.value == "cancelled"
    assert "shut down" in queued.message
    await client.aclose()


async def test_shutdown_cancels_what_outlives_the_grace_period(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(shutdown_grace_seconds=0.3, max_images_in_flight=1))
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    with http_server({"/fast.jpg": static_bytes(JPEG), "/slow.jpg": static_bytes(JPEG, delay=3)}) as base:
        sources = [f"{base}/fast.jpg", f"{base}/slow.jpg", f"{base}/slow.jpg"]
        await submit(client, job_id="long", type="batch_optimization", source_image_urls=sources)
        await wait_for(app.state.services.store, job_key("default", "long"), lambda job: job.processed >= 1)
        started = time.monotonic()
        await lifespan.__aexit__(None, None, None)
        assert time.monotonic() - started < 3
    job = await app.state.services.store.get(job_key("default", "long"))
    assert job.status.value == "cancelled"
    assert "shut down" in job.message
    assert job.images[0].result_url is not None
    await client.aclose()


async def test_submit_after_shutdown_began_is_503(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    await lifespan.__aexit__(None, None, None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        response = await submit(client, type="batch_optimization", source_image_urls=["data:,a"])
    assert response.status_code == 503
    assert "shutting down" in response.json()["detail"]
    assert "Retry-After" in response.headers


async def test_finished_jobs_are_forgotten_after_the_ttl_without_new_traffic(make_client: Callable[..., Any]) -> None:
    client = await make_client(job_result_ttl_seconds=1)
    await submit(client, job_id="short-lived", type="batch_optimization", source_image_urls=["data:,x"])
    assert (await wait_final(client, "short-lived"))["status"] == "failed"
    async with asyncio.timeout(10):
        while (await client.get("/api/v1/ai/job/short-lived/status", headers=AUTH)).status_code != 404:
            await asyncio.sleep(0.2)


async def test_a_cancelled_queued_job_leaves_no_trace_for_a_later_job_with_its_id(
    make_client: Callable[..., Any],
) -> None:
    client = await make_client(max_images_in_flight=1, job_result_ttl_seconds=1)
    with http_server({"/slow.jpg": static_bytes(JPEG, delay=1.0)}) as base:
        await submit(client, job_id="a", type="batch_optimization", source_image_urls=[f"{base}/slow.jpg"])
        await submit(client, job_id="x", type="batch_optimization", source_image_urls=[data_uri("rocket.jpg")])
        assert (await client.post("/api/v1/ai/job/x/cancel", headers=AUTH)).status_code == 200
        async with asyncio.timeout(10):
            while (await client.get("/api/v1/ai/job/x/status", headers=AUTH)).status_code != 404:
                await asyncio.sleep(0.2)
        await submit(client, job_id="x", type="batch_optimization", source_image_urls=[data_uri("rocket.jpg")])
        assert (await wait_final(client, "x"))["status"] == "completed"
