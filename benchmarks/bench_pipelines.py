"""End-to-end benchmark of batch optimization and enhancement against the naive Pillow way.

Starts a real `capability-service serve` process (shipped defaults, plus `--env`) on a free port,
serves a corpus of real photos from a loopback HTTP server, submits one `batch_optimization` job
(webp, standard, 1920: libvips, WebP Q85 effort 2) and one `image_enhancement` job (level 5, sharpen,
denoise, png: zlib 3 with the "up" row filter) through the HTTP API and waits for them. The service
runs images on its CPU pool: `CPU_WORKERS` threads, one per core by default.

The baseline, measured in the same run, is the naive Pillow way: in this benchmark's own process,
one image after another on one thread, decoded and encoded by Pillow at its defaults:
- optimization: `Image.thumbnail((1920, 1920))` (bicubic, Pillow's default), then
  `save(WEBP, quality=85)` (Pillow's default method 4);
- enhancement: EXIF orientation, `UnsharpMask(radius=2, percent=60, threshold=2)`, contrast x1.1
  (no denoise step, so this baseline does less work than the service), then `save(PNG)` (zlib's
  default level 6).

Prints images/s for both and the ratio, output bytes, p50/p95 per-image time, CPU seconds per image
and the service's peak RSS (VmHWM). From the CPU seconds it also prints an upper-bound estimate
that does not depend on other load on the machine: the throughput ratio if every core were free to
the service and its threads scaled perfectly. The default corpus is built from tests/data, so a
fresh clone can run it:

    python benchmarks/bench_pipelines.py                 # 18 x 10 MP + 4 small photos
    python benchmarks/bench_pipelines.py --big 1         # quickest
    python benchmarks/bench_pipelines.py --corpus DIR    # your own photos
    python benchmarks/bench_pipelines.py --env MAX_IMAGES_IN_FLIGHT=2 --env CPU_WORKERS=1
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

if not __package__:  # run as a script: its own folder is on sys.path, the repository root is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._corpus import REPO_ROOT, list_photos, serve_directory, write_corpus
from benchmarks._proc import cpu_seconds, status_kib
from benchmarks._service import AUTH, run_job, running_service

SMALL_PHOTOS = ("grace_hopper.jpg", "rocket.jpg", "chelsea.png", "Minduka_Present_Blue_Pack.png")
JOBS: dict[str, dict[str, Any]] = {
    "optimize": {"type": "batch_optimization", "config": {"quality": "standard", "format": "webp", "maxSize": 1920}},
    "enhance": {
        "type": "image_enhancement",
        "config": {"enhancementLevel": 5, "sharpen": True, "denoise": True, "upscale": False},
    },
}


def build_corpus(directory: Path, big: int) -> list[Path]:
    paths: list[Path] = list(write_corpus(directory, big))
    for name in SMALL_PHOTOS:
        shutil.copy(REPO_ROOT / "tests" / "data" / name, directory / name)
        paths.append(directory / name)
    return paths


def naive_optimize(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data))
    image.thumbnail((1920, 1920))
    out = io.BytesIO()
    image.save(out, "WEBP", quality=85)
    return out.getvalue()


def naive_enhance(data: bytes) -> bytes:
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    image = image.filter(ImageFilter.UnsharpMask(radius=2, percent=60, threshold=2))
    image = ImageEnhance.Contrast(image).enhance(1.1)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def run_naive(op: str, photos: list[bytes]) -> dict[str, Any]:
    fn = naive_optimize if op == "optimize" else naive_enhance
    fn(photos[-1])  # warm-up, as the service gets one
    times, total = [], 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for data in photos:
        t0 = time.perf_counter()
        total += len(fn(data))
        times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return {"wall": wall, "cpu": cpu, "bytes": total, "times": times, "ok": len(photos)}


def service_peak_rss_mib(pid: int) -> tuple[float, float]:
    """VmHWM of the service process, and the sum over its worker processes (if any)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    workers = [int(child) for child in children]
    for child in list(workers):
        workers += [int(g) for g in Path(f"/proc/{child}/task/{child}/children").read_text().split()]
    return status_kib(pid, "VmHWM") / 1024, sum(status_kib(worker, "VmHWM") for worker in workers) / 1024


