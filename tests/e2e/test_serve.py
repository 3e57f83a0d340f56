"""One real `capability-service serve` process on a free port, driven over real HTTP."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import parse_sse
from tests.support.data import AUTH, read_image
from tests.support.processes import ApiProcess, launch_serve, wait_until
from tests.support.servers import http_server, static_bytes

pytestmark = pytest.mark.e2e


def status(client: httpx.Client, job_id: str) -> str:
    state: str = client.get(f"/api/v1/ai/job/{job_id}/status", headers=AUTH).json()["status"]
    return state


@contextmanager
def slow_job(base: str, job_id: str, delay: float) -> Iterator[httpx.Client]:
    """A client of the service at `base` that submitted a one-image job whose source answers after `delay` s."""
    with (
        httpx.Client(base_url=base, timeout=30) as client,
        http_server({"/slow.jpg": static_bytes(read_image("rocket.jpg"), delay=delay)}) as images,
    ):
        payload = {"job_id": job_id, "type": "batch_optimization", "source_image_urls": [f"{images}/slow.jpg"]}
        assert client.post("/api/v1/ai/job", json=payload, headers=AUTH).status_code == 202
        yield client


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., ApiProcess]]:
    """Start `capability-service serve` on a free port with extra settings, ready; stopped after the test."""
    started: list[ApiProcess] = []

    def start(**settings: str) -> ApiProcess:
        service = launch_serve(tmp_path, {"SHUTDOWN_GRACE_SECONDS": "20", **settings}, log_level="info").wait_ready()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop(signal.SIGKILL)


@pytest.fixture
def service(start_service: Callable[..., ApiProcess]) -> ApiProcess:
    return start_service()


def test_walkthrough_over_real_http(service: ApiProcess) -> None:
    base = service.url
    with (
        httpx.Client(base_url=base, timeout=30) as client,
        http_server({"/photo.jpg": static_bytes(read_image("grace_hopper.jpg"))}) as images,
    ):
        assert client.get("/api/v1/health").json()["status"] == "ok"
        payload = {
            "job_id": "walk-1",
            "user_id": "u-42",
            "type": "batch_optimization",
            "config": {"quality": "standard", "format": "jpg", "maxSize": 256},
            "source_image_urls": [f"{images}/photo.jpg", f"{images}/missing.jpg"],
        }
        started = time.monotonic()
        response = client.post("/api/v1/ai/job", json=payload, headers=AUTH)
        assert response.status_code == 202
        with client.stream("GET", "/api/v1/ai/job/walk-1/stream", headers=AUTH) as stream:
            body = "".join(stream.iter_text())
        assert time.monotonic() - started < 30
        events = parse_sse(body)
        assert events[-1][0] == "completed"
        result = client.get("/api/v1/ai/job/walk-1", headers=AUTH).json()
        assert result["status"] == "completed"
        assert "HTTP 404" in result["errors"][0]["error"]
        image = client.get(result["result_image_urls"][0])
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/jpeg"
        assert image.content[:3] == b"\xff\xd8\xff"
        assert client.post("/api/v1/ai/job/walk-1/cancel", headers=AUTH).status_code == 409


def test_sigterm_lets_the_running_job_finish(service: ApiProcess, tmp_path: Path) -> None:
    base = service.url
    with (
        httpx.Client(base_url=base, timeout=30) as client,
        http_server({"/slow.jpg": static_bytes(read_image("rocket.jpg"), delay=1.0)}) as images,
    ):
        payload = {"job_id": "term", "type": "batch_optimization", "source_image_urls": [f"{images}/slow.jpg"]}
        assert client.post("/api/v1/ai/job", json=payload, headers=AUTH).status_code == 202
        wait_until(lambda: status(client, "term") == "processing", 30, "the job to start")
        service.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal after its graceful shutdown, so the exit is by SIGTERM.
        assert service.wait(timeout=20) in (0, -signal.SIGTERM)
    service.stop()
    log = service.output()
    assert "Traceback" not in log
    # The job finished during the grace period: its result is on disk.
    assert list((tmp_path / "results").rglob("term/0.webp")), log


def test_stream_heartbeats_and_a_disconnect_leaves_nothing_behind(
    start_service: Callable[..., ApiProcess],
) -> None:
    base = start_service(SSE_HEARTBEAT_SECONDS="0.2", SHUTDOWN_GRACE_SECONDS="0").url
    with slow_job(base, "hb", delay=5.0) as client:
        lines: list[str] = []
        with client.stream("GET", "/api/v1/ai/job/hb/stream", headers=AUTH) as stream:
            for line in stream.iter_lines():
                lines.append(line)
                if sum(1 for seen in lines if seen.startswith(":")) >= 2:
                    # Checked while the stream is still being read: leaving the loop closes it.
                    health = client.get("/api/v1/health", headers=AUTH).json()
                    assert health["jobs"]["stream_subscribers"] == 1
                    break
        assert "event: progress" in lines[:3]
        assert sum(1 for seen in lines if seen.startswith(": ping")) == 2
        wait_until(
            lambda: client.get("/api/v1/health", headers=AUTH).json()["jobs"]["stream_subscribers"] == 0,
            10,
            "the closed stream's subscription to be released",
        )


def test_streams_say_so_when_the_service_shuts_down(service: ApiProcess) -> None:
    base = service.url
    with slow_job(base, "bye", delay=3.0) as client:
        lines: list[str] = []
        with client.stream("GET", "/api/v1/ai/job/bye/stream", headers=AUTH) as stream:
            for line in stream.iter_lines():
                lines.append(line)
                if line.startswith("data:") and len(lines) < 5:
                    service.send_signal(signal.SIGTERM)
        events = parse_sse("\n".join(lines) + "\n\n")
        # The job (3 s) outlives the stream: the stream's last word is why it ends.
        assert events[-1][0] == "error", events
        assert "shutting down" in events[-1][1]["detail"]
