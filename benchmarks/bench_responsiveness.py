"""Does the API stay responsive while a 20-photo job runs? Status and submit latency, idle vs loaded.

Starts a real `capability-service serve` process on a free loopback port (in-memory jobs, local
storage in a temporary directory), serves ~10 MP photos from a loopback HTTP server, and then:

1. idle baseline: a warm-up job, then `GET /api/v1/ai/job/{id}/status` at `--rate` per second and
   `POST /api/v1/ai/job` (small one-image jobs) at `--submit-rate` per second, for `--idle-seconds`;
2. for each job type (batch_optimization webp/standard/1920, then image_enhancement): submits one job
   of all the photos and, for as long as it runs, keeps up the same two request streams.

Requests are sent open-loop (on a fixed schedule, each in its own task) so a slow answer never delays
the next request and hides itself. Prints p50/p95/p99/max per stream, the loaded/idle ratio, the job's
wall time, and where the server's CPU went: per thread group, and how long the event-loop thread
waited for a core (the kernel's run-queue delay from /proc/PID/task/TID/schedstat).

    python benchmarks/bench_responsiveness.py                 # 20 photos, both job types
    python benchmarks/bench_responsiveness.py --quick         # 6 photos, shorter idle baseline
    python benchmarks/bench_responsiveness.py --env CPU_WORKERS=1 --env VIPS_CONCURRENCY=1
    python benchmarks/bench_responsiveness.py --sweep         # the settings grid, best one named
    python benchmarks/bench_responsiveness.py --probe         # also measure event-loop stalls in-process

`--probe` runs the same app through a small launcher that adds an event-loop heartbeat (5 ms sleeps,
their overshoot is the loop's lag) and a sampler of the loop thread's Python stack during stalls.
`--asyncio-debug` adds asyncio debug mode with `slow_callback_duration` = 20 ms, whose warnings name
any callback that holds the loop; debug mode records a traceback per task, so its latencies are not
representative. `--py-spy` (when py-spy is installed) samples which thread and code hold the GIL
during the first job.

Exits non-zero only on errors (server does not start, a request fails, a job does not complete in
time); missed latency targets are reported, not fatal.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyvips

if not __package__:  # run as a script: its own folder is on sys.path, the repository root is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._corpus import SOURCE_PHOTO, prepare_corpus, serve_directory
from benchmarks._service import running_service, serve_command

API_KEY = "bench-responsiveness-key"
TARGET_MS = 50.0
FINAL = ("completed", "failed", "cancelled")
JOB_TYPES: dict[str, dict[str, Any]] = {
    "batch_optimization": {"format": "webp", "quality": "standard", "maxSize": 1920},
    "image_enhancement": {"enhancementLevel": 5, "sharpen": True, "denoise": True, "upscale": False},
}
# Not a service setting: serve through the launcher with the CPU executor's threads (or processes)
# lowered to this nice value; the libvips threads they start inherit it. Shows what the service would
# gain by doing so in `capability_service.jobs.cpu`.
NICE_KEY = "BENCH_CPU_NICE"
# Not a service setting either: serve through the launcher with the API's sync dependencies replaced
# by coroutine versions, to show what the thread-pool hop per dependency costs under load.
ASYNC_DEPS_KEY = "BENCH_ASYNC_DEPS"
# Settings tried by --sweep, each against the same photos in the same run.
SWEEP: list[dict[str, str]] = [
    {},
    {"VIPS_CONCURRENCY": "1"},
    {"CPU_WORKERS": "1"},
    {"CPU_WORKERS": "1", "VIPS_CONCURRENCY": "1"},
    {"CPU_EXECUTOR": "process"},
    {NICE_KEY: "10"},
    {ASYNC_DEPS_KEY: "1"},
    {ASYNC_DEPS_KEY: "1", NICE_KEY: "10"},
]

# Runs the same app as `capability-service serve` (same uvicorn options), plus in-process probes of
# the event loop and the two experiments: coroutine versions of the API's dependencies (ASYNC_DEPS_KEY)
# and a lower CPU priority for the image work (NICE_KEY).
PROBE_LAUNCHER = r"""
import asyncio, collections, json, os, sys, threading, time, traceback
from contextlib import asynccontextmanager
from typing import Annotated
import uvicorn
from fastapi import Header, HTTPException, Request
from capability_service.api import deps
from capability_service.core.config import load_settings
from capability_service.main import create_app

out_path = os.environ.get("BENCH_PROBE_OUT", "")
stall = float(os.environ.get("BENCH_PROBE_STALL_MS", "20")) / 1000
lags = []
stacks = collections.Counter()
states = collections.Counter()
beat = [time.perf_counter()]
main_id = threading.get_ident()
main_tid = threading.get_native_id()
SYSCALLS = {"202": "futex (GIL or a lock)", "232": "epoll_wait (idle)", "281": "epoll_pwait (idle)",
            "441": "epoll_pwait2 (idle)", "running": "running C code"}

