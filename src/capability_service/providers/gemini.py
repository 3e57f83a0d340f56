"""Google's Gemini image models through the `generateContent` REST protocol.

Request: `POST {AI_API_BASE}/{AI_MODEL}:generateContent` with the key in `x-goog-api-key` (or
`Authorization: Bearer` for proxies), never in the URL. Body in the REST API's camelCase:
`contents[].parts[]` holding `inlineData{mimeType,data}` and `text`, and `generationConfig` with
`temperature`, `responseModalities: ["IMAGE"]`, `imageConfig.aspectRatio` and `seed`.

Answer: every part of every candidate is read; the last image that is not a "thought" wins.
A `promptFeedback.blockReason` or a refusal `finishReason` becomes `ProviderRefused`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
import time
from typing import Any

import httpx
from pydantic import SecretStr

from capability_service.core.config import Settings
from capability_service.imaging.decode import sniff_format
from capability_service.imaging.fit_request import MIME_TYPES, RequestLimits, base64_size, fit_for_request
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
    parse_duration,
    parse_retry_after,
)

# The ratios `imageConfig.aspectRatio` accepts.
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")

# Request limits of the API: an inline file may be 7 MB, a whole request 20 MB (base64 included).
MAX_INLINE_IMAGE_BYTES = 7_000_000
MAX_REQUEST_BYTES = 20_000_000
# The model works at about 1K; a larger input only costs upload time.
MAX_INPUT_SIDE = 3072
INPUT_FORMATS = frozenset({"jpeg", "png", "webp", "heic"})

# finishReason values that mean "no image, on purpose", with what to tell the seller.
REFUSALS: dict[str, str] = {
    "SAFETY": "the request was flagged by the safety filters",
    "IMAGE_SAFETY": "the generated image was flagged by the safety filters",
    "PROHIBITED_CONTENT": "the request was judged prohibited content",
    "IMAGE_PROHIBITED_CONTENT": "the generated image was judged prohibited content",
    "BLOCKLIST": "the prompt contains blocked terms",
    "SPII": "the request may contain sensitive personal information",
    "RECITATION": "the result resembled protected material too closely",
    "IMAGE_RECITATION": "the generated image resembled protected material too closely",
    "NO_IMAGE": "the model produced no image for this request",
    "IMAGE_OTHER": "the model stopped generating the image",
    "LANGUAGE": "the prompt's language is not supported",
}
BLOCK_REASONS: dict[str, str] = {
    "SAFETY": "the prompt was blocked by the safety filters",
    "PROHIBITED_CONTENT": "the prompt was judged prohibited content",
    "BLOCKLIST": "the prompt contains blocked terms",
    "IMAGE_SAFETY": "the input image was blocked by the safety filters",
    "OTHER": "the prompt was blocked",
}

HEALTH_CACHE_SECONDS = 60.0
HEALTH_TIMEOUT_SECONDS = 5.0


def _get(mapping: dict[str, Any], camel: str, snake: str) -> Any:
    # The REST API answers in camelCase; some proxies pass the proto's snake_case through.
    return mapping.get(camel, mapping.get(snake))


def model_path(model: str) -> str:
    """`models/<name>` for a bare model name; other resource names are kept as they are."""
    model = model.strip().strip("/")
    return model if "/" in model else f"models/{model}"


class GeminiProvider:
    """An `ImageEditProvider` for Gemini image models (e.g. `models/gemini-2.5-flash-image`)."""

    name = "gemini"

    def __init__(
        self,
        *,
        api_base: str,
        api_key: str,
        model: str = "models/gemini-2.5-flash-image",
        auth_scheme: str = "x-goog-api-key",
        timeout: float = 120.0,
        max_concurrency: int = 4,
        policy: RetryPolicy | None = None,
        max_pixels: int = 50_000_000,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("the Gemini provider needs an API key (AI_API_KEY)")
        if auth_scheme not in ("x-goog-api-key", "bearer"):
            raise ValueError(f"unknown auth scheme {auth_scheme!r} (x-goog-api-key or bearer)")
        self.model = model_path(model)
        self.url = f"{api_base.rstrip('/')}/{self.model}:generateContent"
        self._model_url = f"{api_base.rstrip('/')}/{self.model}"
        self._headers = (
            {"x-goog-api-key": api_key} if auth_scheme == "x-goog-api-key" else {"Authorization": f"Bearer {api_key}"}
        )
        self._bearer = auth_scheme == "bearer"
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
    def from_settings(cls, settings: Settings) -> GeminiProvider:
        key: SecretStr | None = settings.ai_api_key
        if key is None:
            raise ValueError("AI_API_KEY is not set")
        return cls(
            api_base=settings.ai_api_base,
            api_key=key.get_secret_value(),
            model=settings.ai_model,
            auth_scheme=settings.ai_auth_scheme,
            timeout=settings.ai_timeout_seconds,
            max_concurrency=settings.ai_max_concurrency,
            policy=RetryPolicy(max_retries=settings.ai_max_retries),
            max_pixels=settings.max_image_pixels,
        )

    @property
    def max_concurrency(self) -> int:
        return self._http.max_concurrency

    def __repr__(self) -> str:
        return f"GeminiProvider(model={self.model!r}, url={self.url!r})"

    async def edit(self, request: EditRequest) -> EditResult:
        prompt = _prompt_text(request.prompt, request.negative_prompt)
        overhead = len(prompt.encode()) * 2 + 4096
        limits = RequestLimits(
            max_bytes=min(MAX_INLINE_IMAGE_BYTES, (MAX_REQUEST_BYTES - overhead) * 3 // 4),
            max_side=MAX_INPUT_SIDE,
            formats=INPUT_FORMATS,
        )
        try:
            fitted = await asyncio.to_thread(fit_for_request, request.image, limits, self._max_pixels)
        except ImageError as exc:
            raise ProviderError(f"the image cannot be sent to the model: {exc}") from None
        assert base64_size(len(fitted.data)) + overhead <= MAX_REQUEST_BYTES
        parts: list[dict[str, Any]] = [
            {"inlineData": {"mimeType": fitted.mime_type, "data": base64.b64encode(fitted.data).decode("ascii")}},
            {"text": prompt},
        ]
        result = await self._generate(parts, request.temperature, request.aspect_ratio, request.seed)
        result.details["input_resized"] = fitted.changed
        if fitted.changed:
            result.details["input_sent"] = f"{fitted.width}x{fitted.height} {fitted.mime_type}"
        return result

    async def generate(self, request: GenerateRequest) -> EditResult:
        parts = [{"text": _prompt_text(request.prompt, request.negative_prompt)}]
        return await self._generate(parts, request.temperature, request.aspect_ratio, request.seed)

    async def _generate(
        self, parts: list[dict[str, Any]], temperature: float, aspect_ratio: str | None, seed: int | None
    ) -> EditResult:
        config: dict[str, Any] = {"temperature": temperature, "responseModalities": ["IMAGE"]}
        ratio = aspect.nearest(aspect_ratio, ASPECT_RATIOS) if aspect_ratio else None
        if ratio is not None:
            config["imageConfig"] = {"aspectRatio": ratio}
        if seed is not None:
            config["seed"] = seed
        body = json.dumps({"contents": [{"role": "user", "parts": parts}], "generationConfig": config})
        headers = {**self._headers, "Content-Type": "application/json"}

        async def send(client: httpx.AsyncClient) -> httpx.Response:
            return await client.post(self.url, content=body, headers=headers)

        response, stats = await self._http.call(send, self._inspect, "the Gemini model")
        result = self._read_answer(response, stats.attempts)
        result.details.update(stats.as_details())
        if ratio is not None:
            result.details["aspect_ratio"] = ratio
        return result

    def _inspect(self, response: httpx.Response) -> Failure | None:
        if response.status_code < 400:
            try:
                payload = response.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                # A cut-off body from a proxy or a dropped stream: worth another try.
                return Failure(
                    ProviderError(
                        f"the Gemini model's answer is not valid JSON: {brief(response.text, 80)!r}",
                        retryable=True,
                        status=response.status_code,
                    )
                )
            if not isinstance(payload, dict):
                return Failure(ProviderError("the Gemini model's answer is not a JSON object"))
            return None
        return self._error(response)

    def _error(self, response: httpx.Response) -> Failure:
        status = response.status_code
        code_name, message, delay = "", "", None
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None
        # Google answers `{"error": {...}}`; some front ends wrap it in a list.
        if isinstance(payload, list) and payload and isinstance(payload[0], dict):
            payload = payload[0]
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            code_name = str(error.get("status") or "")
            message = str(error.get("message") or "")
            for detail in error.get("details") or []:
                if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
                    delay = parse_duration(_get(detail, "retryDelay", "retry_delay"))
        else:
            message = brief(response.text, 120)
        header_delay = parse_retry_after(response.headers)
        if header_delay is not None:
            delay = header_delay if delay is None else max(delay, header_delay)
        described = f"{status} {code_name}".strip()
        text = f": {brief(message)}" if message else ""
        if status in (401, 403) or "API key" in message:
            summary = f"the Gemini API refused the key (AI_API_KEY) ({described}{text})"
        elif status == 404:
            summary = f"the Gemini API does not know {self.model} (AI_MODEL) ({described}{text})"
        elif status == 429:
            summary = f"the Gemini API is rate limiting us ({described}{text})"
        else:
            summary = f"the Gemini API answered {described}{text}"
        return Failure(
            ProviderError(self._http.redact(summary), retryable=status in RETRYABLE_STATUSES, status=status),
            retry_after=delay,
        )

    def _read_answer(self, response: httpx.Response, attempts: int) -> EditResult:
        payload: dict[str, Any] = response.json()
        details: dict[str, Any] = {"model": payload.get("modelVersion") or self.model.removeprefix("models/")}
        feedback = _get(payload, "promptFeedback", "prompt_feedback")
        if isinstance(feedback, dict):
            reason = _get(feedback, "blockReason", "block_reason")
            if reason and reason != "BLOCK_REASON_UNSPECIFIED":
                explained = BLOCK_REASONS.get(str(reason), "the prompt was blocked")
                raise ProviderRefused(f"the model refused: {explained} ({reason})", attempts=attempts)
        candidates = payload.get("candidates") or []
        images: list[tuple[str, str]] = []
        texts: list[str] = []
        reasons: list[str] = []
        for candidate in candidates if isinstance(candidates, list) else []:
            if not isinstance(candidate, dict):
                continue
            reason = _get(candidate, "finishReason", "finish_reason")
            if reason:
                reasons.append(str(reason))
            content = candidate.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts if isinstance(parts, list) else []:
                if not isinstance(part, dict) or part.get("thought"):
                    # Thought parts are the model's drafts, not its answer.
                    continue
                blob = _get(part, "inlineData", "inline_data")
                if isinstance(blob, dict) and isinstance(blob.get("data"), str):
                    images.append((str(_get(blob, "mimeType", "mime_type") or ""), blob["data"]))
                elif isinstance(part.get("text"), str) and part["text"].strip():
                    texts.append(part["text"].strip())
        if reasons:
            details["finish_reason"] = reasons[0]
        if texts:
            details["text"] = brief(" ".join(texts), 500)
        if images:
            mime, data = images[-1]
            try:
                image = base64.b64decode(data, validate=True)
                actual = sniff_format(image)
            except (binascii.Error, ValueError, ImageError):
                raise ProviderError(
                    f"the Gemini model returned image data that is not a readable image (declared {mime or '?'})",
                    attempts=attempts,
                ) from None
            return EditResult(image=image, mime_type=MIME_TYPES.get(actual, mime), details=details)
        said = f'; it said: "{brief(" ".join(texts), 160)}"' if texts else ""
        for reason in reasons:
            if reason in REFUSALS:
                raise ProviderRefused(f"the model refused: {REFUSALS[reason]} ({reason}){said}", attempts=attempts)
        if texts:
            raise ProviderRefused(
                f'the model answered with text instead of an image: "{brief(" ".join(texts), 160)}"',
                attempts=attempts,
            )
        if not candidates:
            raise ProviderError("the Gemini model returned no candidates and no reason", attempts=attempts)
        reason_text = ", ".join(reasons) or "none given"
        raise ProviderError(f"the Gemini model returned no image (finish reason: {reason_text})", attempts=attempts)

    async def health(self) -> dict[str, Any]:
        """Whether the model answers a metadata request with our key; cached for a minute."""
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
            report.update(healthy=False, detail=f"the Gemini API is unreachable: {type(exc).__name__}")
        else:
            if response.status_code == 200:
                report.update(healthy=True, detail="reachable")
            elif response.status_code in (404, 405) and self._bearer:
                # Many proxies serve generateContent only; a missing metadata route says nothing bad.
                report.update(healthy=True, detail="not checked: the proxy serves no model metadata")
            else:
                report.update(healthy=False, detail=str(self._error(response).error))
        self._health = (now, report)
        return report

    async def close(self) -> None:
        await self._http.aclose()


def _prompt_text(prompt: str, negative: str) -> str:
    # The API has no negative prompt; saying it in words is what Google's guides suggest.
    negative = negative.strip()
    return f"{prompt.strip()}\n\nAvoid: {negative}" if negative else prompt.strip()
