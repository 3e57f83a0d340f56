from __future__ import annotations

from capability_service.core.security import ApiKeyChecker


def test_accepts_each_configured_key_and_nothing_else() -> None:
    checker = ApiKeyChecker(["alpha-key-123", "beta-key-4567"])
    assert checker.is_valid("alpha-key-123")
    assert checker.is_valid("beta-key-4567")
    for wrong in ("", None, "alpha-key-12", "alpha-key-1234", "ALPHA-KEY-123", "beta-key-4567 "):
        assert not checker.is_valid(wrong)


def test_no_keys_accepts_nothing() -> None:
    assert not ApiKeyChecker([]).is_valid("anything-at-all")
