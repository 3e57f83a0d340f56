"""A 20-image background replacement job against a fake remote model with fixed latency.

Runs the job through the HTTP API of a real service process, twice in the same run: as the product
plan sketched it, one image after another (the same service with `AI_MAX_CONCURRENCY=1` and
`MAX_IMAGES_IN_FLIGHT=1`: one model call in flight), and with `AI_MAX_CONCURRENCY=--concurrency` and
twice as many images in flight. The fake model (tests/fakes/gemini_server.py, Gemini's protocol on
loopback) answers every call after `--latency` seconds. Prints wall times, the ratio between them,
the ratio to the ideal ceil(images / concurrency) * latency, and the service's CPU time for the job,
with the shortest time that CPU time allows on this machine's cores (a lower bound, whatever the
model's latency).

    python benchmarks/bench_remote_job.py [--images 20] [--latency 2] [--concurrency 4] [--mode composite]
    python benchmarks/bench_remote_job.py --quick     # without the one-at-a-time baseline
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import sys
import tempfile
from pathlib import Path

import httpx

if not __package__:  # run as a script: its own folder is on sys.path, the repository root is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.gemini_server import GeminiFake

from benchmarks._proc import tree_cpu_seconds
from benchmarks._service import run_job, running_service

MODEL_KEY = "bench-model-key-123"
PHOTO = Path(__file__).resolve().parents[1] / "tests" / "data" / "grace_hopper.jpg"


def job_time(
    fake: GeminiFake, workdir: Path, images: int, concurrency: int, in_flight: int, mode: str
) -> tuple[float, float]:
    """Wall seconds of the job, and the CPU seconds the service spent meanwhile."""
    overrides = {
        "AI_API_KEY": MODEL_KEY,
        "AI_API_BASE": fake.api_base,
        "AI_MAX_CONCURRENCY": str(concurrency),
        "MAX_IMAGES_IN_FLIGHT": str(in_flight),
    }
    uri = "data:image/jpeg;base64," + base64.b64encode(PHOTO.read_bytes()).decode()
    payload = {
        "type": "background_replacement",
        "config": {"backgroundPrompt": "sunlit marble kitchen counter", "mode": mode},
        "source_image_urls": [uri] * images,
    }
    with running_service(workdir, overrides) as service, httpx.Client(base_url=service.url, timeout=60) as client:
        cpu_before = tree_cpu_seconds(service.pid)
        result, elapsed = run_job(client, payload)
        cpu = tree_cpu_seconds(service.pid) - cpu_before
    failed = [error["error"] for error in result["errors"]]
    if failed:
        raise SystemExit(f"{len(failed)} images failed: {failed[0]}")
    return elapsed, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--latency", type=float, default=2.0, help="seconds the fake model takes per call")
    parser.add_argument("--concurrency", type=int, default=4, help="AI_MAX_CONCURRENCY of the service")
    parser.add_argument("--mode", default="composite", choices=["composite", "generative"])
    parser.add_argument("--quick", action="store_true", help="skip the one-at-a-time baseline")
    args = parser.parse_args()

    ideal = math.ceil(args.images / args.concurrency) * args.latency
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
    with (
        tempfile.TemporaryDirectory() as scratch,
        GeminiFake(api_key=MODEL_KEY, latency=args.latency).running() as fake,
    ):
        workdir = Path(scratch)
        baseline = None
        if not args.quick:
            baseline, _ = job_time(fake, workdir, args.images, 1, 1, args.mode)
        fake.max_in_flight = 0
        in_flight = 2 * args.concurrency
        ours, cpu = job_time(fake, workdir, args.images, args.concurrency, in_flight, args.mode)
        peak = fake.max_in_flight

    cores = os.cpu_count() or 1
    print(f"{args.images} images, model latency {args.latency:.1f} s, mode {args.mode}")
    if baseline is not None:
        print(f"  {'one at a time (AI_MAX_CONCURRENCY=1, MAX_IMAGES_IN_FLIGHT=1)':<62} {baseline:6.1f} s")
    settings = f"AI_MAX_CONCURRENCY={args.concurrency}, MAX_IMAGES_IN_FLIGHT={in_flight}"
    print(f"  {settings:<62} {ours:6.1f} s   (model calls in flight at peak: {peak})")
    print(f"  {'ideal: ceil(images / concurrency) * latency':<62} {ideal:6.1f} s")
    print(f"  {'ratio to ideal':<62} {ours / ideal:6.2f}   (target <= 1.25)")
    if baseline is not None:
        print(f"  {'speed-up over one at a time':<62} {baseline / ours:6.2f}x")
    print(
        f"  service CPU for the job: {cpu:.1f} s ({cpu / args.images:.2f} s per image), so on {cores} cores "
        f"it cannot take less than {cpu / cores:.1f} s whatever the model's latency (a lower bound)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
