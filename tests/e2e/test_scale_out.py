"""Scale-out over real processes: API instances and workers sharing one redis-server.

Every process is a real `capability-service serve` or `capability-service worker` on loopback; sources
come from a real HTTP server; a worker is killed with SIGKILL mid-job and another stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from saq.job import Status as TaskStatus

from capability_service.jobs import keys
from capability_service.jobs.distributed import ImageQueue
from capability_service.jobs.models import job_key
from tests.support.data import AUTH, read_image
from tests.support.processes import ServiceProcess, launch_serve, launch_worker
from tests.support.servers import free_port, photo_server, wait_for_port

pytestmark = pytest.mark.e2e

# A database of its own on the shared test server.
DB = 1
PHOTO = read_image("rocket.jpg")
FINAL = {"completed", "failed", "cancelled"}


@dataclass
class Cluster:
    tmp: Path
    redis_url: str
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    @property
    def results(self) -> Path:
        return self.tmp / "results"

    def settings(self) -> dict[str, str]:
        return {
            "JOB_BACKEND": "redis",
            "REDIS_URL": self.redis_url,
            "JOB_HEARTBEAT_SECONDS": "2",
            "JOB_MAX_ATTEMPTS": "3",
            "SHUTDOWN_GRACE_SECONDS": "15",
            "CPU_WORKERS": "1",
        }

    def api(self, name: str) -> str:
        process = launch_serve(self.tmp, self.settings(), name=name)
        self.processes[name] = process
        return process.url

    def worker(self, name: str, concurrency: int = 2) -> ServiceProcess:
        process = launch_worker(self.tmp, self.settings(), name=name, concurrency=concurrency)
        self.processes[name] = process
        return process

    def wait_ready(self) -> None:
        """Every API answers and every worker is connected (they boot side by side)."""
        for process in self.processes.values():
            process.wait_ready(timeout=60)

    def logs(self) -> str:
        return "\n".join(f"----- {name}.log\n{process.tail()}" for name, process in self.processes.items())

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop(signal.SIGKILL)


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str) -> Iterator[Cluster]:
    state = Cluster(tmp=tmp_path, redis_url=redis_url.rsplit("/", 1)[0] + f"/{DB}")
    try:
        yield state
    finally:
        state.stop()
        # pytest shows this only when the test failed.
        print(state.logs())


@pytest.fixture
async def queue(cluster: Cluster) -> AsyncIterator[ImageQueue]:
    client = Redis.from_url(cluster.redis_url)
    await client.flushdb()
    task_queue = ImageQueue(client, name=keys.QUEUE_NAME)
    await task_queue.connect()
    yield task_queue
    await task_queue.disconnect()


@pytest.fixture
def images() -> Iterator[str]:
    with photo_server(PHOTO, {"/photo.jpg": 0, "/slow.jpg": 0.8, "/hold.jpg": 3}) as base:
        yield base


async def follow(client: httpx.AsyncClient, base: str, job_id: str) -> list[tuple[str, int, dict[str, Any]]]:
    """(event, id, data) of a job's SSE stream, read to its end."""
    events: list[tuple[str, int, dict[str, Any]]] = []
    name, event_id = "message", -1
    async with client.stream("GET", f"{base}/api/v1/ai/job/{job_id}/stream", headers=AUTH) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("id:"):
                event_id = int(line[3:].strip())
            elif line.startswith("data:"):
                events.append((name, event_id, json.loads(line[5:].strip())))
    return events


async def task_states(queue: ImageQueue, job_id: str, total: int) -> list[Any]:
    return list(await queue.jobs([keys.task_key(job_key("default", job_id), index) for index in range(total)]))


async def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def is_webp(path: Path) -> bool:
    data = path.read_bytes()[:12]
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def sources_of(number: int, images: str) -> list[str]:
    photo, slow, missing = f"{images}/photo.jpg", f"{images}/slow.jpg", f"{images}/missing.jpg"
    if number == 4:
        return [missing]
    if number % 10 == 9:
        return [f"{images}/hold.jpg", photo]
    return [
        [photo, slow],
        [photo, missing, photo],
        [slow],
        [photo, photo, slow],
        [slow, photo],
    ][number % 5]


