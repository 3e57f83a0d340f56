"""What every vendor's image-model provider shares: key, call client, input fitting and health.

A vendor module supplies its URLs and headers, how to read an answer and how to turn an error
response into a `ProviderError`; this base holds the rest, so each provider behaves the same way
where the vendors do not differ.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
import time
from typing import Any, ClassVar, TypedDict

import httpx
from pydantic import SecretStr

from capability_service.core.config import Settings
from capability_service.imaging.decode import sniff_format
from capability_service.imaging.fit_request import FittedImage, RequestLimits, fit_for_request
from capability_service.imaging.types import ImageError
from capability_service.providers.base import EditResult, ProviderError
from capability_service.providers.http import (
    DEFAULT_MAX_RESPONSE_BYTES,
    RETRYABLE_STATUSES,
    BuildRequest,
    Failure,
    ModelClient,
    RetryPolicy,
    Sleep,
    TooLarge,
    brief,
    read_capped,
)

HEALTH_CACHE_SECONDS = 60.0
HEALTH_TIMEOUT_SECONDS = 5.0
# A model's metadata is a few hundred bytes; the probe reads no more than this of whatever answers.
HEALTH_MAX_BYTES = 64 * 1024


class ClientOptions(TypedDict, total=False):
    """Constructor keywords every provider takes besides its URL, key and model; defaults below."""

    timeout: float
    max_concurrency: int
    policy: RetryPolicy | None
    max_pixels: int
    sleep: Sleep
    rng: random.Random | None
    transport: httpx.AsyncBaseTransport | None
    max_response_bytes: int


def client_options(settings: Settings) -> ClientOptions:
    """The `ClientOptions` the settings give, the same for every vendor."""
    return ClientOptions(
        timeout=settings.ai_timeout_seconds,
        max_concurrency=settings.ai_max_concurrency,
        policy=RetryPolicy(max_retries=settings.ai_max_retries),
        max_pixels=settings.max_image_pixels,
        max_response_bytes=settings.ai_max_response_bytes,
    )


class RemoteModelProvider:
    """Base of the `ImageEditProvider`s that call a vendor's model over HTTP with an API key."""

    name: str
    model: str
    # The vendor as messages name it ("the Gemini model", "the Gemini API").
    vendor: ClassVar[str]
    # The setting that holds the key, named in messages about it.
    key_setting: ClassVar[str]

    def __init__(
        self,
        *,
        api_key: str,
        headers: dict[str, str],
        model_url: str,
        timeout: float = 120.0,
        max_concurrency: int = 4,
        policy: RetryPolicy | None = None,
        max_pixels: int = 50_000_000,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.require_key(api_key)
        self._headers = headers
        # Answers a GET when the key and model are good; the health probe.
        self._model_url = model_url
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
            provider=self.name,
            max_response_bytes=max_response_bytes,
        )
        self._health: tuple[float, dict[str, Any]] | None = None

    @classmethod
    def configured_key(cls, key: SecretStr | None) -> str:
        """The key from the settings; `ValueError` naming the setting when it is unset."""
        if key is None:
            raise ValueError(f"{cls.key_setting} is not set")
        return key.get_secret_value()

    @classmethod
    def require_key(cls, api_key: str) -> None:
        """Raise `ValueError` naming the setting when `api_key` is empty."""
        if not api_key:
            raise ValueError(f"the {cls.vendor} provider needs an API key ({cls.key_setting})")

    @property
    def max_concurrency(self) -> int:
        """Calls in flight to the model at most, across every job of the process."""
        return self._http.max_concurrency

    async def fit(self, image: bytes, limits: RequestLimits) -> FittedImage:
        """`image` re-encoded or scaled, if need be, to what the vendor accepts (off the event loop)."""
        try:
            return await asyncio.to_thread(fit_for_request, image, limits, self._max_pixels)
        except ImageError as exc:
            raise ProviderError(f"the image cannot be sent to the model: {exc}") from None

    async def _call(self, send: BuildRequest) -> EditResult:
        """The model's answer to the request `send` builds (retried as the policy allows), with the
        call's attempts, waits and time in its details."""
        response, stats = await self._http.call(send, self._inspect, f"the {self.vendor} model")
        result = self._read_answer(response, stats.attempts)
        result.details.update(stats.as_details())
        return result

    def _inspect(self, response: httpx.Response) -> Failure | None:
        """A success must be a JSON object; error statuses go to `_error`."""
        if response.status_code < 400:
            try:
                payload = response.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                # A cut-off body from a proxy or a dropped stream: worth another try.
                return Failure(
                    ProviderError(
                        f"the {self.vendor} model's answer is not valid JSON: {brief(response.text, 80)!r}",
                        retryable=True,
                        status=response.status_code,
                    )
                )
            if not isinstance(payload, dict):
                return Failure(ProviderError(f"the {self.vendor} model's answer is not a JSON object"))
            return None
        return self._error(response)

    def _read_answer(self, response: httpx.Response, attempts: int) -> EditResult:
        """The result in a successful answer; `ProviderError` (or `ProviderRefused`) when it holds none."""
        raise NotImplementedError

    def _error(self, response: httpx.Response) -> Failure:
        """The failure an error response stands for, in the vendor's own terms."""
        raise NotImplementedError

    def _failure(self, summary: str, status: int, retry_after: float | None) -> Failure:
        """An error answer described by `summary`: retried when its status may pass, never quoting our key."""
        return Failure(
            ProviderError(self._http.redact(summary), retryable=status in RETRYABLE_STATUSES, status=status),
            retry_after=retry_after,
        )

    def _probe_health(self, response: httpx.Response) -> tuple[bool, str]:
        """Healthy or not, and why, from the answer to the health probe."""
        if response.status_code == 200:
            return True, "reachable"
        return False, str(self._error(response).error)

    def _oversized_probe(self) -> str:
        return (
            f"the {self.vendor} API answered the model metadata probe with more than {HEALTH_MAX_BYTES} bytes; "
            "check that its base URL points at the model API"
        )

    async def health(self) -> dict[str, Any]:
        """Whether the model is reachable with our key; cached for a minute."""
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
            async with (
                httpx.AsyncClient(
                    timeout=HEALTH_TIMEOUT_SECONDS, transport=self._transport, follow_redirects=False
                ) as client,
                client.stream("GET", self._model_url, headers=self._headers) as streamed,
            ):
                response = await read_capped(streamed, HEALTH_MAX_BYTES, self._oversized_probe())
        except httpx.HTTPError as exc:
            report.update(healthy=False, detail=f"the {self.vendor} API is unreachable: {type(exc).__name__}")
        except TooLarge as exc:
            report.update(healthy=False, detail=str(exc))
        else:
            healthy, detail = self._probe_health(response)
            report.update(healthy=healthy, detail=detail)
        self._health = (now, report)
        return report

    async def close(self) -> None:
        """Release the connections; the provider is not used afterwards."""
        await self._http.aclose()


def error_payload(response: httpx.Response) -> Any:
    """The JSON body of an error answer; None when it is not JSON (an HTML page from a proxy, say)."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def decode_image(data: str) -> tuple[bytes, str] | None:
    """The bytes and format of a base64 image from a model's answer; None if it is not a readable image."""
    try:
        image = base64.b64decode(data, validate=True)
        return image, sniff_format(image)
    except (binascii.Error, ValueError, ImageError):
        return None


def note_input(result: EditResult, fitted: FittedImage) -> None:
    """Record in the result's details whether (and how) the input was changed before sending."""
    result.details["input_resized"] = fitted.changed
    if fitted.changed:
        result.details["input_sent"] = f"{fitted.width}x{fitted.height} {fitted.mime_type}"


def prompt_text(prompt: str, negative: str) -> str:
    """The prompt with the negative prompt said in words; neither API has a field for it."""
    negative = negative.strip()
    return f"{prompt.strip()}\n\nAvoid: {negative}" if negative else prompt.strip()
