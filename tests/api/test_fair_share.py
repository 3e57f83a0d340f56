"""Fair share, end to end in both engines: one tenant's big job does not hold up another's small one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from capability_service.jobs.models import job_key
from tests.api.helpers import services_of, wait_final
from tests.jobs.samples import wait_for
from tests.support.data import read_image
from tests.support.servers import Route, http_server, static_bytes

SHOP_A = {"X-API-Key": "shop-a-key-0123456789"}
SHOP_B = {"X-API-Key": "shop-b-key-0123456789"}
KEYS = ["shop-a:shop-a-key-0123456789", "shop-b:shop-b-key-0123456789"]
PHOTO = read_image("rocket.jpg")


class FetchLog:
    """A slow image route that remembers the order in which images were asked for."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.paths: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.paths.append(handler.path)
        time.sleep(self.delay)
        static_bytes(PHOTO)(handler)


async def test_a_small_job_overtakes_a_big_one_of_another_tenant(make_client: Callable[..., Any]) -> None:
    client = await make_client(api_keys=KEYS, max_images_in_flight=2, serve_local_workers=2)
    log = FetchLog(delay=0.3)
    route: Route = log
    routes = {f"/a/{n}.jpg": route for n in range(16)} | {"/b.jpg": route}
    with http_server(routes) as base:
        # Shop A sends its catalogue as two jobs: no job slot or queue position is left for anyone else.
        for part in (0, 1):
            big = {"job_id": f"catalogue-{part}", "type": "batch_optimization", "config": {"maxSize": 64}}
            big["source_image_urls"] = [f"{base}/a/{n}.jpg" for n in range(part * 8, part * 8 + 8)]
            assert (await client.post("/api/v1/ai/job", json=big, headers=SHOP_A)).status_code == 202
        store = services_of(client).store
        await wait_for(store, job_key("shop-a", "catalogue-0"), lambda job: job.processed >= 2)
        fetched_before = len(log.paths)
        small = {"job_id": "one", "type": "batch_optimization", "config": {"maxSize": 64}}
        small["source_image_urls"] = [f"{base}/b.jpg"]
        assert (await client.post("/api/v1/ai/job", json=small, headers=SHOP_B)).status_code == 202
        assert (await wait_final(client, "one", headers=SHOP_B))["status"] == "completed"
        # Shop B's image was asked for after at most the images shop A already had queued or running.
        assert log.paths.index("/b.jpg") - fetched_before <= 3, log.paths
        second = (await client.get("/api/v1/ai/job/catalogue-1/status", headers=SHOP_A)).json()
        assert second["processed"] < 8, second
        for part in (0, 1):
            assert (await wait_final(client, f"catalogue-{part}", headers=SHOP_A))["status"] == "completed"


@pytest.mark.engines("redis")
async def test_a_tenant_that_arrives_starts_while_every_slot_is_held(make_client: Callable[..., Any]) -> None:
    # One worker slot, held by shop A's image (its download waits for the test): shop B's image still runs
    # at once, in the slot each worker keeps for arrivals, instead of waiting for A's image to end.
    client = await make_client(api_keys=KEYS, serve_local_workers=1)
    release = threading.Event()

    def held(handler: BaseHTTPRequestHandler) -> None:
        release.wait(60)
        static_bytes(PHOTO)(handler)

    routes: dict[str, Route] = {"/a/0.jpg": held, "/a/1.jpg": held, "/b.jpg": static_bytes(PHOTO)}
    try:
        with http_server(routes) as base:
            big = {"job_id": "catalogue", "type": "batch_optimization", "config": {"maxSize": 64}}
            big["source_image_urls"] = [f"{base}/a/0.jpg", f"{base}/a/1.jpg"]
            assert (await client.post("/api/v1/ai/job", json=big, headers=SHOP_A)).status_code == 202
            store = services_of(client).store
            await wait_for(store, job_key("shop-a", "catalogue"), lambda job: job.status == "processing")
            small = {"job_id": "one", "type": "batch_optimization", "config": {"maxSize": 64}}
            small["source_image_urls"] = [f"{base}/b.jpg"]
            assert (await client.post("/api/v1/ai/job", json=small, headers=SHOP_B)).status_code == 202
            assert (await wait_final(client, "one", timeout=30, headers=SHOP_B))["status"] == "completed"
            catalogue = (await client.get("/api/v1/ai/job/catalogue/status", headers=SHOP_A)).json()
            assert catalogue["processed"] == 0, catalogue
            release.set()
            assert (await wait_final(client, "catalogue", headers=SHOP_A))["status"] == "completed"
    finally:
        release.set()
