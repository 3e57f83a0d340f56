"""Ozon's photo requirements as a pure check: each rule can fail, and a marketplace-ready picture passes."""

from __future__ import annotations

import pytest

from capability_service.marketplaces.ozon_rules import PictureFacts, check_picture

READY = PictureFacts(
    format="jpeg", size_bytes=900_000, width=1500, height=2000, border_luma=250, light_share=0.98, border_spread=4
)


def with_(**changes: object) -> PictureFacts:
    values = {field: getattr(READY, field) for field in READY.__slots__}
    values.update(changes)
    return PictureFacts(**values)


def test_a_marketplace_ready_main_picture_passes() -> None:
    check = check_picture(READY, main=True)
    assert check.ok
    assert check.view() == {"ok": True, "problems": [], "advice": []}


@pytest.mark.parametrize(
    ("facts", "words"),
    [
        (with_(format="webp"), "JPG or PNG only"),
        (with_(format="avif"), "JPG or PNG only"),
        (with_(size_bytes=11 * 1024 * 1024), "10 MB"),
        (with_(width=150, height=200), "at least 200 px"),
        (with_(width=6000, height=8000), "at most 7680 px"),
    ],
)
def test_what_ozon_refuses_is_a_problem(facts: PictureFacts, words: str) -> None:
    check = check_picture(facts, main=False)
    assert not check.ok
    assert any(words in problem for problem in check.problems), check.problems


def test_png_and_jpg_spelling_are_accepted() -> None:
    assert check_picture(with_(format="png"), main=False).ok
    assert check_picture(with_(format="jpg"), main=False).ok


def test_not_3_to_4_is_advice_not_a_refusal() -> None:
    check = check_picture(with_(width=2000, height=2000), main=False)
    assert check.ok
    assert check.advice == ("2000x2000 px is not 3:4: Ozon shows it stretched or with margins instead of in full",)
    # A pixel of rounding is still 3:4.
    assert check_picture(with_(width=1499, height=2000), main=False).advice == ()


def test_small_pictures_get_advice_about_zoom() -> None:
    check = check_picture(with_(width=600, height=800), main=False)
    assert check.ok and "below 900x1200" in check.advice[0]


def test_main_picture_needs_a_light_background() -> None:
    dark = with_(border_luma=60, light_share=0.02, border_spread=30)
    check = check_picture(dark, main=True)
    assert not check.ok
    assert "background is not white or light" in check.problems[0]
    # The same picture as an additional one is fine: the rule is the main picture's.
    assert check_picture(dark, main=False).ok


def test_main_picture_busy_or_transparent_background_is_advice() -> None:
    busy = check_picture(with_(border_spread=55), main=True)
    assert busy.ok and "busy" in busy.advice[0]
    clear = check_picture(with_(format="png", has_alpha=True), main=True)
    assert clear.ok and "transparent" in clear.advice[0]


def test_without_border_measurements_the_background_rule_is_skipped() -> None:
    assert check_picture(with_(border_luma=None, light_share=None, border_spread=None), main=True).ok


def test_every_problem_is_reported_at_once() -> None:
    check = check_picture(
        with_(format="gif", size_bytes=20 * 1024 * 1024, width=100, height=100, light_share=0.1), main=True
    )
    assert len(check.problems) == 4