def measure_job(
    client: httpx.Client, job_id: str, op: str, urls: list[str], timeout: float, pid: int
) -> dict[str, Any]:
    body = {"job_id": job_id, "user_id": "bench", **JOBS[op], "source_image_urls": urls}
    cpu_started = cpu_seconds(pid, reaped_children=True)
    result, wall = run_job(client, body, timeout)
    cpu = cpu_seconds(pid, reaped_children=True) - cpu_started
    images = result["metadata"]["images"]
    done = [image for image in images if image.get("status") == "succeeded"]
    for error in result.get("errors", []):
        print(f"  image {error['index']} failed: {error['error']}", file=sys.stderr)
    return {
        "wall": wall,
        "cpu": cpu,
        "bytes": sum(int(image["bytes"]) for image in done),
        "times": [image["processing_ms"] / 1000 for image in done],
        "ok": len(done),
    }


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, help="a directory of photos to use instead of the generated ones")
    parser.add_argument("--big", type=int, default=18, help="10 MP photos in the generated corpus [18]")
    parser.add_argument("--ops", default="optimize,enhance", help="operations to run [optimize,enhance]")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE setting for the service")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one job may take [600]")
    parser.add_argument("--rounds", type=int, default=1, help="alternating service/naive rounds, best of each kept [1]")
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.env)
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]

    with tempfile.TemporaryDirectory(prefix="bench-pipelines-") as tmp:
        workdir = Path(tmp)
        if args.corpus:
            corpus, paths = args.corpus, list_photos(args.corpus)
        else:
            corpus = workdir / "corpus"
            paths = build_corpus(corpus, args.big)
        photos = [path.read_bytes() for path in paths]
        megapixels = [Image.open(io.BytesIO(data)).size for data in photos]
        big = sum(1 for w, h in megapixels if w * h >= 8_000_000)
        print(f"corpus: {len(paths)} photos ({big} of >= 8 MP), {sum(map(len, photos)) / 2**20:.1f} MiB")
        print(f"service settings: {overrides or 'defaults'}; cpus: {os.cpu_count()}")
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        results: dict[str, dict[str, dict[str, Any]]] = {}
        with (
            running_service(workdir, overrides) as service,
            serve_directory(corpus) as images,
            httpx.Client(base_url=service.url, headers=AUTH, timeout=60) as client,
        ):
            urls = [f"{images}/{path.name}" for path in paths]
            for op in ops:
                measure_job(client, f"warm-{op}", op, urls[-1:], args.timeout, service.pid)
                # Alternate the two sides so a change in machine load hits both alike.
                services, naives = [], []
                for round_ in range(args.rounds):
                    services.append(measure_job(client, f"bench-{op}-{round_}", op, urls, args.timeout, service.pid))
                    naives.append(run_naive(op, photos))
                best = min(services, key=lambda run: run["wall"])
                best["rss"] = service_peak_rss_mib(service.pid)
                results[op] = {"service": best, "naive": min(naives, key=lambda run: run["wall"])}

    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print()
    print("naive = Pillow in this process, one image at a time on one thread (see --help for its steps)")
    print(f"service = the serve process's CPU pool, {overrides.get('CPU_WORKERS', os.cpu_count())} threads")
    header = (
        f"{'':10} {'side':8} {'images/s':>9} {'ratio':>6} {'output MiB':>11} {'vs naive':>8} {'p50 s':>7} "
        f"{'p95 s':>7} {'CPU s/img':>9}"
    )
    print(header)
    for op, pair in results.items():
        naive_rate = pair["naive"]["ok"] / pair["naive"]["wall"]
        for side in ("naive", "service"):
            run = pair[side]
            rate = run["ok"] / run["wall"]
            print(
                f"{op:10} {side:8} {rate:9.2f} {rate / naive_rate:5.2f}x {run['bytes'] / 2**20:11.2f} "
                f"{run['bytes'] / max(1, pair['naive']['bytes']):8.1%} {pct(run['times'], 50):7.3f} "
                f"{pct(run['times'], 95):7.3f} {run['cpu'] / run['ok']:9.3f}"
            )
        main_rss, workers_rss = pair["service"]["rss"]
        extra = f" (+ {workers_rss:.0f} MiB in worker processes)" if workers_rss else ""
        print(f"{op:10} service peak RSS (VmHWM) after this job: {main_rss:.0f} MiB{extra}")
        # From CPU time alone, so it does not depend on what else the machine runs, unlike the
        # wall-clock ratio above. An upper bound: it assumes the service's threads scale perfectly
        # over every core while the naive way keeps one core busy.
        cores = os.cpu_count() or 1
        cpu_ratio = (pair["naive"]["cpu"] / pair["naive"]["ok"]) / (pair["service"]["cpu"] / pair["service"]["ok"])
        print(
            f"{op:10} CPU per image: naive / service = {cpu_ratio:.2f}x; estimated upper bound of the ratio on "
            f"{cores} idle cores (perfect scaling): {cpu_ratio * cores:.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
