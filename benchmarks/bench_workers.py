"""Scale-out on Redis: CPU-bound throughput with 1 and 2 worker processes, and the latency Redis adds.

1. Throughput: `--photos` ~10 MP photos (see `_corpus.py`), one per job, `batch_optimization` (webp,
   standard, 1920), queued on a private redis-server and processed by 1, then 2 `capability-service
   worker --concurrency 1` processes. Each worker takes one image at a time and libvips gets one thread
   (`VIPS_CONCURRENCY=1`, `CPU_WORKERS=1`), so a worker is one core's worth of work and the ratio shows
   how the work spreads over processes. Workers are started and registered before the clock starts.
2. Latency: one small job at a time (a 640x427 JPEG), from `POST /ai/job` to the final SSE event, on a
   `serve` process in memory mode and on a `serve` process plus one worker in Redis mode; the median
   difference is what the Redis round trips and the hop to a worker add per job.

    python benchmarks/bench_workers.py                       # 32 photos, 30 latency jobs
    python benchmarks/bench_workers.py --photos 8 --jobs 10  # quicker
    python benchmarks/bench_workers.py --corpus DIR          # your own photos

Needs `redis-server` on PATH. Exits non-zero when a job fails or a set-up does not finish in time.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

if not __package__:  # run as a script: its own folder is on sys.path, the repository root is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.servers import redis_server

from benchmarks._corpus import REPO_ROOT, list_photos, serve_directory, write_corpus
from benchmarks._service import API_KEY, AUTH, running_service, running_workers
from capability_service.core.config import Settings
from capability_service.jobs import keys
from capability_service.jobs.distributed import RedisDispatcher
from capability_service.jobs.redis_store import RedisJobStore
from capability_service.services import build_services

SMALL_PHOTO = REPO_ROOT / "tests" / "data" / "rocket.jpg"
ROUND_TIMEOUT = 600.0


async def throughput(redis_url: str, work: Path, sources: list[str], workers: int) -> float:
    """Images per second of `workers` single-image worker processes on `sources` (one job each)."""
    settings = Settings(
        _env_file=None,
        job_backend="redis",
        redis_url=redis_url,
        api_keys=[API_KEY],
        local_storage_dir=work / "results",
        plugins_config=work / "none.yaml",
        source_allow_private_networks=True,
    )
    services = build_services(settings)
    store, dispatcher = services.store, services.dispatcher
    assert isinstance(store, RedisJobStore) and isinstance(dispatcher, RedisDispatcher)
    await store.redis.flushdb()
    await services.start()
    single_core = {"REDIS_URL": redis_url, "CPU_WORKERS": "1", "VIPS_CONCURRENCY": "1"}
    try:
        with running_workers(work, workers, single_core):
            deadline = time.monotonic() + 120
            while len((await dispatcher.queue.info())["workers"]) < workers:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{workers} workers did not register in time")
                await asyncio.sleep(0.1)
            started = time.perf_counter()
            job_keys = []
            for source in sources:
                prepared = services.jobs.prepare(
                    job_id=None,
                    tenant="default",
                    user_id=None,
                    job_type="batch_optimization",
                    config={"format": "webp", "quality": "standard", "maxSize": 1920},
                    sources=[source],
                )
                job, _created, _quota = await services.jobs.submit(prepared)
                job_keys.append(job.key)
            # One cheap call per poll (the count of live jobs), so the clock watcher takes no core from the workers.
            while await store.redis.zcard(keys.LIVE_JOBS):
                if time.perf_counter() - started > ROUND_TIMEOUT:
                    raise SystemExit(f"jobs unfinished after {ROUND_TIMEOUT:.0f} s")
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
        for key in job_keys:
            finished = await store.snapshot(key)
            if finished is None or finished.succeeded != 1:
                raise SystemExit(f"job {key} failed: {finished.images[0].error if finished else 'missing'}")
    finally:
        await services.stop()
    return len(sources) / elapsed


async def latencies(base: str, source: str, jobs: int) -> list[float]:
    """Seconds from submit to the final SSE event, one job at a time."""
    results = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        body: dict[str, Any] = {"type": "batch_optimization", "config": {"format": "webp", "maxSize": 320}}
        body["source_image_urls"] = [source]
        for number in range(jobs + 2):
            started = time.perf_counter()
            response = await client.post("/api/v1/ai/job", json=body, headers=AUTH)
            response.raise_for_status()
            job_id = response.json()["data"]["job_id"]
            last = ""
            async with client.stream("GET", f"/api/v1/ai/job/{job_id}/stream", headers=AUTH) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("event:"):
                        last = line[6:].strip()
            elapsed = time.perf_counter() - started
            if last != "completed":
                raise SystemExit(f"latency job ended {last!r}")
            if number >= 2:  # the first jobs warm up connections and libvips
                results.append(elapsed)
    return results


async def latency_of(mode: str, redis_url: str, work: Path, source: str, jobs: int) -> list[float]:
    redis = {"JOB_BACKEND": "redis", "REDIS_URL": redis_url}
    with (
        running_service(work, redis if mode == "redis" else {}, name=f"serve-{mode}") as service,
        running_workers(work, 1 if mode == "redis" else 0, redis),
    ):
        return await latencies(service.url, source, jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=32, help="photos (= jobs) per throughput round [32]")
    parser.add_argument("--jobs", type=int, default=30, help="sequential jobs per latency set-up [30]")
    parser.add_argument("--corpus", type=Path, default=None, help="a directory of photos to use instead")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        work = Path(tmp)
        corpus = args.corpus or work / "corpus"
        photos = list_photos(corpus) if args.corpus else write_corpus(corpus, args.photos)
        photos = photos[: args.photos]
        small_dir = work / "small"
        small_dir.mkdir()
        shutil.copy(SMALL_PHOTO, small_dir / "small.jpg")
        with redis_server() as redis_url, serve_directory(corpus) as base, serve_directory(small_dir) as small:
            sources = [f"{base}/{photo.name}" for photo in photos]
            print(f"throughput: {len(sources)} jobs of one ~10 MP photo each, batch_optimization webp 1920")
            print("  each worker: one image at a time (--concurrency 1, CPU_WORKERS=1), one libvips thread")
            rates = {}
            for workers in (1, 2):
                rates[workers] = asyncio.run(throughput(redis_url, work, sources, workers))
                print(f"  {workers} worker process{'es' if workers > 1 else ''}: {rates[workers]:.2f} images/s")
            print(f"  speed-up of 2 workers over 1: {rates[2] / rates[1]:.2f}x (target >= 1.7x)")

            print(f"latency: {args.jobs} sequential one-image jobs (640x427 JPEG), submit -> final SSE event")
            medians = {}
            for mode in ("memory", "redis"):
                times = asyncio.run(latency_of(mode, redis_url, work, f"{small}/small.jpg", args.jobs))
                medians[mode] = statistics.median(times)
                p90 = sorted(times)[int(0.9 * (len(times) - 1))]
                print(f"  {mode:6} mode: median {medians[mode] * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms")
            print(f"  added by the Redis mode: {(medians['redis'] - medians['memory']) * 1000:.1f} ms per job (median)")


if __name__ == "__main__":
    main()
