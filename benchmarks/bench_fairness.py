"""Fair share between tenants: one image of tenant B while tenant A's catalogue runs, against B alone.

Per engine, on one service started for it:

1. B alone: tenant B submits a one-image `batch_optimization` job (default config: webp, standard,
   1920) on the idle service and follows it to its final SSE event: one warm-up job, `--rounds`
   measured ones before A's work and `--rounds` after it. Their median is the baseline.
2. B under load: tenant A submits `--images` ~10 MP photos (`--a-jobs` jobs, one by default). Once
   two of A's images have finished (the engine in its steady state, every slot busy with A's
   images), B submits the same kind of one-image job and follows it from `POST /ai/job` to its final
   SSE event; `--rounds` times, each after two more of A's images have finished. Then A's jobs are
   cancelled: the rest of A's images would only cost time.
3. The ratio of B's median time under load to B's median alone (target: at most 3x), how many of A's
   images finished while B waited, and what B waited on: the time before its image started (its
   place in the queue), and inside the image pipeline its CPU step against the rest (download, the
   fair CPU gate, upload), from the image's own `total_ms` and `processing_ms` metadata.

Engines: memory mode (one `serve`, its defaults: MAX_IMAGES_IN_FLIGHT=8, CPU_WORKERS = cores) and Redis
mode (one `serve` with JOB_BACKEND=redis running no images itself, plus `--workers` `capability-service
worker --concurrency N` processes on a private redis-server). Services keep their default settings but
for MAX_IMAGES_PER_JOB, raised so A's job can hold its images.

Photos: `--distinct` distinct ~10 MP JPEGs (`_corpus.py`), each served under many URLs whose bytes differ
by a JPEG comment (`_corpus.serve_copies`): every source is a different file to the service (its result
cache never hits), with the decoding work of a real photo. B's photo is one A never uses; each B job
gets a copy of its own, so B processes the same pixels alone and under load.

    python benchmarks/bench_fairness.py                   # 400 A images, both engines
    python benchmarks/bench_fairness.py --quick           # 60 A images, for a busy machine
    python benchmarks/bench_fairness.py --images 200 --engines memory
    python benchmarks/bench_fairness.py --workers 2 --concurrency 1
    python benchmarks/bench_fairness.py --env MAX_IMAGES_IN_FLIGHT=2   # any setting, for every process

Needs `redis-server` on PATH for the Redis mode. Exits 1 when a job fails or does not finish in time, or when
A's work ended before B's last job (B would not have been measured under load); 2 when a ratio misses the target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

if not __package__:  # run as a script: its own folder is on sys.path, the repository root is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.processes import ApiProcess
from tests.support.servers import redis_server

from benchmarks._corpus import serve_copies, write_corpus
from benchmarks._proc import cpu_seconds, machine_busy_seconds
from benchmarks._service import FINAL, running_service, running_workers

KEY_A = "tenant-a-key-0123456789"
KEY_B = "tenant-b-key-0123456789"
API_KEYS = f"tenant-a:{KEY_A},tenant-b:{KEY_B}"
AUTH_A = {"X-API-Key": KEY_A}
AUTH_B = {"X-API-Key": KEY_B}
# The job the issue names: batch optimization with its default settings (webp, standard, 1920).
CONFIG: dict[str, Any] = {}
JOB_TYPE = "batch_optimization"
TARGET_RATIO = 3.0
B_TIMEOUT = 300.0
STEADY_TIMEOUT = 300.0
CANCEL_TIMEOUT = 120.0
# A's images that finish before each B job: the engine is back in its steady state (see `a_settled`).
SETTLE_IMAGES = 2


@dataclass(frozen=True)
class BRun:
    """One B job: its wall time and what its image's metadata says about where the time went."""

    seconds: float
    # The image pipeline, from the start of its download to its stored result.
    pipeline_s: float
    # The CPU step of the image (decode, resize, encode), inside the pipeline.
    processing_s: float
    # A's images finished between B's submit and B's final event (under load only).
    a_finished_meanwhile: int = 0
    a_done_at_submit: int = 0

    @property
    def queued_s(self) -> float:
        """Before the image started: waiting for a slot of its own, plus the submit and the final event."""
        return max(0.0, self.seconds - self.pipeline_s)

    @property
    def pipeline_other_s(self) -> float:
        """In the pipeline but not computing: download, waiting for a CPU turn, upload."""
        return max(0.0, self.pipeline_s - self.processing_s)


