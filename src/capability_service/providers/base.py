"""The interface of a remote image model that edits an image as a prompt asks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class ProviderError(Exception):
    """A remote model call failed for good (after any retries); the message is shown per image.

    `retryable` says whether the failure was of a kind worth retrying (rate limit, server error,
    dropped connection); by the time it reaches the caller the provider has already used its retries.
    `attempts` counts the calls made, retries included.
    """

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.attempts = attempts


class ProviderRefused(ProviderError):
    """The model answered but refused (safety block, no image, text instead of an image); never retried."""


@dataclass(frozen=True, slots=True)
class EditRequest:
    """One photo and a prompt: the model edits the photo (e.g. replaces its background).

    `mime_type` is advisory: providers decide the real format from the bytes.
    """

    image: bytes
    mime_type: str
    prompt: str
    temperature: float
    # "W:H", e.g. "3:4"; providers pick the nearest ratio their model supports.
    aspect_ratio: str | None = None
    negative_prompt: str = ""
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class EditResult:
    image: bytes
    mime_type: str
    # Model name, text parts, finish reason, attempts and the like, for the image's metadata
    # (JSON-serialisable values only).
    details: dict[str, Any] = field(default_factory=dict)


class ImageEditProvider(Protocol):
    """A remote image model. One instance is shared by every job of a process."""

    name: str

    async def edit(self, request: EditRequest) -> EditResult:
        """Send one image and prompt; return the model's image or raise `ProviderError`."""
        ...

    async def health(self) -> dict[str, Any]:
        """`{"healthy": bool, "detail": str, ...}`: whether the model is reachable with our key."""
        ...

    async def close(self) -> None:
        """Release connections; the provider is not used afterwards."""
        ...
