"""Real `capability-service` processes for a benchmark, and its job API.

The processes are started by `tests.support.processes`, the helper the e2e tests use too: a free loopback
port, the service's settings from this environment left out (so "defaults" means the shipped defaults;
`overrides` name the rest), ready on a real signal, output in `<workdir>/<name>.log`, stopped with SIGTERM
and killed with their pool processes if they linger.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from tests.support.data import API_KEY, AUTH
from tests.support.processes import ApiProcess, WorkerProcess, launch_serve, launch_worker

__all__ = ["API_KEY", "AUTH", "FINAL", "run_job", "running_service", "running_workers"]

FINAL = ("completed", "failed", "cancelled")


@contextmanager
def running_service(
    workdir: Path, overrides: Mapping[str, str] | None = None, *, name: str = "serve", startup_timeout: float = 60
) -> Iterator[ApiProcess]:
    """`capability-service serve` with results under `workdir`, answering when yielded; stopped on exit."""
    with launch_serve(workdir, overrides, name=name).wait_ready(startup_timeout) as service:
        yield service


@contextmanager
def running_workers(
    workdir: Path, count: int, overrides: Mapping[str, str], *, concurrency: int = 1
) -> Iterator[list[WorkerProcess]]:
    """`count` `capability-service worker` processes (Redis job mode: `overrides` name REDIS_URL), connected.

    They boot side by side; all are connected to Redis when yielded, and stopped on exit.
    """
    with ExitStack() as stack:
        workers = [
            stack.enter_context(launch_worker(workdir, overrides, name=f"worker-{number}", concurrency=concurrency))
            for number in range(1, count + 1)
        ]
        for worker in workers:
            worker.wait_ready()
        yield workers


def run_job(client: httpx.Client, payload: dict[str, Any], timeout: float = 600) -> tuple[dict[str, Any], float]:
    """Submit a job, wait for its final state; returns the result and the wall time in seconds.

    A job still running after `timeout` seconds is cancelled and `TimeoutError` raised.
    """
    started = time.perf_counter()
    response = client.post("/api/v1/ai/job", json=payload, headers=AUTH)
    response.raise_for_status()
    job_id = response.json()["data"]["job_id"]
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/api/v1/ai/job/{job_id}/status", headers=AUTH).json()
        if status["status"] in FINAL:
            break
        if time.monotonic() > deadline:
            client.post(f"/api/v1/ai/job/{job_id}/cancel", headers=AUTH)
            raise TimeoutError(f"job {job_id} did not finish in {timeout:.0f} s")
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    return client.get(f"/api/v1/ai/job/{job_id}", headers=AUTH).json(), elapsed