async def test_fifty_jobs_over_two_apis_and_two_workers_survive_a_killed_worker(
    cluster: Cluster, queue: ImageQueue, images: str
) -> None:
    api_a, api_b = cluster.api("api-a"), cluster.api("api-b")
    cluster.worker("worker-1")
    cluster.worker("worker-2")
    cluster.wait_ready()
    apis = [api_a, api_b]
    config = {"format": "webp", "maxSize": 320}

    async with httpx.AsyncClient(timeout=30) as client:

        async def workers_by_pid() -> dict[int, str]:
            info = await queue.info()
            workers: dict[str, Any] = info["workers"] or {}
            return {int(meta["metadata"]["pid"]): wid for wid, meta in workers.items()}

        pids = await eventually(
            lambda: _when(workers_by_pid(), lambda found: len(found) == 2), 60, "both workers to register"
        )

        # The job to cancel goes first, through API A; its stream is followed on API B.
        cancel_id = "scale-cancel"
        hold = [f"{images}/hold.jpg", f"{images}/hold.jpg"]
        payload = {"job_id": cancel_id, "type": "batch_optimization", "config": config, "source_image_urls": hold}
        assert (await client.post(f"{api_a}/api/v1/ai/job", json=payload, headers=AUTH)).status_code == 202
        streams = {cancel_id: asyncio.create_task(follow(client, api_b, cancel_id))}

        submitted: dict[str, tuple[str, list[str]]] = {cancel_id: (api_a, hold)}
        for number in range(49):
            job_id = f"scale-{number:02d}"
            api = apis[number % 2]
            sources = sources_of(number, images)
            body = {"job_id": job_id, "type": "batch_optimization", "config": config, "source_image_urls": sources}
            response = await client.post(f"{api}/api/v1/ai/job", json=body, headers=AUTH)
            assert response.status_code == 202, response.text
            assert response.json()["data"]["total"] == len(sources)
            submitted[job_id] = (api, sources)
            if number < 8:
                # Progress of a job is seen on the API instance that did not take it.
                streams[job_id] = asyncio.create_task(follow(client, apis[(number + 1) % 2], job_id))

        # Cancel through the other API once the job's images are running: the workers drop them at once.
        async def cancel_job_running() -> bool:
            states = await task_states(queue, cancel_id, 2)
            return any(task is not None and task.status is TaskStatus.ACTIVE for task in states)

        await eventually(cancel_job_running, 30, "the job to cancel to start")
        response = await client.post(f"{api_b}/api/v1/ai/job/{cancel_id}/cancel", headers=AUTH)
        assert response.status_code == 200
        cancelled_at = time.monotonic()

        async def cancel_reached_workers() -> bool:
            states = await task_states(queue, cancel_id, 2)
            return all(
                task is not None and task.status not in (TaskStatus.ACTIVE, TaskStatus.QUEUED) for task in states
            )

        await eventually(cancel_reached_workers, 5, "the cancelled images to stop")
        assert time.monotonic() - cancelled_at < 1.5

        # SIGKILL whichever worker first holds a long image (which cannot finish between the look and the kill).
        async def worker_holding_long_image() -> tuple[str, list[str]] | None:
            held: dict[str, list[str]] = {}
            for job_id, (_api, sources) in submitted.items():
                if job_id == cancel_id:
                    continue
                for index, task in enumerate(await task_states(queue, job_id, len(sources))):
                    if task is not None and task.status is TaskStatus.ACTIVE and sources[index].endswith("hold.jpg"):
                        held.setdefault(task.worker_id, []).append(keys.task_key(job_key("default", job_id), index))
            return next(iter(held.items()), None)

        victim_id, held = await eventually(worker_holding_long_image, 30, "a worker to hold a long image")
        victim_pid = next(pid for pid, worker_id in pids.items() if worker_id == victim_id)
        victim = next(name for name, process in cluster.processes.items() if process.pid == victim_pid)
        survivor = cluster.processes["worker-2" if victim == "worker-1" else "worker-1"]
        os.kill(victim_pid, signal.SIGKILL)
        cluster.processes[victim].wait(timeout=10)

        # Every job ends, with every image accounted for.
        async def all_final() -> bool:
            for job_id, (api, _sources) in submitted.items():
                status = (await client.get(f"{api}/api/v1/ai/job/{job_id}/status", headers=AUTH)).json()
                if status["status"] not in FINAL:
                    return False
            return True

        await eventually(all_final, 90, "every job to finish")

        for job_id, (api, sources) in submitted.items():
            other = apis[1 - apis.index(api)]
            result = (await client.get(f"{other}/api/v1/ai/job/{job_id}", headers=AUTH)).json()
            assert result["total"] == len(sources)
            statuses = [image["status"] for image in result["metadata"]["images"]]
            assert len(statuses) == len(sources)
            if job_id == cancel_id:
                assert result["status"] == "cancelled"
                assert statuses == ["cancelled", "cancelled"]
                continue
            for index, (source, status, url) in enumerate(
                zip(sources, statuses, result["result_image_urls"], strict=True)
            ):
                if source.endswith("missing.jpg"):
                    assert status == "failed", (job_id, index, result)
                    assert url is None
                else:
                    assert status == "succeeded", (job_id, index, result)
                    assert url is not None
                    key = url.split("/files/", 1)[1]
                    assert is_webp(cluster.results / key)
            expected = "failed" if all(source.endswith("missing.jpg") for source in sources) else "completed"
            assert result["status"] == expected, result
            assert result["processed"] == len(sources)
            errors = {error["index"]: error["error"] for error in result["errors"]}
            assert set(errors) == {i for i, source in enumerate(sources) if source.endswith("missing.jpg")}
            assert all("HTTP 404" in error for error in errors.values())

        # The killed worker's images were taken over by the other worker, not lost nor failed.
        for task_key in held:
            task = await queue.job(task_key)
            assert task is not None
            assert task.status is TaskStatus.COMPLETE
            assert task.attempts >= 2
            assert task.worker_id != victim_id

        for job_id, stream in streams.items():
            events = await asyncio.wait_for(stream, timeout=30)
            ids = [event_id for _name, event_id, _data in events]
            assert ids == sorted(ids) and len(set(ids)) == len(ids), (job_id, events)
            name, _id, data = events[-1]
            api, sources = submitted[job_id]
            assert name == data["status"] and name in FINAL, (job_id, events)
            assert all(event == "progress" for event, _i, _d in events[:-1])
            assert data["total"] == len(sources)
        assert streams[cancel_id].result()[-1][0] == "cancelled"

        # SIGTERM lets the remaining worker finish the image it holds before it exits.
        body = {"job_id": "scale-term", "type": "batch_optimization", "config": config}
        body["source_image_urls"] = [f"{images}/hold.jpg"]
        assert (await client.post(f"{api_a}/api/v1/ai/job", json=body, headers=AUTH)).status_code == 202

        async def term_job_active() -> bool:
            (task,) = await task_states(queue, "scale-term", 1)
            return task is not None and task.status is TaskStatus.ACTIVE

        await eventually(term_job_active, 30, "the last job to start")
        survivor.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(survivor.wait, 20) == 0
        result = (await client.get(f"{api_b}/api/v1/ai/job/scale-term", headers=AUTH)).json()
        assert result["status"] == "completed", result
        (task,) = await task_states(queue, "scale-term", 1)
        assert task is not None and task.attempts == 1