@dataclass(frozen=True)
class Engine:
    name: str
    description: str
    serve: dict[str, str]
    workers: int = 0
    concurrency: int = 0


class CPUWatch:
    """Machine CPU busy time over a phase, from /proc/stat: what everything on the machine used."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.busy = machine_busy_seconds()

    def cores_busy(self) -> float:
        """Cores' worth of CPU the whole machine used since the start."""
        return (machine_busy_seconds() - self.busy) / max(1e-9, time.perf_counter() - self.started)


def load_line() -> str:
    one, five, _fifteen = os.getloadavg()
    return f"load average {one:.2f} (5 min: {five:.2f}) on {os.cpu_count()} cores"


async def follow(client: httpx.AsyncClient, job_id: str, headers: dict[str, str], timeout: float) -> str:
    """Read the job's SSE stream to its final event; returns that event's name."""
    async with asyncio.timeout(timeout):
        async with client.stream("GET", f"/api/v1/ai/job/{job_id}/stream", headers=headers) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                    if name in FINAL or name == "error":
                        return name
    raise RuntimeError(f"the stream of job {job_id} closed without a final event")


async def submit(client: httpx.AsyncClient, headers: dict[str, str], sources: list[str], job_id: str) -> None:
    body = {"job_id": job_id, "type": JOB_TYPE, "config": CONFIG, "source_image_urls": sources}
    response = await client.post("/api/v1/ai/job", json=body, headers=headers)
    if response.status_code != 202:
        raise RuntimeError(f"submit of {job_id} answered {response.status_code}: {response.text[:500]}")


async def a_processed(client: httpx.AsyncClient, job_ids: list[str]) -> tuple[int, bool]:
    """A's finished images over its jobs, and whether any of them is still running."""
    done, live = 0, False
    for job_id in job_ids:
        status = (await client.get(f"/api/v1/ai/job/{job_id}/status", headers=AUTH_A)).json()
        done += int(status["processed"])
        live = live or status["status"] not in FINAL
    return done, live


async def b_job(client: httpx.AsyncClient, source: str, job_id: str, a_jobs: list[str] | None = None) -> BRun:
    """One B job, from submit to its final SSE event; with `a_jobs`, A's progress meanwhile."""
    a_before = (await a_processed(client, a_jobs))[0] if a_jobs else 0
    started = time.perf_counter()
    await submit(client, AUTH_B, [source], job_id)
    final = await follow(client, job_id, AUTH_B, B_TIMEOUT)
    seconds = time.perf_counter() - started
    a_after = (await a_processed(client, a_jobs))[0] if a_jobs else 0
    result = (await client.get(f"/api/v1/ai/job/{job_id}", headers=AUTH_B)).json()
    image = result["metadata"]["images"][0]
    if final != "completed" or image.get("status") != "succeeded":
        raise RuntimeError(f"B's job {job_id} ended {final}: {json.dumps(result.get('errors'))}")
    if image.get("cache") != "miss":
        raise RuntimeError(f"B's job {job_id} was served from the result cache; its source must be new")
    return BRun(
        seconds=seconds,
        pipeline_s=float(image["total_ms"]) / 1000,
        processing_s=float(image["processing_ms"]) / 1000,
        a_finished_meanwhile=a_after - a_before,
        a_done_at_submit=a_before,
    )


