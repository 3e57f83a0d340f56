"""Border lightness of real photos: a cut-out product on white is light, camera photos are not."""

from __future__ import annotations

import pytest

from capability_service.imaging.border import border_stats
from capability_service.imaging.types import ImageError
from tests.support.data import read_image


def test_cut_out_product_flattened_on_white_has_a_light_border() -> None:
    stats = border_stats(read_image("Minduka_Present_Blue_Pack.png"))
    assert stats.format == "png" and stats.has_alpha
    assert stats.light_share > 0.95 and stats.border_luma > 240


@pytest.mark.parametrize("name", ["camera_3648x2736.jpg", "rocket.jpg", "grace_hopper.jpg"])
def test_camera_photos_have_a_dark_or_busy_border(name: str) -> None:
    stats = border_stats(read_image(name))
    assert stats.light_share < 0.1
    assert stats.border_luma < 130


def test_size_is_the_upright_size_from_the_header() -> None:
    stats = border_stats(read_image("camera_3648x2736.jpg"))
    assert (stats.width, stats.height) == (3648, 2736)


def test_not_an_image_is_an_image_error() -> None:
    with pytest.raises(ImageError):
        border_stats(b"<html>not a picture</html>")
