"""API keys and the tenants they belong to, checked in constant time against every configured key.

`API_KEYS` holds `tenant:key` pairs or bare keys (`shop-a:KEY1,shop-b:KEY2,KEY3`); a bare key belongs
to the tenant `default`, so set-ups from before tenants keep working. A key that itself contains `:`
must be given with its tenant.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

DEFAULT_TENANT = "default"
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True, slots=True)
class ApiKeyEntry:
    tenant: str
    key: str


def parse_api_key(entry: str) -> ApiKeyEntry:
    """One `API_KEYS` entry: `tenant:key` when the part before the first `:` is a tenant name."""
    tenant, sep, key = entry.partition(":")
    if sep and TENANT_PATTERN.match(tenant):
        return ApiKeyEntry(tenant=tenant, key=key)
    return ApiKeyEntry(tenant=DEFAULT_TENANT, key=entry)


class ApiKeyChecker:
    def __init__(self, entries: list[str]) -> None:
        # Compare bytes of equal-length digests, so neither length nor content leaks through timing.
        parsed = [parse_api_key(entry) for entry in entries]
        self._digests = [(self._digest(item.key), item.tenant) for item in parsed]
        self.tenants = sorted({item.tenant for item in parsed})

    @staticmethod
    def _digest(key: str) -> bytes:
        return hmac.new(b"capability-service-api-key", key.encode("utf-8"), "sha256").digest()

    def tenant_of(self, presented: str | None) -> str | None:
        """The tenant of a presented key, or None when the key is not one of ours."""
        if not presented:
            return None
        digest = self._digest(presented)
        found: str | None = None
        for known, tenant in self._digests:
            # No early exit: every key is compared whatever the outcome.
            if hmac.compare_digest(digest, known) and found is None:
                found = tenant
        return found

    def is_valid(self, presented: str | None) -> bool:
        return self.tenant_of(presented) is not None
