"""Both CPU executors run real image work and give the same result."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from capability_service.imaging.optimize import optimize
from capability_service.imaging.types import OptimizeOptions
from capability_service.jobs.cpu import CpuExecutor
from tests.support.data import read_image


@pytest.mark.parametrize("kind", ["thread", "process"])
async def test_executor_runs_image_work_off_the_event_loop(kind: str) -> None:
    executor = CpuExecutor(kind, 2)  # type: ignore[arg-type]
    try:
        options = OptimizeOptions(format="webp", quality="standard", max_size=200)
        result = await executor.run(optimize, read_image("rocket.jpg"), options)
        direct = optimize(read_image("rocket.jpg"), options)
        assert (result.width, result.height) == (direct.width, direct.height) == (200, 133)
        assert result.data == direct.data
        ident = await executor.run(threading.get_ident)
        assert ident != threading.get_ident()
    finally:
        executor.shutdown()


async def test_process_executor_runs_a_whole_job(make_client: object) -> None:
    from tests.api.helpers import data_uri, submit, wait_final

    client = await make_client(cpu_executor="process")  # type: ignore[operator]
    await submit(client, job_id="p", type="image_enhancement", source_image_urls=[data_uri("rocket.jpg")])
    result = await wait_final(client, "p", timeout=60)
    assert result["status"] == "completed", result["errors"]


def _own_niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread niceness is a Linux feature")
@pytest.mark.parametrize("kind", ["thread", "process"])
async def test_image_work_runs_at_lower_priority_than_the_event_loop(kind: str) -> None:
    base = _own_niceness()
    executor = CpuExecutor(kind, 1, nice=5)  # type: ignore[arg-type]
    try:
        assert await executor.run(_own_niceness) == min(19, base + 5)
        # The event loop's own thread keeps its priority.
        assert _own_niceness() == base
    finally:
        executor.shutdown()


async def test_closing_the_process_pool_stops_its_workers() -> None:
    executor = CpuExecutor("process", 2)
    await executor.run(os.getpid)
    workers = [process.pid for process in executor._pool._processes.values()]  # type: ignore[attr-defined]
    assert workers
    await executor.close()
    for pid in workers:
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text().lower()
