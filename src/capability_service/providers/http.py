"""Calling a remote model over HTTP: per-call timeout, a concurrency limit, retries with backoff and a
cap on the answer's size (read while it streams in, so an oversized answer never sits in memory whole).

Shared by the providers; each supplies how to turn an error response into a `ProviderError` and
how long the server asks us to wait.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from capability_service.core import metrics
from capability_service.core.metrics import RemoteResult
from capability_service.providers.base import ProviderError

log = logging.getLogger(__name__)

# Rate limits and the server errors the vendors document as transient (502 from proxies in front).
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

Sleep = Callable[[float], Awaitable[None]]
# Builds one attempt's request on the client (called again for every retry).
BuildRequest = Callable[[httpx.AsyncClient], httpx.Request]

# A model's image answer is a few megabytes of base64; this is far above any real one.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# Headers that describe the body as it came over the wire, not the decoded bytes kept.
_WIRE_HEADERS = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)s\s*$")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter; a server's own delay is honoured up to `max_wait`."""

    max_retries: int = 3
    base_delay: float = 1.0
    max_delay: float = 20.0
    # A server asking for a longer pause than this (a quota reset, say) gets no retry: the image
    # fails at once with the reason instead of holding a worker for minutes.
    max_wait: float = 60.0

    def delay(self, retry: int, hint: float | None, rng: random.Random) -> float | None:
        """Seconds to wait before retry number `retry` (0-based); None when the hint exceeds `max_wait`."""
        if hint is not None:
            if hint > self.max_wait:
                return None
            # A little jitter on top, so callers told the same delay do not return in lockstep.
            return hint + rng.uniform(0.0, min(1.0, 0.1 * hint + 0.05))
        ceiling = min(self.max_delay, self.base_delay * 2**retry)
        return rng.uniform(ceiling / 2, ceiling)


@dataclass(slots=True)
class CallStats:
    """How a call went, for the image's metadata and for tests."""

    attempts: int = 0
    waits: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    def as_details(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "retry_waits_s": [round(wait, 3) for wait in self.waits],
            "model_ms": round(self.elapsed * 1000, 1),
        }


@dataclass(frozen=True, slots=True)
class Failure:
    """An unsuccessful attempt: the error to raise if no retry follows, and the server's wait hint."""

    error: ProviderError
    retry_after: float | None = None
    # Set when no usable HTTP answer came at all ("timeout", "unreachable"); else read from the status.
    result: RemoteResult | None = None


def parse_duration(value: object) -> float | None:
    """Seconds of a protobuf JSON Duration such as "3s" or "0.250s"; None if it is not one."""
    if not isinstance(value, str):
        return None
    match = _DURATION.match(value)
    return float(match.group(1)) if match else None


def parse_retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date); None if absent or bad."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000
        except ValueError:
            value = -1.0
        if value >= 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = datetime.now(UTC).timestamp() if now is None else now
        return max(0.0, when.timestamp() - current)
    return seconds if seconds >= 0 else None


def brief(text: str, limit: int = 200) -> str:
    """One line of at most `limit` characters, for quoting a server's words in an error message."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def attempt_result(outcome: httpx.Response | Failure) -> RemoteResult:
    """How one attempt went, as the `result` label of `capsvc_remote_model_attempts_total`."""
    if isinstance(outcome, httpx.Response):
        return "ok"
    if outcome.result is not None:
        return outcome.result
    status = outcome.error.status
    if status == 429:
        return "rate_limited"
    if status is not None and status >= 500:
        return "server_error"
    return "rejected"


class TooLarge(Exception):
    """The answer passed the size cap; carries its HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


async def read_capped(streamed: httpx.Response, limit: int, message: str) -> httpx.Response:
    """`streamed` with its body read, or `TooLarge(message)` as soon as the body passes `limit` bytes."""
    too_large = TooLarge(message, streamed.status_code)
    declared = streamed.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit and "content-encoding" not in streamed.headers:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    # Decoded bytes are counted: a compressed answer that inflates past the cap stops there too.
    async for chunk in streamed.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return httpx.Response(
        streamed.status_code,
        headers=[(name, value) for name, value in streamed.headers.raw if name.lower() not in _WIRE_HEADERS],
        content=b"".join(chunks),
        request=streamed.request,
    )


