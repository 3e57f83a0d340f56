"""Segmentation quality against the truth: the raw model, today's matte and the ways to open openings.

Scenes with a known answer (tests/imaging): the real RGBA gift box on real textures, plain and
gradient studio backdrops and defocused photos; and products with openings (picture frames with large
and small openings, a bag and a mug with ring handles, a spoked wheel, a bicycle, a chair) cut from
real textures, each on a plain, a studio and a busy real backdrop. Columns (IoU of the mask at 0.5):

- raw: the model's probability alone;
- filled: the matte without opening detection (the model snapped to edges, holes it half believes in
  filled): what background replacement did before;
- grabcut: OpenCV's GrabCut seeded from the model's confident regions, then the same matte;
- trimap: the share of opening pixels the model is sure of (probability >= 0.95): a trimap built from
  the model marks them sure foreground, so alpha matting over it cannot open them (not an IoU);
- refined: the default: openings found from the backdrop's own colours (`segment.cut_openings`).

    python benchmarks/bench_segmentation.py
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

if not __package__:  # run as a script: its own folder is on sys.path, the repository root is not
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.imaging import openings
from tests.imaging.test_segment_quality import build_cases

from capability_service.imaging import segment

METHODS = ("raw", "filled", "grabcut", "refined")
TARGETS = {"openings": 0.97, "all": 0.975}
FLOOR = 0.90


def main() -> None:
    scenes: list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]] = []
    for case in build_cases():
        scenes.append(("gift box", case.name, case.rgb, case.truth, case.alpha))
    for scene in openings.scenes():
        group = f"openings/{openings.group_of(scene.backdrop)}"
        scenes.append((group, scene.name, scene.rgb, scene.truth, scene.alpha))
    seconds: dict[str, float] = defaultdict(float)
    rows: list[tuple[str, str, dict[str, float], float]] = []
    for group, name, rgb, truth, alpha in scenes:
        started = time.perf_counter()
        prob = segment.probability(rgb)
        seconds["model"] += time.perf_counter() - started
        masks = {"raw": prob >= 0.5}
        for method, options in (
            ("filled", segment.RefineOptions(openings=False)),
            ("grabcut", segment.RefineOptions(openings=False, grabcut=True)),
            ("refined", segment.RefineOptions()),
        ):
            started = time.perf_counter()
            masks[method] = segment.refine_alpha(rgb, prob, options) >= 0.5
            seconds[method] += time.perf_counter() - started
        holes = (alpha < 0.01) & segment.solid_core((prob >= 0.5).astype(np.float32)).astype(bool)
        opening = group.startswith("openings/") and holes.any()
        sure = float((prob[holes] >= 0.95).mean()) if opening else float("nan")
        rows.append((group, name, {m: segment.iou(masks[m], truth) for m in METHODS}, sure))

    header = f"{'scene':34s} " + " ".join(f"{m:>8s}" for m in METHODS) + f" {'trimap':>7s}"
    print(header)
    for _, name, ious, sure in rows:
        trimap = "" if np.isnan(sure) else f"{sure:7.0%}"
        print(f"{name:34s} " + " ".join(f"{ious[m]:8.4f}" for m in METHODS) + f" {trimap:>7s}")

    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for group, _, ious, _ in rows:
        groups[group].append(ious)
        if group.startswith("openings/"):
            groups["openings"].append(ious)
        groups["all"].append(ious)
    print()
    print(f"{'group (scenes)':34s} " + " ".join(f"{m + ' mean/min':>17s}" for m in METHODS))
    for group in sorted(groups, key=lambda g: (g in ("openings", "all"), g)):
        values = groups[group]
        cells = " ".join(
            f"{np.mean([v[m] for v in values]):8.4f}/{np.min([v[m] for v in values]):.4f}" for m in METHODS
        )
        print(f"{f'{group} ({len(values)})':34s} {cells}")
    n = len(rows)
    print()
    print(
        f"per scene (480x640 or 640x480): model {seconds['model'] / n * 1000:.0f} ms, "
        + ", ".join(f"{m} {seconds[m] / n * 1000:.0f} ms" for m in METHODS[1:])
    )
    for group, target in TARGETS.items():
        value = float(np.mean([v["refined"] for v in groups[group]]))
        print(f"refined, {group}: mean IoU {value:.4f}, target >= {target}: {'met' if value >= target else 'NOT met'}")
    low = [(name, ious["refined"]) for _, name, ious, _ in rows if ious["refined"] < FLOOR]
    print(f"refined, scenes below {FLOOR}: " + (", ".join(f"{n} {v:.4f}" for n, v in low) if low else "none"))


if __name__ == "__main__":
    main()
