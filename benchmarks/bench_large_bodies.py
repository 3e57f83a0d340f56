"""Large job submissions arriving at once: the service's peak RSS with the large-body cap against without it.

`--bodies` clients each submit one job of `--sources` data: URIs at the same moment. Every source is a
real photo (`tests/data/camera_3648x2736.jpg`, 2.8 MB, 3.8 MB as base64), so a body is about
3.8 MB x sources (45 MB by default). Two `capability-service serve` processes run one after the other in
this run, with the same settings but:

- uncapped: MAX_CONCURRENT_LARGE_BODIES=1024 (every body is read at once, as before the cap);
- capped: the shipped defaults (MAX_CONCURRENT_LARGE_BODIES=2 bodies above LARGE_BODY_BYTES=8 MiB at once,
  each waiting up to LARGE_BODY_WAIT_SECONDS for a turn; LARGE_BODY_WAIT_SECONDS is raised here so that
  no body is refused and both services accept the same jobs).

By default the jobs are refused after their bodies are read (`maxSize: 1` fails validation), so what is
measured is reading the bodies and nothing else; `--run-jobs` submits valid jobs (batch_optimization,
maxSize 256) and includes their processing and the sources they hold until they end. The figure is the
service's peak RSS (VmHWM from /proc) above its RSS after a warm-up submission, for each service, and
their ratio.

    python benchmarks/bench_large_bodies.py                    # 6 bodies of 12 photos (45 MB each)
    python benchmarks/bench_large_bodies.py --bodies 8 --sources 20
    python benchmarks/bench_large_bodies.py --run-jobs         # valid jobs, processed to the end
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

if not __package__:  # run as a script: its own folder is on sys.path, the repository root is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.data import read_image

from benchmarks._proc import status_kib
from benchmarks._service import AUTH, FINAL, running_service

PHOTO = "camera_3648x2736.jpg"


def make_body(job_id: str, sources: int, run_jobs: bool) -> bytes:
    photo = "data:image/jpeg;base64," + base64.b64encode(read_image(PHOTO)).decode()
    # maxSize 1 is refused by validation, after the whole body has been read and parsed.
    config = {"format": "jpg", "maxSize": 256 if run_jobs else 1}
    payload = {"job_id": job_id, "type": "batch_optimization", "config": config, "source_image_urls": [photo] * sources}
    return json.dumps(payload).encode()


def submit_all(url: str, bodies: list[bytes]) -> list[int]:
    """Every body posted at the same moment, each from its own thread and connection; their statuses."""
    statuses: list[int] = [0] * len(bodies)
    start = threading.Barrier(len(bodies))

    def post(index: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            start.wait()
            headers = {**AUTH, "Content-Type": "application/json"}
            statuses[index] = client.post("/api/v1/ai/job", content=bodies[index], headers=headers).status_code

    threads = [threading.Thread(target=post, args=(index,)) for index in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def wait_jobs(url: str, job_ids: list[str]) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for job_id in job_ids:
            while client.get(f"/api/v1/ai/job/{job_id}/status", headers=AUTH).json()["status"] not in FINAL:
                time.sleep(0.2)


def measure(label: str, overrides: dict[str, str], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    (workdir / label).mkdir()
    with running_service(workdir / label, overrides, name=label) as service:
        # Warm-up: one small submission, so imports and first-request costs are paid before the baseline.
        warm = submit_all(service.url, [make_body(f"{label}-warm", 1, args.run_jobs)])
        if args.run_jobs:
            wait_jobs(service.url, [f"{label}-warm"])
        base_kib = status_kib(service.pid, "VmRSS")
        bodies = [make_body(f"{label}-{index}", args.sources, args.run_jobs) for index in range(args.bodies)]
        started = time.perf_counter()
        statuses = submit_all(service.url, bodies)
        submit_s = time.perf_counter() - started
        if args.run_jobs:
            wait_jobs(service.url, [f"{label}-{index}" for index in range(args.bodies)])
        peak_kib = status_kib(service.pid, "VmHWM")
    return {
        "label": label,
        "warm_status": warm[0],
        "statuses": statuses,
        "base_mib": base_kib / 1024,
        "peak_mib": peak_kib / 1024,
        "above_mib": (peak_kib - base_kib) / 1024,
        "submit_s": submit_s,
        "body_mib": len(bodies[0]) / 2**20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bodies", type=int, default=6, help="submissions sent at once (default 6)")
    parser.add_argument("--sources", type=int, default=12, help="data: URIs per submission (default 12)")
    parser.add_argument("--run-jobs", action="store_true", help="submit valid jobs and let them finish")
    args = parser.parse_args()
    common = {"LARGE_BODY_WAIT_SECONDS": "600", "MAX_IMAGES_PER_JOB": str(max(100, args.sources))}
    with tempfile.TemporaryDirectory(prefix="bench-large-bodies-") as tmp:
        workdir = Path(tmp)
        uncapped = measure("uncapped", {**common, "MAX_CONCURRENT_LARGE_BODIES": "1024"}, args, workdir)
        capped = measure("capped", common, args, workdir)
    print(
        f"{args.bodies} submissions at once, {uncapped['body_mib']:.1f} MiB each "
        f"({args.sources} x {PHOTO} as data: URIs)"
    )
    for run in (uncapped, capped):
        print(
            f"  {run['label']:>8}: peak RSS {run['peak_mib']:7.1f} MiB, {run['above_mib']:7.1f} MiB above the "
            f"{run['base_mib']:.1f} MiB after warm-up; all answered in {run['submit_s']:.1f} s; "
            f"statuses {run['statuses']}"
        )
    ratio = capped["above_mib"] / uncapped["above_mib"] if uncapped["above_mib"] > 0 else float("nan")
    print(f"capped / uncapped memory above the warm-up baseline: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
