"""A background replacement job against a fake remote model with fixed latency, against the model-bound ideal.

Runs a job of `--images` distinct ~1 MP seller photos (real photos from tests/data, each a different crop,
mirrored or not, scaled to about 1 MP and re-encoded, so no two share bytes and the result cache cannot help)
through the HTTP API of a real service process started with the shipped defaults (`AI_MAX_CONCURRENCY=4`,
`MAX_IMAGES_IN_FLIGHT=8`, CPU work on one pool thread per core), in composite and in generative mode. The fake
model (tests/fakes/gemini_server.py, Gemini's protocol on loopback) answers every call after `--latency`
seconds; it renders its answer once and repeats it, so that the benchmark's own process takes no CPU from
the service beyond receiving the calls (a real remote model runs elsewhere).

Baselines, in the same run:
- the ideal, ceil(images / AI_MAX_CONCURRENCY) * latency: the job's time if the model were all it waited on;
- the code at `--baseline` (a git revision; default the commit before the composite pipeline was overlapped
  with the model calls), run from `git archive` in its own service process on the same photos, alternating
  with the current code `--rounds` times so that load from elsewhere falls on both alike.

Prints wall times, their ratio to the ideal, and the service's CPU time per image, with the shortest time
that CPU time allows on this machine's cores (a lower bound, whatever the model's latency).

    python benchmarks/bench_remote_job.py [--images 12] [--latency 2] [--modes composite,generative]
    python benchmarks/bench_remote_job.py --quick     # the current code only, one round
"""

from __future__ import annotations

import argparse
import base64
import io
import math
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pyvips

if not __package__:  # run as a script: its own folder is on sys.path, the repository root is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.base import Recorded, Reply, json_reply, render_result
from tests.fakes.gemini_server import SIZES, GeminiFake

from benchmarks._proc import tree_cpu_seconds
from benchmarks._service import run_job, running_service

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
MODEL_KEY = "bench-model-key-123"
# Real photos of things a seller might sell or show: a motorcycle in a garage, a rocket, a portrait, a cat.
PHOTOS = ("motorcycle_left.png", "rocket.jpg", "grace_hopper.jpg", "chelsea.png")
MEGAPIXELS = 1.0
# The last commit before the composite pipeline overlapped its CPU work with the model calls.
BASELINE = "7bb8d50"
TARGET = 1.15


def seller_photos(count: int) -> list[bytes]:
    """`count` distinct JPEGs of about 1 MP: crops of the test photos, mirrored or not, each at its own quality."""
    photos: list[bytes] = []
    for index in range(count):
        image = pyvips.Image.new_from_file(str(DATA / PHOTOS[index % len(PHOTOS)]), access="random")
        if image.bands > 3:
            image = image.extract_band(0, n=3)
        keep = 1.0 - 0.01 * (index // len(PHOTOS) % 6)
        width, height = round(image.width * keep), round(image.height * keep)
        left = (index * 7) % (image.width - width + 1)
        top = (index * 5) % (image.height - height + 1)
        image = image.crop(left, top, width, height)
        image = image.resize(math.sqrt(MEGAPIXELS * 1e6 / (width * height)), kernel="lanczos3")
        if index % 2:
            image = image.fliphor()
        photos.append(bytes(image.jpegsave_buffer(Q=86 + index % 8, keep="none")))
    return photos


def answer_once(fake: GeminiFake) -> None:
    """Make the fake answer every call with the same scene, rendered once per shape (so the baseline's results
    and the current code's can be compared pixel for pixel, whatever each showed the model)."""
    answers: dict[Any, Reply] = {}

    def rule(request: Recorded) -> Reply:
        shape = request.parsed["aspect_ratio"]
        if shape not in answers:
            width, height = SIZES[shape or "1:1"]
            scene = render_result(None, width, height, 4242)
            part = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(scene).decode()}}
            content = {"role": "model", "parts": [part]}
            answers[shape] = json_reply(200, {"candidates": [{"content": content, "finishReason": "STOP", "index": 0}]})
        return answers[shape]

    fake.rule = rule


def baseline_source(revision: str, scratch: Path) -> Path:
    """The `src` folder of `revision`, unpacked from git."""
    archive = subprocess.run(["git", "archive", revision, "src"], cwd=ROOT, capture_output=True, check=True)
    target = scratch / f"baseline-{revision}"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target / "src"


