"""A fake OpenAI Images API: `POST /v1/images/edits` (multipart) and
`GET /v1/models/{model}`.

Checks the bearer key, the model, the form fields (`image`, `prompt`, `size`, `input_fidelity`)
and the image's type, and answers `{"data": [{"b64_json": ...}], ...}` or
`{"error": {"message", "type", "param", "code"}}` as the real API does.

    with OpenAIFake(api_key="sk-test").running() as fake:
        fake.push(OpenAIFake.moderation_blocked())
        settings: OPENAI_API_BASE=fake.api_base, OPENAI_API_KEY="sk-test", AI_PROVIDER=openai
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import time
from typing import Any

from tests.fakes.base import FakeModelServer, Recorded, Reply, json_reply, render_result

MODELS = frozenset({"gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"})
SIZES = {"1024x1024": (1024, 1024), "1536x1024": (1536, 1024), "1024x1536": (1024, 1536)}
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
MAX_IMAGE_BYTES = 50 * 1024 * 1024


def error_body(message: str, kind: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[bytes, str | None, str | None]]:
    """Form fields by name: (value bytes, filename, content type of the part)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields: dict[str, tuple[bytes, str | None, str | None]] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        value = payload if isinstance(payload, bytes) else b""
        fields[name] = (value, part.get_filename(), part.get_content_type() if part.get_filename() else None)
    return fields


class OpenAIFake(FakeModelServer):
    """The fake OpenAI Images API; `api_base` is what `OPENAI_API_BASE` should be set to."""

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1"

    # -- answers tests can push ---------------------------------------------------------------

    @staticmethod
    def error(status: int, message: str, kind: str, code: str | None, headers: dict[str, str] | None = None) -> Reply:
        return json_reply(status, error_body(message, kind, code), headers)

    @staticmethod
    def moderation_blocked() -> Reply:
        return OpenAIFake.error(
            400,
            "Your request was rejected by the safety system. If you believe this is an error, contact us "
            "at help.openai.com and include the request ID req_0123.",
            "image_generation_user_error",
            "moderation_blocked",
        )

    @staticmethod
    def rate_limited(retry_after: str | None = None, retry_after_ms: str | None = None) -> Reply:
        headers = {}
        if retry_after is not None:
            headers["retry-after"] = retry_after
        if retry_after_ms is not None:
            headers["retry-after-ms"] = retry_after_ms
        return OpenAIFake.error(
            429,
            "Rate limit reached for gpt-image-1 on images per minute (IPM): Limit 5, Used 5, Requested 1.",
            "requests",
            "rate_limit_exceeded",
            headers,
        )

    @staticmethod
    def no_quota() -> Reply:
        return OpenAIFake.error(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            "insufficient_quota",
        )

    # -- the protocol -------------------------------------------------------------------------

    def route(self, request: Recorded) -> Reply | None:
        path = request.path.split("?", 1)[0]
        authorization = request.headers.get("authorization", "")
        if not authorization.startswith("Bearer "):
            return self.error(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
                None,
            )
        given = authorization[len("Bearer ") :]
        if given != self.api_key:
            masked = f"{given[:3]}{'*' * 6}{given[-4:]}"
            return self.error(
                401,
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
        if request.method == "GET" and path.startswith("/v1/models/"):
            model = path.removeprefix("/v1/models/")
            if model not in MODELS:
                return self.error(
                    404, f"The model '{model}' does not exist", "invalid_request_error", "model_not_found"
                )
            return json_reply(200, {"id": model, "object": "model", "created": 1745000000, "owned_by": "system"})
        if request.method == "POST" and path == "/v1/images/edits":
            return self._check_edit(request)
        return self.error(404, f"Invalid URL ({request.method} {path})", "invalid_request_error", None)

    def _check_edit(self, request: Recorded) -> Reply | None:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return self.error(400, "Expected multipart/form-data.", "invalid_request_error", None)
        fields = parse_multipart(content_type, request.body)
        texts = {name: value.decode() for name, (value, filename, _) in fields.items() if filename is None}
        image = fields.get("image") or fields.get("image[]")
        if image is None or image[1] is None:
            return self.error(
                400, "Missing required parameter: 'image'.", "invalid_request_error", "missing_required_parameter"
            )
        if image[2] not in IMAGE_TYPES:
            return self.error(
                400,
                f"Invalid file 'image': unsupported mimetype ('{image[2]}'). Supported file formats are "
                "'image/jpeg', 'image/png', and 'image/webp'.",
                "invalid_request_error",
                "unsupported_file_mimetype",
            )
        if len(image[0]) > MAX_IMAGE_BYTES:
            return self.error(400, "Image file too large.", "invalid_request_error", "image_too_large")
        problem = self._check_common(texts)
        if problem is not None:
            return problem
        if texts.get("input_fidelity", "low") not in ("low", "high"):
            return self.error(400, "Invalid value for 'input_fidelity'.", "invalid_request_error", "invalid_value")
        request.parsed.update(fields=texts, image=image[0], image_type=image[2], image_name=image[1])
        return None

    def _check_common(self, texts: dict[str, str]) -> Reply | None:
        if not texts.get("prompt"):
            return self.error(
                400, "Missing required parameter: 'prompt'.", "invalid_request_error", "missing_required_parameter"
            )
        model = texts.get("model", "gpt-image-1")
        if model not in MODELS:
            return self.error(404, f"The model '{model}' does not exist", "invalid_request_error", "model_not_found")
        size = texts.get("size", "auto")
        if size != "auto" and size not in SIZES:
            return self.error(
                400,
                f"Invalid value: '{size}'. Supported values are: '1024x1024', '1024x1536', '1536x1024', and 'auto'.",
                "invalid_request_error",
                "invalid_value",
            )
        return None

    def answer(self, request: Recorded) -> Reply:
        fields: dict[str, str] = request.parsed["fields"]
        size = fields.get("size", "auto")
        width, height = SIZES.get(size, (1024, 1024))
        tint = int.from_bytes(hashlib.sha256(fields["prompt"].encode()).digest()[:4], "big")
        png = render_result(request.parsed["image"], width, height, tint)
        return json_reply(
            200,
            {
                "created": int(time.time()),
                "background": "opaque",
                "data": [{"b64_json": base64.b64encode(png).decode()}],
                "output_format": "png",
                "quality": "high",
                "size": f"{width}x{height}",
                "usage": {
                    "input_tokens": 3050,
                    "input_tokens_details": {"image_tokens": 3000, "text_tokens": 50},
                    "output_tokens": 6240,
                    "total_tokens": 9290,
                },
            },
        )
