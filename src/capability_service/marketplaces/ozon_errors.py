"""What can go wrong talking to the Ozon Seller API, as types the API layer maps to clear answers.

Every message is written for the seller and never holds a credential: the client scrubs the
Client-Id and Api-Key out of anything Ozon echoes before it gets here.
"""

from __future__ import annotations

from typing import Literal


class OzonError(Exception):
    """A Seller API call failed for good (after any retries the failure allows)."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        # Ozon's HTTP status and its `code` field, when Ozon answered at all.
        self.status = status
        self.code = code


class OzonCredentialsMissing(OzonError):
    """No usable Client-Id / Api-Key pair for this request (none configured, or only half given)."""


class OzonAuthError(OzonError):
    """Ozon refused the credentials: `which` says whether the Api-Key or the Client-Id is wrong."""

    def __init__(
        self, message: str, *, which: Literal["api_key", "client_id"], status: int | None, code: int | None
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.which = which


class OzonRateLimited(OzonError):
    """Ozon's request limit held for longer than this client is willing to wait."""

    def __init__(self, message: str, *, retry_after: float, status: int | None = 429, code: int | None = 8) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class OzonCircleOpen(OzonError):
    """Ozon answered "Circle is open": the method is blocked for this account for some minutes.

    Retrying at once only keeps the circuit open, so the client stops and says so.
    """

    def __init__(self, message: str, *, method: str, status: int | None) -> None:
        super().__init__(message, status=status)
        self.method = method


class OzonRequestRejected(OzonError):
    """Ozon refused the request itself (a 4xx other than credentials and limits), e.g. a malformed id."""


class OzonUnavailable(OzonError):
    """Ozon did not answer usefully (connection failure, timeout, 5xx, a body that is not its JSON)."""
