"""Does the API stay responsive while a 20-photo job runs? Status and submit latency, idle and loaded.

Starts a real `capability-service serve` on a free loopback port (shipped defaults, plus `--env` and
`--set`), serves ~10 MP photos (see `_corpus.py`) from a loopback HTTP server in a process of its own,
and then:

1. idle baseline: after a warm-up job, `GET /api/v1/ai/job/{id}/status` at `--rate` per second and
   `POST /api/v1/ai/job` (jobs of one 160 px photo) at `--submit-rate` per second, for `--idle-seconds`;
2. for each job type (batch_optimization webp/standard/1920, then image_enhancement level 5 with
   sharpen and denoise): one job of all the photos, and the same two request streams while it runs.

Requests are sent open-loop (see `_latency.py`). Per settings set it prints p50/p95/p99/max of each
stream, the loaded/idle p99 ratio, each job's wall time, and where the CPU went while the job ran: per
thread group of the service, how long its event-loop thread waited for a free core (the kernel's
run-queue delay), and the cores used by the load generator and by other processes on the machine.
A last table gives, per settings set, the medians over `--rounds` against the 50 ms target.

    python benchmarks/bench_responsiveness.py            # 20 photos, both job types
    python benchmarks/bench_responsiveness.py --quick    # 6 photos, 4 s idle baseline
    python benchmarks/bench_responsiveness.py --set defaults --set CPU_NICE=0 --rounds 2   # compare, interleaved

Exits non-zero only on errors (the service does not start, a request fails, a job does not complete in
time); a missed latency target is reported, not fatal.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import httpx

if not __package__:  # run as a script: its own folder is on sys.path, the repository root is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._corpus import SOURCE_PHOTO, add_corpus_options, corpus_size, prepare_corpus, serve_directory
from benchmarks._latency import FINAL, LoadClient, Stream, small_photo_uri
from benchmarks._proc import (
    MAIN_THREAD,
    GroupUsage,
    machine_busy_seconds,
    thread_times,
    tree_cpu_seconds,
    usage_by_group,
)
from benchmarks._service import AUTH, running_service

TARGET_MS = 50.0
JOB_TYPES: dict[str, dict[str, Any]] = {
    "batch_optimization": {"format": "webp", "quality": "standard", "maxSize": 1920},
    "image_enhancement": {"enhancementLevel": 5, "sharpen": True, "denoise": True, "upscale": False},
}
# The only settings the benchmark itself changes. Neither changes how fast the API answers: a queue
# large enough that the submit stream never meets the 503 of a full queue while a long job runs, and
# a short grace period so the service stops quickly when a settings set is done.
BENCH_SETTINGS = {"JOB_QUEUE_SIZE": "1000", "SHUTDOWN_GRACE_SECONDS": "5"}


@dataclass
class JobRun:
    """One big job and the request streams that ran beside it."""

    job_type: str
    images: int
    wall_s: float
    submit_ms: float
    status: Stream
    submits: Stream
    threads: dict[str, GroupUsage]
    service_cpu_s: float
    machine_s: float
    client_s: float

    @property
    def others_cores(self) -> float:
        """Cores that processes other than the service and the load generator used meanwhile."""
        return max(0.0, self.machine_s - self.service_cpu_s - self.client_s) / self.wall_s


@dataclass
class Scenario:
    """One settings set, one round: the idle baseline and the jobs."""

    label: str
    idle_status: Stream
    idle_submit: Stream
    jobs: list[JobRun]

    def worst_p99_ms(self) -> tuple[float, float]:
        """The worst status p99 and submit p99 while a job ran, in ms."""
        status = max((run.status.stats()["p99"] for run in self.jobs), default=float("nan"))
        submit = max((run.submits.stats()["p99"] for run in self.jobs), default=float("nan"))
        return status * 1000, submit * 1000

    def streams(self) -> list[Stream]:
        return [self.idle_status, self.idle_submit, *(s for run in self.jobs for s in (run.status, run.submits))]


# ---------------------------------------------------------------- the photos, served like a CDN


def _serve_photos(directory: str, announce: Queue[str]) -> None:
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
    announce: Queue[str] = context.Queue()
    process = context.Process(target=_serve_photos, args=(str(directory), announce), daemon=True)
    process.start()
    try:
        yield announce.get(timeout=60)
    finally:
        process.terminate()
        process.join(timeout=10)


# ---------------------------------------------------------------- measuring


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def measure(base_url: str, pid: int, urls: list[str], args: argparse.Namespace, label: str) -> Scenario:
    """The idle baseline, then each job type's job with the request streams beside it."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    headers = {**AUTH, "X-User-Id": "bench"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=30.0) as http:
        client = LoadClient(http, small_photo_uri(SOURCE_PHOTO))
        # Warm-up: imports, pools and connections are ready before anything is timed.
        _, warm_id = await client.submit("batch_optimization", JOB_TYPES["batch_optimization"], urls[:1])
        warm = await client.wait_final(warm_id, 120)
        if warm["status"] != "completed":
            raise RuntimeError(f"warm-up job ended {warm['status']}: {warm.get('message')}")
        idle_until = time.monotonic() + args.idle_seconds
        idle_status, idle_submit = await client.streams(
            warm_id, args.rate, args.submit_rate, lambda _: time.monotonic() < idle_until
        )
        runs = [await measure_job(client, pid, job_type, urls, args) for job_type in args.job_types]
        await client.drain()
    return Scenario(label, idle_status, idle_submit, runs)


