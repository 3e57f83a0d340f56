"""Offline background replacement of a 10 MP photo on one core: this code against the code it started
from (a baseline revision, default the commit before the opening-aware matte), and against a naive
full-resolution Pillow pipeline, all in the same run.

Photo: tests/data/camera_3648x2736.jpg (rocks and plants, no product in it) defocused, with a real
product (with its true alpha) composited into it, saved as a 10 MP JPEG: what a seller's photo looks
like. The untouched camera photo is also run once: it holds no product, and is refused as such.
The current and the baseline pipeline each run in their own process (one core, one libvips, OpenCV and
ONNX Runtime thread, PNG output), alternating, so that load from elsewhere on the machine falls on both
alike; the baseline's source is taken from git (`git archive`). With `--figures DIR` both also write the
motorcycle photo (tests/data/motorcycle_left.png) on "pure white", for the README's before and after.

    python benchmarks/bench_background.py [--baseline REV] [--figures docs] [--rounds N]
"""

from __future__ import annotations

import os

# One core for everything: libvips, OpenCV and ONNX Runtime.
os.environ["VIPS_CONCURRENCY"] = "1"
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if not __package__:  # run as a script: its own folder is on sys.path, the repository root is not
    sys.path.insert(0, str(ROOT))

cv2.setNumThreads(1)
DATA = ROOT / "tests" / "data"
CANVAS = (1500, 2000)
PROMPT = "light grey studio"
RUNS = 3
ROUNDS = 2
# The last commit whose matte fills openings: what "today" meant when the opening-aware matte came.
BASELINE = "2e255fb"


def seller_photo() -> bytes:
    from tests.imaging.test_segment_quality import place_product

    with Image.open(DATA / "camera_3648x2736.jpg") as image:
        backdrop = np.asarray(image.convert("RGB").filter(ImageFilter.GaussianBlur(12)))
    scene, _ = place_product(backdrop, 0.6, (0.5, 0.55), 4.0)
    out = io.BytesIO()
    Image.fromarray(scene).save(out, "JPEG", quality=90)
    return out.getvalue()


def child(photo: Path, runs: int, figure: Path | None) -> None:
    """Time the pipeline of whichever `capability_service` is importable; print JSON."""
    from capability_service.imaging import background, composite, segment

    segment.get_segmenter(1)
    data = photo.read_bytes()

    def ours(data: bytes, prompt: str = PROMPT) -> tuple[bytes, composite.Cutout]:
        cut = composite.cut_out(data, CANVAS, 0.08, 50_000_000, threads=1)
        bg = background.render(background.parse_prompt(prompt), *CANVAS)
        canvas = composite.compose(cut, bg, shadow=True)
        if figure is not None and prompt != PROMPT:
            small = cv2.resize(canvas, (CANVAS[0] // 2, CANVAS[1] // 2), interpolation=cv2.INTER_AREA)
            crop = small[small.shape[0] // 4 : small.shape[0] * 3 // 4]
            Image.fromarray(crop).save(figure, "JPEG", quality=85)
        return composite.encode_canvas(canvas, "png").data, cut

    ours(data)  # warm caches
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        _, cut = ours(data)
        times.append(time.perf_counter() - started)
    if figure is not None:
        ours((DATA / "motorcycle_left.png").read_bytes(), "pure white")
    print(json.dumps({"times": times, "timings": cut.timings}))


def naive(data: bytes) -> bytes:
    """Decode everything, mask and composite at full resolution, then scale onto the canvas."""
    from capability_service.imaging import background, segment

    photo = Image.open(io.BytesIO(data)).convert("RGB")
    small = np.asarray(photo.resize((320, 320), Image.Resampling.LANCZOS))
    prob = segment.get_segmenter(1).run(small)
    mask = Image.fromarray(np.rint(prob * 255).astype(np.uint8)).resize(photo.size, Image.Resampling.LANCZOS)
    spec = background.parse_prompt(PROMPT)
    full_bg = Image.new("RGB", photo.size, spec.colours[0])
    cut = Image.composite(photo, full_bg, mask)
    bbox = mask.point(lambda v: 255 if v > 127 else 0).getbbox() or (0, 0, *photo.size)
    product = cut.crop(bbox)
    inner = (round(CANVAS[0] * 0.84), round(CANVAS[1] * 0.84))
    product.thumbnail(inner, Image.Resampling.LANCZOS)
    product_mask = mask.crop(bbox).resize(product.size, Image.Resampling.LANCZOS)
    canvas = Image.fromarray(background.render(spec, *CANVAS))
    canvas.paste(product, ((CANVAS[0] - product.width) // 2, (CANVAS[1] - product.height) // 2), product_mask)
    out = io.BytesIO()
    canvas.save(out, "PNG", compress_level=6)
    return out.getvalue()


def run_child(src: Path, photo: Path, figure: Path | None) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(photo), "--runs", str(RUNS)]
    if figure is not None:
        command += ["--figure", str(figure)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--figures", type=Path)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="alternations of baseline and current")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--figure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.runs, args.figure)
        return

    from capability_service.imaging import composite, segment
    from capability_service.imaging.types import ImageError

    with tempfile.TemporaryDirectory() as scratch:
        base_src = Path(scratch) / "baseline"
        archive = subprocess.run(["git", "archive", args.baseline, "src"], cwd=ROOT, capture_output=True, check=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(base_src, filter="data")
        photo = Path(scratch) / "seller.jpg"
        photo.write_bytes(seller_photo())
        raw = (DATA / "camera_3648x2736.jpg").read_bytes()
        started = time.perf_counter()
        try:
            composite.cut_out(raw, CANVAS, 0.08, 50_000_000, threads=1)
            print("camera_3648x2736.jpg as it is: replaced")
        except ImageError as exc:
            print(f"camera_3648x2736.jpg as it is: refused in {time.perf_counter() - started:.3f} s ({exc})")
        figures = args.figures
        if figures is not None:
            figures.mkdir(parents=True, exist_ok=True)
        samples: dict[str, list[float]] = {"baseline": [], "current": []}
        steps: dict[str, object] = {}
        for round_ in range(args.rounds):
            for name, src in (("baseline", base_src / "src"), ("current", ROOT / "src")):
                figure = None
                if figures is not None and round_ == 0:
                    figure = figures / f"motorcycle_{'before' if name == 'baseline' else 'after'}.jpg"
                result = run_child(src, photo, figure)
                samples[name] += list(result["times"])  # type: ignore[call-overload]
                steps[name] = result["timings"]
        segment.get_segmenter(1)
        data = photo.read_bytes()
        naive(data)
        slow = statistics.median(_timed(naive, data) for _ in range(RUNS))
    base, current = statistics.median(samples["baseline"]), statistics.median(samples["current"])
    print("seller photo (product on the defocused camera photo, 3648x2736 JPEG), one core, PNG out:")
    print(
        f"  baseline {args.baseline}: {base:.3f} s (median of {len(samples['baseline'])})  steps: {steps['baseline']}"
    )
    print(f"  current: {current:.3f} s (median of {len(samples['current'])})  steps: {steps['current']}")
    print(f"  naive:   {slow:.3f} s (full-resolution Pillow compositing)")
    ratio = current / base
    print(f"  current/baseline {ratio:.2f}x; target <= 1.3x: {'met' if ratio <= 1.3 else 'NOT met'}")
    print(f"  naive/current {slow / current:.2f}x")


def _timed(fn: object, data: bytes) -> float:
    started = time.perf_counter()
    fn(data)  # type: ignore[operator]
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
