"""Downloading a seller's catalogue pictures as one streamed ZIP: wall time and memory.

A real `capability-service serve` process, a fake Ozon Seller API and a fake picture CDN on loopback
(every picture answered after `--latency` seconds). The catalogue has `--products` products with
`--pictures` pictures each: real photos (distinct crops of `tests/data/camera_3648x2736.jpg`, turned
to 3:4 and sized like Ozon's own pictures, 1200x1600 JPEG, or the 10 MP originals with `--big`).

It prints, measured in the same run:
- the wall time of `POST /api/v1/ozon/download` against the ideal ceil(pictures / max_workers) x latency
  (target: within 1.25x), and against the one-at-a-time way (a plain loop of downloads, measured on
  `--baseline` pictures and scaled to the catalogue: labelled as an estimate);
- the service's peak RSS while it streams the ZIP, above its idle RSS (target: under 150 MB).

    python benchmarks/bench_ozon_download.py [--products 200] [--pictures 5] [--latency 0.1] [--max-workers 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyvips

if not __package__:  # run as a script: its own folder is on sys.path, the repository root is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.ozon_cdn import FakeCdn
from tests.fakes.ozon_server import OzonSellerFake

from benchmarks._corpus import write_corpus
from benchmarks._proc import status_kib
from benchmarks._service import AUTH, running_service

DISTINCT_PHOTOS = 20


def catalogue_photos(workdir: Path, big: bool) -> list[bytes]:
    """Distinct real photos: 10 MP originals, or 3:4 crops at 1200x1600 as Ozon's CDN serves them."""
    paths = write_corpus(workdir / "corpus", DISTINCT_PHOTOS)
    if big:
        return [path.read_bytes() for path in paths]
    photos = []
    for path in paths:
        image = pyvips.Image.thumbnail(str(path), 1200, height=1600, crop="centre")
        photos.append(bytes(image.jpegsave_buffer(Q=85, optimize_coding=True, keep="none")))
    return photos


class RssSampler:
    """Samples a process's resident memory every few milliseconds while a download runs."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmRSS"))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of `pid`; False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Run:
    elapsed: float
    received: int
    idle_kib: int
    peak_kib: int
    peak_from_hwm: bool


def stream_download(url: str, pid: int, selection: Mapping[str, object], out: Path) -> Run:
    """`POST /api/v1/ozon/download` into `out`, timed, with the service's idle and peak RSS."""
    with httpx.Client(base_url=url, timeout=120) as client:
        # Warm up: the first request loads the routes; the idle figure is taken after it.
        client.post("/api/v1/ozon/products", json={"ids": ["OFF-00001"]}, headers=AUTH).raise_for_status()
        time.sleep(0.5)
        idle_kib = status_kib(pid, "VmRSS")
        peak_reset = reset_peak_rss(pid)
        started = time.perf_counter()
        received = 0
        request = client.build_request("POST", "/api/v1/ozon/download", json=selection, headers=AUTH)
        with RssSampler(pid) as sampler, out.open("wb") as sink:
            response = client.send(request, stream=True)
            try:
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    sink.write(chunk)
            finally:
                response.close()
        elapsed = time.perf_counter() - started
    hwm_kib = status_kib(pid, "VmHWM") if peak_reset else 0
    return Run(elapsed, received, idle_kib, max(hwm_kib, sampler.peak_kib), peak_reset)


