"""API-key checks: constant-time comparison against every configured key."""

from __future__ import annotations

import hmac


class ApiKeyChecker:
    def __init__(self, keys: list[str]) -> None:
        # Compare bytes of equal-length digests, so neither length nor content leaks through timing.
        self._digests = [self._digest(key) for key in keys]

    @staticmethod
    def _digest(key: str) -> bytes:
        return hmac.new(b"capability-service-api-key", key.encode("utf-8"), "sha256").digest()

    def is_valid(self, presented: str | None) -> bool:
        if not presented:
            return False
        digest = self._digest(presented)
        matched = False
        for known in self._digests:
            # No early exit: every key is compared whatever the outcome.
            matched |= hmac.compare_digest(digest, known)
        return matched
