"""Segmentation quality against the truth: the raw model, the ways to refine it, and the previous matte.

Scenes with a known answer (tests/imaging): the real RGBA gift box on real textures, plain and
gradient studio backdrops and defocused photos; and products with openings (picture frames with large
and small openings, a bag and a mug with ring handles, a spoked wheel, a bicycle, a chair) cut from
real textures, each on a plain, a studio and a busy real backdrop. Columns (IoU of the mask at 0.5):

- raw: the model's probability alone (on the motorcycle's boxes, the probability itself as the matte);
- filled: the matte without opening detection (the model snapped to edges, holes it half believes in
  filled): what background replacement did before openings were looked for;
- grabcut: OpenCV's GrabCut seeded from the model's confident regions, then the same matte;
- previous: the default matte of another revision (`--baseline`, default the first opening-aware
  matte, whose busy backdrops used a colour histogram), run from `git archive` in its own process;
- regions: this revision with busy backdrops' regions found by smoothing the colour score and
  thresholding it, as on smooth backdrops (`OpeningOptions(graph_cut=False)`);
- refined: this revision's default: on busy backdrops a graph cut on the colour score.

Two more figures per scene: "trimap", the share of opening pixels the model is sure of (probability
>= 0.95): a trimap built from the model marks them sure foreground, so alpha matting over it cannot open
them; and "reach", the share of the true product inside the model's filled answer (grown by a pixel):
a refinement that only removes what the model wrongly took cannot score above it.

Then the real motorcycle photo (no true alpha; hand-marked boxes, tests/imaging/motorcycle.py): the
share of the marked backdrop each matte removes and of the marked product it keeps.

    python benchmarks/bench_segmentation.py [--baseline REV | --no-baseline]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if not __package__:  # run as a script: its own folder is on sys.path, the repository root is not
    sys.path.insert(0, str(ROOT))

METHODS = ("raw", "filled", "grabcut", "previous", "regions", "refined")
TARGETS = {"openings": 0.97, "all": 0.975}
FLOOR = 0.90
# The first opening-aware matte: smooth backdrops by a fitted surface, busy ones by a colour histogram.
BASELINE = "fb70cef"


def child(folder: Path) -> None:
    """Refine every saved input with whichever `capability_service` is importable; save the masks."""
    from capability_service.imaging import segment

    inputs = np.load(folder / "inputs.npz")
    masks = {}
    for key in sorted({name.split(":")[0] for name in inputs.files}):
        rgb, prob = inputs[f"{key}:rgb"], inputs[f"{key}:prob"]
        started = time.perf_counter()
        alpha = segment.refine_alpha(rgb, prob)
        masks[f"{key}:seconds"] = np.array(time.perf_counter() - started)
        masks[f"{key}:alpha"] = alpha.astype(np.float16)
    np.savez(folder / "outputs.npz", **masks)  # type: ignore[arg-type]


def previous_alphas(revision: str, inputs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """The default matte of `revision` for each input, and its seconds per input under the key "seconds"."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        archive = subprocess.run(["git", "archive", revision, "src"], cwd=ROOT, capture_output=True, check=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(folder, filter="data")
        arrays = {}
        for key, (rgb, prob) in inputs.items():
            arrays[f"{key}:rgb"], arrays[f"{key}:prob"] = rgb, prob
        np.savez(folder / "inputs.npz", **arrays)  # type: ignore[arg-type]
        env = {**os.environ, "PYTHONPATH": str(folder / "src")}
        command = [sys.executable, str(Path(__file__).resolve()), "--child", str(folder)]
        subprocess.run(command, env=env, check=True, cwd=folder)
        outputs = np.load(folder / "outputs.npz")
        alphas = {key: outputs[f"{key}:alpha"].astype(np.float32) for key in inputs}
        alphas["seconds"] = np.array(sum(float(outputs[f"{key}:seconds"]) for key in inputs) / len(inputs))
        return alphas


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return

    from tests.imaging import motorcycle, openings
    from tests.imaging.test_segment_quality import build_cases

    from capability_service.imaging import composite, segment

    scenes: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    for case in build_cases():
        scenes.append(("gift box", case.name, case.rgb, case.alpha))
    for scene in openings.scenes():
        scenes.append((f"openings/{openings.group_of(scene.backdrop)}", scene.name, scene.rgb, scene.alpha))
    # The motorcycle at the size background replacement finds the product on.
    data = motorcycle.PHOTO.read_bytes()
    scale = composite.WORK_SIDE / max(motorcycle.SIZE)
    moto_rgb, _ = composite._decode(data, round(motorcycle.SIZE[0] * scale), round(motorcycle.SIZE[1] * scale))

    seconds: dict[str, float] = defaultdict(float)
    probs: dict[str, np.ndarray] = {}
    for _, name, rgb, _ in scenes:
        started = time.perf_counter()
        probs[name] = segment.probability(rgb)
        seconds["model"] += time.perf_counter() - started
    probs["motorcycle"] = segment.probability(moto_rgb)

    variants = {
        "filled": segment.RefineOptions(openings=False),
        "grabcut": segment.RefineOptions(openings=False, grabcut=True),
        "regions": segment.RefineOptions(opening=segment.OpeningOptions(graph_cut=False)),
        "refined": segment.RefineOptions(),
    }
    inputs = {name: (rgb, probs[name]) for _, name, rgb, _ in scenes}
    inputs["motorcycle"] = (moto_rgb, probs["motorcycle"])
    alphas: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for key, (rgb, prob) in inputs.items():
        alphas["raw"][key] = prob
        for method, options in variants.items():
            started = time.perf_counter()
            alphas[method][key] = segment.refine_alpha(rgb, prob, options)
            if key != "motorcycle":
                seconds[method] += time.perf_counter() - started
    methods = [m for m in METHODS if m != "previous" or not args.no_baseline]
    if not args.no_baseline:
        previous = previous_alphas(args.baseline, inputs)
        seconds["previous"] = float(previous.pop("seconds")) * len(scenes)
        alphas["previous"] = previous

    rows: list[tuple[str, str, dict[str, float], float, float]] = []
    for group, name, _, alpha in scenes:
        truth = alpha >= 0.5
        prob = probs[name]
        core = segment.solid_core((prob >= 0.5).astype(np.float32)).astype(bool)
        holes = (alpha < 0.01) & core
        opening = group.startswith("openings/") and holes.any()
        sure = float((prob[holes] >= 0.95).mean()) if opening else float("nan")
        grown = cv2.dilate(core.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        reach = float((truth & grown).sum() / max(1, truth.sum()))
        ious = {m: segment.iou(alphas[m][name] >= 0.5, truth) for m in methods}
        rows.append((group, name, ious, sure, reach))

    print(f"{'scene':30s} " + " ".join(f"{m:>8s}" for m in methods) + f" {'trimap':>7s} {'reach':>6s}")
    for _, name, ious, sure, reach in rows:
        trimap = "" if np.isnan(sure) else f"{sure:7.0%}"
        print(f"{name:30s} " + " ".join(f"{ious[m]:8.4f}" for m in methods) + f" {trimap:>7s} {reach:6.3f}")

    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for group, _, ious, _, _ in rows:
        groups[group].append(ious)
        if group.startswith("openings/"):
            groups["openings"].append(ious)
        groups["all"].append(ious)
    print()
    print(f"{'group (scenes)':22s} " + " ".join(f"{m + ' mean/min':>15s}" for m in methods))
    for group in sorted(groups, key=lambda g: (g in ("openings", "all"), g)):
        values = groups[group]
        cells = " ".join(
            f"{np.mean([v[m] for v in values]):7.4f}/{np.min([v[m] for v in values]):.4f}" for m in methods
        )
        print(f"{f'{group} ({len(values)})':22s} {cells}")
    n = len(rows)
    print()
    print(
        f"per scene (480x640 or 640x480, one process): model {seconds['model'] / n * 1000:.0f} ms, "
        + ", ".join(f"{m} {seconds[m] / n * 1000:.0f} ms" for m in methods[1:])
    )
    for group, target in TARGETS.items():
        value = float(np.mean([v["refined"] for v in groups[group]]))
        print(f"refined, {group}: mean IoU {value:.4f}, target >= {target}: {'met' if value >= target else 'NOT met'}")
    low = [(name, ious["refined"], reach) for _, name, ious, _, reach in rows if ious["refined"] < FLOOR]
    print(
        f"refined, scenes below {FLOOR}: "
        + (", ".join(f"{name} {v:.4f} (reach {r:.3f})" for name, v, r in low) if low else "none")
    )

    print()
    print("motorcycle_left.png (hand-marked boxes): backdrop removed / product kept, mean over the boxes")
    marks = {
        "front wheel floor removed": (motorcycle.FRONT_WHEEL_FLOOR, True),
        "rear wheel floor removed": (motorcycle.REAR_WHEEL_FLOOR, True),
        "bench above the seat removed": (motorcycle.BENCH, True),
        "product kept": (motorcycle.PRODUCT, False),
    }
    print(f"{'':30s} " + " ".join(f"{m:>8s}" for m in methods))
    full = {
        m: np.asarray(cv2.resize(alphas[m]["motorcycle"], motorcycle.SIZE, interpolation=cv2.INTER_LINEAR), np.float32)
        for m in methods
    }
    for label, (boxes, removed) in marks.items():
        shares = []
        for m in methods:
            covered = float(np.mean([motorcycle.coverage(full[m], box) for box in boxes.values()]))
            shares.append(f"{1.0 - covered if removed else covered:8.0%}")
        print(f"{label:30s} " + " ".join(shares))
    kept = {name: motorcycle.coverage(full["refined"], box) for name, box in motorcycle.PRODUCT.items()}
    worst = min(kept, key=lambda name: kept[name])
    print(f"refined, least kept product box: {worst} {kept[worst]:.0%}")


if __name__ == "__main__":
    main()
