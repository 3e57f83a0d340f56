"""Result URLs of a real service without `PUBLIC_BASE_URL`: they follow the address the service answers on.

The service runs as `./scripts/serve` runs it (`capability-service serve --port N`), on a free port that
is never the default 8000, in memory mode and in Redis mode (an API process and a worker process on a
real redis-server). Every result is fetched through the URL the job gives, by a client with no base URL
of its own, so a relative or wrongly addressed URL fails.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from tests.api.helpers import parse_sse
from tests.support.data import AUTH, read_image
from tests.support.processes import ServiceProcess, launch_serve, launch_worker
from tests.support.servers import http_server, static_bytes

pytestmark = pytest.mark.e2e

# A database of its own on the shared test server.
REDIS_DB = 2
JPEG_MAGIC = b"\xff\xd8\xff"


@pytest.fixture
def images() -> Iterator[str]:
    routes = {"/a.jpg": static_bytes(read_image("rocket.jpg")), "/b.jpg": static_bytes(read_image("grace_hopper.jpg"))}
    with http_server(routes) as base:
        yield base


def run_job(api: str, job_id: str, sources: list[str]) -> dict[str, Any]:
    """Submit a job to the API at `api`, follow its stream to the end, and return its result."""
    payload = {
        "job_id": job_id,
        "type": "batch_optimization",
        "config": {"format": "jpg", "maxSize": 320},
        "source_image_urls": sources,
    }
    with httpx.Client(base_url=api, timeout=60) as client:
        assert client.post("/api/v1/ai/job", json=payload, headers=AUTH).status_code == 202
        with client.stream("GET", f"/api/v1/ai/job/{job_id}/stream", headers=AUTH) as stream:
            events = parse_sse("".join(stream.iter_text()))
        assert events[-1][0] == "completed", events
        result: dict[str, Any] = client.get(f"/api/v1/ai/job/{job_id}", headers=AUTH).json()
    return result


def fetch_every_result(api: str, result: dict[str, Any]) -> None:
    """Each result URL is absolute, on the address the API was asked at, and answers the image."""
    urls = result["result_image_urls"]
    assert len(urls) == result["total"] and all(urls), result
    for url in urls:
        assert url.startswith(f"{api}/files/"), (api, url)
        # A client of its own, without a base URL: the URL alone must lead to the image.
        answer = httpx.get(url, timeout=30)
        assert answer.status_code == 200, (url, answer.text)
        assert answer.headers["content-type"] == "image/jpeg"
        assert answer.content[:3] == JPEG_MAGIC


def test_memory_mode_results_are_fetched_through_their_urls(tmp_path: Path, images: str) -> None:
    service = launch_serve(tmp_path, log_level="info").wait_ready()
    try:
        assert not service.url.endswith(":8000")
        result = run_job(service.url, "urls-memory", [f"{images}/a.jpg", f"{images}/b.jpg"])
        fetch_every_result(service.url, result)
    finally:
        service.stop(signal.SIGKILL)


def test_urls_follow_the_host_and_the_forwarded_scheme_of_each_request(tmp_path: Path, images: str) -> None:
    service = launch_serve(tmp_path).wait_ready()
    try:
        run_job(service.url, "urls-host", [f"{images}/a.jpg"])
        port = service.url.rsplit(":", 1)[1]
        # The same job asked for by name: the URL is on that name, and it answers there.
        by_name = f"http://localhost:{port}"
        result = httpx.get(f"{by_name}/api/v1/ai/job/urls-host", headers=AUTH, timeout=30).json()
        fetch_every_result(by_name, result)
        # Through a proxy on loopback (trusted by default) that says the caller used https.
        proxied = httpx.get(
            f"{service.url}/api/v1/ai/job/urls-host", headers={**AUTH, "X-Forwarded-Proto": "https"}, timeout=30
        ).json()
        assert proxied["result_image_urls"][0].startswith(f"https://127.0.0.1:{port}/files/")
    finally:
        service.stop(signal.SIGKILL)


def test_redis_mode_results_written_by_a_worker_are_fetched_through_their_urls(
    tmp_path: Path, redis_url: str, images: str
) -> None:
    url = redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    with Redis.from_url(url) as client:
        client.flushdb()
    settings = {"JOB_BACKEND": "redis", "REDIS_URL": url, "CPU_WORKERS": "1"}
    processes: list[ServiceProcess] = []
    try:
        api = launch_serve(tmp_path, settings, name="api", log_level="info")
        processes.append(api)
        # The worker, not the API, stores the results and writes their URLs into the job.
        processes.append(launch_worker(tmp_path, settings, name="worker").wait_ready())
        api.wait_ready(timeout=60)
        assert not api.url.endswith(":8000")
        result = run_job(api.url, "urls-redis", [f"{images}/a.jpg", f"{images}/b.jpg"])
        fetch_every_result(api.url, result)
    finally:
        for process in processes:
            process.stop(signal.SIGKILL)