async def measure_job(client: LoadClient, pid: int, job_type: str, urls: list[str], args: argparse.Namespace) -> JobRun:
    await client.drain()
    threads_before, cpu_before = thread_times(pid), tree_cpu_seconds(pid)
    machine_before, client_before = machine_busy_seconds(), own_cpu_seconds()
    started = time.perf_counter()
    submit_s, job_id = await client.submit(job_type, JOB_TYPES[job_type], urls)
    deadline = time.monotonic() + args.job_timeout

    def running(latest: dict[str, Any]) -> bool:
        return latest["status"] not in FINAL and time.monotonic() < deadline

    status_stream, submit_stream = await client.streams(job_id, args.rate, args.submit_rate, running)
    wall = time.perf_counter() - started
    threads = usage_by_group(threads_before, thread_times(pid))
    service_cpu = tree_cpu_seconds(pid) - cpu_before
    machine, own = machine_busy_seconds() - machine_before, own_cpu_seconds() - client_before
    result = (await client.http.get(f"/api/v1/ai/job/{job_id}")).json()
    if result.get("status") != "completed":
        raise RuntimeError(f"{job_type} job ended {result.get('status')!r} after {wall:.0f} s: {result.get('message')}")
    failed = sum(1 for url in result["result_image_urls"] if url is None)
    if failed:
        raise RuntimeError(f"{job_type}: {failed} images failed: {result.get('message')}")
    return JobRun(
        job_type=job_type,
        images=len(urls),
        wall_s=wall,
        submit_ms=submit_s * 1000,
        status=status_stream,
        submits=submit_stream,
        threads=threads,
        service_cpu_s=service_cpu,
        machine_s=machine,
        client_s=own,
    )


