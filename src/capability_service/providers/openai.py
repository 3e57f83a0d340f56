"""OpenAI's GPT Image models through the Images API, so no deployment depends on one vendor.

Edit: `POST {OPENAI_API_BASE}/images/edits`, multipart: `model`, `image`, `prompt`,
`input_fidelity=high` (keep the product's details), `size` nearest the target's shape, `n=1`.
Generate: `POST {OPENAI_API_BASE}/images/generations`, JSON. Both answer `data[0].b64_json`.
Errors are `{"error": {"message", "type", "code", "param"}}`; `moderation_blocked` (and the older
`content_policy_violation`) become `ProviderRefused`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from pydantic import SecretStr

from capability_service.core.config import Settings
from capability_service.imaging.decode import sniff_format
from capability_service.imaging.fit_request import MIME_TYPES, RequestLimits, fit_for_request
from capability_service.imaging.types import ImageError
from capability_service.providers import aspect
from capability_service.providers.base import (
    EditRequest,
    EditResult,
    GenerateRequest,
    ProviderError,
    ProviderRefused,
)
from capability_service.providers.http import (
    RETRYABLE_STATUSES,
    Failure,
    ModelClient,
    RetryPolicy,
    Sleep,
    brief,
    parse_retry_after,
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

HEALTH_CACHE_SECONDS = 60.0
HEALTH_TIMEOUT_SECONDS = 5.0


class OpenAIProvider:
    """An `ImageEditProvider` for OpenAI's image edit endpoint (`gpt-image-1` by default)."""

    name = "openai"

    def __init__(
        self,
        *,
        api_base: str,
        api_key: str,
        model: str = "gpt-image-1",
        timeout: float = 120.0,
        max_concurrency: int = 4,
        policy: RetryPolicy | None = None,
        max_pixels: int = 50_000_000,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("the OpenAI provider needs an API key (OPENAI_API_KEY)")
        self.model = model
        base = api_base.rstrip("/")
        self.edit_url = f"{base}/images/edits"
        self.generate_url = f"{base}/images/generations"
        self._model_url = f"{base}/models/{model}"
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._max_pixels = max_pixels
        self._transport = transport
        self._http = ModelClient(
            timeout=timeout,
            max_concurrency=max_concurrency,
            policy=policy or RetryPolicy(),
            secrets=(api_key,),
            sleep=sleep,
            rng=rng,
            transport=transport,
        )
        self._health: tuple[float, dict[str, Any]] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIProvider:
        key: SecretStr | None = settings.openai_api_key
        if key is None:
            raise ValueError("OPENAI_API_KEY is not set")
        return cls(
            api_base=settings.openai_api_base,
            api_key=key.get_secret_value(),
            model=settings.openai_model,
            timeout=settings.ai_timeout_seconds,
            max_concurrency=settings.ai_max_concurrency,
            policy=RetryPolicy(max_retries=settings.ai_max_retries),
            max_pixels=settings.max_image_pixels,
        )

    @property
    def max_concurrency(self) -> int:
        return self._http.max_concurrency

    def __repr__(self) -> str:
        return f"OpenAIProvider(model={self.model!r}, url={self.edit_url!r})"

    async def edit(self, request: EditRequest) -> EditResult:
        limits = RequestLimits(max_bytes=MAX_IMAGE_BYTES, max_side=MAX_INPUT_SIDE, formats=INPUT_FORMATS)
        try:
            fitted = await asyncio.to_thread(fit_for_request, request.image, limits, self._max_pixels)
        except ImageError as exc:
            raise ProviderError(f"the image cannot be sent to the model: {exc}") from None
        size = _size_for(request.aspect_ratio)
        fields = {
            "model": self.model,
            "prompt": _prompt_text(request.prompt, request.negative_prompt),
            "input_fidelity": "high",
            "size": size,
            "n": "1",
        }
        files = {"image": (f"image.{EXTENSIONS[fitted.mime_type]}", fitted.data, fitted.mime_type)}

        async def send(client: httpx.AsyncClient) -> httpx.Response:
            return await client.post(self.edit_url, data=fields, files=files, headers=self._headers)

        result = await self._call(send, size)
        result.details["input_resized"] = fitted.changed
        if fitted.changed:
            result.details["input_sent"] = f"{fitted.width}x{fitted.height} {fitted.mime_type}"
        return result

    async def generate(self, request: GenerateRequest) -> EditResult:
        size = _size_for(request.aspect_ratio)
        body = json.dumps(
            {
                "model": self.model,
                "prompt": _prompt_text(request.prompt, request.negative_prompt),
                "size": size,
                "n": 1,
            }
        )
        headers = {**self._headers, "Content-Type": "application/json"}

        async def send(client: httpx.AsyncClient) -> httpx.Response:
            return await client.post(self.generate_url, content=body, headers=headers)

        return await self._call(send, size)

    async def _call(self, send: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]], size: str) -> EditResult:
        response, stats = await self._http.call(send, self._inspect, "the OpenAI model")
        result = self._read_answer(response, stats.attempts)
        result.details.update(stats.as_details(), size=size)
        return result

    def _inspect(self, response: httpx.Response) -> Failure | None:
        if response.status_code < 400:
            try:
                payload = response.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                return Failure(
                    ProviderError(
                        f"the OpenAI model's answer is not valid JSON: {brief(response.text, 80)!r}",
                        retryable=True,
                        status=response.status_code,
                    )
                )
            if not isinstance(payload, dict):
                return Failure(ProviderError("the OpenAI model's answer is not a JSON object"))
            return None
        return self._error(response)

    def _error(self, response: httpx.Response) -> Failure:
        status = response.status_code
        code, kind, message = "", "", ""
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None
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
        return Failure(
            ProviderError(self._http.redact(summary), retryable=status in RETRYABLE_STATUSES, status=status),
            retry_after=retry_after,
        )

    def _read_answer(self, response: httpx.Response, attempts: int) -> EditResult:
        payload: dict[str, Any] = response.json()
        details: dict[str, Any] = {"model": self.model}
        data = payload.get("data")
        first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None
        if first is None or not isinstance(first.get("b64_json"), str):
            raise ProviderError("the OpenAI model returned no image (no data[0].b64_json)", attempts=attempts)
        if isinstance(first.get("revised_prompt"), str):
            details["text"] = brief(first["revised_prompt"], 500)
        try:
            image = base64.b64decode(first["b64_json"], validate=True)
            actual = sniff_format(image)
        except (binascii.Error, ValueError, ImageError):
            raise ProviderError(
                "the OpenAI model returned image data that is not a readable image", attempts=attempts
            ) from None
        usage = payload.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("total_tokens"), int):
            details["total_tokens"] = usage["total_tokens"]
        return EditResult(image=image, mime_type=MIME_TYPES.get(actual, "image/png"), details=details)

    async def health(self) -> dict[str, Any]:
        """Whether the API knows the model with our key; cached for a minute."""
        now = time.monotonic()
        if self._health is not None and now - self._health[0] < HEALTH_CACHE_SECONDS:
            return self._health[1]
        report: dict[str, Any] = {"provider": self.name, "model": self.model}
        last = self._http.last_success
        if last is not None and now - last < HEALTH_CACHE_SECONDS:
            # A real answer a moment ago says more than a metadata probe would.
            report.update(healthy=True, detail=f"answered {now - last:.0f} s ago")
            return report
        try:
            async with httpx.AsyncClient(
                timeout=HEALTH_TIMEOUT_SECONDS, transport=self._transport, follow_redirects=False
            ) as client:
                response = await client.get(self._model_url, headers=self._headers)
        except httpx.HTTPError as exc:
            report.update(healthy=False, detail=f"the OpenAI API is unreachable: {type(exc).__name__}")
        else:
            if response.status_code == 200:
                report.update(healthy=True, detail="reachable")
            else:
                report.update(healthy=False, detail=str(self._error(response).error))
        self._health = (now, report)
        return report

    async def close(self) -> None:
        await self._http.aclose()


def _size_for(aspect_ratio: str | None) -> str:
    if not aspect_ratio:
        return "1024x1024"
    return aspect.nearest(aspect_ratio, SIZES) or "1024x1024"


def _prompt_text(prompt: str, negative: str) -> str:
    negative = negative.strip()
    return f"{prompt.strip()}\n\nAvoid: {negative}" if negative else prompt.strip()
