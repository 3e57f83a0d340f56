"""Retry timing rules, Retry-After parsing, aspect matching and the remote-model metrics shared by the providers."""

from __future__ import annotations

import random

import httpx
import pytest
from prometheus_client import REGISTRY

from capability_service.providers.aspect import nearest, parse_ratio
from capability_service.providers.base import ProviderError
from capability_service.providers.gemini import GeminiProvider
from capability_service.providers.http import RetryPolicy, brief, parse_duration, parse_retry_after
from tests.fakes.base import Drop, Stall
from tests.fakes.gemini_server import GeminiFake
from tests.providers.conftest import GEMINI_KEY, SleepLog
from tests.providers.edits import FAST
from tests.providers.test_gemini import request


@pytest.mark.parametrize(
    ("text", "seconds"), [("3s", 3.0), ("0.250s", 0.25), ("58s", 58.0), ("3", None), ("", None), (3, None)]
)
def test_parse_duration(text: object, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After": "7"})) == 7.0
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250", "Retry-After": "7"})) == 0.25
    date = httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT"})
    assert parse_retry_after(date, now=1445412500.0) == pytest.approx(10.0)
    assert parse_retry_after(date, now=1445412600.0) == 0.0
    assert parse_retry_after(httpx.Headers({"Retry-After": "soon"})) is None
    assert parse_retry_after(httpx.Headers({})) is None


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0, max_wait=30.0)
    rng = random.Random(7)
    for retry, (low, high) in enumerate([(0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (2.5, 5.0), (2.5, 5.0)]):
        samples = [policy.delay(retry, None, rng) for _ in range(200)]
        assert all(s is not None and low <= s <= high for s in samples)
        assert len({round(s or 0, 6) for s in samples}) > 100  # jittered, not fixed


def test_a_server_hint_wins_until_it_exceeds_the_cap() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0, max_wait=30.0)
    rng = random.Random(1)
    wait = policy.delay(0, 12.0, rng)
    assert wait is not None and 12.0 <= wait <= 13.0
    assert policy.delay(0, 31.0, rng) is None


def test_aspect_matching() -> None:
    assert parse_ratio("3:4") == 0.75 and parse_ratio("1500x2000") == 0.75
    assert parse_ratio("0:4") is None and parse_ratio("wide") is None
    assert nearest("1500:2000", ["1:1", "3:4", "2:3"]) == "3:4"
    assert nearest("nonsense", ["1:1"]) is None


def test_brief_flattens_and_truncates() -> None:
    assert brief("a\n  b\tc") == "a b c"
    assert brief("x" * 300, 10) == "x" * 9 + "…"


def _counts(provider: str) -> dict[str, float]:
    counts = {
        result: REGISTRY.get_sample_value(
            "capsvc_remote_model_attempts_total", {"provider": provider, "result": result}
        )
        or 0.0
        for result in ("ok", "rate_limited", "server_error", "timeout", "unreachable", "rejected")
    }
    counts["retries"] = REGISTRY.get_sample_value("capsvc_remote_model_retries_total", {"provider": provider}) or 0.0
    return counts


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


async def test_every_attempt_is_counted_by_result_and_every_retry(gemini: GeminiFake, sleep_log: SleepLog) -> None:
    # A 429, a 503 and a dropped connection, each retried, then an answer: three retries, four attempts.
    gemini.push(gemini.error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", retry_delay="0.1s"))
    gemini.push(gemini.error(503, "UNAVAILABLE", "The model is overloaded"))
    gemini.push(Drop())
    before = _counts("gemini")
    model = GeminiProvider(api_base=gemini.api_base, api_key=GEMINI_KEY, policy=FAST, sleep=sleep_log, timeout=10.0)
    try:
        await model.edit(request())
    finally:
        await model.close()
    assert _delta(before, _counts("gemini")) == {
        "rate_limited": 1,
        "server_error": 1,
        "unreachable": 1,
        "ok": 1,
        "retries": 3,
    }


async def test_a_timeout_and_a_rejection_are_counted_without_retries(gemini: GeminiFake, sleep_log: SleepLog) -> None:
    gemini.push(Stall(5.0))
    gemini.push(gemini.error(400, "INVALID_ARGUMENT", "Unsupported image"))
    before = _counts("gemini")
    model = GeminiProvider(api_base=gemini.api_base, api_key=GEMINI_KEY, policy=FAST, sleep=sleep_log, timeout=0.5)
    try:
        for _ in range(2):
            with pytest.raises(ProviderError):
                await model.edit(request())
    finally:
        await model.close()
    assert _delta(before, _counts("gemini")) == {"timeout": 1, "rejected": 1}