async def a_settled(client: httpx.AsyncClient, a_jobs: list[str], images: int) -> None:
    """Until A has finished `images` images: its window is full again, every slot busy with A's images.

    A tenant's window shrinks while another tenant has work and grows back on its next finished
    image; a B job sent just after the previous one would find slots A has not taken back yet.
    """
    deadline = time.monotonic() + STEADY_TIMEOUT
    while (await a_processed(client, a_jobs))[0] < images:
        if time.monotonic() > deadline:
            raise RuntimeError(f"A did not reach {images} finished images within {STEADY_TIMEOUT:.0f} s")
        await asyncio.sleep(0.05)


async def wait_for_workers(client: httpx.AsyncClient, count: int, timeout: float = 120) -> None:
    """Until the API sees `count` registered workers (their slots are the fair share's capacity)."""
    deadline = time.monotonic() + timeout
    while True:
        # The engine's figures are shown to a caller with a key only.
        jobs = (await client.get("/api/v1/health", headers=AUTH_B)).json().get("jobs", {})
        if int(jobs.get("workers", 0)) >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} workers did not register within {timeout:.0f} s: {jobs}")
        await asyncio.sleep(0.2)


@dataclass(frozen=True)
class EngineResult:
    idle: list[BRun]
    loaded: list[BRun]
    a_images: int
    a_done_at_cancel: int
    cancel_s: float
    busy_cores: float
    # A's images per second from its submit to the cancel (B's jobs ran meanwhile).
    a_rate: float


async def measure(
    service: ApiProcess, pids: list[int], engine: Engine, args: argparse.Namespace, urls: CopyUrls
) -> EngineResult:
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as client:
        if engine.workers:
            await wait_for_workers(client, engine.workers)
        # B alone, before A (the first job warms up connections and libvips and is not counted) and
        # again after A, so a change in the machine's other load over the run weighs on both sides.
        idle: list[BRun] = []
        for number in range(args.rounds + 1):
            run = await b_job(client, urls.b(), f"b-idle-{engine.name}-{number}")
            if number:
                idle.append(run)

        # A's catalogue, then B's jobs, each once two more of A's images are done (every slot A's again).
        a_sources = [urls.a() for _ in range(args.images)]
        per_job = math.ceil(len(a_sources) / args.a_jobs)
        a_jobs = [f"a-{engine.name}-{n}" for n in range(math.ceil(len(a_sources) / per_job))]
        watch = CPUWatch()
        for number, job_id in enumerate(a_jobs):
            await submit(client, AUTH_A, a_sources[number * per_job : (number + 1) * per_job], job_id)
        loaded: list[BRun] = []
        mark = 0
        for number in range(args.rounds):
            await a_settled(client, a_jobs, mark + SETTLE_IMAGES)
            run = await b_job(client, urls.b(), f"b-loaded-{engine.name}-{number}", a_jobs)
            loaded.append(run)
            mark = run.a_done_at_submit + run.a_finished_meanwhile
        busy = watch.cores_busy()
        a_done, a_live = await a_processed(client, a_jobs)
        a_rate = a_done / (time.perf_counter() - watch.started)
        if not a_live:
            raise RuntimeError(
                f"A's {args.images} images were all done before B's last job: B was not measured under load "
                "(raise --images)"
            )
        print(f"  B measured; cancelling A's jobs ({a_done} of {args.images} images done)")
        # A's remaining images would only cost time: B has been measured.
        cancel_started = time.perf_counter()
        for job_id in a_jobs:
            response = await client.post(f"/api/v1/ai/job/{job_id}/cancel", headers=AUTH_A)
            if response.status_code not in (200, 409):
                raise RuntimeError(f"cancel of {job_id} answered {response.status_code}: {response.text[:300]}")
        for job_id in a_jobs:
            await follow(client, job_id, AUTH_A, CANCEL_TIMEOUT)
        cancel_s = time.perf_counter() - cancel_started
        a_done_at_cancel = (await a_processed(client, a_jobs))[0]
        # A cancelled image's CPU step already under way runs to its end; B alone needs the engine idle.
        await quiet(pids)
        for number in range(args.rounds):
            idle.append(await b_job(client, urls.b(), f"b-idle-after-{engine.name}-{number}"))
    return EngineResult(idle, loaded, args.images, a_done_at_cancel, cancel_s, busy, a_rate)


