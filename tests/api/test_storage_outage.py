"""A storage outage mid-job, in both engines: the real S3 server stops and comes back, and no image is lost."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from capability_service.jobs.models import Job, job_key
from tests.api.helpers import services_of, wait_final
from tests.jobs.samples import wait_for
from tests.storage.test_s3_job import read_object, s3_settings
from tests.support.data import AUTH, read_image
from tests.support.seaweed import SeaweedProcess, seaweed_process
from tests.support.servers import Route, http_server, in_ci, static_bytes

PHOTO = read_image("rocket.jpg")
IMAGES = 6
# Most seconds a held source waits for its release, so a failing test still lets its server threads end.
HOLD_LIMIT_SECONDS = 120.0


@pytest.fixture
def restartable_seaweed() -> Iterator[SeaweedProcess]:
    """A SeaweedFS of this test's own, since the test stops it."""
    try:
        with seaweed_process() as process:
            yield process
    except RuntimeError as exc:
        if in_ci():
            pytest.fail(f"SeaweedFS is required in CI: {exc}")
        pytest.skip(str(exc))


def held_until(release: threading.Event) -> Route:
    def route(handler: Any) -> None:
        release.wait(HOLD_LIMIT_SECONDS)
        static_bytes(PHOTO)(handler)

    return route


def uploads_waiting() -> float:
    return REGISTRY.get_sample_value("capsvc_storage_uploads_waiting", {"backend": "s3"}) or 0.0


async def test_a_short_storage_outage_loses_no_processed_image(
    make_client: Callable[..., Any], restartable_seaweed: SeaweedProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    seaweed = restartable_seaweed.server
    client: httpx.AsyncClient = await make_client(
        # Image slots and per-host download slots for the whole job in both engines, so all five uploads meet
        # the outage and the held downloads (one host) cannot keep image 0 from fetching. Held sources wait for
        # the outage; on a busy machine image 0 alone can take longer than the default download limit, so the
        # held downloads get more time than that.
        **s3_settings(
            seaweed,
            source_allow_private_networks=True,
            storage_retry_seconds=120,
            source_timeout_seconds=120,
            source_max_per_host=IMAGES,
        ),
        max_images_in_flight=8,
        serve_local_workers=8,
    )
    release = threading.Event()
    routes: dict[str, Route] = {"/0.jpg": static_bytes(PHOTO)} | {
        f"/{n}.jpg": held_until(release) for n in range(1, IMAGES)
    }
    try:
        with http_server(routes) as base:
            job = {"job_id": "outage", "type": "batch_optimization", "config": {"format": "webp", "maxSize": 320}}
            job["source_image_urls"] = [f"{base}/{n}.jpg" for n in range(IMAGES)]
            assert (await client.post("/api/v1/ai/job", json=job, headers=AUTH)).status_code == 202
            store = services_of(client).store
            key = job_key("default", "outage")

            # The first image is stored; the other five wait for their sources while the store goes down.
            first = await wait_for(store, key, lambda job: job.images[0].is_final, timeout=120)
            assert first.images[0].result_key is not None, first.result_view()
            await asyncio.to_thread(restartable_seaweed.stop)
            release.set()

            # Down until every held image waits for the store (or, without retries, the job has ended).
            def all_failing_or_over(job: Job) -> bool:
                return uploads_waiting() >= IMAGES - 1 or job.status.is_final

            async with asyncio.timeout(60):
                while not all_failing_or_over(await store.snapshot(key) or first):
                    await asyncio.sleep(0.05)  # polling a gauge: nothing announces an upload's failure
            await asyncio.to_thread(restartable_seaweed.start)

            result = await wait_final(client, "outage", timeout=120)
    finally:
        release.set()

    assert result["status"] == "completed", result
    assert result["errors"] == [], result
    urls = result["result_image_urls"]
    assert None not in urls
    async with httpx.AsyncClient(timeout=10) as browser:
        for url in urls:
            fetched = await browser.get(url)
            assert fetched.status_code == 200, url
            assert fetched.content[8:12] == b"WEBP"
            object_key = url.split(f"/{seaweed.bucket}/", 1)[1].split("?", 1)[0]
            assert fetched.content == read_object(seaweed, object_key)

    # One line per image that waited for the store, saying it was stored in the end; no traceback.
    lines = [record for record in caplog.records if record.name == "capability_service.storage.retry"]
    assert len(lines) == IMAGES - 1, [record.getMessage() for record in lines]
    assert all("stored after" in record.getMessage() and record.exc_info is None for record in lines)
    # The result cache's look-ups that met the outage say so; no entry is called unusable for it.
    cache_lines = [record.getMessage() for record in caplog.records if record.name.endswith("result_cache")]
    assert all("look-up failed, processing the image" in line for line in cache_lines), cache_lines