async def heartbeat():
    while True:
        t = time.perf_counter()
        await asyncio.sleep(0.005)
        now = time.perf_counter()
        lags.append((time.time(), now - t - 0.005))
        beat[0] = now

def sampler():
    while True:
        time.sleep(0.002)
        if time.perf_counter() - beat[0] <= stall:
            continue
        try:
            state = open(f"/proc/self/task/{main_tid}/stat").read().rsplit(")", 1)[1].split()[0]
            call = open(f"/proc/self/task/{main_tid}/syscall").read().split()[0]
        except OSError:
            state, call = "?", "?"
        if state == "R":
            states["R: runnable (on a core, or waiting in the run queue for one)"] += 1
        else:
            states[f"{state}: in syscall {SYSCALLS.get(call, call)}"] += 1
        frame = sys._current_frames().get(main_id)
        if frame is not None:
            summary = traceback.extract_stack(frame)[-4:]
            key = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(summary))
            stacks[key] += 1

if os.environ.get("BENCH_CPU_NICE"):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
    from capability_service.jobs import cpu

    nice = int(os.environ["BENCH_CPU_NICE"])

    def lower_priority():
        # Linux: per thread; threads this one starts (libvips workers) inherit it.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)

    plain_init = cpu.CpuExecutor.__init__

    def niced_init(self, kind, workers, *args, **kwargs):
        plain_init(self, kind, workers, *args, **kwargs)
        self._pool.shutdown(wait=False)
        if kind == "process":
            context = multiprocessing.get_context("forkserver")
            # os.nice: a builtin, so the fork server's children can unpickle it.
            self._pool = ProcessPoolExecutor(workers, mp_context=context, initializer=os.nice, initargs=(nice,))
        else:
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="cpu", initializer=lower_priority)

    cpu.CpuExecutor.__init__ = niced_init

app = create_app(load_settings())

if os.environ.get("BENCH_ASYNC_DEPS") == "1":
    # The same checks as capability_service.api.deps, as coroutines: FastAPI then calls them on
    # the loop instead of hopping to its thread pool and back for each one.
    async def get_services(request: Request):
        return request.app.state.services

    async def require_api_key(request: Request, x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None):
        if not request.app.state.services.api_keys.is_valid(x_api_key):
            raise HTTPException(401, detail="invalid API key")

    async def user_id_header(x_user_id: Annotated[str | None, Header(alias="X-User-Id", max_length=128)] = None):
        return x_user_id or None

    app.dependency_overrides[deps.get_services] = get_services
    app.dependency_overrides[deps.require_api_key] = require_api_key
    app.dependency_overrides[deps.user_id_header] = user_id_header

inner = app.router.lifespan_context

@asynccontextmanager
async def probed(application):
    loop = asyncio.get_running_loop()
    if os.environ.get("BENCH_ASYNCIO_DEBUG") == "1":
        loop.set_debug(True)
        loop.slow_callback_duration = stall
    task = None
    if out_path:
        task = loop.create_task(heartbeat())
        threading.Thread(target=sampler, daemon=True).start()
    async with inner(application) as state:
        yield state
    if task is not None:
        task.cancel()

app.router.lifespan_context = probed
host, port = sys.argv[1], int(sys.argv[2])
uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=None, proxy_headers=True)
if out_path:
    with open(out_path, "w") as handle:
        json.dump({"lags": lags, "stacks": stacks.most_common(15), "states": states.most_common()}, handle)
"""


# ---------------------------------------------------------------- measurements


@dataclass
class Stream:
    """Latencies (s) of one request stream, the client's own scheduling lag, and any errors."""

    latencies: list[float] = field(default_factory=list)
    client_lag: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def stats(self) -> dict[str, float]:
        return percentiles(self.latencies)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    ordered = sorted(values)

    def at(q: float) -> float:
        # Nearest rank: the smallest value with at least q of the samples at or below it.
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]

    return {"n": len(ordered), "p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": ordered[-1]}


@dataclass
class ThreadSample:
    name: str
    cpu_s: float
    runq_s: float


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        for child in children.get(current, []):
            found.append(child)
            pending.append(child)
    return found


