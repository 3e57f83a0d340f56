"""Mean IoU of the refined product mask against the truth, beside the raw model's mask.

Scenes: a real product with a real alpha channel composited onto real textures, plain and gradient
studio backdrops and defocused photos (built by tests/imaging/test_segment_quality.py).

    python benchmarks/bench_segmentation.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

if not __package__:  # run as a script: its own folder is on sys.path, the repository root is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.imaging.test_segment_quality import build_cases

from capability_service.imaging import segment


def main() -> None:
    cases = build_cases()
    rows = []
    timings = {"model": 0.0, "guided": 0.0, "grabcut": 0.0}
    for case in cases:
        started = time.perf_counter()
        prob = segment.probability(case.rgb)
        timings["model"] += time.perf_counter() - started
        started = time.perf_counter()
        guided = segment.refine_alpha(case.rgb, prob, segment.RefineOptions(grabcut=False))
        timings["guided"] += time.perf_counter() - started
        started = time.perf_counter()
        grabcut = segment.refine_alpha(case.rgb, prob, segment.RefineOptions(grabcut=True))
        timings["grabcut"] += time.perf_counter() - started
        rows.append(
            (
                case.name,
                segment.iou(prob >= 0.5, case.truth),
                segment.iou(guided >= 0.5, case.truth),
                segment.iou(grabcut >= 0.5, case.truth),
            )
        )
    print(f"{'scene':22s} {'raw':>7s} {'guided':>7s} {'+grabcut':>9s}")
    for name, raw, guided_iou, grabcut_iou in rows:
        print(f"{name:22s} {raw:7.4f} {guided_iou:7.4f} {grabcut_iou:9.4f}")
    raw_mean, guided_mean, grabcut_mean = (float(np.mean([row[i] for row in rows])) for i in (1, 2, 3))
    print(f"{'mean':22s} {raw_mean:7.4f} {guided_mean:7.4f} {grabcut_mean:9.4f}")
    n = len(cases)
    print(
        f"per scene ({cases[0].rgb.shape[1]}x{cases[0].rgb.shape[0]}): "
        f"model {timings['model'] / n * 1000:.0f} ms, "
        f"guided refinement {timings['guided'] / n * 1000:.0f} ms, with GrabCut {timings['grabcut'] / n * 1000:.0f} ms"
    )
    for label, value in (("guided (default)", guided_mean), ("guided + GrabCut (option)", grabcut_mean)):
        met = "met" if value >= 0.95 and value > raw_mean else "NOT met"
        print(
            f"{label}: mean IoU {value:.4f} vs raw model {raw_mean:.4f}, "
            f"error (1 - IoU) ratio {(1 - value) / (1 - raw_mean):.2f}x; target >= 0.95 and above raw: {met}"
        )


if __name__ == "__main__":
    main()
