"""Result keys stay inside their prefix and never collide, whatever ids callers choose."""

from __future__ import annotations

import itertools

import pytest

from capability_service.storage.keys import is_result_key, owner_prefix, result_key, safe_segment

ODD_IDS = [
    "",
    ".",
    "..",
    "../../etc",
    "a/b",
    "a\\b",
    "/abs",
    "x\x00y",
    "über-käse",
    "名前",
    "a b",
    "a%2Fb",
    "%2e%2e",
    "CON",
    "a" * 500,
    "-",
    "_",
    "job.1",
    "job:1",
    "u?x=1#f",
    "\n",
    "a..b",
]


@pytest.mark.parametrize("odd", ODD_IDS)
def test_any_id_gives_a_safe_key(odd: str) -> None:
    key = result_key("shop-a", odd, odd or "j", 0, "webp")
    assert is_result_key(key), key
    tenant, user, job = key.split("/")[1:4]
    assert tenant == "shop-a"
    for segment in (user, job):
        assert segment not in ("", ".", "..")
        assert all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in segment), segment
        assert len(segment) <= 64 + 11


def test_plain_ids_are_kept_as_they_are() -> None:
    assert result_key("shop-a", "u-42", "test_001", 3, "webp") == "ai-playground/shop-a/u-42/test_001/3.webp"


def test_jobs_without_a_user_share_no_segment_with_any_user() -> None:
    nobody = result_key("default", None, "j", 0, "jpg")
    assert nobody == "ai-playground/default/-anonymous/j/0.jpg"
    for user_id in ("anonymous", "-anonymous", "_anonymous", "--anonymous", " anonymous"):
        assert not result_key("default", user_id, "j", 0, "jpg").startswith(owner_prefix("default", None))


def test_tenants_never_share_a_prefix() -> None:
    assert not owner_prefix("shop-a", "u").startswith(owner_prefix("shop-b", "u"))
    assert owner_prefix("shop-a", "u") != owner_prefix("shop-a", None)


def test_different_ids_never_share_a_key() -> None:
    hashed_form = safe_segment("a/b")
    ids = list(dict.fromkeys([*ODD_IDS, "a-b", "a_b", "a.b", "a:b", "a b", "a--b", hashed_form]))
    segments = {value: safe_segment(value) for value in ids}
    for first, second in itertools.combinations(ids, 2):
        if first and second:
            assert segments[first] != segments[second], (first, second)


def test_extension_is_sanitised() -> None:
    assert result_key("t", "u", "j", 1, "../png").endswith("/1.png")
    assert result_key("t", "u", "j", 1, "").endswith("/1.bin")
    with pytest.raises(ValueError, match="negative"):
        result_key("t", "u", "j", -1, "png")


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("ai-playground/u/j/0.webp", True),
        ("ai-playground/u/j/0.png", True),
        ("ai-playground/../x", False),
        ("ai-playground/u/../../x", False),
        ("ai-playground//x", False),
        ("/ai-playground/u/j/0.png", False),
        ("other/u/j/0.png", False),
        ("ai-playground/u/j/.hidden", False),
        ("ai-playground/u/j/0.png%00", False),
        ("ai-playground", False),
    ],
)
def test_is_result_key(key: str, valid: bool) -> None:
    assert is_result_key(key) is valid