async def quiet(pids: list[int], timeout: float = 120) -> None:
    """Until the service's processes use (almost) no CPU for half a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(pid) for pid in pids)
        await asyncio.sleep(0.5)
        if sum(cpu_seconds(pid) for pid in pids) - before < 0.05:
            return
    raise RuntimeError(f"the service was still busy {timeout:.0f} s after A's jobs were cancelled")


class CopyUrls:
    """URLs of copies no job has used yet: A's cycle through its photos, B's are copies of B's photo."""

    def __init__(self, base: str, a_photos: list[str], b_photo: str) -> None:
        self.base = base
        self.a_photos = a_photos
        self.b_photo = b_photo
        self._a = 0
        self._b = 0

    def a(self) -> str:
        photo = self.a_photos[self._a % len(self.a_photos)]
        copy = self._a // len(self.a_photos)
        self._a += 1
        return f"{self.base}/{copy}/{photo}"

    def b(self) -> str:
        self._b += 1
        return f"{self.base}/{self._b}/{self.b_photo}"


@contextmanager
def engine_processes(engine: Engine, work: Path, redis_url: str | None) -> Iterator[tuple[ApiProcess, list[int]]]:
    """The engine's processes, running and ready; yields the service and the ids of all its processes."""
    # Results (and the result cache's entries) of each engine apart: nothing one engine did is a hit in the next.
    overrides = {**engine.serve, "API_KEYS": API_KEYS, "LOCAL_STORAGE_DIR": str(work / f"results-{engine.name}")}
    if engine.workers:
        assert redis_url is not None
        overrides |= {"JOB_BACKEND": "redis", "REDIS_URL": redis_url}
    with ExitStack() as stack:
        service = stack.enter_context(running_service(work, overrides, name=f"serve-{engine.name}"))
        pids = [service.pid]
        if engine.workers:
            workers = running_workers(work, engine.workers, overrides, concurrency=engine.concurrency)
            pids += [worker.pid for worker in stack.enter_context(workers)]
        yield service, pids


def breakdown(run: BRun) -> str:
    return (
        f"{run.seconds:.2f} s = before its image started {run.queued_s:.2f} s + in the pipeline "
        f"{run.pipeline_s:.2f} s (CPU step {run.processing_s:.2f} s, download / CPU turn / upload "
        f"{run.pipeline_other_s:.2f} s)"
    )


