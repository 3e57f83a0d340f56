"""Jobs and their per-image outcomes, and the JSON views the HTTP API returns."""

from __future__ import annotations

import hashlib
import json
import time
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from capability_service.storage.local import is_relative_reference


class JobStatus(StrEnum):
    pending = "pending"  # accepted and waiting for a slot
    processing = "processing"  # at least one image has started
    completed = "completed"  # finished; at least one image succeeded
    failed = "failed"  # finished; no image succeeded
    cancelled = "cancelled"  # stopped on request or at shutdown; finished images are kept

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.completed, JobStatus.failed, JobStatus.cancelled})


class ImageStatus(StrEnum):
    pending = "pending"  # not started yet
    processing = "processing"  # being fetched, processed or uploaded
    succeeded = "succeeded"  # a result is stored
    failed = "failed"  # this image has an error; the job's other images are unaffected
    cancelled = "cancelled"  # the job was cancelled before this image finished


class ImageOutcome(BaseModel):
    index: int
    status: ImageStatus = ImageStatus.pending
    result_url: str | None = None
    result_key: str | None = None
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        return self.status in (ImageStatus.succeeded, ImageStatus.failed, ImageStatus.cancelled)


def summarize_source(url: str) -> str:
    """Data URIs can be megabytes; views and logs show their type and size instead of the payload."""
    if url[:5].lower() == "data:":
        head, _, payload = url.partition(",")
        if payload.startswith("…("):
            return url
        return f"{head},…({len(payload)} base64 chars)"
    return url


def resolve_result_url(url: str | None, base_url: str) -> str | None:
    """A result URL as a caller can fetch it: a relative reference (`/files/...`, what local storage keeps
    when no public base is configured) is resolved against `base_url`, the address the caller used."""
    if url is not None and is_relative_reference(url):
        return base_url.rstrip("/") + url
    return url


def payload_fingerprint(job_type: str, user_id: str | None, config: dict[str, Any], sources: list[str]) -> str:
    """Same fingerprint iff the same submission: decides idempotent replay vs 409 on a reused job id."""
    # The digest of `json.dumps({"config", "sources", "type", "user_id"}, sort_keys=True, compact)`, fed
    # source by source: the sources can be hundreds of megabytes of data: URIs, not to be copied whole.
    digest = hashlib.sha256()

    def feed(text: str) -> None:
        digest.update(text.encode("utf-8"))

    def dumps(value: Any) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))

    feed('{"config":' + dumps(config) + ',"sources":[')
    for index, source in enumerate(sources):
        feed(("," if index else "") + dumps(source))
    feed('],"type":' + dumps(job_type) + ',"user_id":' + dumps(user_id) + "}")
    return digest.hexdigest()


def job_key(tenant: str, job_id: str) -> str:
    """The stores' name for a job: a digest of tenant and id.

    Job ids are chosen by callers; a digest means no id can reach into another tenant's jobs or forge
    the name of another key (a Redis key, a task key) by containing a separator.
    """
    return hashlib.sha256(f"{tenant}\x00{job_id}".encode()).hexdigest()[:32]


class Job(BaseModel):
    job_id: str
    # The tenant whose API key submitted the job; for every other tenant the job does not exist.
    tenant: str = "default"
    user_id: str | None = None
    type: str
    plugin: str
    config: dict[str, Any]
    source_image_urls: list[str]
    # Facts about each source known at submit time (e.g. the catalogue product it shows), merged into
    # that image's result metadata; empty when there are none.
    source_facts: list[dict[str, Any]] = Field(default_factory=list)
    fingerprint: str
    status: JobStatus = JobStatus.pending
    message: str
    images: list[ImageOutcome]
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    cancel_requested: bool = False
    # Bumped on every change, so a stream can drop a snapshot it has already sent.
    version: int = 0

    @property
    def key(self) -> str:
        return job_key(self.tenant, self.job_id)

    def facts_of(self, index: int) -> dict[str, Any]:
        """What is known about image `index`'s source besides its URL (empty for plain URL jobs)."""
        return self.source_facts[index] if index < len(self.source_facts) else {}

    @property
    def source_bytes(self) -> int:
        """What the job's sources weigh while it is live (data: URIs are kept whole until it ends)."""
        return sum(len(url) for url in self.source_image_urls)

    @property
    def total(self) -> int:
        return len(self.images)

    @property
    def processed(self) -> int:
        return sum(1 for image in self.images if image.status in (ImageStatus.succeeded, ImageStatus.failed))

    @property
    def succeeded(self) -> int:
        return sum(1 for image in self.images if image.status is ImageStatus.succeeded)

    @property
    def failed_count(self) -> int:
        return sum(1 for image in self.images if image.status is ImageStatus.failed)

    @property
    def progress(self) -> int:
        if self.status is JobStatus.completed or self.status is JobStatus.failed:
            return 100
        return int(100 * self.processed / self.total) if self.total else 0

    @property
    def current_image(self) -> int | None:
        """1-based number of the highest image being worked on, None when none is."""
        active = [image.index for image in self.images if image.status is ImageStatus.processing]
        return max(active) + 1 if active else None

    @property
    def processing_time_ms(self) -> int | None:
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else time.time()
        return int((end - self.started_at) * 1000)

    def status_view(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status.value,
            "progress": self.progress,
            "processed": self.processed,
            "total": self.total,
            "current_image": self.current_image,
            "message": self.message,
        }

    def result_view(self, base_url: str = "") -> dict[str, Any]:
        """The job with its results; relative result URLs are resolved against `base_url` (see
        `resolve_result_url`)."""
        errors = [
            {
                "index": image.index,
                "source_url": summarize_source(self.source_image_urls[image.index]),
                "error": image.error,
            }
            for image in self.images
            if image.error is not None
        ]
        return {
            **self.status_view(),
            "user_id": self.user_id,
            "type": self.type,
            "result_image_urls": [resolve_result_url(image.result_url, base_url) for image in self.images],
            "source_image_urls": [summarize_source(url) for url in self.source_image_urls],
            "processing_time_ms": self.processing_time_ms,
            "succeeded": self.succeeded,
            "failed": self.failed_count,
            "errors": errors,
            "metadata": {
                "config": self.config,
                "images": [
                    {"index": image.index, "status": image.status.value, **image.metadata} for image in self.images
                ],
            },
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.finished_at,
        }
