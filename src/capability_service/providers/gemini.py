"""Google's Gemini image models through the `generateContent` REST protocol.

Request: `POST {AI_API_BASE}/{AI_MODEL}:generateContent` with the key in `x-goog-api-key` (or
`Authorization: Bearer` for proxies), never in the URL. Body in the REST API's camelCase:
`contents[].parts[]` holding `inlineData{mimeType,data}` and `text`, and `generationConfig` with
`temperature`, `responseModalities: ["IMAGE"]`, `imageConfig.aspectRatio` and `seed`.

Answer: every part of every candidate is read; the last image that is not a "thought" wins.
A `promptFeedback.blockReason` or a refusal `finishReason` becomes `ProviderRefused`.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Unpack

import httpx

from capability_service.core.config import Settings
from capability_service.imaging.fit_request import MIME_TYPES, RequestLimits, base64_size
from capability_service.providers import aspect
from capability_service.providers.base import (
    EditRequest,
    EditResult,
    ProviderError,
    ProviderRefused,
)
from capability_service.providers.http import Failure, brief, parse_duration, parse_retry_after
from capability_service.providers.remote import (
    ClientOptions,
    RemoteModelProvider,
    client_options,
    decode_image,
    error_payload,
    note_input,
    prompt_text,
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


def _get(mapping: dict[str, Any], camel: str, snake: str) -> Any:
    # The REST API answers in camelCase; some proxies pass the proto's snake_case through.
    return mapping.get(camel, mapping.get(snake))


def model_path(model: str) -> str:
    """`models/<name>` for a bare model name; other resource names are kept as they are."""
    model = model.strip().strip("/")
    return model if "/" in model else f"models/{model}"


class GeminiProvider(RemoteModelProvider):
    """An `ImageEditProvider` for Gemini image models (e.g. `models/gemini-2.5-flash-image`)."""

    name = "gemini"
    vendor = "Gemini"
    key_setting = "AI_API_KEY"

    def __init__(
        self,
        *,
        api_base: str,
        api_key: str,
        model: str = "models/gemini-2.5-flash-image",
        auth_scheme: str = "x-goog-api-key",
        **options: Unpack[ClientOptions],
    ) -> None:
        self.require_key(api_key)
        if auth_scheme not in ("x-goog-api-key", "bearer"):
            raise ValueError(f"unknown auth scheme {auth_scheme!r} (x-goog-api-key or bearer)")
        self.model = model_path(model)
        base = api_base.rstrip("/")
        self.url = f"{base}/{self.model}:generateContent"
        self._bearer = auth_scheme == "bearer"
        super().__init__(
            api_key=api_key,
            headers={"Authorization": f"Bearer {api_key}"} if self._bearer else {"x-goog-api-key": api_key},
            model_url=f"{base}/{self.model}",
            **options,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> GeminiProvider:
        return cls(
            api_base=settings.ai_api_base,
            api_key=cls.configured_key(settings.ai_api_key),
            model=settings.ai_model,
            auth_scheme=settings.ai_auth_scheme,
            **client_options(settings),
        )

    def __repr__(self) -> str:
        return f"GeminiProvider(model={self.model!r}, url={self.url!r})"

    async def edit(self, request: EditRequest) -> EditResult:
        prompt = prompt_text(request.prompt, request.negative_prompt)
        overhead = len(prompt.encode()) * 2 + 4096
        limits = RequestLimits(
            max_bytes=min(MAX_INLINE_IMAGE_BYTES, (MAX_REQUEST_BYTES - overhead) * 3 // 4),
            max_side=MAX_INPUT_SIDE,
            formats=INPUT_FORMATS,
        )
        fitted = await self.fit(request.image, limits)
        assert base64_size(len(fitted.data)) + overhead <= MAX_REQUEST_BYTES
        parts: list[dict[str, Any]] = [
            {"inlineData": {"mimeType": fitted.mime_type, "data": base64.b64encode(fitted.data).decode("ascii")}},
            {"text": prompt},
        ]
        result = await self._generate(parts, request.temperature, request.aspect_ratio, request.seed)
        note_input(result, fitted)
        return result

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

        def send(client: httpx.AsyncClient) -> httpx.Request:
            return client.build_request("POST", self.url, content=body, headers=headers)

        result = await self._call(send)
        if ratio is not None:
            result.details["aspect_ratio"] = ratio
        return result

    def _error(self, response: httpx.Response) -> Failure:
        status = response.status_code
        code_name, message, delay = "", "", None
        payload = error_payload(response)
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
        return self._failure(summary, status, delay)

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
            decoded = decode_image(data)
            if decoded is None:
                raise ProviderError(
                    f"the Gemini model returned image data that is not a readable image (declared {mime or '?'})",
                    attempts=attempts,
                )
            image, actual = decoded
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

    def _probe_health(self, response: httpx.Response) -> tuple[bool, str]:
        if response.status_code in (404, 405) and self._bearer:
            # Many proxies serve generateContent only; a missing metadata route says nothing bad.
            return True, "not checked: the proxy serves no model metadata"
        return super()._probe_health(response)
