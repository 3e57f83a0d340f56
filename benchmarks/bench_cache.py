"""The result cache: the same 20-photo job twice, the second run's CPU time against the first's.

One `capability-service serve` (memory mode, default settings: RESULT_CACHE=true, CPU_WORKERS = cores,
MAX_IMAGES_IN_FLIGHT=8) runs one job over `--photos` distinct ~10 MP photos (`_corpus.py`, served over
loopback), then the same job again under a new job id: same sources, same config, same tenant. The
service process's CPU time (user + system, from /proc; image work runs in its threads) is read
before and after each job; the second run should cost its downloads and no processing (target: below
10 % of the first). Every image of the second run must say `cache: "hit"` in its metadata, every image
of the first `"miss"`, and the second run's result files must be byte for byte the first run's.

The control: a second service with RESULT_CACHE=false runs the same two jobs; both cost the same and
every image says `"miss"`. Before each service's first run, one job on a photo outside the set warms it
up (libvips, connections), so neither first run pays for the start.

Jobs are followed by `_service.run_job` (status polled every 50 ms), as a client would; those requests
are in the service's CPU time too.

    python benchmarks/bench_cache.py                               # 20 photos, batch_optimization
    python benchmarks/bench_cache.py --type image_enhancement      # a heavier pipeline
    python benchmarks/bench_cache.py --photos 8                    # quicker
    python benchmarks/bench_cache.py --env CPU_WORKERS=1           # any setting of the service

Exits 1 when a job fails or a check fails (a miss in the second run, different result bytes), 2 when the
ratio misses the target.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

if not __package__:  # run as a script: its own folder is on sys.path, the repository root is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._corpus import serve_directory, write_corpus
from benchmarks._proc import cpu_seconds
from benchmarks._service import run_job, running_service

TARGET = 0.10
# Each type with its default config: what a seller gets without choosing anything.
CONFIGS: dict[str, dict[str, Any]] = {"batch_optimization": {}, "image_enhancement": {}}


class CheckFailed(Exception):
    """A run did not do what the cache promises (a miss where a hit was due, other bytes)."""


@dataclass(frozen=True)
class Run:
    cpu_s: float
    wall_s: float
    caches: list[str]
    # SHA-256 of each result file, by image index.
    digests: list[str]


def run_once(client: httpx.Client, pid: int, job_id: str, job_type: str, sources: list[str]) -> Run:
    payload = {"job_id": job_id, "type": job_type, "config": CONFIGS[job_type], "source_image_urls": sources}
    before = cpu_seconds(pid)
    result, wall = run_job(client, payload)
    cpu = cpu_seconds(pid) - before
    if result.get("status") != "completed" or result.get("failed"):
        raise CheckFailed(f"job {job_id} ended {result.get('status')}: {result.get('errors')}")
    images = result["metadata"]["images"]
    # Read after the CPU time is taken: fetching the results is not part of the job.
    urls = result["result_image_urls"]
    digests = [hashlib.sha256(client.get(url).raise_for_status().content).hexdigest() for url in urls]
    return Run(cpu, wall, [str(image.get("cache")) for image in images], digests)


def measure(
    work: Path, cache: bool, job_type: str, sources: list[str], warm_up: str, settings: dict[str, str]
) -> tuple[Run, Run]:
    """Two runs of the same job on a service with the result cache on or off; checks their `cache` fields."""
    label = "on" if cache else "off"
    overrides = {**settings, "RESULT_CACHE": "true" if cache else "false"}
    with (
        running_service(work, overrides, name=f"serve-cache-{label}") as service,
        httpx.Client(base_url=service.url, timeout=60) as client,
    ):
        run_once(client, service.pid, f"warm-up-{label}", job_type, [warm_up])
        first = run_once(client, service.pid, f"catalogue-{label}-1", job_type, sources)
        second = run_once(client, service.pid, f"catalogue-{label}-2", job_type, sources)
    if any(value != "miss" for value in first.caches):
        raise CheckFailed(f"cache {label}: the first run's images say {first.caches}; all should be 'miss'")
    expected = "hit" if cache else "miss"
    if any(value != expected for value in second.caches):
        raise CheckFailed(f"cache {label}: the second run's images say {second.caches}; all should be {expected!r}")
    if cache and second.digests != first.digests:
        changed = [index for index, (a, b) in enumerate(zip(first.digests, second.digests, strict=True)) if a != b]
        raise CheckFailed(f"cache on: results of images {changed} differ from the first run's")
    return first, second


def show(label: str, first: Run, second: Run) -> float:
    ratio = second.cpu_s / first.cpu_s
    hits = sum(value == "hit" for value in second.caches)
    print(
        f"  {label}: first run CPU {first.cpu_s:.2f} s, wall {first.wall_s:.2f} s; "
        f"second run CPU {second.cpu_s:.2f} s, wall {second.wall_s:.2f} s; "
        f"second / first: CPU {ratio * 100:.1f} %, wall {second.wall_s / first.wall_s * 100:.1f} % "
        f"({hits} of {len(second.caches)} cache hits)"
    )
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=20, help="photos in the job [20]")
    parser.add_argument("--type", choices=sorted(CONFIGS), default="batch_optimization", help="job type [%(default)s]")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE setting for the service")
    args = parser.parse_args()
    if args.photos < 1:
        parser.error("--photos must be at least 1")
    if any("=" not in item for item in args.env):
        parser.error("--env takes KEY=VALUE")
    settings = dict(item.split("=", 1) for item in args.env)

    print(f"start: load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        work = Path(tmp)
        photos = write_corpus(work / "corpus", args.photos + 1)
        source_bytes = sum(photo.stat().st_size for photo in photos[:-1])
        print(
            f"job: {args.type} (default config) over {args.photos} distinct ~10 MP photos "
            f"({source_bytes / 2**20:.0f} MiB of JPEG), one `serve` in memory mode, "
            f"settings: {' '.join(args.env) if args.env else 'the defaults'}"
        )
        ratios: dict[str, float] = {}
        with serve_directory(work / "corpus") as base:
            sources = [f"{base}/{photo.name}" for photo in photos[:-1]]
            warm_up = f"{base}/{photos[-1].name}"
            for cache in (True, False):
                label = f"RESULT_CACHE={'true' if cache else 'false'}"
                try:
                    first, second = measure(work, cache, args.type, sources, warm_up, settings)
                except (CheckFailed, TimeoutError, httpx.HTTPError) as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 1
                ratios[label] = show(label, first, second)
                print(f"  load average now: {os.getloadavg()[0]:.2f}")
        on = ratios["RESULT_CACHE=true"]
        verdict = "met" if on < TARGET else "MISSED"
        print(
            f"=> second run's CPU time against the first: {on * 100:.1f} % with the cache "
            f"(target below {TARGET * 100:.0f} %: {verdict}), {ratios['RESULT_CACHE=false'] * 100:.1f} % without; "
            f"every image of the second run was a hit and its result the first run's bytes"
        )
    return 0 if on < TARGET else 2


if __name__ == "__main__":
    sys.exit(main())