def snapshot_threads(pid: int) -> dict[tuple[int, int], ThreadSample]:
    """CPU time and run-queue wait of every thread of `pid` and its descendants (process pools)."""
    ticks = os.sysconf("SC_CLK_TCK")
    result: dict[tuple[int, int], ThreadSample] = {}
    for process in [pid, *_descendants(pid)]:
        try:
            tids = [int(name) for name in os.listdir(f"/proc/{process}/task")]
        except OSError:
            continue
        for tid in tids:
            base = f"/proc/{process}/task/{tid}"
            try:
                comm = Path(f"{base}/comm").read_text().strip()
                fields = Path(f"{base}/stat").read_text().rsplit(")", 1)[1].split()
                schedstat = Path(f"{base}/schedstat").read_text().split()
            except OSError:
                continue
            if process != pid:
                name = f"pool process: {comm}"
            elif tid == pid:
                name = "event loop (main thread)"
            else:
                name = comm
            cpu = (int(fields[11]) + int(fields[12])) / ticks
            result[(process, tid)] = ThreadSample(name, cpu, int(schedstat[1]) / 1e9)
    return result


def process_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its live descendants, exited threads included."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for process in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def machine_busy() -> float:
    """CPU seconds all cores of the machine have been busy since boot (user, system, irq, steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def thread_usage(
    before: dict[tuple[int, int], ThreadSample], after: dict[tuple[int, int], ThreadSample]
) -> dict[str, dict[str, float]]:
    """CPU seconds and run-queue wait per thread group between two snapshots."""
    groups: dict[str, dict[str, float]] = {}
    for key, sample in after.items():
        start = before.get(key, ThreadSample(sample.name, 0.0, 0.0))
        group = groups.setdefault(sample.name, {"threads": 0, "cpu_s": 0.0, "runq_s": 0.0})
        group["threads"] += 1
        group["cpu_s"] += sample.cpu_s - start.cpu_s
        group["runq_s"] += sample.runq_s - start.runq_s
    return groups


# ---------------------------------------------------------------- the server


@dataclass
class Server:
    base_url: str
    pid: int
    log_path: Path
    probe_path: Path | None


def _launcher_command(port: int) -> list[str]:
    return [sys.executable, "-c", PROBE_LAUNCHER, "127.0.0.1", str(port)]


@contextmanager
def run_server(scratch: Path, overrides: dict[str, str], probe: bool, debug: bool = False) -> Iterator[Server]:
    """A `capability-service serve` process with explicit settings; stopped (SIGINT) on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="server-", dir=scratch))
    settings = {
        "ENVIRONMENT": "development",
        "STORAGE_BACKEND": "local",
        "JOB_BACKEND": "memory",
        "MAX_IMAGES_PER_JOB": "100",
        "MAX_CONCURRENT_JOBS": "2",
        "MAX_IMAGES_IN_FLIGHT": "4",
        "JOB_QUEUE_SIZE": "1000",
        "SHUTDOWN_GRACE_SECONDS": "5",
        "CPU_EXECUTOR": "thread",
        "CPU_WORKERS": str(os.cpu_count() or 2),
        **overrides,
    }
    probe_path: Path | None = None
    if probe:
        probe_path = workdir / "probe.json"
        settings["BENCH_PROBE_OUT"] = str(probe_path)
        settings["BENCH_ASYNCIO_DEBUG"] = "1" if debug else "0"
    launcher = probe or settings.get(ASYNC_DEPS_KEY) == "1" or bool(settings.get(NICE_KEY))
    log_path = workdir / "server.log"
    with running_service(
        workdir,
        settings,
        api_key=API_KEY,
        unset=("AI_API_KEY", "VIPS_CONCURRENCY"),
        command=_launcher_command if launcher else serve_command,
        log_path=log_path,
        stop_signal=signal.SIGINT,
    ) as service:
        yield Server(service.url, service.pid, log_path, probe_path)


def _serve_photos(directory: str, announce: Any) -> None:
    with serve_directory(Path(directory)) as base_url:
        announce.put(base_url)
        threading.Event().wait()


@contextmanager
def photo_server(directory: Path) -> Iterator[str]:
    """`serve_directory` in a process of its own, standing in for a CDN.

    Served from a thread of this process, the photo downloads would compete with the load
    generator's event loop for this process's GIL and show up as latency of the service.
    """
    context = multiprocessing.get_context("spawn")
    announce: Any = context.Queue()
    process = context.Process(target=_serve_photos, args=(str(directory), announce), daemon=True)
    process.start()
    try:
        yield announce.get(timeout=60)
    finally:
        process.terminate()
        process.join(timeout=10)


# ---------------------------------------------------------------- load


