"""Download slots, end to end in both engines: one slow source host cannot stall another tenant's downloads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.api.helpers import wait_final
from tests.support.data import read_image
from tests.support.servers import Route, http_server, static_bytes

SHOP_A = {"X-API-Key": "shop-a-key-0123456789"}
SHOP_B = {"X-API-Key": "shop-b-key-0123456789"}
KEYS = ["shop-a:shop-a-key-0123456789", "shop-b:shop-b-key-0123456789"]
PHOTO = read_image("rocket.jpg")
# Most seconds a held answer waits for its release, so a failing test still lets its server threads end.
HOLD_LIMIT_SECONDS = 120.0


class HeldRoute:
    """An image route that answers only once the test releases it, counting the requests held meanwhile."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self._changed = threading.Condition()
        self.waiting = 0
        self.most_waiting = 0

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        with self._changed:
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
            self._changed.notify_all()
        try:
            self.released.wait(HOLD_LIMIT_SECONDS)
        finally:
            with self._changed:
                self.waiting -= 1
                self._changed.notify_all()
        static_bytes(PHOTO)(handler)

    def wait_for_waiting(self, count: int, timeout: float) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.waiting >= count, timeout):
                raise TimeoutError(f"{self.waiting} requests held after {timeout:.0f} s, expected {count}")


@contextmanager
def released_at_exit(route: HeldRoute) -> Iterator[HeldRoute]:
    try:
        yield route
    finally:
        route.released.set()


async def test_a_slow_host_holds_only_its_share_of_the_download_slots(make_client: Callable[..., Any]) -> None:
    # Image slots to spare in both engines, so the 8 download slots are what the jobs share.
    per_host = 4
    client = await make_client(
        api_keys=KEYS,
        max_images_in_flight=12,
        serve_local_workers=12,
        source_max_concurrency=8,
        source_max_per_host=per_host,
        source_timeout_seconds=HOLD_LIMIT_SECONDS,
    )
    slow = HeldRoute()
    slow_routes: dict[str, Route] = {f"/slow/{n}.jpg": slow for n in range(10)}
    fast_routes = {"/b.jpg": static_bytes(PHOTO)}
    with released_at_exit(slow), http_server(slow_routes) as slow_base, http_server(fast_routes) as fast:
        # The same loopback server under another name: `localhost` is the slow host, 127.0.0.1 the fast one.
        slow_host = slow_base.replace("127.0.0.1", "localhost")
        big = {"job_id": "catalogue", "type": "batch_optimization", "config": {"maxSize": 64}}
        big["source_image_urls"] = [f"{slow_host}/slow/{n}.jpg" for n in range(10)]
        assert (await client.post("/api/v1/ai/job", json=big, headers=SHOP_A)).status_code == 202
        await asyncio.to_thread(slow.wait_for_waiting, per_host, 30)

        small = {"job_id": "one", "type": "batch_optimization", "config": {"maxSize": 64}}
        small["source_image_urls"] = [f"{fast}/b.jpg"]
        assert (await client.post("/api/v1/ai/job", json=small, headers=SHOP_B)).status_code == 202
        done = await wait_final(client, "one", timeout=30, headers=SHOP_B)
        assert done["status"] == "completed", done

        # Shop A's downloads were all still held while shop B's job ran, and never more than the host's share.
        status = (await client.get("/api/v1/ai/job/catalogue/status", headers=SHOP_A)).json()
        assert status["processed"] == 0, status
        assert slow.waiting == per_host
        slow.released.set()
        finished = await wait_final(client, "catalogue", timeout=60, headers=SHOP_A)
        assert finished["status"] == "completed", finished
        assert None not in finished["result_image_urls"]
        assert slow.most_waiting == per_host
