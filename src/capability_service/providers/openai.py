"""OpenAI's GPT Image models through the Images API, so no deployment depends on one vendor.

Edit: `POST {OPENAI_API_BASE}/images/edits`, multipart: `model`, `image`, `prompt`,
`input_fidelity=high` (keep the product's details), `size` nearest the target's shape, `n=1`.
Generate: `POST {OPENAI_API_BASE}/images/generations`, JSON. Both answer `data[0].b64_json`.
Errors are `{"error": {"message", "type", "code", "param"}}`; `moderation_blocked` (and the older
`content_policy_violation`) become `ProviderRefused`.
"""

from __future__ import annotations

from typing import Any, Unpack

import httpx

from capability_service.core.config import Settings
from capability_service.imaging.fit_request import MIME_TYPES, RequestLimits
from capability_service.providers import aspect
from capability_service.providers.base import (
    EditRequest,
    EditResult,
    ProviderError,
    ProviderRefused,
)
from capability_service.providers.http import Failure, brief, parse_retry_after
from capability_service.providers.remote import (
    ClientOptions,
    RemoteModelProvider,
    client_options,
    decode_image,
    error_payload,
    note_input,
    prompt_text,
)

# The output sizes of the GPT Image models (besides "auto").
SIZES = ("1024x1024", "1536x1024", "1024x1536")
# Each input image must be under 50 MB; the model itself works at up to 2048 px.
MAX_IMAGE_BYTES = 50_000_000
MAX_INPUT_SIDE = 2048
INPUT_FORMATS = frozenset({"jpeg", "png", "webp"})
REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation", "content_filter"})
# A 429 that no wait will cure.
NO_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


class OpenAIProvider(RemoteModelProvider):
    """An `ImageEditProvider` for OpenAI's image edit endpoint (`gpt-image-1` by default)."""

    name = "openai"
    vendor = "OpenAI"
    key_setting = "OPENAI_API_KEY"

    def __init__(
        self,
        *,
        api_base: str,
        api_key: str,
        model: str = "gpt-image-1",
        **options: Unpack[ClientOptions],
    ) -> None:
        self.model = model
        base = api_base.rstrip("/")
        self.edit_url = f"{base}/images/edits"
        super().__init__(
            api_key=api_key,
            headers={"Authorization": f"Bearer {api_key}"},
            model_url=f"{base}/models/{model}",
            **options,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIProvider:
        return cls(
            api_base=settings.openai_api_base,
            api_key=cls.configured_key(settings.openai_api_key),
            model=settings.openai_model,
            **client_options(settings),
        )

    def __repr__(self) -> str:
        return f"OpenAIProvider(model={self.model!r}, url={self.edit_url!r})"

    async def edit(self, request: EditRequest) -> EditResult:
        limits = RequestLimits(max_bytes=MAX_IMAGE_BYTES, max_side=MAX_INPUT_SIDE, formats=INPUT_FORMATS)
        fitted = await self.fit(request.image, limits)
        size = _size_for(request.aspect_ratio)
        fields = {
            "model": self.model,
            "prompt": prompt_text(request.prompt, request.negative_prompt),
            "input_fidelity": "high",
            "size": size,
            "n": "1",
        }
        files = {"image": (f"image.{EXTENSIONS[fitted.mime_type]}", fitted.data, fitted.mime_type)}

        def send(client: httpx.AsyncClient) -> httpx.Request:
            return client.build_request("POST", self.edit_url, data=fields, files=files, headers=self._headers)

        result = await self._call(send)
        result.details["size"] = size
        note_input(result, fitted)
        return result

    def _error(self, response: httpx.Response) -> Failure:
        status = response.status_code
        code, kind, message = "", "", ""
        payload = error_payload(response)
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or "")
            kind = str(error.get("type") or "")
            message = str(error.get("message") or "")
        else:
            message = brief(response.text, 120)
        described = f"{status} {code or kind}".strip()
        retry_after = parse_retry_after(response.headers)
        if code in REFUSAL_CODES:
            return Failure(ProviderRefused(f"the model refused: {brief(message)} ({code})", status=status))
        if status == 401 or code == "invalid_api_key":
            # OpenAI's message repeats part of the key; ours does not.
            summary = f"the OpenAI API refused the key (OPENAI_API_KEY) ({described})"
        elif code in NO_QUOTA_CODES:
            return Failure(
                ProviderError(f"the OpenAI account has no quota left ({described}: {brief(message)})", status=status)
            )
        elif status == 404:
            summary = f"the OpenAI API does not know {self.model} (OPENAI_MODEL) ({described}: {brief(message)})"
        elif status == 429:
            summary = f"the OpenAI API is rate limiting us ({described}: {brief(message)})"
        else:
            text = f": {brief(message)}" if message else ""
            summary = f"the OpenAI API answered {described}{text}"
        return self._failure(summary, status, retry_after)

    def _read_answer(self, response: httpx.Response, attempts: int) -> EditResult:
        payload: dict[str, Any] = response.json()
        details: dict[str, Any] = {"model": self.model}
        data = payload.get("data")
        first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None
        if first is None or not isinstance(first.get("b64_json"), str):
            raise ProviderError("the OpenAI model returned no image (no data[0].b64_json)", attempts=attempts)
        if isinstance(first.get("revised_prompt"), str):
            details["text"] = brief(first["revised_prompt"], 500)
        decoded = decode_image(first["b64_json"])
        if decoded is None:
            raise ProviderError("the OpenAI model returned image data that is not a readable image", attempts=attempts)
        image, actual = decoded
        usage = payload.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("total_tokens"), int):
            details["total_tokens"] = usage["total_tokens"]
        return EditResult(image=image, mime_type=MIME_TYPES.get(actual, "image/png"), details=details)


def _size_for(aspect_ratio: str | None) -> str:
    if not aspect_ratio:
        return "1024x1024"
    return aspect.nearest(aspect_ratio, SIZES) or "1024x1024"
