"""What a log line is about: the request, tenant, job and image it was written for.

Kept in context variables, so every line written while a request or an image is being handled carries
them without being passed around: the request id is set by the request-id middleware
(`asgi-correlation-id`), the tenant by the API-key gate, the job and image by the image task.
asyncio copies the context into each task it creates, so work started for a request or an image
inherits them and nothing leaks between concurrent requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from asgi_correlation_id.context import correlation_id

TENANT: ContextVar[str | None] = ContextVar("capsvc_tenant", default=None)
JOB_ID: ContextVar[str | None] = ContextVar("capsvc_job_id", default=None)
IMAGE_INDEX: ContextVar[int | None] = ContextVar("capsvc_image_index", default=None)


def request_id() -> str | None:
    """The id of the request being handled (its `X-Request-ID`), if any."""
    return correlation_id.get()


def set_tenant(tenant: str | None) -> None:
    """Name the tenant of the request being handled, for the rest of its handling."""
    TENANT.set(tenant)


@contextmanager
def image_work(*, tenant: str, job_id: str, index: int) -> Iterator[None]:
    """Lines logged inside carry this job's tenant, id and the image's index."""
    tokens = (TENANT.set(tenant), JOB_ID.set(job_id), IMAGE_INDEX.set(index))
    try:
        yield
    finally:
        IMAGE_INDEX.reset(tokens[2])
        JOB_ID.reset(tokens[1])
        TENANT.reset(tokens[0])


def current() -> dict[str, Any]:
    """The context that applies now, without the parts that do not."""
    values: dict[str, Any] = {
        "request_id": request_id(),
        "tenant": TENANT.get(),
        "job_id": JOB_ID.get(),
        "image_index": IMAGE_INDEX.get(),
    }
    return {key: value for key, value in values.items() if value is not None}