def one_at_a_time(urls: list[str]) -> float:
    """The plain way: one download after another over one connection; returns seconds."""
    started = time.perf_counter()
    with httpx.Client(timeout=60) as client:
        for url in urls:
            client.get(url).raise_for_status()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--pictures", type=int, default=5, help="pictures per product")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the fake CDN takes per picture")
    parser.add_argument("--max-workers", type=int, default=5, help="the plugin's max_workers")
    parser.add_argument("--baseline", type=int, default=100, help="pictures fetched one at a time for the baseline")
    parser.add_argument("--big", action="store_true", help="10 MP camera JPEGs instead of 1200x1600 pictures")
    args = parser.parse_args()

    total = args.products * args.pictures
    with tempfile.TemporaryDirectory(prefix="bench-ozon-") as tmp:
        workdir = Path(tmp)
        photos = catalogue_photos(workdir, args.big)
        with FakeCdn(latency=args.latency).running() as cdn, OzonSellerFake().running() as ozon:
            urls = []
            for n in range(1, args.products + 1):
                pictures = []
                for k in range(args.pictures):
                    index = (n * args.pictures + k) % len(photos)
                    pictures.append(cdn.put(f"s3/multimedia-{n % 10}/{n:05d}-{k}.jpg", photos[index]))
                ozon.add_product(100_000 + n, f"OFF-{n:05d}", primary_image=pictures[:1], images=pictures[1:])
                urls.extend(pictures)
            payload_bytes = sum(
                len(photos[(n * args.pictures + k) % len(photos)])
                for n in range(1, args.products + 1)
                for k in range(args.pictures)
            )

            plugins = workdir / "plugins.yaml"
            plugins.write_text(json.dumps({"plugins": {"ozon-download": {"max_workers": args.max_workers}}}))
            overrides = {
                "OZON_API_BASE": ozon.url,
                "OZON_CLIENT_ID": ozon.client_id,
                "OZON_API_KEY": ozon.api_key,
                "PLUGINS_CONFIG": str(plugins),
                "SOURCE_MAX_CONCURRENCY": str(max(8, args.max_workers)),
            }
            selection = {"ids": [f"OFF-{n:05d}" for n in range(1, args.products + 1)]}
            out = workdir / "catalogue.zip"
            with running_service(workdir, overrides) as service:
                cdn.max_in_flight = 0
                run = stream_download(service.url, service.pid, selection, out)
            baseline_urls = urls[: min(args.baseline, len(urls))]
            serial = one_at_a_time(baseline_urls) * len(urls) / len(baseline_urls)

        with zipfile.ZipFile(out) as archive:
            names = archive.namelist()
            manifest = json.loads(archive.read("manifest.json"))
        pictures_ok = manifest["counts"]["images_ok"]
        if pictures_ok != total or len(names) != total + 1:
            print(f"ERROR: {pictures_ok} of {total} pictures in the archive; first errors:")
            for entry in [e for e in manifest["images"] if e["error"]][:5]:
                print("  ", entry["source_url"], entry["error"])
            return 1

    ideal = math.ceil(total / args.max_workers) * args.latency
    elapsed, received, idle_kib, peak_kib = run.elapsed, run.received, run.idle_kib, run.peak_kib
    above_idle = (peak_kib - idle_kib) / 1024
    load = os.getloadavg()
    print(
        f"catalogue: {args.products} products x {args.pictures} pictures = {total} pictures, "
        f"{payload_bytes / 1e6:.0f} MB ({'10 MP originals' if args.big else '1200x1600 JPEG'}), "
        f"CDN latency {args.latency * 1000:.0f} ms, max_workers {args.max_workers}"
    )
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    print(
        f"archive: {received / 1e6:.0f} MB streamed, {len(names)} members, CDN downloads in flight at most "
        f"{cdn.max_in_flight}"
    )
    print()
    print(f"{'':34}{'seconds':>10}{'ratio':>10}")
    print(f"{'ideal ceil(N / workers) x latency':34}{ideal:>10.2f}{1.0:>10.2f}")
    print(f"{'service (streamed ZIP)':34}{elapsed:>10.2f}{elapsed / ideal:>10.2f}   target <= 1.25")
    print(f"{'one at a time (estimate*)':34}{serial:>10.2f}{serial / ideal:>10.2f}")
    print(f"  * measured on {len(baseline_urls)} pictures in this run, scaled to {total}")
    print()
    print(
        f"service RSS: idle {idle_kib / 1024:.0f} MiB, peak while streaming {peak_kib / 1024:.0f} MiB "
        f"({'VmHWM after reset' if run.peak_from_hwm else 'sampled every 20 ms'}), {above_idle:.0f} MiB above idle"
        f"   target < 150 MB"
    )
    print(f"speed-up over one at a time: {serial / elapsed:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