def report(engine: Engine, result: EngineResult) -> float:
    idle = statistics.median(run.seconds for run in result.idle)
    loaded = statistics.median(run.seconds for run in result.loaded)
    ratio = loaded / idle
    worst = max(run.seconds for run in result.loaded) / idle
    for label, runs in (("B alone", result.idle), ("B under load", result.loaded)):
        for run in runs:
            extra = f"; A's images finished meanwhile: {run.a_finished_meanwhile}" if runs is result.loaded else ""
            print(f"  {label + ':':13} {breakdown(run)}{extra}")
    print(
        f"  A: {result.loaded[0].a_done_at_submit} images finished before B's first job, "
        f"{result.a_done_at_cancel} of {result.a_images} when cancelled (cancel took {result.cancel_s:.2f} s); "
        f"A's throughput meanwhile {result.a_rate:.2f} images/s"
    )

    def median_of(runs: list[BRun], part: str) -> float:
        return statistics.median(float(getattr(run, part)) for run in runs)

    parts = [("before its image started", "queued_s"), ("download / CPU turn / upload", "pipeline_other_s")]
    print(
        "  where B's time went, median alone -> under load: "
        + ", ".join(
            f"{label} {median_of(result.idle, part):.2f} -> {median_of(result.loaded, part):.2f} s"
            for label, part in parts
        )
        + f", CPU step {median_of(result.idle, 'processing_s'):.2f} -> {median_of(result.loaded, 'processing_s'):.2f} s"
    )
    print(f"  machine CPU in use while A ran: {result.busy_cores:.2f} of {os.cpu_count()} cores (all processes)")
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(
        f"  => {engine.name}: B {loaded:.2f} s under load / {idle:.2f} s alone = {ratio:.2f}x "
        f"(worst {worst:.2f}x; target <= {TARGET_RATIO:.0f}x: {verdict})"
    )
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=None, help="A's images [400; 60 with --quick]")
    parser.add_argument("--quick", action="store_true", help="60 A images, for a loaded machine")
    parser.add_argument("--a-jobs", type=int, default=1, help="jobs A's images are split into [1]")
    parser.add_argument("--rounds", type=int, default=5, help="B jobs alone and under load, each [5]")
    parser.add_argument("--distinct", type=int, default=20, help="distinct photos behind A's sources [20]")
    parser.add_argument("--engines", choices=("both", "memory", "redis"), default="both")
    parser.add_argument("--workers", type=int, default=1, help="worker processes in Redis mode [1]")
    parser.add_argument("--concurrency", type=int, default=2, help="images per worker process [2]")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE setting for every process")
    args = parser.parse_args()
    if any("=" not in item for item in args.env):
        parser.error("--env takes KEY=VALUE")
    settings = dict(item.split("=", 1) for item in args.env)
    if args.images is None:
        args.images = 60 if args.quick else 400
    if args.images < 1 or args.a_jobs < 1 or args.rounds < 1 or args.distinct < 1:
        parser.error("--images, --a-jobs, --rounds and --distinct must be at least 1")

    per_job = str(max(100, math.ceil(args.images / args.a_jobs)))
    engines = [
        Engine("memory", "one `serve` (memory mode)", {"MAX_IMAGES_PER_JOB": per_job, **settings}),
        Engine(
            "redis",
            f"one `serve` (JOB_BACKEND=redis, runs no images) + {args.workers} worker process"
            f"{'es' if args.workers > 1 else ''} x concurrency {args.concurrency}",
            {"MAX_IMAGES_PER_JOB": per_job, **settings},
            workers=args.workers,
            concurrency=args.concurrency,
        ),
    ]
    engines = [engine for engine in engines if args.engines in ("both", engine.name)]
    print(f"start: {load_line()}")
    print(f"settings: {' '.join(args.env) if args.env else 'the defaults'} (and MAX_IMAGES_PER_JOB={per_job})")
    print(
        f"A: {args.images} x ~10 MP photos in {args.a_jobs} job{'s' if args.a_jobs > 1 else ''} "
        f"({args.distinct} distinct photos, every source a different file); B: one 10 MP photo per job; "
        f"{JOB_TYPE}, default config (webp, standard, 1920)"
    )
    ratios: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fairness-") as tmp:
        work = Path(tmp)
        photos = write_corpus(work / "corpus", args.distinct + 1)
        a_photos, b_photo = [photo.name for photo in photos[:-1]], photos[-1].name
        with ExitStack() as stack:
            base = stack.enter_context(serve_copies(photos))
            redis_url = stack.enter_context(redis_server()) if any(e.workers for e in engines) else None
            # One source of URLs for the whole run: no source is ever used twice.
            urls = CopyUrls(base, a_photos, b_photo)
            for engine in engines:
                print(f"{engine.name} mode: {engine.description}; {load_line()}")
                try:
                    with engine_processes(engine, work, redis_url) as (service, pids):
                        result = asyncio.run(measure(service, pids, engine, args, urls))
                except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
                    print(f"error in {engine.name} mode: {exc}", file=sys.stderr)
                    return 1
                ratios[engine.name] = report(engine, result)
    print(f"end: {load_line()}")
    return 0 if all(ratio <= TARGET_RATIO for ratio in ratios.values()) else 2


if __name__ == "__main__":
    sys.exit(main())
