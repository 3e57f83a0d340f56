"""`capability-service process` against the service: the same pipelines, with and without a server.

Writes a corpus of distinct ~10 MP camera JPEGs (`benchmarks/_corpus.py`), then, alternating rounds so a
change in machine load hits both sides alike:

- service: a real `capability-service serve` process runs one job over all photos, fetched from a
  loopback HTTP server; measured from submit to the final state (a one-photo warm-up job first);
- CLI: `capability-service process OP CORPUS --out DIR --json` in a fresh process; measured by the
  command's own report (first image started to last result written), and also as the whole
  command's wall time including Python start-up and imports.

Both use the default settings of this machine (CPU_WORKERS = cores, CPU_EXECUTOR=thread, CPU_NICE=10) and
the same job config. Prints images/s for both and the ratio CLI / service (best round of each), and the CPU
time per image of each side (the service process's, the command's during its run), which moves much less
with other load on the machine than the wall-clock rates do.

    python benchmarks/bench_cli.py                       # 20 photos, optimize (webp, standard, 1920)
    python benchmarks/bench_cli.py --photos 10 --rounds 3 --ops optimize,enhance
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

if not __package__:  # run as a script: its own folder is on sys.path, the repository root is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.processes import process_env

from benchmarks._corpus import serve_directory, write_corpus
from benchmarks._proc import cpu_seconds
from benchmarks._service import AUTH, run_job, running_service

CLI = [sys.executable, "-m", "capability_service.cli"]

# One config per operation, as the job API and the command line spell it.
OPERATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "optimize": ("batch_optimization", {"quality": "standard", "format": "webp", "maxSize": 1920}),
    "enhance": ("image_enhancement", {"enhancementLevel": 5, "sharpen": True, "denoise": True, "upscale": False}),
}


def run_service(
    client: httpx.Client, pid: int, op: str, urls: list[str], job_id: str, timeout: float
) -> dict[str, float]:
    job_type, config = OPERATIONS[op]
    body = {"job_id": job_id, "type": job_type, "config": config, "source_image_urls": urls}
    cpu_started = cpu_seconds(pid)
    result, wall = run_job(client, body, timeout)
    cpu = cpu_seconds(pid) - cpu_started
    done = sum(1 for image in result["metadata"]["images"] if image["status"] == "succeeded")
    if done != len(urls):
        raise RuntimeError(f"service job {job_id}: {len(urls) - done} images failed: {result['errors']}")
    return {"images": done, "seconds": wall, "cpu": cpu}


def run_cli(workdir: Path, op: str, corpus: Path, out: Path, timeout: float) -> dict[str, float]:
    _job_type, config = OPERATIONS[op]
    shutil.rmtree(out, ignore_errors=True)
    options = [
        f"--option={key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in config.items()
    ]
    command = [*CLI, "process", op, str(corpus), "--out", str(out), "--json", *options]
    started = time.perf_counter()
    finished = subprocess.run(
        command, env=process_env(workdir), cwd=workdir, capture_output=True, timeout=timeout, check=False
    )
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        raise RuntimeError(f"the command exited with {finished.returncode}: {finished.stderr.decode()[-2000:]}")
    report = json.loads(finished.stdout)
    return {
        "images": report["counts"]["done"],
        "seconds": report["seconds"],
        "cpu": report["cpu_seconds"],
        "command_seconds": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=20, help="10 MP photos in the corpus [20]")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds, best of each side kept [2]")
    parser.add_argument("--ops", default="optimize", help="operations: optimize, enhance [optimize]")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one run may take [900]")
    args = parser.parse_args(argv)
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]

    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        workdir = Path(tmp)
        corpus = workdir / "corpus"
        started = time.perf_counter()
        photos = write_corpus(corpus, args.photos)
        megabytes = sum(path.stat().st_size for path in photos) / 2**20
        print(f"corpus: {len(photos)} photos of ~10 MP, {megabytes:.1f} MiB, in {time.perf_counter() - started:.1f} s")
        print(f"cpus: {os.cpu_count()}; load average before: {os.getloadavg()[0]:.2f}")
        results: dict[str, dict[str, list[dict[str, float]]]] = {}
        with (
            running_service(workdir) as service,
            serve_directory(corpus) as images,
            httpx.Client(base_url=service.url, headers=AUTH, timeout=60) as client,
        ):
            urls = [f"{images}/{path.name}" for path in photos]
            for op in ops:
                run_service(client, service.pid, op, urls[:1], f"warm-{op}", args.timeout)
                sides: dict[str, list[dict[str, float]]] = {"service": [], "cli": []}
                for round_ in range(args.rounds):
                    sides["service"].append(
                        run_service(client, service.pid, op, urls, f"bench-{op}-{round_}", args.timeout)
                    )
                    sides["cli"].append(run_cli(workdir, op, corpus, workdir / f"out-{op}", args.timeout))
                    print(
                        f"{op} round {round_ + 1}: service {sides['service'][-1]['seconds']:.2f} s, "
                        f"CLI {sides['cli'][-1]['seconds']:.2f} s ({sides['cli'][-1]['command_seconds']:.2f} s "
                        "with start-up)"
                    )
                results[op] = sides
        print(f"load average after: {os.getloadavg()[0]:.2f}")

    print()
    print(f"{'operation':10} {'service img/s':>14} {'CLI img/s':>10} {'ratio':>7} {'CLI img/s incl. start-up':>25}")
    for op, sides in results.items():
        service_best = min(sides["service"], key=lambda run: run["seconds"])
        cli_best = min(sides["cli"], key=lambda run: run["seconds"])
        service_rate = service_best["images"] / service_best["seconds"]
        cli_rate = cli_best["images"] / cli_best["seconds"]
        with_startup = cli_best["images"] / cli_best["command_seconds"]
        print(f"{op:10} {service_rate:14.2f} {cli_rate:10.2f} {cli_rate / service_rate:6.2f}x {with_startup:25.2f}")
    print()
    # CPU time per image moves much less with what else the machine runs than the wall-clock rates do.
    print(f"{'operation':10} {'service CPU s/img':>18} {'CLI CPU s/img':>14} {'service / CLI':>14}")
    for op, sides in results.items():
        service_cpu = min(run["cpu"] / run["images"] for run in sides["service"])
        cli_cpu = min(run["cpu"] / run["images"] for run in sides["cli"])
        print(f"{op:10} {service_cpu:18.3f} {cli_cpu:14.3f} {service_cpu / cli_cpu:13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
