"""What submitting, reading or cancelling a job can end in, mapped to HTTP statuses by the API."""

from __future__ import annotations


class JobError(Exception):
    """Base of the job errors; the message is shown to the caller."""


class InvalidSubmission(JobError):
    """The submission is malformed (400); `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class JobNotFound(JobError):
    """No such job, or it belongs to another user (404)."""


class JobConflict(JobError):
    """A reused job id with another payload, or a cancel of a finished job (409)."""


class Unavailable(JobError):
    """Cannot take the job now: queue full, shutting down, plugin disabled, store down (503)."""

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
