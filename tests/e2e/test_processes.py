"""The process helper the e2e tests and benchmarks share: a failed start says why, a stuck stop is killed."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.data import AUTH, read_image
from tests.support.processes import launch_serve, wait_until
from tests.support.servers import http_server, static_bytes

pytestmark = pytest.mark.e2e


def test_a_service_that_cannot_start_fails_at_once_with_its_own_words(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError) as failure:
        launch_serve(tmp_path, {"CPU_EXECUTOR": "bogus"}).wait_ready(timeout=60)
    # The exit is noticed, not the timeout.
    assert time.monotonic() - started < 30
    assert "exited with 2" in str(failure.value)
    assert "CPU_EXECUTOR: Input should be 'thread' or 'process'" in str(failure.value)
    assert "CPU_EXECUTOR" in (tmp_path / "serve.log").read_text()


def test_the_inherited_environment_does_not_leak_service_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A developer's own setting in this environment would make the service refuse to start.
    monkeypatch.setenv("CPU_EXECUTOR", "bogus")
    with launch_serve(tmp_path).wait_ready() as service:
        assert httpx.get(f"{service.url}/api/v1/health").json()["status"] == "ok"


def test_stop_kills_a_service_that_outlives_its_timeout(tmp_path: Path) -> None:
    service = launch_serve(tmp_path, {"SHUTDOWN_GRACE_SECONDS": "120"}).wait_ready()
    try:
        routes = {"/slow.jpg": static_bytes(read_image("rocket.jpg"), delay=60)}
        with http_server(routes) as images, httpx.Client(base_url=service.url, timeout=30) as client:
            payload = {"job_id": "held", "type": "batch_optimization", "source_image_urls": [f"{images}/slow.jpg"]}
            assert client.post("/api/v1/ai/job", json=payload, headers=AUTH).status_code == 202

            def processing() -> bool:
                status: str = client.get("/api/v1/ai/job/held/status", headers=AUTH).json()["status"]
                return status == "processing"

            wait_until(processing, 30, "the job to start")
            # SIGTERM starts a graceful shutdown that waits up to 120 s for the job: too long.
            assert service.stop(timeout=1) == -signal.SIGKILL
    finally:
        service.stop(signal.SIGKILL)