async def open_loop(
    rate: float, keep_going: Callable[[], bool], request: Callable[[float], Coroutine[Any, Any, None]]
) -> None:
    """Call `request(client_lag)` `rate` times a second on a fixed schedule while `keep_going()`."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / rate
    start = loop.time()
    tasks: set[asyncio.Task[None]] = set()
    sent = 0
    while keep_going():
        target = start + sent * interval
        delay = target - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
            if not keep_going():
                break
        task = asyncio.create_task(request(max(0.0, loop.time() - target)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
    if tasks:
        await asyncio.gather(*tasks)


def small_photo_uri() -> str:
    # A small real photo as a data: URI: extra jobs cost the service almost nothing to process,
    # so the submit stream measures the API, not extra image work.
    data = bytes(pyvips.Image.thumbnail(str(SOURCE_PHOTO), 160).jpegsave_buffer(Q=80))
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


@dataclass
class Client:
    http: httpx.AsyncClient
    small_uri: str
    extra_jobs: list[str] = field(default_factory=list)

    async def submit(self, job_type: str, config: dict[str, Any], sources: list[str]) -> tuple[float, str]:
        job_id = f"bench-{uuid.uuid4().hex[:12]}"
        payload = {
            "job_id": job_id,
            "user_id": "bench",
            "type": job_type,
            "config": config,
            "source_image_urls": sources,
        }
        t0 = time.perf_counter()
        response = await self.http.post("/api/v1/ai/job", json=payload)
        elapsed = time.perf_counter() - t0
        if response.status_code != 202:
            raise RuntimeError(f"submit answered {response.status_code}: {response.text[:300]}")
        return elapsed, job_id

    async def status(self, job_id: str) -> tuple[float, dict[str, Any]]:
        t0 = time.perf_counter()
        response = await self.http.get(f"/api/v1/ai/job/{job_id}/status")
        elapsed = time.perf_counter() - t0
        if response.status_code != 200:
            raise RuntimeError(f"status answered {response.status_code}: {response.text[:300]}")
        body: dict[str, Any] = response.json()
        return elapsed, body

    async def wait_final(self, job_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, body = await self.status(job_id)
            if body["status"] in FINAL:
                return body
            await asyncio.sleep(0.05)
        raise RuntimeError(f"job {job_id} did not finish within {timeout:.0f} s")

    async def streams(
        self, job_id: str, rate: float, submit_rate: float, keep_going: Callable[[dict[str, Any]], bool]
    ) -> tuple[Stream, Stream]:
        """Status requests for `job_id` and small submits, until `keep_going(last status)` is false."""
        status_stream, submit_stream = Stream(), Stream()
        last: dict[str, Any] = {"status": "pending"}

        async def status_once(lag: float) -> None:
            status_stream.client_lag.append(lag)
            try:
                elapsed, body = await self.status(job_id)
            except (httpx.HTTPError, RuntimeError) as exc:
                status_stream.errors[type(exc).__name__ + ": " + str(exc)[:120]] += 1
                return
            status_stream.latencies.append(elapsed)
            # Answers can arrive out of order: never step back from a final state or fewer images.
            if last["status"] not in FINAL and body.get("processed", 0) >= last.get("processed", 0):
                last.update(body)

        async def submit_once(lag: float) -> None:
            submit_stream.client_lag.append(lag)
            try:
                elapsed, extra_id = await self.submit(
                    "batch_optimization", {"format": "webp", "maxSize": 128}, [self.small_uri]
                )
            except (httpx.HTTPError, RuntimeError) as exc:
                submit_stream.errors[type(exc).__name__ + ": " + str(exc)[:120]] += 1
                return
            submit_stream.latencies.append(elapsed)
            self.extra_jobs.append(extra_id)

        await asyncio.gather(
            open_loop(rate, lambda: keep_going(last), status_once),
            open_loop(submit_rate, lambda: keep_going(last), submit_once),
        )
        return status_stream, submit_stream


@dataclass
class JobRun:
    job_type: str
    images: int
    wall_s: float
    processing_ms: float
    submit_ms: float
    status: Stream
    submits: Stream
    threads: dict[str, dict[str, float]]
    cpu_s: float
    machine_s: float
    client_s: float
    probe_window: tuple[float, float]


@dataclass
class ScenarioResult:
    label: str
    overrides: dict[str, str]
    idle_status: Stream
    idle_submit: Stream
    jobs: list[JobRun]
    probe: dict[str, Any] | None = None
    gil_profile: list[tuple[str, int]] | None = None
    slow_callbacks: list[tuple[str, int]] | None = None


async def run_load(
    server: Server, urls: list[str], args: argparse.Namespace, job_types: list[str], spy_dir: Path | None
) -> tuple[Stream, Stream, list[JobRun], list[tuple[str, int]] | None]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    timeout = httpx.Timeout(30.0)
    headers = {"X-API-Key": API_KEY, "X-User-Id": "bench"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, limits=limits, timeout=timeout) as http:
        client = Client(http, small_photo_uri())
        # Warm-up: imports, pools and connections are ready before anything is timed.
        _, warm_id = await client.submit("batch_optimization", JOB_TYPES["batch_optimization"], urls[:1])
        warm = await client.wait_final(warm_id, 120)
        if warm["status"] != "completed":
            raise RuntimeError(f"warm-up job ended {warm['status']}: {warm.get('message')}")
        idle_until = time.monotonic() + args.idle_seconds
        idle_status, idle_submit = await client.streams(
            warm_id, args.rate, args.submit_rate, lambda _: time.monotonic() < idle_until
        )
        runs: list[JobRun] = []
        gil_profile: list[tuple[str, int]] | None = None
        for job_type in job_types:
            await _drain(client)
            before = snapshot_threads(server.pid)
            cpu_before = process_cpu(server.pid)
            machine_before, client_before = machine_busy(), own_cpu()
            window_start = time.time()
            started = time.perf_counter()
            submit_s, job_id = await client.submit(job_type, JOB_TYPES[job_type], urls)
            deadline = time.monotonic() + args.job_timeout
            spy = _start_py_spy(server.pid, spy_dir, job_type) if spy_dir is not None and not runs else None

            def running(last: dict[str, Any], deadline: float = deadline) -> bool:
                return last["status"] not in FINAL and time.monotonic() < deadline

            status_stream, submit_stream = await client.streams(job_id, args.rate, args.submit_rate, running)
            wall = time.perf_counter() - started
            after = snapshot_threads(server.pid)
            cpu_s = process_cpu(server.pid) - cpu_before
            machine_s, client_s = machine_busy() - machine_before, own_cpu() - client_before
            if spy is not None:
                gil_profile = _stop_py_spy(*spy)
            result = (await http.get(f"/api/v1/ai/job/{job_id}")).json()
            if result.get("status") != "completed":
                raise RuntimeError(
                    f"{job_type} job {job_id} ended {result.get('status')!r} after {wall:.0f} s: "
                    f"{result.get('message')}"
                )
            failed = [url for url in result["result_image_urls"] if url is None]
            if failed:
                raise RuntimeError(f"{job_type}: {len(failed)} images failed: {result.get('message')}")
            runs.append(
                JobRun(
                    job_type=job_type,
                    images=len(urls),
                    wall_s=wall,
                    processing_ms=float(result.get("processing_time_ms") or 0),
                    submit_ms=submit_s * 1000,
                    status=status_stream,
                    submits=submit_stream,
                    threads=thread_usage(before, after),
                    cpu_s=cpu_s,
                    machine_s=machine_s,
                    client_s=client_s,
                    probe_window=(window_start, time.time()),
                )
            )
        await _drain(client)
    return idle_status, idle_submit, runs, gil_profile


async def _drain(client: Client) -> None:
    """Wait for the extra small jobs, so the next phase starts on a quiet service."""
    for job_id in client.extra_jobs:
        await client.wait_final(job_id, 120)
    client.extra_jobs.clear()


SPY_RATE = 200


def _start_py_spy(pid: int, spy_dir: Path, job_type: str) -> tuple[subprocess.Popen[bytes], Path, float] | None:
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(binary).exists():
        print("  (py-spy not installed: no GIL profile)")
        return None
    out = spy_dir / f"gil-{job_type}.txt"
    # --gil: sample only the thread holding the GIL, so the profile says who keeps the loop waiting.
    # --nonblocking: never pause the service to sample it, or py-spy itself would add latency.
    command = [binary, "record", "--pid", str(pid), "--gil", "--nonblocking", "--rate", str(SPY_RATE)]
    command += ["--format", "raw", "-o", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, out, time.monotonic()


def _stop_py_spy(process: subprocess.Popen[bytes], out: Path, started: float) -> list[tuple[str, int]]:
    """The GIL holders py-spy saw: first a row per thread, then the most frequent innermost frames.

    Samples where nobody held the GIL are not recorded, so the rows add up to the GIL's busy share.
    """
    duration = time.monotonic() - started
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    leaves: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    if not out.exists():
        return []
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        # The outermost frame names the thread; the innermost two say what it was doing.
        other = frames[0].startswith("Thread._bootstrap")
        threads["[pool and other threads]" if other else "[event loop thread]"] += int(count)
        leaves[" <- ".join(reversed(frames[-2:]))] += int(count)
    possible = max(1, round(duration * SPY_RATE))
    return [
        ("[no thread: GIL free]", max(0, possible - sum(threads.values()))),
        *threads.most_common(),
        *leaves.most_common(10),
    ]


def run_scenario(
    scratch: Path, urls: list[str], args: argparse.Namespace, overrides: dict[str, str], job_types: list[str]
) -> ScenarioResult:
    label = " ".join(f"{k}={v}" for k, v in overrides.items()) or "defaults"
    print(f"\n== scenario: {label}", flush=True)
    probe = args.probe or args.asyncio_debug
    with run_server(scratch, overrides, probe, args.asyncio_debug) as server:
        spy_dir = scratch if args.py_spy else None
        idle_status, idle_submit, runs, gil = asyncio.run(run_load(server, urls, args, job_types, spy_dir))
    scenario = ScenarioResult(label, overrides, idle_status, idle_submit, runs, gil_profile=gil)
    if server.probe_path is not None:
        if server.probe_path.exists():
            scenario.probe = json.loads(server.probe_path.read_text())
        if args.asyncio_debug:
            scenario.slow_callbacks = _slow_callbacks(server.log_path)
    return scenario


def _slow_callbacks(log_path: Path) -> list[tuple[str, int]]:
    found: Counter[str] = Counter()
    for line in log_path.read_text(errors="replace").splitlines():
        if "Executing" in line and "took" in line:
            what = line.split("Executing", 1)[1].rsplit("took", 1)[0].strip()
            # Drop object addresses so the same callback counts once.
            found[" ".join(part for part in what.split() if not part.startswith("0x"))[:160]] += 1
    return found.most_common(10)


# ---------------------------------------------------------------- report


def _ms(value: float) -> str:
    return f"{value * 1000:8.1f}"


def _row(name: str, stream: Stream, idle: Stream | None) -> str:
    stats = stream.stats()
    idle_stats = idle.stats() if idle is not None else None
    ratio = f"{stats['p99'] / idle_stats['p99']:6.1f}x" if idle_stats and idle_stats["p99"] > 0 else "      -"
    client_lag = max(stream.client_lag, default=0.0)
    errors = sum(stream.errors.values())
    return (
        f"{name:<34} {int(stats['n']):>5} {_ms(stats['p50'])} {_ms(stats['p95'])} {_ms(stats['p99'])} "
        f"{_ms(stats['max'])} {ratio} {errors:>6} {client_lag * 1000:>9.1f}"
    )


def print_scenario(result: ScenarioResult) -> None:
    print(f"\nsettings: {result.label}")
    header = (
        f"{'request stream':<34} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'p99/idle':>7} {'errors':>6} {'client lag':>9}"
    )
    print(header)
    print("-" * len(header))
    print(_row("status, idle", result.idle_status, None))
    print(_row("submit, idle", result.idle_submit, None))
    for run in result.jobs:
        print(_row(f"status, during {run.job_type}", run.status, result.idle_status))
        print(_row(f"submit, during {run.job_type}", run.submits, result.idle_submit))
    print()
    title = f"job ({result.jobs[0].images} photos)" if result.jobs else "job"
    header = f"{title:<22} {'wall s':>7} {'images/s':>9} {'submit ms':>10}"
    print(header)
    for run in result.jobs:
        print(f"{run.job_type:<22} {run.wall_s:>7.1f} {run.images / run.wall_s:>9.2f} {run.submit_ms:>10.1f}")
    for run in result.jobs:
        print(f"\nserver CPU during {run.job_type} ({run.wall_s:.1f} s wall):")
        print(f"  {'thread group':<34} {'threads':>7} {'CPU s':>7} {'cores':>6} {'run-queue wait s':>17}")
        for name, group in sorted(run.threads.items(), key=lambda item: -item[1]["cpu_s"]):
            if group["cpu_s"] < 0.01 and group["runq_s"] < 0.01:
                continue
            print(
                f"  {name:<34} {int(group['threads']):>7} {group['cpu_s']:>7.1f} "
                f"{group['cpu_s'] / run.wall_s:>6.2f} {group['runq_s']:>17.2f}"
            )
        counted = sum(group["cpu_s"] for group in run.threads.values())
        print(
            f"  {'whole service (+ exited threads)':<34} {'':>7} {run.cpu_s:>7.1f} {run.cpu_s / run.wall_s:>6.2f}"
            f"   ({max(0.0, run.cpu_s - counted):.1f} CPU s in threads that exited)"
        )
        others = max(0.0, run.machine_s - run.cpu_s - run.client_s)
        print(
            f"  machine: {run.machine_s / run.wall_s:.2f} of {os.cpu_count()} cores busy: this service "
            f"{run.cpu_s / run.wall_s:.2f}, load generator {run.client_s / run.wall_s:.2f}, "
            f"other processes {others / run.wall_s:.2f}"
        )
        loop = run.threads.get("event loop (main thread)")
        if loop is not None:
            print(
                f"  event loop waited {loop['runq_s'] / run.wall_s * 1000:.0f} ms per second for a free core "
                f"(run-queue delay; {loop['cpu_s'] / run.wall_s * 100:.0f}% of one core busy)"
            )
    if result.probe is not None:
        print("\nin-process probe (event-loop heartbeat every 5 ms; lag = how late it woke):")
        lags = result.probe.get("lags", [])
        idle_end = result.jobs[0].probe_window[0] if result.jobs else float("inf")
        idle_lags = [lag for stamp, lag in lags if stamp < idle_end]
        print(f"  {'window':<34} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'>20 ms':>7}")
        windows = [("idle (before the first job)", idle_lags)]
        for run in result.jobs:
            start, end = run.probe_window
            windows.append((f"during {run.job_type}", [lag for stamp, lag in lags if start <= stamp <= end]))
        for name, values in windows:
            stats = percentiles(values)
            stalls = sum(1 for value in values if value > 0.020)
            print(
                f"  {name:<34} {int(stats['n']):>6} {_ms(stats['p50'])} {_ms(stats['p99'])} {_ms(stats['max'])} "
                f"{stalls:>7}"
            )
        states = result.probe.get("states", [])
        if states:
            total = sum(count for _, count in states) or 1
            print("  loop thread's kernel state while the heartbeat was >20 ms late:")
            for state, count in states:
                print(f"    {count:>5} ({count / total * 100:4.0f}%)  {state}")
        stacks = result.probe.get("stacks", [])
        if stacks:
            print("  loop thread's Python stack while the heartbeat was >20 ms late (samples every 2 ms):")
            for stack, count in stacks[:8]:
                print(f"    {count:>5}  {stack}")
        else:
            print("  no stall of the heartbeat beyond 20 ms was sampled")
    if result.slow_callbacks is not None:
        if result.slow_callbacks:
            print("  asyncio debug: callbacks that ran longer than 20 ms on the loop:")
            for what, count in result.slow_callbacks:
                print(f"    {count:>5}  {what}")
        else:
            print("  asyncio debug: no callback ran longer than 20 ms on the loop")
    if result.gil_profile is not None:
        total = sum(count for what, count in result.gil_profile if what.startswith("[")) or 1
        print(f"\npy-spy --gil at {SPY_RATE} Hz during the first job: share of samples by GIL holder, then frames:")
        for what, count in result.gil_profile:
            print(f"  {count:>6} ({count / total * 100:5.1f}%)  {what[:150]}")


def verdict(result: ScenarioResult) -> tuple[float, float]:
    """The worst loaded status p99 and submit p99 (ms) of a scenario."""
    status = max((run.status.stats()["p99"] for run in result.jobs), default=float("nan")) * 1000
    submit = max((run.submits.stats()["p99"] for run in result.jobs), default=float("nan")) * 1000
    return status, submit


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def print_targets(results: list[ScenarioResult]) -> None:
    """One row per settings set: medians over its rounds, and how busy the rest of the machine was."""
    print(f"\ntargets while a job runs: status p99 < {TARGET_MS:.0f} ms, submit p99 < {TARGET_MS:.0f} ms")
    by_label: dict[str, list[ScenarioResult]] = {}
    for result in results:
        by_label.setdefault(result.label, []).append(result)
    job_types = [run.job_type for run in results[0].jobs]
    header = (
        f"{'settings':<44} {'rounds':>6} {'status p99':>10} {'submit p99':>10} {'met':>4} {'others':>6} "
        + " ".join(f"{name[:14] + ' s':>16}" for name in job_types)
    )
    print(header)
    print("-" * len(header))
    summary: list[tuple[str, float, float]] = []
    for label, rounds in by_label.items():
        status = _median([verdict(r)[0] for r in rounds])
        submit = _median([verdict(r)[1] for r in rounds])
        others = _median(
            [max(0.0, run.machine_s - run.cpu_s - run.client_s) / run.wall_s for r in rounds for run in r.jobs]
        )
        walls = " ".join(f"{_median([r.jobs[i].wall_s for r in rounds]):>16.1f}" for i in range(len(job_types)))
        met = "yes" if status < TARGET_MS and submit < TARGET_MS else "no"
        print(f"{label:<44} {len(rounds):>6} {status:>10.1f} {submit:>10.1f} {met:>4} {others:>6.2f} {walls}")
        summary.append(
            (
                label,
                max(status, submit),
                sum(_median([r.jobs[i].wall_s for r in rounds]) for i in range(len(job_types))),
            )
        )
    print("(p99 in ms, medians over rounds; others = cores used by other processes on the machine meanwhile)")
    if len(summary) > 1:
        best = min(summary, key=lambda item: (item[1], item[2]))
        print(f"best latency: {best[0]} (worst p99 {best[1]:.1f} ms, job walls {best[2]:.1f} s in total)")


# ---------------------------------------------------------------- main


def raise_client_priority(mode: str) -> None:
    """Keep the load generator's own scheduling delay out of the figures.

    The client stands in for callers on other machines; on a saturated machine it would otherwise
    wait for a core to send a request or read an answer, and that wait would count as the service's
    latency. It uses a few percent of one core, so a higher priority takes little from the service.
    Nice -10 is the default: under a real-time policy the client was stalled for 100+ ms at a time
    here (real-time bandwidth throttling), far worse than at normal priority.
    """
    try:
        if mode == "rt":
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
            print("load generator runs SCHED_FIFO (real-time)")
        elif mode == "nice":
            os.setpriority(os.PRIO_PROCESS, 0, -10)
            print("load generator runs at nice -10, so its own waits stay out of the latencies")
        else:
            print("load generator runs at normal priority: its own scheduling delay is in the figures")
    except (OSError, AttributeError):
        print("load generator could not raise its priority: its own scheduling delay is in the figures")


def _parse_env(pairs: list[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"--env expects NAME=VALUE, got {pair!r}")
        overrides[name.strip().upper()] = value
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6 photos, 4 s idle baseline")
    parser.add_argument("--corpus", type=Path, help="a directory of photos to use instead of the generated ones")
    parser.add_argument("--images", type=int, help="photos per job [20; 6 with --quick]")
    parser.add_argument("--rate", type=float, default=20.0, help="status requests per second [20]")
    parser.add_argument("--submit-rate", type=float, default=2.0, help="small job submits per second [2]")
    parser.add_argument("--idle-seconds", type=float, help="idle baseline length [10; 4 with --quick]")
    parser.add_argument("--job-timeout", type=float, help="seconds a job may take before it is an error [300]")
    parser.add_argument("--types", default=",".join(JOB_TYPES), help="job types to run, in order")
    parser.add_argument("--env", action="append", default=[], help="a service setting NAME=VALUE (repeatable)")
    parser.add_argument("--sweep", action="store_true", help="run every settings set of the grid and name the best")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="'A=1 B=2'",
        help="a settings set to compare, space-separated NAME=VALUE or 'defaults' (repeatable; replaces the grid)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the settings sets [1]")
    parser.add_argument("--probe", action="store_true", help="measure event-loop stalls inside the server")
    parser.add_argument(
        "--asyncio-debug",
        action="store_true",
        help="with --probe: asyncio debug mode, logging callbacks over 20 ms (slows the service itself)",
    )
    parser.add_argument(
        "--client-priority",
        choices=["rt", "nice", "none"],
        default="nice",
        help="scheduling of this load generator: nice -10, real-time FIFO, or unchanged [nice]",
    )
    parser.add_argument("--py-spy", action="store_true", help="record GIL holders with py-spy during the first job")
    args = parser.parse_args(argv)
    args.images = args.images or (6 if args.quick else 20)
    args.idle_seconds = args.idle_seconds or (4.0 if args.quick else 10.0)
    args.job_timeout = args.job_timeout or 300.0
    job_types = [name.strip() for name in args.types.split(",") if name.strip()]
    if not job_types or any(name not in JOB_TYPES for name in job_types):
        parser.error(f"--types: choose from {', '.join(JOB_TYPES)}")
    try:
        base_overrides = _parse_env(args.env)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    try:
        chosen = [_parse_env([] if text.strip() == "defaults" else text.split()) for text in args.set]
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    sets = chosen or (SWEEP if args.sweep else [{}])
    grid = [{**base_overrides, **extra} for extra in sets]

    results: list[ScenarioResult] = []
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench-responsiveness-") as scratch_name:
        scratch = Path(scratch_name)
        try:
            corpus, photos = prepare_corpus(scratch, args.images, args.corpus)
        except ValueError as exc:
            parser.error(str(exc))
        print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
        with photo_server(corpus) as photo_base:
            raise_client_priority(args.client_priority)
            urls = [f"{photo_base}/{path.name}" for path in photos]
            for overrides in [entry for _ in range(max(1, args.rounds)) for entry in grid]:
                try:
                    result = run_scenario(scratch, urls, args, overrides, job_types)
                except (RuntimeError, httpx.HTTPError, OSError) as exc:
                    # Reported and counted; the other settings sets still run and are compared.
                    print(f"error: {exc}", file=sys.stderr, flush=True)
                    failures += 1
                    continue
                results.append(result)
                print_scenario(result)
                print(f"load average now: {os.getloadavg()[0]:.2f}", flush=True)
    if results:
        print_targets(results)
    errors = failures + sum(
        sum(stream.errors.values())
        for result in results
        for stream in [result.idle_status, result.idle_submit, *(s for r in result.jobs for s in (r.status, r.submits))]
    )
    if errors:
        print(f"error: {failures} settings sets failed, {errors - failures} requests failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