async def _when(value: Any, predicate: Callable[[Any], bool]) -> Any:
    result = await value
    return result if predicate(result) else None


@contextmanager
def restartable_redis(port: int) -> Iterator[Callable[[bool], None]]:
    """A redis-server on a fixed port that the test can stop and start again."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed"
    workdir = tempfile.mkdtemp(prefix="redis-outage-")
    current: list[subprocess.Popen[bytes]] = []

    def switch(up: bool) -> None:
        if up:
            command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            current.append(
                subprocess.Popen([*command, "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
            wait_for_port(port)
        else:
            process = current.pop()
            process.terminate()
            process.wait(timeout=10)

    try:
        switch(True)
        yield switch
    finally:
        for process in current:
            process.terminate()
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


async def test_redis_outage_gives_503_and_work_resumes_when_it_returns(tmp_path: Path, images: str) -> None:
    port = free_port()
    with restartable_redis(port) as redis_switch:
        cluster = Cluster(tmp=tmp_path, redis_url=f"redis://127.0.0.1:{port}/0")
        try:
            api = cluster.api("api")
            worker = cluster.worker("worker", concurrency=1)
            cluster.wait_ready()
            body = {"type": "batch_optimization", "config": {"format": "webp"}}
            body["source_image_urls"] = [f"{images}/photo.jpg"]
            async with httpx.AsyncClient(base_url=api, timeout=30) as client:

                async def run_one() -> dict[str, Any]:
                    response = await client.post("/api/v1/ai/job", json=body, headers=AUTH)
                    assert response.status_code == 202, response.text
                    job_id = response.json()["data"]["job_id"]

                    async def finished() -> dict[str, Any] | None:
                        status = (await client.get(f"/api/v1/ai/job/{job_id}/status", headers=AUTH)).json()
                        return status if status["status"] in FINAL else None

                    result: dict[str, Any] = await eventually(finished, 30, "the job to finish")
                    return result

                assert (await run_one())["status"] == "completed"

                redis_switch(False)
                response = await client.post("/api/v1/ai/job", json=body, headers=AUTH)
                assert response.status_code == 503
                assert response.headers["Retry-After"]
                # The caller learns it is temporary; where Redis lives and what failed are for the log.
                detail = response.json()["detail"]
                assert "unavailable" in detail and str(port) not in detail and "127.0.0.1" not in detail
                health = (await client.get("/api/v1/health", headers=AUTH)).json()
                assert health["status"] == "degraded"
                assert health["jobs"]["healthy"] is False
                # The worker meets the outage too, and keeps trying.
                await asyncio.to_thread(worker.wait_for_output, f"lost Redis at 127.0.0.1:{port}/0", 30)

                redis_switch(True)
                # Both the API and the worker reconnect by themselves.
                assert (await run_one())["status"] == "completed"
                assert (await client.get("/api/v1/health", headers=AUTH)).json()["jobs"]["healthy"] is True
            assert worker.returncode is None
            # The outage is a line or two in the worker's log, not a traceback per attempt.
            text = worker.output()
            assert "Traceback" not in text and "never retrieved" not in text, text[-3000:]
            assert text.count("lost Redis at") <= 2  # the task queue and the job events, once each
        finally:
            cluster.stop()
            print(cluster.logs())