def job_time(
    fake: GeminiFake, workdir: Path, photos: list[bytes], mode: str, source: Path | None, env: dict[str, str]
) -> tuple[float, float, list[npt.NDArray[np.uint8]]]:
    """Wall seconds of a job over all `photos` but the last, the CPU seconds the service spent meanwhile, and the
    result images."""
    overrides = {"AI_API_KEY": MODEL_KEY, "AI_API_BASE": fake.api_base, **env}
    if source is not None:
        # Ahead of the installed package on sys.path: the service runs the baseline's code.
        overrides["PYTHONPATH"] = str(source)
    urls = ["data:image/jpeg;base64," + base64.b64encode(photo).decode() for photo in photos]
    config = {"backgroundPrompt": "sunlit marble kitchen counter", "mode": mode}
    payload = {"type": "background_replacement", "config": config, "source_image_urls": urls[:-1]}
    with running_service(workdir, overrides) as service, httpx.Client(base_url=service.url, timeout=60) as client:
        # One image first (the last photo, which the job does not hold), outside the timing: the model
        # sessions and the libraries' caches are warm in a service that has been up for a while.
        warm, _ = run_job(client, {**payload, "source_image_urls": urls[-1:]})
        if warm["errors"]:
            raise SystemExit(f"the warm-up image failed: {warm['errors'][0]['error']}")
        cpu_before = tree_cpu_seconds(service.pid)
        result, elapsed = run_job(client, payload)
        cpu = tree_cpu_seconds(service.pid) - cpu_before
        failed = [error["error"] for error in result["errors"]]
        if failed:
            raise SystemExit(f"{len(failed)} images failed: {failed[0]}")
        images = [
            np.asarray(pyvips.Image.new_from_buffer(client.get(url).raise_for_status().content, "").numpy())
            for url in result["result_image_urls"]
        ]
    return elapsed, cpu, images


def difference(first: list[npt.NDArray[np.uint8]], second: list[npt.NDArray[np.uint8]]) -> str:
    """How far two runs' results are apart, pixel for pixel."""
    pairs = list(zip(first, second, strict=True))
    same = sum(np.array_equal(a, b) for a, b in pairs)
    worst = max(int(np.abs(a.astype(np.int16) - b).max()) for a, b in pairs)
    mean = max(float(np.abs(a.astype(np.int16) - b).mean()) for a, b in pairs)
    return (
        f"{same} of {len(first)} results identical to the baseline's; largest pixel difference {worst}, "
        f"largest mean difference {mean:.2f} levels"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--latency", type=float, default=2.0, help="seconds the fake model takes per call")
    parser.add_argument("--modes", default="composite,generative", help="comma-separated: composite, generative")
    parser.add_argument("--baseline", default=BASELINE, help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of baseline and current code")
    parser.add_argument("--quick", action="store_true", help="the current code only, one round")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="a service setting")
    args = parser.parse_args()
    env: dict[str, str] = {}
    for item in args.env:
        name, _, value = item.partition("=")
        env[name] = value
    concurrency = int(env.get("AI_MAX_CONCURRENCY", "4"))
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    rounds = 1 if args.quick else args.rounds

    ideal = math.ceil(args.images / concurrency) * args.latency
    cores = os.cpu_count() or 1
    print(f"cores: {cores}, load average at start: {os.getloadavg()[0]:.2f}")
    photos = seller_photos(args.images + 1)
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    outputs: dict[tuple[str, str], list[npt.NDArray[np.uint8]]] = {}
    with (
        tempfile.TemporaryDirectory() as scratch,
        GeminiFake(api_key=MODEL_KEY, latency=args.latency).running() as fake,
    ):
        answer_once(fake)
        codes: list[tuple[str, Path | None]] = [("current", None)]
        if not args.quick:
            codes.insert(0, (f"baseline {args.baseline}", baseline_source(args.baseline, Path(scratch))))
        for mode in modes:
            for _ in range(rounds):
                for name, source in codes:
                    workdir = Path(scratch) / f"{mode}-{name.split()[0]}"
                    workdir.mkdir(exist_ok=True)
                    wall, cpu, images = job_time(fake, workdir, photos, mode, source, env)
                    results.setdefault((mode, name), []).append((wall, cpu))
                    outputs.setdefault((mode, name), images)
        peak = fake.max_in_flight

    size = f"{args.images} distinct ~{MEGAPIXELS:g} MP photos, model latency {args.latency:.1f} s"
    print(f"{size}, AI_MAX_CONCURRENCY={concurrency}, load average now {os.getloadavg()[0]:.2f}")
    formula = f"ceil({args.images} / {concurrency}) * {args.latency:g} s"
    print(f"ideal: {formula} = {ideal:.1f} s; model calls in flight at peak: {peak}")
    for mode in modes:
        print(f"{mode}:")
        for name, _ in codes:
            runs = results[(mode, name)]
            wall = statistics.median(run[0] for run in runs)
            cpu = statistics.median(run[1] for run in runs)
            walls = ", ".join(f"{run[0]:.1f}" for run in runs)
            verdict = "met" if wall / ideal <= TARGET else "NOT met"
            print(
                f"  {name:<20} {wall:5.1f} s  ratio to ideal {wall / ideal:4.2f} (target <= {TARGET}: {verdict})  "
                f"runs: {walls} s; CPU {cpu / args.images:.2f} s per image, >= {cpu / cores:.1f} s on {cores} cores"
            )
        if len(codes) == 2:
            print(f"  {difference(outputs[(mode, codes[0][0])], outputs[(mode, codes[1][0])])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
