"""Provider options, edit requests and one-shot edits shared by the provider tests."""

from __future__ import annotations

from typing import Any

from capability_service.providers.base import EditRequest, ImageEditProvider
from capability_service.providers.http import RetryPolicy
from tests.providers.conftest import SleepLog
from tests.support.data import read_image

# Retries within a test's patience.
FAST = RetryPolicy(max_retries=3, base_delay=0.05, max_delay=0.2, max_wait=2.0)


def provider_options(api_base: str, api_key: str, sleep: SleepLog | None, /, **overrides: Any) -> dict[str, Any]:
    """Constructor options of a provider talking to a fake: a 10 s timeout, `FAST` retries, `overrides` last."""
    options: dict[str, Any] = {"api_base": api_base, "api_key": api_key, "timeout": 10.0, "policy": FAST}
    if sleep is not None:
        options["sleep"] = sleep
    return {**options, **overrides}


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