def run_scenario(scratch: Path, urls: list[str], args: argparse.Namespace, overrides: dict[str, str]) -> Scenario:
    label = " ".join(f"{name}={value}" for name, value in overrides.items()) or "defaults"
    print(f"\n== settings: {label}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="service-", dir=scratch))
    with running_service(workdir, {**BENCH_SETTINGS, **overrides}) as service:
        return asyncio.run(measure(service.url, service.pid, urls, args, label))


# ---------------------------------------------------------------- report


def _ms(value: float) -> str:
    return f"{value * 1000:8.1f}"


def _stream_row(name: str, stream: Stream, idle: Stream | None) -> str:
    stats = stream.stats()
    idle_p99 = idle.stats()["p99"] if idle is not None else 0.0
    ratio = f"{stats['p99'] / idle_p99:7.1f}x" if idle_p99 > 0 else f"{'-':>8}"
    errors = sum(stream.errors.values())
    client_lag_ms = max(stream.client_lag, default=0.0) * 1000
    return (
        f"{name:<34} {int(stats['n']):>5} {_ms(stats['p50'])} {_ms(stats['p95'])} {_ms(stats['p99'])} "
        f"{_ms(stats['max'])} {ratio} {errors:>6} {client_lag_ms:>13.1f}"
    )


def print_scenario(scenario: Scenario) -> None:
    header = (
        f"{'request stream':<34} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'p99/idle':>8} {'errors':>6} {'client lag ms':>13}"
    )
    print(header)
    print("-" * len(header))
    print(_stream_row("status, idle", scenario.idle_status, None))
    print(_stream_row("submit, idle", scenario.idle_submit, None))
    for run in scenario.jobs:
        print(_stream_row(f"status, during {run.job_type}", run.status, scenario.idle_status))
        print(_stream_row(f"submit, during {run.job_type}", run.submits, scenario.idle_submit))
    print("(client lag: the latest the load generator sent a request after its scheduled time, max)")
    for stream in scenario.streams():
        for error, count in stream.errors.most_common(3):
            print(f"  error x{count}: {error}")
    if not scenario.jobs:
        return
    print(f"\n{f'job ({scenario.jobs[0].images} photos)':<22} {'wall s':>7} {'images/s':>9} {'submit ms':>10}")
    for run in scenario.jobs:
        print(f"{run.job_type:<22} {run.wall_s:>7.1f} {run.images / run.wall_s:>9.2f} {run.submit_ms:>10.1f}")
    for run in scenario.jobs:
        print(f"\nservice CPU during {run.job_type} ({run.wall_s:.1f} s wall):")
        print(f"  {'thread group':<34} {'threads':>7} {'CPU s':>7} {'cores':>6} {'run-queue wait s':>17}")
        for name, group in sorted(run.threads.items(), key=lambda item: -item[1].cpu_s):
            if group.cpu_s >= 0.01 or group.runq_s >= 0.01:
                print(
                    f"  {name:<34} {group.threads:>7} {group.cpu_s:>7.1f} "
                    f"{group.cpu_s / run.wall_s:>6.2f} {group.runq_s:>17.2f}"
                )
        counted = sum(group.cpu_s for group in run.threads.values())
        print(
            f"  {'whole service':<34} {'':>7} {run.service_cpu_s:>7.1f} {run.service_cpu_s / run.wall_s:>6.2f}"
            f"   (of which {max(0.0, run.service_cpu_s - counted):.1f} CPU s in threads that have exited)"
        )
        print(
            f"  machine: {run.machine_s / run.wall_s:.2f} of {os.cpu_count()} cores busy: the service "
            f"{run.service_cpu_s / run.wall_s:.2f}, this load generator {run.client_s / run.wall_s:.2f}, "
            f"other processes (the photo server among them) {run.others_cores:.2f}"
        )
        loop = run.threads.get(MAIN_THREAD)
        if loop is not None:
            print(
                f"  the event loop was runnable but waiting for a free core {loop.runq_s / run.wall_s * 1000:.0f} ms "
                f"per second (kernel run-queue delay); it used {loop.cpu_s / run.wall_s * 100:.0f} % of one core"
            )


def print_targets(scenarios: list[Scenario]) -> None:
    """One row per settings set: medians over its rounds, and how busy the rest of the machine was."""
    print(f"\ntarget while a job runs: status p99 and submit p99 under {TARGET_MS:.0f} ms")
    by_label: dict[str, list[Scenario]] = {}
    for scenario in scenarios:
        by_label.setdefault(scenario.label, []).append(scenario)
    job_types = [run.job_type for run in scenarios[0].jobs]
    header = (
        f"{'settings':<40} {'rounds':>6} {'status p99':>10} {'submit p99':>10} {'met':>4} {'others':>6} "
        + " ".join(f"{name + ' s':>20}" for name in job_types)
    )
    print(header)
    print("-" * len(header))
    for label, rounds in by_label.items():
        status = statistics.median(r.worst_p99_ms()[0] for r in rounds)
        submit = statistics.median(r.worst_p99_ms()[1] for r in rounds)
        others = statistics.median(run.others_cores for r in rounds for run in r.jobs)
        walls = " ".join(f"{statistics.median(r.jobs[i].wall_s for r in rounds):>20.1f}" for i in range(len(job_types)))
        met = "yes" if status < TARGET_MS and submit < TARGET_MS else "no"
        print(f"{label:<40} {len(rounds):>6} {status:>10.1f} {submit:>10.1f} {met:>4} {others:>6.2f} {walls}")
    print(
        "(worst p99 over the job types in ms and job wall times in s, medians over rounds; "
        "others = cores used meanwhile by other processes on the machine)"
    )


# ---------------------------------------------------------------- main


def raise_client_priority(wanted: bool) -> None:
    """Keep the load generator's own scheduling delay out of the figures.

    The client stands in for callers on other machines; on a saturated machine it would otherwise
    wait for a core to send a request or read an answer, and that wait would count as the service's
    latency. It uses a few percent of one core, so nice -10 takes little from the service.
    """
    if not wanted:
        print("load generator at normal priority: its own scheduling delay is in the figures")
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
        print("load generator at nice -10, so its own waits for a core stay out of the latencies")
    except OSError:
        print("load generator could not raise its priority: its own scheduling delay is in the figures")


def _settings(pairs: list[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {pair!r}")
        overrides[name.strip().upper()] = value
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_corpus_options(parser, quick="6 photos, 4 s idle baseline", images="photos per job")
    parser.add_argument("--rate", type=float, default=20.0, help="status requests per second [20]")
    parser.add_argument("--submit-rate", type=float, default=2.0, help="small-job submits per second [2]")
    parser.add_argument("--idle-seconds", type=float, help="idle baseline length [10; 4 with --quick]")
    parser.add_argument("--job-timeout", type=float, default=300.0, help="seconds a job may take [300]")
    parser.add_argument("--types", default=",".join(JOB_TYPES), help="job types to run, in order")
    parser.add_argument("--env", action="append", default=[], help="a service setting NAME=VALUE for every set")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="'A=1 B=2'",
        help="a settings set to compare: space-separated NAME=VALUE, or 'defaults' (repeatable)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the settings sets [1]")
    parser.add_argument(
        "--normal-priority", action="store_true", help="leave this load generator at normal priority (not nice -10)"
    )
    args = parser.parse_args(argv)
    args.images = corpus_size(args)
    args.idle_seconds = args.idle_seconds or (4.0 if args.quick else 10.0)
    args.job_types = [name.strip() for name in args.types.split(",") if name.strip()]
    if not args.job_types or any(name not in JOB_TYPES for name in args.job_types):
        parser.error(f"--types: choose from {', '.join(JOB_TYPES)}")
    try:
        common = _settings(args.env)
        sets = [_settings([] if text.strip() == "defaults" else text.split()) for text in args.set] or [{}]
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))

    scenarios: list[Scenario] = []
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench-responsiveness-") as scratch_name:
        scratch = Path(scratch_name)
        try:
            corpus, photos = prepare_corpus(scratch, args.images, args.corpus)
        except ValueError as exc:
            parser.error(str(exc))
        print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
        with photo_server(corpus) as photo_base:
            raise_client_priority(not args.normal_priority)
            urls = [f"{photo_base}/{path.name}" for path in photos]
            for extra in [entry for _ in range(max(1, args.rounds)) for entry in sets]:
                try:
                    scenario = run_scenario(scratch, urls, args, {**common, **extra})
                except (RuntimeError, httpx.HTTPError, OSError) as exc:
                    # Reported and counted; the other settings sets still run and are compared.
                    print(f"error: {exc}", file=sys.stderr, flush=True)
                    failures += 1
                    continue
                scenarios.append(scenario)
                print_scenario(scenario)
                print(f"load average now: {os.getloadavg()[0]:.2f}", flush=True)
    if scenarios:
        print_targets(scenarios)
    failed_requests = sum(sum(stream.errors.values()) for s in scenarios for stream in s.streams())
    if failures or failed_requests:
        print(f"error: {failures} settings sets failed, {failed_requests} requests failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
