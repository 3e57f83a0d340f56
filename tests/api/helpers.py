"""Small helpers for talking to the job API in tests."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx

from tests.conftest import AUTH, read_image


def data_uri(name: str, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(read_image(name)).decode()}"


async def submit(client: httpx.AsyncClient, **payload: Any) -> httpx.Response:
    return await client.post("/api/v1/ai/job", json=payload, headers=AUTH)


async def wait_final(client: httpx.AsyncClient, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll until the job is final; returns the result body."""
    async with asyncio.timeout(timeout):
        while True:
            status = (await client.get(f"/api/v1/ai/job/{job_id}/status", headers=AUTH)).json()
            if status["status"] in ("completed", "failed", "cancelled"):
                result: dict[str, Any] = (await client.get(f"/api/v1/ai/job/{job_id}", headers=AUTH)).json()
                return result
            await asyncio.sleep(0.05)


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
