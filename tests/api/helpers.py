"""Small helpers for talking to the job API in tests."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import httpx

from capability_service.jobs.models import job_key
from capability_service.services import Services
from tests.jobs.samples import wait_for
from tests.support.data import AUTH, read_image


def data_uri(name: str, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(read_image(name)).decode()}"


async def submit(client: httpx.AsyncClient, **payload: Any) -> httpx.Response:
    return await client.post("/api/v1/ai/job", json=payload, headers=AUTH)


async def wait_final(
    client: httpx.AsyncClient, job_id: str, timeout: float = 60.0, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Follow the job's event stream until its final event; returns the result body."""
    headers = headers or AUTH
    path = f"/api/v1/ai/job/{job_id}/stream"
    async with asyncio.timeout(timeout), client.stream("GET", path, headers=headers) as stream:
        assert stream.status_code == 200, f"stream of {job_id}: {stream.status_code}"
        async for line in stream.aiter_lines():
            if line.startswith("event:") and line[6:].strip() in ("completed", "failed", "cancelled", "error"):
                break
    result: dict[str, Any] = (await client.get(f"/api/v1/ai/job/{job_id}", headers=headers)).json()
    return result


def services_of(client: httpx.AsyncClient) -> Services:
    """The services of the app an in-process test client talks to."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    services: Services = transport.app.state.services  # type: ignore[attr-defined]
    return services


async def wait_status(
    client: httpx.AsyncClient, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 20.0
) -> dict[str, Any]:
    """Wait on the job's own change events until a status for which `until` holds; returns that status.

    In-process clients get a stream's body only once it has ended, so this follows the store instead.
    """
    store = services_of(client).store
    job = await wait_for(store, job_key("default", job_id), lambda job: until(job.status_view()), timeout)
    return job.status_view()


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """`(event, data)` pairs of a Server-Sent Events body; comments (heartbeats) are skipped."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events
