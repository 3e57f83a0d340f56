"""Open-loop request streams against a running service, and the percentiles of their latencies.

Requests go out on a fixed schedule, each in its own task, so a slow answer never delays the next
request and hides itself (no coordinated omission). How late the client itself sent a request is
kept apart (`client_lag`), so a busy load generator shows up as such instead of as service latency.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyvips

FINAL = ("completed", "failed", "cancelled")


def percentiles(values: list[float]) -> dict[str, float]:
    """n, p50, p95, p99 (nearest rank) and max of `values`; NaN when there are none."""
    if not values:
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    ordered = sorted(values)

    def at(q: float) -> float:
        # Nearest rank: the smallest value with at least q of the samples at or below it.
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]

    return {"n": len(ordered), "p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": ordered[-1]}


@dataclass
class Stream:
    """Latencies (s) of one request stream, how late the client sent each request, and any errors."""

    latencies: list[float] = field(default_factory=list)
    client_lag: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def stats(self) -> dict[str, float]:
        return percentiles(self.latencies)

    def failed(self, exc: Exception) -> None:
        self.errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1


async def open_loop(
    rate: float, keep_going: Callable[[], bool], request: Callable[[float], Coroutine[Any, Any, None]]
) -> None:
    """Call `request(client_lag)` `rate` times a second on a fixed schedule while `keep_going()`."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / rate
    start = loop.time()
    tasks: set[asyncio.Task[None]] = set()
    sent = 0
    while keep_going():
        target = start + sent * interval
        delay = target - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
            if not keep_going():
                break
        task = asyncio.create_task(request(max(0.0, loop.time() - target)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
    if tasks:
        await asyncio.gather(*tasks)


def small_photo_uri(photo: Path) -> str:
    """`photo` shrunk to 160 px, as a data: URI: a job of it costs the service almost no image work."""
    data = bytes(pyvips.Image.thumbnail(str(photo), 160).jpegsave_buffer(Q=80))
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


@dataclass
class LoadClient:
    """The job API as the load generator uses it; remembers the small jobs it submitted."""

    http: httpx.AsyncClient
    small_uri: str
    small_jobs: list[str] = field(default_factory=list)

    async def submit(self, job_type: str, config: dict[str, Any], sources: list[str]) -> tuple[float, str]:
        """Submit a job; (seconds the answer took, job id)."""
        job_id = f"bench-{uuid.uuid4().hex[:12]}"
        payload = {
            "job_id": job_id,
            "user_id": "bench",
            "type": job_type,
            "config": config,
            "source_image_urls": sources,
        }
        started = time.perf_counter()
        response = await self.http.post("/api/v1/ai/job", json=payload)
        elapsed = time.perf_counter() - started
        if response.status_code != 202:
            raise RuntimeError(f"submit answered {response.status_code}: {response.text[:300]}")
        return elapsed, job_id

    async def status(self, job_id: str) -> tuple[float, dict[str, Any]]:
        """A job's status; (seconds the answer took, status body)."""
        started = time.perf_counter()
        response = await self.http.get(f"/api/v1/ai/job/{job_id}/status")
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"status answered {response.status_code}: {response.text[:300]}")
        body: dict[str, Any] = response.json()
        return elapsed, body

    async def wait_final(self, job_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, body = await self.status(job_id)
            if body["status"] in FINAL:
                return body
            await asyncio.sleep(0.05)
        raise RuntimeError(f"job {job_id} did not finish within {timeout:.0f} s")

    async def drain(self, timeout: float = 120) -> None:
        """Wait for the small jobs submitted so far, so the next phase starts on a quiet service."""
        for job_id in self.small_jobs:
            await self.wait_final(job_id, timeout)
        self.small_jobs.clear()

    async def streams(
        self, job_id: str, rate: float, submit_rate: float, keep_going: Callable[[dict[str, Any]], bool]
    ) -> tuple[Stream, Stream]:
        """`rate`/s status requests for `job_id` and `submit_rate`/s one-small-photo jobs, open-loop.

        Both run until `keep_going(latest status of job_id)` is false.
        """
        status_stream, submit_stream = Stream(), Stream()
        latest: dict[str, Any] = {"status": "pending"}

        async def status_once(lag: float) -> None:
            status_stream.client_lag.append(lag)
            try:
                elapsed, body = await self.status(job_id)
            except (httpx.HTTPError, RuntimeError) as exc:
                status_stream.failed(exc)
                return
            status_stream.latencies.append(elapsed)
            # Answers can arrive out of order: never step back from a final state or to fewer images.
            if latest["status"] not in FINAL and body.get("processed", 0) >= latest.get("processed", 0):
                latest.update(body)

        async def submit_once(lag: float) -> None:
            submit_stream.client_lag.append(lag)
            try:
                elapsed, small_id = await self.submit(
                    "batch_optimization", {"format": "webp", "maxSize": 128}, [self.small_uri]
                )
            except (httpx.HTTPError, RuntimeError) as exc:
                submit_stream.failed(exc)
                return
            submit_stream.latencies.append(elapsed)
            self.small_jobs.append(small_id)

        await asyncio.gather(
            open_loop(rate, lambda: keep_going(latest), status_once),
            open_loop(submit_rate, lambda: keep_going(latest), submit_once),
        )
        return status_stream, submit_stream