class ModelClient:
    """An `httpx.AsyncClient` with a concurrency limit, a per-attempt deadline and retries.

    The semaphore bounds requests in flight to this provider across every job of the process;
    waiting for a slot does not count against the per-call timeout, and backoff pauses hold no slot.
    """

    def __init__(
        self,
        *,
        timeout: float,
        max_concurrency: int,
        policy: RetryPolicy,
        secrets: tuple[str, ...] = (),
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        provider: str = "remote",
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.timeout = timeout
        # Largest answer read (after Content-Encoding is undone); a larger one fails the attempt unread.
        self.max_response_bytes = max_response_bytes
        # The `provider` label of this client's metrics.
        self.provider = provider
        self.max_concurrency = max_concurrency
        self.policy = policy
        self._secrets = tuple(secret for secret in secrets if secret)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(max_concurrency)
        # time.monotonic() of the last usable answer, so health checks can skip a probe.
        self.last_success: float | None = None
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
            # Redirects could carry the key's header to another host; a model API has no need for them.
            follow_redirects=False,
            transport=transport,
        )

    def redact(self, text: str) -> str:
        """`text` with every secret we hold replaced, for messages built from a server's words."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def call(
        self,
        send: BuildRequest,
        inspect: Callable[[httpx.Response], Failure | None],
        what: str,
    ) -> tuple[httpx.Response, CallStats]:
        """Send the request `send` builds until `inspect` finds no failure, retrying what may be retried.

        `inspect` gets every response (any status) and returns a `Failure` for one we cannot use.
        `what` names the remote model in messages ("the Gemini model").
        """
        stats = CallStats()
        started = time.perf_counter()
        try:
            while True:
                stats.attempts += 1
                outcome = await self._attempt(send, inspect, what)
                self._count(outcome)
                if isinstance(outcome, httpx.Response):
                    self.last_success = time.monotonic()
                    return outcome, stats
                failure = outcome
                error = failure.error
                retry = stats.attempts - 1
                if not error.retryable or retry >= self.policy.max_retries:
                    raise self._final(error, stats)
                wait = self.policy.delay(retry, failure.retry_after, self._rng)
                if wait is None:
                    assert failure.retry_after is not None
                    raise self._final(
                        ProviderError(
                            f"{error} (the service asks to wait {failure.retry_after:.0f} s, "
                            f"more than the {self.policy.max_wait:.0f} s we wait; try again later)",
                            retryable=True,
                            status=error.status,
                        ),
                        stats,
                    )
                log.warning(
                    "%s: attempt %d failed (%s); retrying in %.2f s",
                    what,
                    stats.attempts,
                    self.redact(str(error)),
                    wait,
                )
                stats.waits.append(wait)
                metrics.REMOTE_RETRIES.labels(provider=self.provider).inc()
                await self._sleep(wait)
        finally:
            stats.elapsed = time.perf_counter() - started

    async def _attempt(
        self,
        send: BuildRequest,
        inspect: Callable[[httpx.Response], Failure | None],
        what: str,
    ) -> httpx.Response | Failure:
        async with self._slots:
            try:
                async with asyncio.timeout(self.timeout):
                    streamed = await self._client.send(send(self._client), stream=True)
                    try:
                        response = await self._read_capped(streamed, what)
                    finally:
                        await streamed.aclose()
            except TooLarge as exc:
                # Not retried: the same request would most likely bring the same answer (and bill it).
                return Failure(ProviderError(str(exc), status=exc.status), result="too_large")
            except httpx.DecodingError:
                return Failure(
                    ProviderError(f"{what} sent an answer whose compression is corrupt", retryable=True),
                    result="unreachable",
                )
            except (TimeoutError, httpx.TimeoutException) as exc:
                if isinstance(exc, httpx.ConnectTimeout):
                    return Failure(
                        ProviderError(f"could not connect to {what} (timed out)", retryable=True), result="unreachable"
                    )
                # Not retried: the model may still be working (and billing); a second wait of the
                # same length would mostly push the image past the job's own deadline.
                return Failure(ProviderError(f"{what} did not answer within {self.timeout:g} s"), result="timeout")
            except httpx.TransportError as exc:
                return Failure(
                    ProviderError(f"could not reach {what}: {type(exc).__name__}", retryable=True), result="unreachable"
                )
        failure = inspect(response)
        return response if failure is None else failure

    async def _read_capped(self, streamed: httpx.Response, what: str) -> httpx.Response:
        """The answer with its body read, stopping as soon as it passes `max_response_bytes`."""
        limit = self.max_response_bytes
        message = (
            f"{what}'s answer is larger than the {limit} byte limit (AI_MAX_RESPONSE_BYTES); it was not read "
            "and the image has no result"
        )
        return await read_capped(streamed, limit, message)

    def _count(self, outcome: httpx.Response | Failure) -> None:
        metrics.REMOTE_ATTEMPTS.labels(provider=self.provider, result=attempt_result(outcome)).inc()

    def _final(self, error: ProviderError, stats: CallStats) -> ProviderError:
        kind = type(error)
        message = self.redact(str(error))
        if stats.attempts > 1:
            message = f"{message} (after {stats.attempts} attempts)"
        final = kind(message, retryable=error.retryable, status=error.status, attempts=stats.attempts)
        return final

    async def aclose(self) -> None:
        await self._client.aclose()
