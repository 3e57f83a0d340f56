"""Operating real processes: a `serve` and a `worker` in Redis mode sharing one metrics directory.

The worker processes the images and closes the job; the API's `GET /metrics` shows them. Both write
JSON log lines that carry the request id, tenant, job and image, and no key, token or signed URL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from tests.support.data import read_image
from tests.support.metrics import Scrape
from tests.support.servers import free_port, http_server, static_bytes, wait_for_port

pytestmark = pytest.mark.e2e

# A database of its own on the shared test server.
DB = 2
SHOP_KEY = "shop-a-key-0123456789"
SHOP = {"X-API-Key": SHOP_KEY}
METRICS_TOKEN = "metrics-token-e2e-0123456789"
SIGNATURE = "5ec12e75a9c1f3b8d0e2a4c6f8a0b2d4"
QUERY_TOKEN = "qt-9f8e7d6c5b4a"
FINAL = {"completed", "failed", "cancelled"}


@dataclass
class Host:
    """Processes of one host: they share the metrics directory, as a deployment's would."""

    tmp: Path
    redis_url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def metrics_dir(self) -> Path:
        return self.tmp / "metrics"

    def env(self, port: int = 1) -> dict[str, str]:
        return {
            **os.environ,
            "JOB_BACKEND": "redis",
            "REDIS_URL": self.redis_url,
            "API_KEYS": f"shop-a:{SHOP_KEY}",
            "LOCAL_STORAGE_DIR": str(self.tmp / "results"),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "SOURCE_ALLOW_PRIVATE_NETWORKS": "true",
            "PLUGINS_CONFIG": str(self.tmp / "none.yaml"),
            "JOB_HEARTBEAT_SECONDS": "2",
            "CPU_WORKERS": "1",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            "METRICS_TOKEN": METRICS_TOKEN,
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
        }

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.log").open("wb") as log:
            command = [sys.executable, "-m", "capability_service.cli", *args]
            process = subprocess.Popen(command, env=env, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def api(self) -> str:
        port = free_port()
        self.spawn("api", ["serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"], self.env(port))
        wait_for_port(port, timeout=60)
        return f"http://127.0.0.1:{port}"

    def log_lines(self, name: str) -> list[str]:
        return (self.tmp / f"{name}.log").read_text(errors="replace").splitlines()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            process.wait(timeout=10)


@pytest.fixture
def host(tmp_path: Path, redis_url: str) -> Iterator[Host]:
    url = redis_url.rsplit("/", 1)[0] + f"/{DB}"
    Redis.from_url(url).flushdb()
    state = Host(tmp=tmp_path, redis_url=url)
    try:
        yield state
    finally:
        state.stop()
        for name in state.processes:
            print(f"----- {name}.log\n" + "\n".join(state.log_lines(name)[-40:]))


async def scrape(client: httpx.AsyncClient, base: str) -> Scrape:
    answer = await client.get(f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert answer.status_code == 200, answer.text
    return Scrape(answer.text)


async def wait_final(client: httpx.AsyncClient, base: str, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = (await client.get(f"{base}/api/v1/ai/job/{job_id}/status", headers=SHOP)).json()
        if status["status"] in FINAL:
            result: dict[str, Any] = (await client.get(f"{base}/api/v1/ai/job/{job_id}", headers=SHOP)).json()
            return result
        assert time.monotonic() < deadline, f"job {job_id} still {status['status']} after {timeout} s"
        await asyncio.sleep(0.1)


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    """Every line parsed as one JSON object; fails on any line that is not one."""
    records = []
    for line in lines:
        record = json.loads(line)
        assert isinstance(record, dict) and {"time", "level", "message", "logger"} <= set(record), line
        records.append(record)
    return records


async def test_a_job_run_by_the_worker_shows_in_the_apis_metrics_and_logs(host: Host) -> None:
    photo = read_image("rocket.jpg")
    with http_server({"/photo.jpg": static_bytes(photo)}) as images:
        base = host.api()
        worker = host.spawn("worker", ["worker", "--concurrency", "2"], host.env())
        signed = f"{images}/missing.jpg?X-Amz-Signature={SIGNATURE}&token={QUERY_TOKEN}"
        body = {
            "job_id": "observed-1",
            "type": "batch_optimization",
            "config": {"format": "webp", "maxSize": 256},
            "source_image_urls": [f"{images}/photo.jpg", f"{images}/photo.jpg", signed],
        }
        async with httpx.AsyncClient(timeout=30) as client:
            assert (await client.get(f"{base}/metrics")).status_code == 401
            answer = await client.post(
                f"{base}/api/v1/ai/job", json=body, headers={**SHOP, "X-Request-ID": "e2e-request-1"}
            )
            assert answer.status_code == 202, answer.text
            assert answer.headers["X-Request-ID"] == "e2e-request-1"
            result = await wait_final(client, base, "observed-1")
            assert result["status"] == "completed" and result["failed"] == 1, result
            # A query string with a token in it goes through the access log.
            health = await client.get(f"{base}/api/v1/health?token={QUERY_TOKEN}")
            assert health.status_code == 200

            # No image ran in the API process (SERVE_LOCAL_WORKERS=0): these counts are the worker's.
            metrics = await scrape(client, base)
            job = {"type": "batch_optimization"}
            assert metrics.value("capsvc_jobs_total", **job, status="completed", tenant="shop-a") == 1
            assert metrics.value("capsvc_images_total", **job, outcome="succeeded", error="none") == 2
            assert metrics.value("capsvc_images_total", **job, outcome="failed", error="source") == 1
            assert metrics.value("capsvc_image_stage_seconds_count", **job, stage="fetch") == 2
            assert metrics.has("capsvc_image_stage_seconds_bucket", **job, stage="store", le="+Inf")
            assert metrics.value("capsvc_http_requests_total", method="POST", route="/api/v1/ai/job", status="202") == 1
            assert metrics.value("capsvc_workers", engine="saq") >= 0
            assert any(path.name.endswith(f"_{worker.pid}.db") for path in host.metrics_dir.iterdir())

            # A stopped worker's counts stay; its images are no longer in flight.
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0
            after = await scrape(client, base)
            assert after.value("capsvc_jobs_total", **job, status="completed", tenant="shop-a") == 1
            assert after.value("capsvc_images_total", **job) == 3
            assert after.value("capsvc_images_in_flight", **job) == 0
            assert not list(host.metrics_dir.glob(f"gauge_livesum_{worker.pid}.db"))

            # A host with workers and no API exports the same directory with `capability-service metrics`.
            port = free_port()
            host.spawn("exporter", ["metrics", "--host", "127.0.0.1", "--port", str(port)], host.env())
            wait_for_port(port, timeout=60)
            exporter = f"http://127.0.0.1:{port}"
            assert (await client.get(f"{exporter}/metrics")).status_code == 401
            exported = await scrape(client, exporter)
            assert exported.value("capsvc_images_total", **job) == 3
            assert exported.value("capsvc_jobs_total", **job, status="completed", tenant="shop-a") == 1

    api_records = json_lines(host.log_lines("api"))
    worker_records = json_lines(host.log_lines("worker"))
    submitted = [record for record in api_records if record.get("request_id") == "e2e-request-1"]
    assert submitted, "no API log line carries the request id"
    assert any("POST /api/v1/ai/job" in record["message"] and record.get("tenant") == "shop-a" for record in submitted)
    image_lines = [record for record in worker_records if record.get("job_id") == "observed-1"]
    assert {record.get("image_index") for record in image_lines} == {0, 1, 2}
    assert all(record.get("tenant") == "shop-a" for record in image_lines)
    assert any(record["message"].startswith("image failed: could not read the source") for record in image_lines)

    everything = "\n".join(host.log_lines("api") + host.log_lines("worker"))
    assert "/api/v1/health?token=[REDACTED]" in everything
    for secret in (SHOP_KEY, METRICS_TOKEN, SIGNATURE, QUERY_TOKEN):
        assert secret not in everything, f"{secret} appears in the logs"
