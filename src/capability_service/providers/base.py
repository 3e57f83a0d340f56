"""The interface of a remote image model that edits or generates images from a prompt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class ProviderError(Exception):
    """A remote model call failed for good (after any retries); the message is shown per image."""

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class ProviderRefused(ProviderError):
    """The model answered but refused (safety block, no image); never retried."""


@dataclass(frozen=True, slots=True)
class EditRequest:
    image: bytes
    mime_type: str
    prompt: str
    temperature: float
    aspect_ratio: str | None = None
    negative_prompt: str = ""
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class EditResult:
    image: bytes
    mime_type: str
    # Model name, text parts, finish reason and the like, for the image's metadata.
    details: dict[str, Any] = field(default_factory=dict)


class ImageEditProvider(Protocol):
    name: str

    async def edit(self, request: EditRequest) -> EditResult:
        """Send one image and prompt; return the model's image or raise `ProviderError`."""
        ...

    async def health(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...
