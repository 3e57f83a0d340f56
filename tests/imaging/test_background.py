"""Offline backgrounds from prompts and from a given image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from capability_service.imaging import background
from capability_service.imaging.types import ImageError


@pytest.mark.parametrize(
    ("prompt", "kind", "colours"),
    [
        ("pure white", "solid", [(255, 255, 255)]),
        ("#f5f5dc", "solid", [(245, 245, 220)]),
        ("clean background, colour #FA0 please", "solid", [(255, 170, 0)]),
        ("black", "solid", [(0, 0, 0)]),
        ("light grey studio", "studio", [(217, 217, 217)]),
        ("soft blue gradient", "gradient", [(229, 236, 251), (190, 208, 244)]),
        ("gradient from #ffffff to #cccccc", "gradient", [(255, 255, 255), (204, 204, 204)]),
        ("белый фон", "solid", [(255, 255, 255)]),
        ("светло-серый студийный фон", "studio", [(217, 217, 217)]),
    ],
)
def test_prompts_the_offline_engine_understands(prompt: str, kind: str, colours: list[tuple[int, int, int]]) -> None:
    spec = background.parse_prompt(prompt)
    assert spec.understood and spec.note is None
    assert spec.kind == kind
    assert list(spec.colours) == colours


def test_an_unknown_prompt_gives_white_with_a_note() -> None:
    spec = background.parse_prompt("a cosy Scandinavian living room at golden hour")
    assert not spec.understood
    assert spec.colours == ((255, 255, 255),)
    assert spec.note is not None and "white" in spec.note


def test_rendered_backgrounds_have_the_described_colours() -> None:
    solid = background.render(background.parse_prompt("#f5f5dc"), 300, 400)
    assert solid.shape == (400, 300, 3) and solid.dtype == np.uint8
    assert np.all(solid == (245, 245, 220))
    gradient = background.render(background.parse_prompt("gradient from #ffffff to #000000"), 30, 101)
    assert tuple(gradient[0, 0]) == (255, 255, 255) and tuple(gradient[-1, -1]) == (0, 0, 0)
    # Monotonic from top to bottom and the same across each row.
    column = gradient[:, 0, 0].astype(int)
    assert np.all(np.diff(column) <= 0) and np.all(gradient[:, 0] == gradient[:, -1])
    studio = background.render(background.parse_prompt("light grey studio"), 300, 400).astype(int)
    centre, corner = studio[170, 150], studio[0, 0]
    # Brighter in the middle, the named colour at the corners.
    assert np.all(centre > corner + 10) and abs(int(corner[0]) - 217) <= 6


def test_a_background_image_is_scaled_to_cover(data_dir: object) -> None:
    from pathlib import Path

    assert isinstance(data_dir, Path)
    data = (data_dir / "rocket.jpg").read_bytes()  # 640x427, landscape
    out = background.from_image(data, 300, 400, 50_000_000)
    assert out.shape == (400, 300, 3)
    # Covered, not letterboxed: no flat padding rows at top or bottom.
    assert out[0].std() > 1 and out[-1].std() > 1
    with Image.open(io.BytesIO(data)) as image:
        reference = np.asarray(image.convert("RGB").resize((600, 400)))[:, 150:450]
    assert float(np.abs(out.astype(int) - reference.astype(int)).mean()) < 12


def test_a_broken_background_image_is_a_clear_error() -> None:
    with pytest.raises(ImageError):
        background.from_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, 300, 400, 50_000_000)
    with pytest.raises(ImageError):
        background.from_image(b"<html>not an image</html>", 300, 400, 50_000_000)


def test_a_model_scene_is_enlarged_to_cover_like_libvips_would(data_dir: object) -> None:
    from pathlib import Path

    import pyvips

    assert isinstance(data_dir, Path)
    # A painted scene as a model returns it for a 3:4 canvas (864x1184 PNG), from a real photo.
    photo = pyvips.Image.new_from_file(str(data_dir / "chelsea.png"))
    scene = bytes(photo.resize(864 / photo.width, vscale=1184 / photo.height).cast("uchar").pngsave_buffer(keep="none"))
    out = background.from_image(scene, 1500, 2000, 50_000_000)
    assert out.shape == (2000, 1500, 3) and out.dtype == np.uint8
    # The same cover and crop as libvips' thumbnail (which it replaces for speed), within a level or so.
    reference = pyvips.Image.thumbnail_buffer(scene, 1500, height=2000, size="both", crop="centre").numpy()
    difference = np.abs(out.astype(np.int16) - reference.astype(np.int16))
    assert float(difference.mean()) < 1.5 and np.percentile(difference, 99) <= 8
    # A truncated scene is this image's clear error, not a crash.
    with pytest.raises(ImageError):
        background.from_image(scene[: len(scene) // 2], 1500, 2000, 50_000_000)


def test_a_bmp_background_image_is_read(data_dir: object) -> None:
    from pathlib import Path

    assert isinstance(data_dir, Path)
    with Image.open(data_dir / "rocket.jpg") as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "BMP")
        reference = np.asarray(image.convert("RGB").resize((600, 400)))[:, 150:450]
    # Covered (a thumbnail) and enlarged (the model-scene path) alike.
    for width, height in ((300, 400), (1500, 2000)):
        out = background.from_image(buffer.getvalue(), width, height, 50_000_000)
        assert out.shape == (height, width, 3)
    out = background.from_image(buffer.getvalue(), 300, 400, 50_000_000)
    assert float(np.abs(out.astype(int) - reference.astype(int)).mean()) < 12
