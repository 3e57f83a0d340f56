"""Offline background replacement of a 10 MP photo on one core, against a naive full-resolution
Pillow pipeline measured in the same run.

Photo: tests/data/camera_3648x2736.jpg (rocks and plants, no product in it) defocused, with a real
product (with its true alpha) composited into it, saved as a 10 MP JPEG: what a seller's photo looks
like. The untouched camera photo is also run once: it holds no product, and is refused as such.
Both pipelines use the same model session; the naive one decodes, masks and composites at full
resolution and only then scales to the 1500x2000 canvas.

    python benchmarks/bench_background.py
"""

from __future__ import annotations

import os

# One core for everything: libvips, OpenCV and ONNX Runtime.
os.environ["VIPS_CONCURRENCY"] = "1"
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import io  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402

if not __package__:  # run as a script: its own folder is on sys.path, the repository root is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.imaging.test_segment_quality import place_product  # noqa: E402

from capability_service.imaging import background, composite, segment  # noqa: E402
from capability_service.imaging.types import ImageError  # noqa: E402

cv2.setNumThreads(1)
DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
CANVAS = (1500, 2000)
PROMPT = "light grey studio"
RUNS = 3


def ours(data: bytes) -> bytes:
    cut = composite.cut_out(data, CANVAS, 0.08, 50_000_000, threads=1)
    bg = background.render(background.parse_prompt(PROMPT), *CANVAS)
    return composite.encode_canvas(composite.compose(cut, bg, shadow=True), "png").data


def naive(data: bytes) -> bytes:
    """Decode everything, mask and composite at full resolution, then scale onto the canvas."""
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


def seller_photo() -> bytes:
    with Image.open(DATA / "camera_3648x2736.jpg") as image:
        backdrop = np.asarray(image.convert("RGB").filter(ImageFilter.GaussianBlur(12)))
    scene, _ = place_product(backdrop, 0.6, (0.5, 0.55), 4.0)
    out = io.BytesIO()
    Image.fromarray(scene).save(out, "JPEG", quality=90)
    return out.getvalue()


def timed(fn: Callable[[bytes], bytes], data: bytes) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        fn(data)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    segment.get_segmenter(1)
    photos = {"seller photo (product on the defocused camera photo, 3648x2736 JPEG)": seller_photo()}
    raw = (DATA / "camera_3648x2736.jpg").read_bytes()
    started = time.perf_counter()
    try:
        ours(raw)
        print("camera_3648x2736.jpg as it is: replaced")
    except ImageError as exc:
        print(f"camera_3648x2736.jpg as it is: refused in {time.perf_counter() - started:.3f} s ({exc})")
    for data in photos.values():
        ours(data)  # warm caches
    for name, data in photos.items():
        fast = timed(ours, data)
        slow = timed(naive, data)
        cut = composite.cut_out(data, CANVAS, 0.08, 50_000_000, threads=1)
        print(f"{name}:")
        print(f"  ours  {fast:.3f} s (median of {RUNS}, one core)  steps: {cut.timings}")
        print(f"  naive {slow:.3f} s (full-resolution Pillow compositing)")
        print(f"  ratio naive/ours {slow / fast:.2f}x; target < 1.5 s: {'met' if fast < 1.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
