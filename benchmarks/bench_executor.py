"""Thread pool or process pool for the image work? Throughput and memory on the same real photos.

Runs the same ~10 MP photos through `optimize` (batch_optimization: webp, standard, 1920) and `enhance`
(image_enhancement defaults: level 5, denoise, sharpen, png) via `CpuExecutor`, in three set-ups:

- serial (1 pool thread): `CpuExecutor("thread", 1)`, one image at a time: the baseline, measured in
  the same run;
- thread xW: `CpuExecutor("thread", W)`, W images at a time in one process;
- process xW: `CpuExecutor("process", W)`, W images at a time in W worker processes.

In every set-up libvips may still use several threads inside one operation (`VIPS_CONCURRENCY`, printed;
libvips' default is one per core). Each set-up runs in a fresh Python process per round, with the
allocator tuning of a service process, so its peak RSS (`ru_maxrss`) is its own; for the process pool
the workers' peak RSS (`VmHWM`) is reported too. Pools are started and warmed before timing, as the
service keeps them for its whole life. Images are submitted as the job engine does, at most
`--in-flight` at once (4 by default: enough to keep 2 workers busy; the service's MAX_IMAGES_IN_FLIGHT
per job is 8).

    python benchmarks/bench_executor.py            # 20 photos, 2 interleaved rounds, best kept
    python benchmarks/bench_executor.py --quick    # 6 photos, one round
    python benchmarks/bench_executor.py --ops enhance --glibc-allocator   # memory without the allocator tuning

Exits non-zero only when something fails (an image error, a set-up that crashes or times out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyvips

if not __package__:  # run as a script: its own folder is on sys.path, the repository root is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._corpus import REPO_ROOT, add_corpus_options, corpus_size, list_photos, prepare_corpus
from benchmarks._proc import cpu_seconds, status_kib
from capability_service.core.allocator import tune_allocator
from capability_service.imaging.enhance import enhance
from capability_service.imaging.optimize import optimize
from capability_service.imaging.types import EncodedImage, EnhanceOptions, OptimizeOptions
from capability_service.jobs.cpu import CpuExecutor

Kind = Literal["thread", "process"]
OPERATIONS: dict[str, tuple[Callable[..., EncodedImage], object]] = {
    "optimize": (optimize, OptimizeOptions(format="webp", quality="standard", max_size=1920)),
    "enhance": (enhance, EnhanceOptions()),
}
# Seconds one round of one set-up (all operations) may take before it counts as failed.
SETUP_TIMEOUT = 900.0


@dataclass(frozen=True)
class SetUp:
    label: str
    kind: Kind
    workers: int


def _worker_pids(executor: CpuExecutor) -> list[int]:
    # The pool's own table of worker processes: the only handle on them, as forkserver makes them
    # children of the fork server rather than of this process.
    processes: dict[int, Any] = getattr(executor._pool, "_processes", None) or {}
    return list(processes)


async def _run_setup(kind: Kind, workers: int, paths: list[Path], ops: list[str], in_flight: int) -> dict[str, Any]:
    photos = [path.read_bytes() for path in paths]
    rss_loaded = status_kib(os.getpid(), "VmRSS")
    started = time.perf_counter()
    executor = CpuExecutor(kind, workers)
    # Start every worker (a process pool spawns and imports lazily) before anything is timed.
    warm_fn, warm_options = OPERATIONS["optimize"]
    small = bytes(pyvips.Image.new_from_buffer(photos[0], "").thumbnail_image(320).jpegsave_buffer())
    await asyncio.gather(*(executor.run(warm_fn, small, warm_options) for _ in range(workers * 2)))
    startup_s = time.perf_counter() - started
    results: dict[str, Any] = {"startup_s": startup_s, "rss_loaded_kib": rss_loaded, "ops": {}}
    gate = asyncio.Semaphore(in_flight)

    async def one(fn: Callable[..., EncodedImage], data: bytes, options: object) -> int:
        async with gate:
            result = await executor.run(fn, data, options)
            return len(result.data)

    try:
        for op in ops:
            fn, options = OPERATIONS[op]
            pids = [os.getpid(), *_worker_pids(executor)]
            cpu_before = sum(cpu_seconds(pid) for pid in pids)
            t0 = time.perf_counter()
            sizes = await asyncio.gather(*(one(fn, data, options) for data in photos))
            wall = time.perf_counter() - t0
            cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
            if not all(sizes):
                raise RuntimeError(f"{op}: an image gave an empty result")
            results["ops"][op] = {"wall_s": wall, "cpu_s": cpu, "out_bytes": sum(sizes)}
        results["worker_hwm_kib"] = [status_kib(pid, "VmHWM") for pid in _worker_pids(executor)]
    finally:
        executor.shutdown()
    results["parent_peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results["vips_concurrency"] = pyvips.concurrency_get()
    return results


def _child_main(args: argparse.Namespace) -> int:
    # The allocator set-up of a service process (`create_app`), so memory figures match the service's.
    if not args.glibc_allocator:
        tune_allocator()
    paths = list_photos(Path(args.corpus))[: args.images]
    result = asyncio.run(_run_setup(args.kind, args.workers, paths, args.ops.split(","), args.in_flight))
    print(json.dumps(result))
    return 0


def _run_child(setup: SetUp, corpus: Path, args: argparse.Namespace, ops: list[str]) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_executor",
        "--child",
        "--kind",
        setup.kind,
        "--workers",
        str(setup.workers),
        "--corpus",
        str(corpus),
        "--images",
        str(args.images),
        "--ops",
        ",".join(ops),
        "--in-flight",
        str(args.in_flight),
        *(["--glibc-allocator"] if args.glibc_allocator else []),
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=SETUP_TIMEOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"set-up {setup.label} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _best(runs: list[dict[str, Any]], ops: list[str]) -> dict[str, Any]:
    """One set-up's rounds folded: the fastest round per operation, the largest memory peaks."""
    best: dict[str, Any] = {
        "startup_s": min(run["startup_s"] for run in runs),
        "parent_peak_rss_kib": max(run["parent_peak_rss_kib"] for run in runs),
        "worker_hwm_kib": max((run["worker_hwm_kib"] for run in runs), key=lambda hwm: sum(hwm)),
        "vips_concurrency": runs[0]["vips_concurrency"],
        "ops": {},
    }
    for op in ops:
        fastest = min((run["ops"][op] for run in runs), key=lambda entry: entry["wall_s"])
        best["ops"][op] = {**fastest, "walls_s": [run["ops"][op]["wall_s"] for run in runs]}
    return best


