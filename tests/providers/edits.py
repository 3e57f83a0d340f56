"""Edit requests and one-shot edits shared by the provider tests."""

from __future__ import annotations

from typing import Any

from capability_service.providers.base import EditRequest, ImageEditProvider
from tests.support.data import read_image


def edit_request(image_name: str, prompt: str, /, **overrides: Any) -> EditRequest:
    """A standard-quality 3:4 edit of the test image `image_name` (PNG declared), with fields overridden."""
    values: dict[str, Any] = {
        "image": read_image(image_name),
        "mime_type": "image/png",
        "prompt": prompt,
        "temperature": 0.5,
        "aspect_ratio": "3:4",
    }
    values.update(overrides)
    return EditRequest(**values)


async def edit_once(model: ImageEditProvider, request: EditRequest) -> Any:
    """`model`'s answer to one request; the model's client is closed after it, whatever happened."""
    try:
        return await model.edit(request)
    finally:
        await model.close()
