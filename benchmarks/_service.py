"""Start a real `capability-service serve` process for a benchmark and talk to its job API."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

API_KEY = "bench-key-0123456789"
AUTH = {"X-API-Key": API_KEY}


@dataclass(frozen=True)
class Service:
    url: str
    pid: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_service(workdir: Path, overrides: dict[str, str] | None = None) -> Iterator[Service]:
    """A service on a free loopback port with results under `workdir`; stopped on exit."""
    port = free_port()
    env = {
        **os.environ,
        "API_KEYS": API_KEY,
        "LOCAL_STORAGE_DIR": str(workdir / "results"),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "SOURCE_ALLOW_PRIVATE_NETWORKS": "true",
        "PLUGINS_CONFIG": str(workdir / "no-plugins.yaml"),
        "LOG_LEVEL": "WARNING",
        **(overrides or {}),
    }
    command = [sys.executable, "-m", "capability_service.cli", "serve", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, env=env, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.1)
        yield Service(url=url, pid=process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_job(client: httpx.Client, payload: dict[str, Any], timeout: float = 600) -> tuple[dict[str, Any], float]:
    """Submit a job, wait for its final state; returns the result and the wall time in seconds."""
    started = time.perf_counter()
    response = client.post("/api/v1/ai/job", json=payload, headers=AUTH)
    response.raise_for_status()
    job_id = response.json()["data"]["job_id"]
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/api/v1/ai/job/{job_id}/status", headers=AUTH).json()
        if status["status"] in ("completed", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} did not finish in {timeout} s")
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    return client.get(f"/api/v1/ai/job/{job_id}", headers=AUTH).json(), elapsed


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of a live process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