def _mib(kib: float) -> str:
    return f"{kib / 1024:.0f}"


def _print_report(setups: list[SetUp], results: dict[str, dict[str, Any]], ops: list[str], images: int) -> None:
    baseline = setups[0].label
    print()
    print(f"{images} photos of ~10 MP each; images/s from the best run; ratio = images/s / {baseline}")
    header = (
        f"{'operation':<10} {'set-up':<22} {'images/s':>9} {'ratio':>6} {'wall s':>7} {'CPU s/img':>10}  every round s"
    )
    print(header)
    print("-" * len(header))
    for op in ops:
        base_rate = images / results[baseline]["ops"][op]["wall_s"]
        for setup in setups:
            entry = results[setup.label]["ops"][op]
            rate = images / entry["wall_s"]
            print(
                f"{op:<10} {setup.label:<22} {rate:>9.2f} {rate / base_rate:>6.2f} "
                f"{entry['wall_s']:>7.2f} {entry['cpu_s'] / images:>10.2f}  "
                + " ".join(f"{wall:.2f}" for wall in entry["walls_s"])
            )
    print()
    header = f"{'set-up':<22} {'startup s':>9} {'parent peak RSS MiB':>20} {'workers peak RSS MiB':>21}"
    print(header)
    print("-" * len(header))
    for setup in setups:
        entry = results[setup.label]
        workers = entry.get("worker_hwm_kib") or []
        worker_text = " + ".join(_mib(kib) for kib in workers) if workers else "-"
        print(
            f"{setup.label:<22} {entry['startup_s']:>9.2f} {_mib(entry['parent_peak_rss_kib']):>20} {worker_text:>21}"
        )
    concurrency = {results[s.label]["vips_concurrency"] for s in setups}
    print()
    print(f"libvips threads per operation (VIPS_CONCURRENCY): {', '.join(map(str, sorted(concurrency)))}")
    for op in ops:
        thread = images / results[setups[1].label]["ops"][op]["wall_s"]
        process = images / results[setups[2].label]["ops"][op]["wall_s"]
        print(f"{op}: process/thread throughput = {process / thread:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_corpus_options(parser, quick="6 photos, one round", images="how many photos")
    parser.add_argument("--workers", type=int, default=2, help="pool size of the thread and process set-ups [2]")
    parser.add_argument("--repeat", type=int, help="interleaved rounds of every set-up, best kept [2; 1 with --quick]")
    parser.add_argument("--in-flight", type=int, default=4, help="images submitted to the pool at once [4]")
    parser.add_argument(
        "--glibc-allocator",
        action="store_true",
        help="leave glibc's allocator at its defaults in the set-up's process (pool workers still tune theirs)",
    )
    parser.add_argument("--ops", default="optimize,enhance", help="operations to run [optimize,enhance]")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=["thread", "process"], default="thread", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.images = corpus_size(args)
    args.repeat = args.repeat or (1 if args.quick else 2)
    if args.child:
        return _child_main(args)

    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    unknown = [op for op in ops if op not in OPERATIONS]
    if unknown or not ops:
        parser.error(f"--ops: unknown {unknown}; choose from {', '.join(OPERATIONS)}")
    setups = [
        SetUp("serial (1 pool thread)", "thread", 1),
        SetUp(f"thread x{args.workers}", "thread", args.workers),
        SetUp(f"process x{args.workers}", "process", args.workers),
    ]
    with tempfile.TemporaryDirectory(prefix="bench-executor-") as scratch:
        try:
            corpus, _photos = prepare_corpus(Path(scratch), args.images, args.corpus)
        except ValueError as exc:
            parser.error(str(exc))
        print(f"cores: {os.cpu_count()}, VIPS_CONCURRENCY={os.environ.get('VIPS_CONCURRENCY', '(libvips default)')}")
        tuning = "glibc defaults (--glibc-allocator)" if args.glibc_allocator else "tuned as in a service process"
        print(f"allocator of each set-up's process: {tuning}")
        runs: dict[str, list[dict[str, Any]]] = {setup.label: [] for setup in setups}
        # Rounds interleave the set-ups, so a burst of other load on the machine hits all of them
        # alike instead of one; each set-up keeps its best round.
        for round_number in range(1, args.repeat + 1):
            for setup in setups:
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                try:
                    runs[setup.label].append(_run_child(setup, corpus, args, ops))
                except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 1
                print(
                    f"  round {round_number}, {setup.label}: {time.perf_counter() - t0:.1f} s "
                    f"(load average before: {load:.2f})",
                    flush=True,
                )
    results = {label: _best(label_runs, ops) for label, label_runs in runs.items()}
    _print_report(setups, results, ops, args.images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
