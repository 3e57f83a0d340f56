"""A fake Gemini API: `POST /v1beta/models/{model}:generateContent` and `GET /v1beta/models/{model}`.

It checks what the real API checks (key, model, JSON field names, aspect ratio, inline size
limits) and answers in the real shapes: candidates with `inlineData` parts, `finishReason`,
`promptFeedback.blockReason`, and `{"error": {code, message, status, details}}` errors with
`google.rpc.RetryInfo`.

    with GeminiFake(api_key="k").running() as fake:
        fake.push(fake.error(429, "RESOURCE_EXHAUSTED", retry_delay="0.2s"))
        settings: AI_API_BASE=fake.api_base, AI_API_KEY="k"
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

import pyvips

from tests.fakes.base import FakeModelServer, Recorded, Reply, Streamed, json_reply, render_result

MODELS = frozenset({"gemini-2.5-flash-image", "gemini-3-pro-image-preview", "gemini-3.1-flash-image-preview"})
# The output sizes gemini-2.5-flash-image produces per aspect ratio.
SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}
MAX_REQUEST_BYTES = 20 * 1024 * 1024
MAX_INLINE_BYTES = 7 * 1024 * 1024

_PATH = re.compile(r"^/v1beta/models/(?P<model>[^/:?]+)(?P<method>:generateContent)?(?:\?.*)?$")
_PART_FIELDS = {"text", "inlineData", "fileData", "thought", "thoughtSignature"}
_CONFIG_FIELDS = {
    "temperature",
    "topP",
    "topK",
    "seed",
    "candidateCount",
    "maxOutputTokens",
    "responseModalities",
    "imageConfig",
    "stopSequences",
}
_MIME = {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"}


def error_body(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


class GeminiFake(FakeModelServer):
    """The fake Gemini API; `api_base` is what `AI_API_BASE` should be set to."""

    def __init__(self, *, api_key: str, latency: float = 0.0, text_part: str | None = None) -> None:
        super().__init__(api_key=api_key, latency=latency)
        # A text part the model adds beside its image when TEXT is among the modalities.
        self.text_part = text_part

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1beta"

    # -- answers tests can push ---------------------------------------------------------------

    @staticmethod
    def error(
        code: int,
        status: str,
        message: str = "",
        *,
        retry_delay: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        details = None
        if retry_delay is not None:
            details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}]
        return json_reply(code, error_body(code, status, message or status.replace("_", " ").lower(), details), headers)

    @staticmethod
    def finished(reason: str, text: str | None = None) -> Reply:
        """A candidate that stopped with `reason` and no image (e.g. IMAGE_SAFETY, NO_IMAGE)."""
        candidate: dict[str, Any] = {"finishReason": reason, "index": 0}
        if text is not None:
            candidate["content"] = {"role": "model", "parts": [{"text": text}]}
        return json_reply(200, {"candidates": [candidate], "modelVersion": "gemini-2.5-flash-image"})

    @staticmethod
    def prompt_blocked(reason: str = "PROHIBITED_CONTENT") -> Reply:
        return json_reply(
            200,
            {
                "promptFeedback": {"blockReason": reason},
                "usageMetadata": {"promptTokenCount": 271, "totalTokenCount": 271},
                "modelVersion": "gemini-2.5-flash-image",
            },
        )

    @staticmethod
    def text_only(text: str) -> Reply:
        return GeminiFake.finished("STOP", text)

    @staticmethod
    def raw(status: int, body: bytes, content_type: str = "application/json") -> Reply:
        return Reply(status=status, body=body, content_type=content_type)

    @staticmethod
    def oversized(total_bytes: int, *, declare_length: bool = True) -> Streamed:
        """A valid answer of `total_bytes`: a real image part, then a text part that fills the rest.

        Written in 1 MiB pieces as the client reads, so the fake never holds the answer whole.
        """
        image = base64.b64encode(render_result(None, 64, 64, 7)).decode()
        head = json.dumps(
            {"candidates": [{"content": {"role": "model", "parts": [{"inlineData": {"mimeType": "image/png"}}]}}]}
        )
        # `..."parts": [{"inlineData": {"mimeType": "image/png", "data": "<image>"}}, {"text": "xxxx...`
        prefix = (head[: -len("}}]}}]}")] + f', "data": "{image}"}}}}, {{"text": "').encode()
        suffix = b'"}]}, "finishReason": "STOP", "index": 0}], "modelVersion": "gemini-2.5-flash-image"}'
        filler = total_bytes - len(prefix) - len(suffix)
        assert filler > 0, "the answer must be larger than its image part"
        piece = b"x" * (1 << 20)

        def chunks() -> Iterator[bytes]:
            yield prefix
            left = filler
            while left > 0:
                yield piece[: min(left, len(piece))]
                left -= len(piece)
            yield suffix

        return Streamed(chunks, length=total_bytes if declare_length else None)

    def with_thought_image(self, request: Recorded) -> Reply:
        """A normal answer preceded by a draft image marked `thought` (Gemini 3 does this)."""
        reply = self.answer(request)
        payload = json.loads(reply.body)
        draft = render_result(None, 64, 64, 1)
        parts = payload["candidates"][0]["content"]["parts"]
        parts.insert(
            0, {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(draft).decode()}, "thought": True}
        )
        return json_reply(200, payload)

    # -- the protocol -------------------------------------------------------------------------

    def route(self, request: Recorded) -> Reply | None:
        match = _PATH.match(request.path)
        if match is None:
            return self.error(404, "NOT_FOUND", f"Requested entity was not found: {request.path}")
        denied = self._check_key(request)
        if denied is not None:
            return denied
        model = match["model"]
        if model not in MODELS:
            return self.error(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta")
        if request.method == "GET" and not match["method"]:
            return json_reply(200, {"name": f"models/{model}", "displayName": model, "version": "2.5"})
        if request.method != "POST" or not match["method"]:
            return self.error(404, "NOT_FOUND", "method not found")
        if len(request.body) > MAX_REQUEST_BYTES:
            return self.error(
                400, "INVALID_ARGUMENT", f"Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes."
            )
        try:
            payload = json.loads(request.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self.error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        problem = self._check_body(payload, request)
        if problem is not None:
            return self.error(400, "INVALID_ARGUMENT", problem)
        return None

    def _check_key(self, request: Recorded) -> Reply | None:
        given = request.headers.get("x-goog-api-key")
        authorization = request.headers.get("authorization", "")
        if given is None and authorization.startswith("Bearer "):
            given = authorization[len("Bearer ") :]
        if given is None and "key=" in request.path:
            given = request.path.split("key=", 1)[1].split("&", 1)[0]
        if given is None:
            return self.error(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        if given != self.api_key:
            return json_reply(
                400,
                error_body(
                    400,
                    "INVALID_ARGUMENT",
                    "API key not valid. Please pass a valid API key.",
                    [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
                ),
            )
        return None

    def _check_body(self, payload: Any, request: Recorded) -> str | None:
        if not isinstance(payload, dict) or not isinstance(payload.get("contents"), list) or not payload["contents"]:
            return "* GenerateContentRequest.contents: contents is not specified"
        unknown = set(payload) - {"contents", "generationConfig", "safetySettings", "systemInstruction"}
        if unknown:
            return f"Invalid JSON payload received. Unknown name {sorted(unknown)[0]!r}: Cannot find field."
        images: list[bytes] = []
        texts: list[str] = []
        for content in payload["contents"]:
            parts = content.get("parts") if isinstance(content, dict) else None
            if not isinstance(parts, list) or not parts:
                return "* GenerateContentRequest.contents[0].parts: contents.parts must not be empty."
            for part in parts:
                if not isinstance(part, dict) or set(part) - _PART_FIELDS:
                    return f"Invalid JSON payload received. Unknown name in part {sorted(part)!r}: Cannot find field."
                if "inlineData" in part:
                    blob = part["inlineData"]
                    if not isinstance(blob, dict) or set(blob) != {"mimeType", "data"}:
                        return "Invalid JSON payload received. inlineData needs exactly mimeType and data."
                    if blob["mimeType"] not in _MIME:
                        return f"Unsupported MIME type: {blob['mimeType']}"
                    try:
                        data = base64.b64decode(blob["data"], validate=True)
                    except (binascii.Error, ValueError):
                        return "Invalid value at 'inline_data.data' (TYPE_BYTES), Base64 decoding failed"
                    if len(data) > MAX_INLINE_BYTES:
                        return f"Inline data exceeds the maximum size of {MAX_INLINE_BYTES} bytes."
                    images.append(data)
                elif isinstance(part.get("text"), str):
                    texts.append(part["text"])
        config = payload.get("generationConfig", {})
        if not isinstance(config, dict) or set(config) - _CONFIG_FIELDS:
            return f"Invalid JSON payload received. Unknown name in generationConfig {sorted(config)!r}."
        temperature = config.get("temperature", 1.0)
        if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
            return "temperature must be between 0 and 2"
        modalities = config.get("responseModalities", ["TEXT", "IMAGE"])
        if not isinstance(modalities, list) or any(str(m).upper() not in {"TEXT", "IMAGE"} for m in modalities):
            return "responseModalities: only TEXT and IMAGE are supported"
        image_config = config.get("imageConfig", {})
        ratio = image_config.get("aspectRatio") if isinstance(image_config, dict) else None
        if ratio is not None and ratio not in SIZES:
            return f"Unsupported aspect ratio: {ratio}"
        if "seed" in config and not isinstance(config["seed"], int):
            return "seed must be an integer"
        request.parsed.update(
            images=images,
            texts=texts,
            aspect_ratio=ratio,
            modalities=[str(m).upper() for m in modalities],
            temperature=temperature,
            seed=config.get("seed"),
        )
        return None

    def answer(self, request: Recorded) -> Reply:
        images: list[bytes] = request.parsed["images"]
        ratio = request.parsed["aspect_ratio"]
        source = images[-1] if images else None
        if ratio is None and source is not None:
            # Without a ratio the model keeps the input's shape (nearest supported).
            shape = pyvips.Image.new_from_buffer(source, "")
            wanted = shape.width / shape.height
            ratio = min(SIZES, key=lambda r: abs(SIZES[r][0] / SIZES[r][1] - wanted))
        width, height = SIZES[ratio or "1:1"]
        tint = int.from_bytes(hashlib.sha256(" ".join(request.parsed["texts"]).encode()).digest()[:4], "big")
        png = render_result(source, width, height, tint)
        parts: list[dict[str, Any]] = []
        if self.text_part and "TEXT" in request.parsed["modalities"]:
            parts.append({"text": self.text_part})
        parts.append({"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png).decode()}})
        return json_reply(
            200,
            {
                "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 1290, "candidatesTokenCount": 1290, "totalTokenCount": 2580},
                "modelVersion": "gemini-2.5-flash-image",
                "responseId": hashlib.sha1(png[:64]).hexdigest()[:20],
            },
        )
